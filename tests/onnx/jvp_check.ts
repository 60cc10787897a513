/**
 * Checks a forward-mode graph against central finite differences of the original graph: the JVP graph is
 * run at (x, dx) for (y, jvp) and at x ± h·dx for y(x ± h·dx); (y₊ − y₋)/2h must match jvp.
 */
import { encodeModel, GraphBuilder, type ModelProto } from "../../onnx/proto.ts";
import { jvpModel, type JvpOptions } from "../../onnx/jvp.ts";
import { uniform } from "../../training/init.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";

export type FloatType = "float32" | "float64";

/** A deterministic uniform generator (mulberry32). */
export const rng = uniform;

export interface Feed {
  type: FloatType | "int64" | "bool";
  dims: number[];
  values: number[];
}

/** A feed as an ORT tensor of its type. */
export function toInit(f: Feed): TensorInit {
  switch (f.type) {
    case "float32":
      return { type: "float32", data: Float32Array.from(f.values), dims: f.dims };
    case "float64":
      return { type: "float64", data: Float64Array.from(f.values), dims: f.dims };
    case "int64":
      return { type: "int64", data: BigInt64Array.from(f.values, (v) => BigInt(v)), dims: f.dims };
    case "bool":
      return { type: "bool", data: Uint8Array.from(f.values), dims: f.dims };
  }
}

export interface CheckOptions extends JvpOptions {
  /** FD step (default 1e-3 for float32, 1e-5 for float64). */
  h?: number;
  /** Relative tolerance against max |fd| (default 5e-3 for float32, 1e-6 for float64). */
  tol?: number;
  /** Tangent values per input (default uniform in [−1, 1]). */
  tangents?: Record<string, number[]>;
  seed?: number;
  /** Expect every JVP output to be exactly zero. */
  expectZero?: boolean;
}

export interface CheckResult {
  /** Per output: max |jvp − fd|, max |fd|, max |jvp|. */
  outputs: Record<string, { err: number; scale: number; jvpMax: number }>;
  y: Record<string, ArrayLike<number>>;
  jvp: Record<string, ArrayLike<number>>;
}

/** Builds the JVP of `model`, runs it, and compares with central differences; throws on mismatch. */
export async function checkJvp(
  model: ModelProto,
  feeds: Record<string, Feed>,
  options: CheckOptions = {},
): Promise<CheckResult> {
  const jvp = jvpModel(model, options);
  const { session } = await createSession(encodeModel(jvp), { providers: ["cpu"], threads: 1 });
  const graph = model.graph!;
  const inits = new Set((graph.initializer ?? []).map((t) => t.name));
  const diff =
    (options.wrt ?? Object.entries(feeds).filter(([, f]) => f.type.startsWith("float")).map(([n]) => n))
      .filter((n) => !inits.has(n));
  const random = rng(options.seed ?? 7);
  const tangents: Record<string, number[]> = {};
  for (const name of diff) {
    tangents[name] = options.tangents?.[name] ?? feeds[name].values.map(() => 2 * random() - 1);
  }
  const outNames = (graph.output ?? []).map((o) => o.name!);
  const jvpInputs = jvp.graph!.input ?? [];
  const jvpNames = (jvp.graph!.output ?? []).slice(outNames.length).map((o) => o.name!);
  const isDouble = Object.values(feeds).some((f) => f.type === "float64");
  const h = options.h ?? (isDouble ? 1e-5 : 1e-3);
  const tol = options.tol ?? (isDouble ? 1e-6 : 5e-3);

  const run = async (step: number) => {
    const inputs: Record<string, TensorInit> = {};
    for (const [name, f] of Object.entries(feeds)) {
      const values = diff.includes(name) ? f.values.map((v, i) => v + step * tangents[name][i]) : f.values;
      inputs[name] = toInit({ ...f, values });
    }
    for (const name of diff) {
      const tname = jvpInputs.find((i) => i.name === (options.tangentInputs?.[name] ?? `d${name}`))!.name!;
      inputs[tname] = toInit({ ...feeds[name], values: tangents[name] });
    }
    return await runSession(session, inputs);
  };
  const [mid, plus, minus] = [await run(0), await run(h), await run(-h)];

  const result: CheckResult = { outputs: {}, y: {}, jvp: {} };
  const failures: string[] = [];
  outNames.forEach((name, k) => {
    const tname = jvpNames[k];
    if (!tname) return;
    const yp = plus[name].data as ArrayLike<number>;
    const ym = minus[name].data as ArrayLike<number>;
    const j = mid[tname].data as ArrayLike<number>;
    if (j.length !== yp.length) failures.push(`${name}: jvp has ${j.length} values, output ${yp.length}`);
    let err = 0, scale = 0, jvpMax = 0;
    for (let i = 0; i < yp.length; i++) {
      const fd = (yp[i] - ym[i]) / (2 * h);
      err = Math.max(err, Math.abs(j[i] - fd));
      scale = Math.max(scale, Math.abs(fd));
      jvpMax = Math.max(jvpMax, Math.abs(j[i]));
    }
    result.outputs[name] = { err, scale, jvpMax };
    result.y[name] = mid[name].data as ArrayLike<number>;
    result.jvp[name] = j;
    if (options.expectZero) {
      if (jvpMax !== 0) failures.push(`${name}: expected a zero jvp, got max ${jvpMax}`);
    } else {
      if (!(err <= tol * Math.max(scale, 1e-3))) {
        failures.push(
          `${name}: max|jvp − fd| = ${err.toExponential(3)} > ${tol} × ${scale.toExponential(3)}`,
        );
      }
    }
  });
  if (!options.expectZero && Object.values(result.outputs).every((o) => !(o.scale > 0))) {
    failures.push("all finite differences are zero (nothing tested)");
  }
  session.release?.();
  if (failures.length) throw new Error(failures.join("; "));
  return result;
}

/** Input values: uniform in [lo, hi], optionally kept at least `margin` away from each of `kinks`. */
export function values(
  n: number,
  seed: number,
  { lo = -1, hi = 1, kinks = [] as number[], margin = 0.05 } = {},
): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    let v = lo + (hi - lo) * r();
    for (const k of kinks) if (Math.abs(v - k) < margin) v = k + (v < k ? -margin : margin);
    return v;
  });
}

/** Declares float inputs on a builder from a feed table, returning their names. */
export function declare(g: GraphBuilder, feeds: Record<string, Feed>): Record<string, string> {
  const names: Record<string, string> = {};
  for (const [name, f] of Object.entries(feeds)) names[name] = g.input(name, f.type, f.dims);
  return names;
}

/** A float feed with random values. */
export function feed(
  dims: number[],
  seed: number,
  type: FloatType = "float32",
  opts: Parameters<typeof values>[2] = {},
): Feed {
  return { type, dims, values: values(dims.reduce((a, b) => a * b, 1), seed, opts) };
}

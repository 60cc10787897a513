/**
 * Checks the gradients of a training graph against central finite differences of its loss. The forward
 * model's outputs y_k are reduced to the scalar loss L = Σ_k Σ_i R_k[i]·y_k[i] (R_k random, in float64),
 * so every output element is tested; the parameters are perturbed one element at a time (small tensors)
 * or along random directions (large ones). Perturbed values are rounded to the parameter's type and the
 * prediction uses the rounded step, so float32 parameters are checked as exactly as their loss allows.
 */
import { encodeModel, type ModelProto } from "../../onnx/proto.ts";
import { gradModel, type TrainingGraph, withLoss } from "../../onnx/grad.ts";
import { createSession, type InferenceSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { type Feed, rng, toInit } from "./jvp_check.ts";

export interface GradCheckOptions {
  /** Parameters (initializers or float inputs) to check. */
  params: readonly string[];
  /** FD step (default 1e-2 for float32 parameters, 1e-6 for float64). */
  h?: number;
  /** Relative tolerance (default 1e-2 for float32, 1e-6 for float64). */
  tol?: number;
  /** Absolute tolerance on derivatives, for FD noise (default 1e-5 for float32, 1e-9 for float64). */
  atol?: number;
  seed?: number;
  /** Tensors up to this many elements are checked element by element (default 24). */
  elementwise?: number;
  /** Random directions for larger tensors (default 3). */
  directions?: number;
}

export interface GradCheckResult {
  training: TrainingGraph;
  /** Per parameter: max |analytic − fd| and the scale it was compared with. */
  params: Record<string, { err: number; scale: number }>;
  grads: Record<string, Float32Array | Float64Array>;
  loss: number;
}

/** The model with L = Σ_k Σ_i R_k[i]·y_k[i] appended (R_k from forward output shapes at `feeds`). */
export async function projectedLoss(
  model: ModelProto,
  feeds: Record<string, TensorInit>,
  seed = 11,
): Promise<ModelProto> {
  const { session } = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
  const outs = await runSession(session, feeds);
  session.release?.();
  const random = rng(seed);
  const names = (model.graph!.output ?? []).map((o) => o.name!);
  return withLoss(model, (g) => {
    let loss: string | undefined;
    for (const name of names) {
      const dims = outs[name].dims;
      const n = dims.reduce((a, b) => a * b, 1);
      const R = g.constant(Float64Array.from({ length: n }, () => 2 * random() - 1), dims);
      const y = outs[name].type === "float64" ? name : g.op("Cast", [name], { to: 11 });
      const term = g.op("ReduceSum", [g.op("Mul", [y, R])], { keepdims: 0 });
      loss = loss ? g.op("Add", [loss, term]) : term;
    }
    return loss!;
  });
}

/** Builds the training graph of `model` under a projected loss and compares it with finite differences. */
export async function checkGrad(
  model: ModelProto,
  dataFeeds: Record<string, Feed>,
  options: GradCheckOptions,
): Promise<GradCheckResult> {
  const data: Record<string, TensorInit> = {};
  for (const [k, f] of Object.entries(dataFeeds)) data[k] = toInit(f);
  const lossModel = await projectedLoss(model, data, options.seed ?? 11);
  const training = gradModel(lossModel, { params: options.params });
  const { session } = await createSession(encodeModel(training.model), { providers: ["cpu"], threads: 1 });
  const values: Record<string, Float32Array | Float64Array> = {};
  for (const p of training.params) {
    values[p.name] = p.init ? p.init.slice() : toInit(dataFeeds[p.name]).data as Float32Array | Float64Array;
  }
  const feedsWith = (override: Record<string, Float32Array | Float64Array> = {}) => {
    const feeds: Record<string, TensorInit> = { ...data };
    for (const p of training.params) {
      const v = override[p.name] ?? values[p.name];
      feeds[p.name] = p.dtype === "float64"
        ? { type: "float64", data: v as Float64Array, dims: p.dims }
        : { type: "float32", data: v as Float32Array, dims: p.dims };
    }
    return feeds;
  };
  const lossAt = async (session: InferenceSession, override: Record<string, Float32Array | Float64Array>) =>
    Number((await runSession(session, feedsWith(override), [training.loss]))[training.loss].data[0]);

  const base = await runSession(session, feedsWith());
  const grads: Record<string, Float32Array | Float64Array> = {};
  for (const p of training.params) grads[p.name] = base[p.grad].data as Float32Array | Float64Array;
  const result: GradCheckResult = { training, params: {}, grads, loss: Number(base[training.loss].data[0]) };
  const failures: string[] = [];
  const random = rng((options.seed ?? 11) + 1);
  for (const p of training.params) {
    const isDouble = p.dtype === "float64";
    const h = options.h ?? (isDouble ? 1e-6 : 1e-2);
    const tol = options.tol ?? (isDouble ? 1e-6 : 1e-2);
    const v0 = values[p.name];
    const g = grads[p.name];
    if (g.length !== v0.length) {
      failures.push(`${p.name}: gradient has ${g.length} values, parameter ${v0.length}`);
      continue;
    }
    const directions: Float64Array[] = [];
    if (v0.length <= (options.elementwise ?? 24)) {
      for (let i = 0; i < v0.length; i++) {
        const d = new Float64Array(v0.length);
        d[i] = 1;
        directions.push(d);
      }
    } else {
      for (let k = 0; k < (options.directions ?? 3); k++) {
        directions.push(Float64Array.from(v0, () => 2 * random() - 1));
      }
    }
    let err = 0, scale = 0;
    const fds: number[] = [], preds: number[] = [], mags: number[] = [];
    for (const d of directions) {
      const plus = v0.slice(), minus = v0.slice();
      for (let i = 0; i < v0.length; i++) {
        plus[i] = v0[i] + h * d[i];
        minus[i] = v0[i] - h * d[i];
      }
      const fd = (await lossAt(session, { [p.name]: plus })) - (await lossAt(session, { [p.name]: minus }));
      let pred = 0, mag = 0;
      for (let i = 0; i < v0.length; i++) {
        pred += g[i] * (plus[i] - minus[i]);
        mag += Math.abs(g[i] * (plus[i] - minus[i]));
      }
      fds.push(fd / (2 * h)), preds.push(pred / (2 * h)), mags.push(mag / (2 * h));
    }
    for (let k = 0; k < fds.length; k++) {
      err = Math.max(err, Math.abs(fds[k] - preds[k]));
      scale = Math.max(scale, Math.abs(fds[k]), mags[k]);
    }
    result.params[p.name] = { err, scale };
    const atol = options.atol ?? (isDouble ? 1e-9 : 1e-5);
    if (!(err <= tol * scale + atol)) {
      failures.push(
        `${p.name}: max|analytic − fd| = ${err.toExponential(3)} > ${tol} × ${
          scale.toExponential(3)
        } + ${atol}`,
      );
    }
  }
  if (Object.values(result.params).every((r) => !(r.scale > 0))) failures.push("all differences are zero");
  session.release?.();
  if (failures.length) throw new Error(failures.join("; "));
  return result;
}

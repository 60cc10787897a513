/**
 * The JVP graph of a model that ships only its ε graph (a user's own ONNX export), made at model load with
 * onnx/jvp.ts and cached on disk beside the model:
 *
 *     models/<name>/cache/jvp.onnx    inputs x, t, [class], dx, dt; outputs eps, jvp (weights shared)
 *     models/<name>/cache/jvp.json    {transform, eps_sha256, bytes} or {transform, eps_sha256, unavailable}
 *
 * The stamp records the SHA-256 of eps.onnx and the transform's version, so a changed model (or a changed
 * transform) rebuilds the graph; both files are written atomically (temporary file, then rename), the graph
 * before its stamp. A graph the transform cannot differentiate (an operator without a derivative rule on
 * the path from x or t to eps) is cached as unavailable, with the operators named; the model still loads and
 * serves the other derivative sources. When the model folder is read-only, the cache goes to the system's
 * temporary directory instead.
 *
 * The graph is differentiated under the model's names (the manifest's `inputs`/`outputs`, e.g. `sample`,
 * `timestep`, `out_sample`): its primal inputs and output keep those names, the tangents are `dx`, `dt` and
 * `jvp` whatever they are; the names are part of the stamp. A model whose time input is int64 (an integer
 * timestep) is piecewise constant in t and gets no JVP graph: `jvp` is unavailable with that reason.
 *
 * GENIE assembles the total derivative along the ODE from this JVP in core/ (the solver's tangent path):
 * the worker only evaluates (∂ε/∂x)·dx + (∂ε/∂t)·dt along the tangent the solver asks for.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { JvpError, jvpModel, SUPPORTED_OPERATORS } from "../onnx/jvp.ts";
import { decodeModel, encodeModel } from "../onnx/proto.ts";
import { JVP_INPUTS } from "./graphs.ts";
import { type GraphNames, type LoadedModel, STANDARD_NAMES } from "./manifest.ts";

/**
 * Identifies the transform a cached graph was made with: a version, bumped whenever onnx/jvp.ts or the
 * options below change what the derived graph computes, and the operators with a rule (so that a new
 * rule retries graphs cached as unavailable).
 */
const JVP_TRANSFORM = `2;${SUPPORTED_OPERATORS.join(",")}`;

/** Why a derivative graph cannot be made: the message, and the operators at fault (maybe none). */
export interface Unavailable {
  reason: string;
  operators: string[];
}

/** What {@link deriveJvpGraph} did. */
export type DerivedJvp =
  | { ok: true; path: string; cached: boolean; ms: number }
  | { ok: false; unavailable: Unavailable; cached: boolean; ms: number };

interface Stamp {
  transform: string;
  eps_sha256: string;
  /** Size of jvp.onnx (a truncated or foreign file is rebuilt). */
  bytes?: number;
  unavailable?: Unavailable;
}

/** The cache folder of a model: `<dir>/cache`, or a folder under the temporary directory. */
function cacheDirs(info: LoadedModel, hash: string): string[] {
  return [
    join(info.dir, "cache"),
    join(tmpdir(), "genie-jvp-cache", `${info.manifest.name}-${hash.slice(0, 16)}`),
  ];
}

function readStamp(path: string): Stamp | undefined {
  try {
    const s = JSON.parse(readFileSync(path, "utf8"));
    return typeof s === "object" && s !== null ? s as Stamp : undefined;
  } catch {
    return undefined;
  }
}

/** Writes a file atomically: a temporary file in the same folder, then a rename. */
function writeAtomic(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2, 8)}.tmp`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing to clean up
    }
    throw e;
  }
}

/** A valid cache entry in `dir` for this eps graph, if there is one. */
function lookup(dir: string, hash: string, transform: string): { path: string; stamp: Stamp } | undefined {
  const stamp = readStamp(join(dir, "jvp.json"));
  if (!stamp || stamp.transform !== transform || stamp.eps_sha256 !== hash) return undefined;
  if (stamp.unavailable) return { path: "", stamp };
  const path = join(dir, "jvp.onnx");
  if (!existsSync(path) || statSync(path).size !== stamp.bytes) return undefined;
  return { path, stamp };
}

/**
 * The JVP graph of eps bytes, as bytes; or why it cannot be made. `names` are the eps graph's input and
 * output names by role (default the standard x, t, eps; without an output of that name, its first output).
 */
export function transformEps(
  eps: Uint8Array,
  names: Pick<GraphNames, "x" | "t" | "eps"> = STANDARD_NAMES,
): { bytes: Uint8Array } | { unavailable: Unavailable } {
  const model = decodeModel(eps);
  const outputs = (model.graph?.output ?? []).map((o) => o.name!);
  const out = outputs.includes(names.eps) ? names.eps : outputs[0];
  try {
    const jvp = jvpModel(model, {
      wrt: [names.x, names.t],
      outputs: out === undefined ? undefined : [out],
      tangentInputs: { [names.x]: JVP_INPUTS.x, [names.t]: JVP_INPUTS.t },
      tangentOutputs: out === undefined ? undefined : { [out]: "jvp" },
    });
    return { bytes: encodeModel(jvp) };
  } catch (e) {
    if (e instanceof JvpError) return { unavailable: { reason: e.message, operators: e.operators } };
    throw e;
  }
}

/** The transform's identity for a model: {@link JVP_TRANSFORM} and, where not standard, the names. */
function transformId(names: GraphNames): string {
  const { x, t, eps } = names;
  return x === "x" && t === "t" && eps === "eps" ? JVP_TRANSFORM : `${JVP_TRANSFORM};names=${x},${t},${eps}`;
}

/**
 * The JVP graph of a model without one in its manifest: from the cache when it matches eps.onnx, else
 * built now and cached. Never throws for a graph it cannot differentiate (that is `ok: false`); I/O errors
 * reading eps.onnx are thrown.
 */
export function deriveJvpGraph(info: LoadedModel, log: (line: string) => void = () => {}): DerivedJvp {
  const t0 = performance.now();
  const epsPath = info.graphPaths.eps;
  if (!epsPath) throw new Error(`${info.manifest.name}: no eps graph`);
  if (info.timestep === "int64") {
    const reason = `the time input "${info.names.t}" is int64 (an integer timestep): the model is ` +
      `piecewise constant in t and has no time derivative; export it with a float timestep for jvp`;
    return { ok: false, unavailable: { reason, operators: [] }, cached: false, ms: performance.now() - t0 };
  }
  const transform = transformId(info.names);
  const eps = readFileSync(epsPath);
  const hash = createHash("sha256").update(eps).digest("hex");
  const dirs = cacheDirs(info, hash);
  for (const dir of dirs) {
    const hit = lookup(dir, hash, transform);
    if (!hit) continue;
    const ms = performance.now() - t0;
    if (hit.stamp.unavailable) return { ok: false, unavailable: hit.stamp.unavailable, cached: true, ms };
    return { ok: true, path: hit.path, cached: true, ms };
  }

  let result: ReturnType<typeof transformEps>;
  try {
    result = transformEps(eps, info.names);
  } catch (e) {
    // A bug or a graph the transform's inference cannot read: not cached, reported as unavailable.
    const reason = `the JVP transform failed: ${e instanceof Error ? e.message : e}`;
    return { ok: false, unavailable: { reason, operators: [] }, cached: false, ms: performance.now() - t0 };
  }
  const stamp: Stamp = { transform, eps_sha256: hash };
  if ("unavailable" in result) stamp.unavailable = result.unavailable;
  else stamp.bytes = result.bytes.length;
  const errors: string[] = [];
  for (const dir of dirs) {
    try {
      mkdirSync(dir, { recursive: true });
      const path = join(dir, "jvp.onnx");
      if ("bytes" in result) writeAtomic(path, result.bytes);
      writeAtomic(join(dir, "jvp.json"), JSON.stringify(stamp, null, 2) + "\n");
      if (dir !== dirs[0]) {
        log(`${info.manifest.name}: cannot write ${dirs[0]} (${errors[0]}); cached in ${dir}`);
      }
      const ms = performance.now() - t0;
      return "bytes" in result
        ? { ok: true, path, cached: false, ms }
        : { ok: false, unavailable: result.unavailable, cached: false, ms };
    } catch (e) {
      errors.push(e instanceof Error ? e.message : String(e));
    }
  }
  throw new Error(`${info.manifest.name}: cannot write the JVP graph's cache (${errors.join("; ")})`);
}

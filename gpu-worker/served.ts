/**
 * What the scheduler (scheduler.ts) serves and answers — a model as served, a solve as submitted and its
 * result — and the tensors between a solver's evaluation requests and one inference call: which graph
 * answers a request, the call's inputs from rows of several requests (`batchFeeds`), and a graph's raw
 * outputs as the solver's ε and derivative (`toEpsResult`). The in-process engine (engine.ts) makes its
 * calls with the same functions.
 */
import { callGraph, type RunStats } from "../core/solvers/drive.ts";
import type { EvalRequest, EvalResult, SolverRun } from "../core/solvers/types.ts";
import { wrapPrediction } from "../core/prediction.ts";
import { WorkerError } from "./errors.ts";
import type { WireTensor } from "./inference.ts";
import { type GraphKind, graphNames, type LoadedModel, modelTime } from "./manifest.ts";
import { JVP_INPUTS, ODE_TANGENT_INPUTS } from "../onnx/tangent_inputs.ts";

/** A model as the scheduler serves it. */
export interface ServedModel {
  info: LoadedModel;
  /** Inputs of each graph (to know whether it takes `class`). */
  inputs: Partial<Record<GraphKind, string[]>>;
  /** Samples per inference call (the manifest's limit, capped by the scheduler's). */
  maxBatch: number;
  /**
   * The name its sessions have in the inference thread, when not the model's own: a version loaded by a
   * reload (gpu-worker/reload.ts) runs beside the old one until the old one's last request ends.
   */
  key?: string;
}

/** A solve: one request's solver run, as submitted (a batch job of the edge is functions/jobs/'s). */
export interface SolveSpec {
  model: ServedModel;
  /** The solver run (already wrapped for classes/guidance). */
  run: SolverRun;
  /** Higher runs first (default 0). */
  priority?: number;
  /** Absolute deadline (ms since the epoch, as Date.now()). */
  deadline?: number;
  /** Aborting it cancels the request between steps. */
  signal?: AbortSignal;
  /**
   * Called as each evaluation is queued, with the solver step it belongs to (0-based; `step === steps`
   * is the final denoising evaluation), like runSolverAsync's `onStep`. A throw is ignored.
   */
  onStep?: (step: number, steps: number) => void;
}

export interface SolveResult {
  x: Float64Array;
  stats: RunStats;
  /** From submission to the first inference call that included the request. */
  queueMs: number;
  /** From that call to the end. */
  computeMs: number;
}

/** Which graph answers a request: ε only, the model's own derivative (head), or a JVP. */
export function graphFor(req: EvalRequest): GraphKind {
  return callGraph(req);
}

/** Rows `from … from + count − 1` of an evaluation request. */
export interface RowRange {
  req: EvalRequest;
  from: number;
  count: number;
}

/**
 * The inputs of one inference call from rows of several requests, concatenated: x and t in float32
 * (t as the model sees it, t × scale + offset of the manifest's `time`; the nearest integer timestep, in
 * int64, where the graph's time input is int64), `class` where the graph takes it (the null class for
 * rows without labels), and the tangent for a JVP graph, under the graph's names (manifest.ts
 * `graphNames`).
 */
export function batchFeeds(
  model: ServedModel,
  graph: GraphKind,
  ranges: RowRange[],
): Record<string, WireTensor> {
  const info = model.info, dim = info.dim, scale = info.manifest.time.scale;
  const names = graphNames(info, graph);
  const rows = ranges.reduce((n, r) => n + r.count, 0);
  const shape = [rows, ...info.manifest.shape];
  const x = new Float32Array(rows * dim);
  const integer = info.timestep === "int64" && (graph === "eps" || graph === "jvp");
  const t = integer ? new BigInt64Array(rows) : new Float32Array(rows);
  const takes = model.inputs[graph] ?? [];
  const cls = takes.includes(names.class) ? new BigInt64Array(rows) : undefined;
  const jvp = graph === "jvp";
  const tx = jvp ? new Float32Array(rows * dim) : undefined;
  // an int64 time has no tangent (a JVP graph over it differentiates along x only)
  const tt = jvp && !integer ? new Float32Array(rows) : undefined;
  // the coefficients of a tangent made in the graph (onnx/ode_jvp.ts), 0 for rows with a given tangent
  const ode = jvp && takes.includes(ODE_TANGENT_INPUTS.out)
    ? { out: new Float32Array(rows), x: new Float32Array(rows) }
    : undefined;
  const nullClass = info.manifest.classes?.null_class ?? 0;
  let at = 0;
  for (const { req, from, count } of ranges) {
    x.set(req.x.subarray(from * dim, (from + count) * dim), at * dim);
    for (let i = 0; i < count; i++) {
      const time = modelTime(info, req.t[from + i]);
      if (t instanceof BigInt64Array) t[at + i] = BigInt(time);
      else t[at + i] = time;
      if (cls) cls[at + i] = BigInt(req.classes ? req.classes[from + i] : nullClass);
      // A tangent in t is per unit of the solver's time; the model's time is t × scale + offset.
      if (tt) tt[at + i] = (req.tangent ?? req.odeTangent!).t[from + i] * scale;
      if (req.odeTangent) {
        if (!ode) {
          throw new WorkerError(
            "internal",
            `the ${graph} graph of ${info.manifest.name} does not take the ODE's tangent`,
          );
        }
        ode.out[at + i] = req.odeTangent.eps[from + i];
        ode.x[at + i] = req.odeTangent.x[from + i];
      }
    }
    if (tx && req.tangent) tx.set(req.tangent.x.subarray(from * dim, (from + count) * dim), at * dim);
    at += count;
  }
  const feeds: Record<string, WireTensor> = {
    [names.x]: { type: "float32", data: x.buffer, dims: shape },
    [names.t]: { type: integer ? "int64" : "float32", data: t.buffer, dims: [rows] },
  };
  if (cls) feeds[names.class] = { type: "int64", data: cls.buffer, dims: [rows] };
  if (tx) feeds[JVP_INPUTS.x] = { type: "float32", data: tx.buffer, dims: shape };
  if (tt) feeds[JVP_INPUTS.t] = { type: "float32", data: tt.buffer, dims: [rows] };
  if (ode) {
    feeds[ODE_TANGENT_INPUTS.out] = { type: "float32", data: ode.out.buffer, dims: [rows] };
    feeds[ODE_TANGENT_INPUTS.x] = { type: "float32", data: ode.x.buffer, dims: [rows] };
  }
  return feeds;
}

/** A graph's raw outputs for a whole request as the solver's ε (and derivative), converting x0/v. */
export function toEpsResult(
  info: LoadedModel,
  req: EvalRequest,
  graph: GraphKind,
  outputs: Record<string, Float32Array>,
): EvalResult {
  const raw: EvalResult = { eps: outputs[graphNames(info, graph).eps] };
  if (req.want === "eps+deriv") {
    raw.deriv = graph === "jvp" ? outputs.jvp : outputs.deriv;
    if (!raw.deriv) throw new WorkerError("internal", `the ${graph} graph returned no derivative`);
  }
  if (!raw.eps) throw new WorkerError("internal", `the ${graph} graph returned no eps`);
  const m = info.manifest;
  if (m.prediction === "eps") return raw;
  return wrapPrediction(m.prediction, () => raw, info.schedule, { derivativeSpace: m.head_space })(req);
}

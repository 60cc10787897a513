/**
 * Drivers run a solver coroutine against an evaluator and keep exact accounts: every request
 * without a tangent is one network evaluation (NFE); derivative work (a head, a closed form or a
 * JVP) is counted separately, and every request is one call of the graph that answers it
 * ({@link callGraph}), counted per graph so that a run's cost can be priced (core/cost.ts).
 */
import type { EvalRequest, EvalResult, SolverRun } from "./types.ts";
import { SolverError } from "./types.ts";

export const CALL_GRAPHS = ["eps", "head", "jvp"] as const;
/**
 * The graph that answers an evaluation request: "eps" (ε only), "head" (ε and the model's own
 * derivative in one call: a distilled head, or the closed form of an analytic model) or "jvp" (ε and
 * the directional derivative along a tangent, given or made from that ε: {@link EvalRequest.odeTangent}).
 */
export type CallGraph = typeof CALL_GRAPHS[number];

export interface RunStats {
  /**
   * Network evaluations of ε at distinct points (a head call counts as one; a JVP call along a given
   * tangent does not, one along the ODE's tangent made from its own ε does).
   */
  nfe: number;
  /** Derivative evaluations: head or closed form alongside ε, or a JVP along a tangent. */
  derivEvals: number;
  /** Evaluation requests answered: graph calls of every kind, per sample trajectory. */
  calls: number;
  /** `calls` by the graph that answered them. */
  graphCalls: Record<CallGraph, number>;
}

export interface RunResult {
  x: Float64Array;
  stats: RunStats;
}

export type Evaluator = (req: EvalRequest) => EvalResult;
export type AsyncEvaluator = (req: EvalRequest) => Promise<EvalResult>;

export interface AsyncRunOptions {
  /** Checked between evaluations: an aborted signal stops the run with its reason. */
  signal?: AbortSignal;
  /** Called before each evaluation with the step it belongs to. */
  onStep?: (step: number, steps: number) => void;
}

/** Which graph answers `req`. */
export function callGraph(req: EvalRequest): CallGraph {
  if (req.want === "eps") return "eps";
  return req.tangent || req.odeTangent ? "jvp" : "head";
}

/** Empty accounts. */
export function newRunStats(): RunStats {
  return { nfe: 0, derivEvals: 0, calls: 0, graphCalls: { eps: 0, head: 0, jvp: 0 } };
}

/** Adds one evaluation request to the accounts. */
export function countRequest(stats: RunStats, req: EvalRequest): void {
  stats.calls++;
  stats.graphCalls[callGraph(req)]++;
  if (!req.tangent) stats.nfe++;
  if (req.want === "eps+deriv") stats.derivEvals++;
}

function checkResult(req: EvalRequest, res: EvalResult): EvalResult {
  if (res.eps.length !== req.x.length) {
    throw new SolverError("eps", `model returned ${res.eps.length} numbers, expected ${req.x.length}`);
  }
  if (req.want === "eps+deriv" && res.deriv?.length !== req.x.length) {
    throw new SolverError("deriv", `model returned no derivative of ${req.x.length} numbers`);
  }
  return res;
}

/** Runs a solver to the end with a synchronous evaluator. */
export function runSolver(run: SolverRun, evaluate: Evaluator): RunResult {
  const stats = newRunStats();
  let next = run.next();
  while (!next.done) {
    const req = next.value;
    countRequest(stats, req);
    next = run.next(checkResult(req, evaluate(req)));
  }
  return { x: next.value, stats };
}

/** Runs a solver to the end with an asynchronous evaluator, honouring cancellation between steps. */
export async function runSolverAsync(
  run: SolverRun,
  evaluate: AsyncEvaluator,
  opts: AsyncRunOptions = {},
): Promise<RunResult> {
  const stats = newRunStats();
  let next = run.next();
  while (!next.done) {
    opts.signal?.throwIfAborted();
    const req = next.value;
    opts.onStep?.(req.step, req.steps);
    countRequest(stats, req);
    const res = checkResult(req, await evaluate(req));
    next = run.next(res);
  }
  return { x: next.value, stats };
}

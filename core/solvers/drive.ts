/**
 * Drivers run a solver coroutine against an evaluator and keep exact accounts: every request
 * without a tangent is one network evaluation (NFE); derivative work (a head, a closed form or a
 * JVP) is counted separately.
 */
import type { EvalRequest, EvalResult, SolverRun } from "./types.ts";
import { SolverError } from "./types.ts";

export interface RunStats {
  /** Network evaluations of ε at distinct points. */
  nfe: number;
  /** Derivative evaluations: head or closed form alongside ε, or a JVP along a tangent. */
  derivEvals: number;
  /** Evaluation requests answered. */
  calls: number;
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

function count(stats: RunStats, req: EvalRequest): void {
  stats.calls++;
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
  const stats: RunStats = { nfe: 0, derivEvals: 0, calls: 0 };
  let next = run.next();
  while (!next.done) {
    const req = next.value;
    count(stats, req);
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
  const stats: RunStats = { nfe: 0, derivEvals: 0, calls: 0 };
  let next = run.next();
  while (!next.done) {
    opts.signal?.throwIfAborted();
    const req = next.value;
    opts.onStep?.(req.step, req.steps);
    count(stats, req);
    const res = checkResult(req, await evaluate(req));
    next = run.next(res);
  }
  return { x: next.value, stats };
}

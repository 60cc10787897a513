/** Shared pieces of the solvers: coordinates, evaluation requests, the final step. */
import type { EvalRequest, EvalResult, SolveInput, SolverRun, Tensor } from "./types.ts";
import { SolverError } from "./types.ts";
import { float64Array } from "./arrays.ts";

/** x̄ = x/α_t as a new float64 array. */
export function toBar(x: ArrayLike<number>, alpha: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] / alpha;
  return out;
}

/** x = α_t x̄ as a new float64 array (for a request or a result: see arrays.ts). */
function fromBar(xbar: Float64Array, alpha: number): Float64Array {
  const out = float64Array(xbar.length);
  for (let i = 0; i < xbar.length; i++) out[i] = alpha * xbar[i];
  return out;
}

/** An evaluation request at x̄ and time t for every sample of the batch. */
export function request(
  input: SolveInput,
  xbar: Float64Array,
  t: number,
  step: number,
  want: EvalRequest["want"] = "eps",
): EvalRequest {
  const steps = input.grid.length - 1;
  return {
    x: fromBar(xbar, input.schedule.alpha(t)),
    t: float64Array(input.batch).fill(t),
    want,
    step,
    steps,
  };
}

/** ε at x̄ and time t (one network evaluation). */
export function* evalEps(
  input: SolveInput,
  xbar: Float64Array,
  t: number,
  step: number,
): Generator<EvalRequest, Tensor, EvalResult> {
  const r = yield request(input, xbar, t, step);
  return r.eps;
}

/** x̂₀ = x̄ − γ ε, the data prediction in x̄ coordinates. */
export function dataPrediction(xbar: Float64Array, gamma: number, eps: Tensor): Float64Array {
  const out = new Float64Array(xbar.length);
  for (let i = 0; i < xbar.length; i++) out[i] = xbar[i] - gamma * eps[i];
  return out;
}

/**
 * Ends a solve at the last grid time: with `denoise`, one Euler step to γ = 0 (x̂₀ = x̄_N − γ_N ε_N,
 * +1 NFE); otherwise x_N = α_N x̄_N in VP scale.
 */
export function* finish(input: SolveInput, xbar: Float64Array): SolverRun {
  const N = input.grid.length - 1, tN = input.grid[N];
  if (!input.denoise) return fromBar(xbar, input.schedule.alpha(tN));
  const eps = yield* evalEps(input, xbar, tN, N);
  return dataPrediction(xbar, input.schedule.gamma(tN), eps);
}

/** Checks what every solver needs; AFS and denoising only make sense when sampling. */
export function validateInput(input: SolveInput): void {
  const { grid, x, batch, dim } = input;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new SolverError("batch", "must be a positive integer");
  if (!(Number.isInteger(dim) && dim >= 1)) throw new SolverError("dim", "must be a positive integer");
  if (x.length !== batch * dim) {
    throw new SolverError("x", `has ${x.length} numbers, expected batch × dim = ${batch * dim}`);
  }
  if (grid.length < 2) throw new SolverError("grid", "needs at least two times");
  const sampling = grid[grid.length - 1] < grid[0];
  if (!sampling && input.afs) throw new SolverError("afs", "the analytical first step is for sampling only");
  if (!sampling && input.denoise) throw new SolverError("denoise", "final denoising is for sampling only");
}

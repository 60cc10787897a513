/**
 * Heun's method (EDM's second-order sampler, Karras et al. 2022) on dx̄/dγ = ε:
 *
 *     x̃ = x̄_n + h_n ε(x̄_n, γ_n)                                  (Euler predictor)
 *     x̄_{n+1} = x̄_n + ½ h_n (ε(x̄_n, γ_n) + ε(x̃, γ_{n+1}))        (trapezoidal corrector)
 *
 * Two evaluations on every step, the last one included (t_min > 0, so γ_N > 0 and the corrector is
 * well defined). AFS replaces the first step's first evaluation with x_T.
 */
import { evalEps, finish, toBar, validateInput } from "./common.ts";
import { fixedOrder, noVariant } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";

export function* heun(input: SolveInput): SolverRun {
  validateInput(input);
  fixedOrder(input, "heun", 2);
  noVariant(input, "heun");
  const { schedule, grid } = input;
  const xbar = toBar(input.x, schedule.alpha(grid[0]));
  const predicted = new Float64Array(xbar.length);
  for (let n = 0; n < grid.length - 1; n++) {
    const h = schedule.gamma(grid[n + 1]) - schedule.gamma(grid[n]);
    const eps: Tensor = n === 0 && input.afs ? input.x : yield* evalEps(input, xbar, grid[n], n);
    for (let i = 0; i < xbar.length; i++) predicted[i] = xbar[i] + h * eps[i];
    const epsNext = yield* evalEps(input, predicted, grid[n + 1], n);
    for (let i = 0; i < xbar.length; i++) xbar[i] = xbar[i] + 0.5 * h * (eps[i] + epsNext[i]);
  }
  return yield* finish(input, xbar);
}

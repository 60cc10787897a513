/** DDIM: Euler's method on dx̄/dγ = ε (docs/method.md §3, TTM1). One evaluation per step. */
import { evalEps, finish, toBar, validateInput } from "./common.ts";
import { fixedOrder, noVariant } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";

export function* ddim(input: SolveInput): SolverRun {
  validateInput(input);
  fixedOrder(input, "ddim", 1);
  noVariant(input, "ddim");
  const { schedule, grid } = input;
  const xbar = toBar(input.x, schedule.alpha(grid[0]));
  for (let n = 0; n < grid.length - 1; n++) {
    const h = schedule.gamma(grid[n + 1]) - schedule.gamma(grid[n]);
    const eps: Tensor = n === 0 && input.afs ? input.x : yield* evalEps(input, xbar, grid[n], n);
    for (let i = 0; i < xbar.length; i++) xbar[i] = xbar[i] + h * eps[i];
  }
  return yield* finish(input, xbar);
}

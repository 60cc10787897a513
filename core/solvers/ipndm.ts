/**
 * iPNDM (improved PNDM, Zhang & Chen 2022): Adams–Bashforth on dx̄/dγ = ε with the history of ε, orders
 * 1–4 (default 4), one evaluation per step:
 *
 *     x̄_{n+1} = x̄_n + Σ_j w_j ε_{n−j},   w_j = ∫_{γ_n}^{γ_{n+1}} L_j(γ) dγ,
 *
 * L_j the Lagrange basis through γ_n, …, γ_{n−k+1}. On an equally spaced grid the weights are iPNDM's
 * fixed ones, e.g. h (55ε_n − 59ε_{n−1} + 37ε_{n−2} − 9ε_{n−3})/24 at order 4. Sampling grids are not
 * equally spaced in γ, and there the fixed weights are only second order (the step ratios differ from
 * 1 by O(1/N)); the variable-step weights keep order k on any grid.
 *
 * Warm-up with lower orders from the first step; with fewer than 15 steps the final steps lower their
 * order too (min(order, steps left)), unless `lowerOrderFinal` is false.
 */
import { evalEps, finish, toBar, validateInput } from "./common.ts";
import { lowerOrderFinalOption, noVariant, orderOption, stepOrder } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";

export function* ipndm(input: SolveInput): SolverRun {
  validateInput(input);
  const order = orderOption(input, 1, 4, 4);
  noVariant(input, "ipndm");
  const lowerOrderFinal = lowerOrderFinalOption(input);
  const { schedule, grid } = input;
  const N = grid.length - 1;
  const xbar = toBar(input.x, schedule.alpha(grid[0]));
  // Newest first: eps[j] = ε at gamma[j] = γ_{n−j}.
  const eps: Tensor[] = [], gamma: number[] = [];
  for (let n = 0; n < N; n++) {
    eps.unshift(n === 0 && input.afs ? input.x : yield* evalEps(input, xbar, grid[n], n));
    gamma.unshift(schedule.gamma(grid[n]));
    eps.length = gamma.length = Math.min(eps.length, order);
    const k = stepOrder(order, n, N, lowerOrderFinal);
    const w = adamsBashforthWeights(gamma.slice(0, k), schedule.gamma(grid[n + 1]));
    for (let i = 0; i < xbar.length; i++) {
      let dx = 0;
      for (let j = 0; j < k; j++) dx += w[j] * eps[j][i];
      xbar[i] += dx;
    }
  }
  return yield* finish(input, xbar);
}

/**
 * w_j = ∫_{γ_0}^{γ_t} L_j(γ) dγ for the Lagrange basis through the nodes γ_0, γ_1, … (at most four, so
 * the integrands are at most cubic and two-point Gauss–Legendre integrates them exactly).
 */
export function adamsBashforthWeights(nodes: number[], gammaT: number): number[] {
  const h = gammaT - nodes[0], q = 0.5 / Math.sqrt(3);
  const g1 = nodes[0] + (0.5 - q) * h, g2 = nodes[0] + (0.5 + q) * h;
  return nodes.map((_, j) => 0.5 * h * (lagrange(nodes, j, g1) + lagrange(nodes, j, g2)));
}

/** L_j(γ) = Π_{k≠j} (γ − γ_k)/(γ_j − γ_k). */
function lagrange(nodes: number[], j: number, g: number): number {
  let l = 1;
  for (let k = 0; k < nodes.length; k++) if (k !== j) l *= (g - nodes[k]) / (nodes[j] - nodes[k]);
  return l;
}

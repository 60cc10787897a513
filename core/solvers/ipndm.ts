/**
 * iPNDM (improved PNDM, Zhang & Chen 2022) and its variable-step form ipndm-v: Adams–Bashforth on
 * dx̄/dγ = ε with the history of ε, orders 1–4 (default 4), one evaluation per step.
 *
 * `ipndm` is the published method, with fixed coefficients (as diff-sampler's `ipndm` writes it):
 *
 *     x̄_{n+1} = x̄_n + h_n Σ_j c_j ε_{n−j},   h_n = γ_{n+1} − γ_n,
 *     c = (1) | (3/2, −1/2) | (23/12, −16/12, 5/12) | (55/24, −59/24, 37/24, −9/24)
 *
 * at order min(order, n + 1) on step n (warm-up from the first step) and, as published, at full order
 * to the end: `lowerOrderFinal` defaults to false here. The coefficients are Adams–Bashforth's for
 * equal steps; sampling grids are not equally spaced in γ, so on them the step is not of order k (the
 * measured orders are in docs/benchmarks.md).
 *
 * `ipndm-v` uses the variable-step weights
 *
 *     x̄_{n+1} = x̄_n + Σ_j w_j ε_{n−j},   w_j = ∫_{γ_n}^{γ_{n+1}} L_j(γ) dγ,
 *
 * L_j the Lagrange basis through γ_n, …, γ_{n−k+1}: order k on any grid, and h_n c_j on an equally
 * spaced one. With fewer than 15 steps its final steps lower their order (min(order, steps left)),
 * unless `lowerOrderFinal` is false. (diff-sampler's `ipndm_v` has these weights at orders 1 and 2 and
 * on equal steps; its order-3 and order-4 coefficients differ from them on unequal steps.)
 */
import { evalEps, finish, toBar, validateInput } from "./common.ts";
import { lowerOrderFinalOption, noVariant, orderOption, stepOrder } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";

/** iPNDM's fixed coefficients c_j of order k = index + 1, newest ε first. */
const IPNDM_COEFFICIENTS: readonly (readonly number[])[] = [
  [1],
  [3 / 2, -1 / 2],
  [23 / 12, -16 / 12, 5 / 12],
  [55 / 24, -59 / 24, 37 / 24, -9 / 24],
];

/** iPNDM with the fixed coefficients (see the module comment). */
export function ipndm(input: SolveInput): SolverRun {
  return adamsBashforth(
    input,
    "ipndm",
    false,
    (_gamma, _gammaT, h, k) => IPNDM_COEFFICIENTS[k - 1].map((c) => h * c),
  );
}

/** iPNDM with the variable-step weights (see the module comment). */
export function ipndmV(input: SolveInput): SolverRun {
  return adamsBashforth(
    input,
    "ipndm-v",
    true,
    (gamma, gammaT, _h, k) => adamsBashforthWeights(gamma.slice(0, k), gammaT),
  );
}

/** The weights of one step of order k from gamma[0] to gammaT, h = gammaT − gamma[0]. */
type Weights = (gamma: number[], gammaT: number, h: number, k: number) => number[];

function* adamsBashforth(
  input: SolveInput,
  name: string,
  lowerOrderFinalDefault: boolean,
  weights: Weights,
): SolverRun {
  validateInput(input);
  const order = orderOption(input, 1, 4, 4);
  noVariant(input, name);
  const lowerOrderFinal = lowerOrderFinalOption(input, lowerOrderFinalDefault);
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
    const gammaT = schedule.gamma(grid[n + 1]);
    const w = weights(gamma, gammaT, gammaT - gamma[0], k);
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

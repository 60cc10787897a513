/**
 * DPM-Solver++(2M) and (3M) (Lu et al. 2022): multistep exponential integrators in λ = −log γ with
 * data prediction D = x̂₀ = x̄ − γ ε. In x̄ the ODE is dx̄/dλ = D − x̄, whose exact solution over a step
 * h = λ_t − λ_s is
 *
 *     x̄_t = e^{−h} x̄_s + Σ_i h^{i+1} φ_{i+1}(−h) D⁽ⁱ⁾(λ_s),    h φ₁(−h) = 1 − e^{−h},
 *
 * with the λ-derivatives D⁽ⁱ⁾ estimated from the history of x̂₀ (one evaluation per step):
 *
 *     order 1 (DDIM):  x̄_t = e^{−h} x̄_s + (1 − e^{−h}) D_s
 *     order 2 (2M):    x̄_t = e^{−h} x̄_s + (1 − e^{−h}) [(1 + 1/(2r)) D_s − 1/(2r) D_{s−1}],  r = h₀/h
 *                      (the paper's Algorithm 2)
 *     order 3 (3M):    x̄_t = e^{−h} x̄_s + (1 − e^{−h}) D_s + h² φ₂(−h) D′ + h³ φ₃(−h) D″, with D′, D″
 *                      the derivatives at λ_s of the quadratic through the last three (λ_j, D_j).
 *
 * The 3M update integrates that quadratic exactly. (A form seen in several codebases weights the
 * second divided difference by half of this, which makes the step only second order; the order
 * tests check that this one is third order.)
 *
 * Warm-up with lower orders from the first step; with fewer than 15 steps the final steps lower their
 * order too (min(order, steps left)), unless `lowerOrderFinal` is false. Encoding works unchanged
 * (h < 0 on an increasing grid).
 */
import { dataPrediction, evalEps, finish, toBar, validateInput } from "./common.ts";
import { fixedOrder, lowerOrderFinalOption, noVariant, phi, stepOrder } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";
import { exp, expm1 } from "../math.ts";

export function dpmpp2m(input: SolveInput): SolverRun {
  return dpmpp(input, 2, "dpmpp-2m");
}

export function dpmpp3m(input: SolveInput): SolverRun {
  return dpmpp(input, 3, "dpmpp-3m");
}

function* dpmpp(input: SolveInput, order: number, name: string): SolverRun {
  validateInput(input);
  fixedOrder(input, name, order);
  noVariant(input, name);
  const lowerOrderFinal = lowerOrderFinalOption(input);
  const { schedule, grid } = input;
  const N = grid.length - 1;
  const xbar = toBar(input.x, schedule.alpha(grid[0]));
  // Newest first: D[j] = x̂₀ at λ[j] = λ_{n−j}.
  const D: Float64Array[] = [], lambda: number[] = [];
  for (let n = 0; n < N; n++) {
    const eps: Tensor = n === 0 && input.afs ? input.x : yield* evalEps(input, xbar, grid[n], n);
    D.unshift(dataPrediction(xbar, schedule.gamma(grid[n]), eps));
    lambda.unshift(schedule.lambda(grid[n]));
    D.length = lambda.length = Math.min(D.length, order);
    const k = stepOrder(order, n, N, lowerOrderFinal);
    dpmppStep(xbar, D, lambda, schedule.lambda(grid[n + 1]), k);
  }
  return yield* finish(input, xbar);
}

/** One step of order k from λ[0] to λT, in place on x̄ (see the module comment). */
function dpmppStep(
  xbar: Float64Array,
  D: Float64Array[],
  lambda: number[],
  lambdaT: number,
  k: number,
): void {
  const h = lambdaT - lambda[0];
  const decay = exp(-h), gain = -expm1(-h);
  if (k === 1) {
    for (let i = 0; i < xbar.length; i++) xbar[i] = decay * xbar[i] + gain * D[0][i];
    return;
  }
  const h0 = lambda[0] - lambda[1];
  if (k === 2) {
    const c = (gain * h) / (2 * h0);
    for (let i = 0; i < xbar.length; i++) {
      xbar[i] = decay * xbar[i] + gain * D[0][i] + c * (D[0][i] - D[1][i]);
    }
    return;
  }
  const h1 = lambda[1] - lambda[2];
  const c1 = h * h * phi(2, -h), c2 = h * h * h * phi(3, -h);
  for (let i = 0; i < xbar.length; i++) {
    const a0 = (D[0][i] - D[1][i]) / h0, a1 = (D[1][i] - D[2][i]) / h1; // first divided differences
    const b = (a0 - a1) / (h0 + h1); // second divided difference
    xbar[i] = decay * xbar[i] + gain * D[0][i] + c1 * (a0 + h0 * b) + c2 * (2 * b);
  }
}

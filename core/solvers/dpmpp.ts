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
 *     order 3 (3M):    x̄_t = e^{−h} x̄_s + (1 − e^{−h}) D_s + h² φ₂(−h) (a₀ + h₀ b) + c h³ φ₃(−h) b,
 *                      h₀, h₁ the two previous steps, a₀ = (D_s − D_{s−1})/h₀ and b the second divided
 *                      difference of the last three (λ_j, D_j).
 *
 * a₀ + h₀ b is the derivative at λ_s of the quadratic through the last three points and 2b its second
 * derivative. The 3M update has two variants (`variant`):
 *
 * - "reference" (default), c = 1: the update of DPM-Solver++(3M) as its authors' code writes it (the
 *   multistep third-order update with data prediction), and as diffusers' DPMSolverMultistepScheduler
 *   (solver_order 3, algorithm_type dpmsolver++) and k-diffusion's DPM++ 3M SDE sampler at eta = 0 do,
 *   term for term: with r₀ = h₀/h, r₁ = h₁/h, their D1 = D1_0 + r₀/(r₀ + r₁) (D1_0 − D1_1) is
 *   h (a₀ + h₀ b), their D2 = (D1_0 − D1_1)/(r₀ + r₁) is h² b, and their φ_2 = expm1(−h)/h + 1 and
 *   −φ_3 = ½ − φ_2/h are h φ₂(−h) and h φ₃(−h). This weights the second derivative by half of its
 *   Taylor coefficient, so the local error is O(h³) and the method is second order overall
 *   (tests/core/solvers_order.test.ts measures it; docs/benchmarks.md lists the measured orders).
 *   The order-2 warm-up step is the authors' and diffusers' (the 2M update above); k-diffusion's takes
 *   h φ₂(−h) in place of (1 − e^{−h})/2 there and never lowers the order of the final steps.
 * - "quadratic-exact", c = 2: integrates the quadratic exactly, third order.
 *
 * The φ-functions come from their series for small h (multistep.ts), where the reference's closed
 * forms cancel; the two agree to rounding elsewhere (tests/core/reference_solvers.test.ts).
 *
 * Warm-up with lower orders from the first step; with fewer than 15 steps the final steps lower their
 * order too (min(order, steps left)), unless `lowerOrderFinal` is false: diffusers' rule (the authors'
 * code lowers them below 10 steps, so from 10 to 14 steps the two differ there). Encoding works unchanged
 * (h < 0 on an increasing grid).
 */
import { dataPrediction, evalEps, finish, toBar, validateInput } from "./common.ts";
import { fixedOrder, lowerOrderFinalOption, noVariant, phi, stepOrder, variantOption } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";
import { exp, expm1 } from "../math.ts";

export function dpmpp2m(input: SolveInput): SolverRun {
  return dpmpp(input, 2, "dpmpp-2m");
}

export function dpmpp3m(input: SolveInput): SolverRun {
  return dpmpp(input, 3, "dpmpp-3m");
}

/** The forms of the 3M update (see the module comment); the first is the default. */
export const DPMPP_3M_VARIANTS = ["reference", "quadratic-exact"] as const;
export type Dpmpp3mVariant = typeof DPMPP_3M_VARIANTS[number];

function* dpmpp(input: SolveInput, order: number, name: string): SolverRun {
  validateInput(input);
  fixedOrder(input, name, order);
  let variant: Dpmpp3mVariant = "reference";
  if (order === 3) variant = variantOption(input, name, DPMPP_3M_VARIANTS, "reference");
  else noVariant(input, name);
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
    dpmppStep(xbar, D, lambda, schedule.lambda(grid[n + 1]), k, variant);
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
  variant: Dpmpp3mVariant,
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
  const c1 = h * h * phi(2, -h);
  const c2 = h * h * h * phi(3, -h) * (variant === "reference" ? 1 : 2);
  for (let i = 0; i < xbar.length; i++) {
    const a0 = (D[0][i] - D[1][i]) / h0, a1 = (D[1][i] - D[2][i]) / h1; // first divided differences
    const b = (a0 - a1) / (h0 + h1); // second divided difference
    xbar[i] = decay * xbar[i] + gain * D[0][i] + c1 * (a0 + h0 * b) + c2 * b;
  }
}

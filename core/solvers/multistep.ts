/**
 * Pieces shared by the multistep solvers (dpmpp, unipc, ipndm, ipndm-v): option checks, the order each step
 * runs at, and the φ-functions of exponential integrators.
 */
import type { SolveInput } from "./types.ts";
import { SolverError } from "./types.ts";
import { exp } from "../math.ts";

/** Below this many steps, multistep solvers lower the order of their final steps (docs/contracts.md §1). */
export const LOWER_ORDER_FINAL_BELOW = 15;

/** The `order` option, an integer in [min, max], or `fallback` when it is not given. */
export function orderOption(input: SolveInput, min: number, max: number, fallback: number): number {
  const k = input.order ?? fallback;
  if (!(Number.isInteger(k) && k >= min && k <= max)) {
    throw new SolverError(
      "order",
      `must be an integer from ${min} to ${max}, got ${JSON.stringify(input.order)}`,
    );
  }
  return k;
}

/** Rejects `order` unless it is absent or equals the solver's one order. */
export function fixedOrder(input: SolveInput, name: string, order: number): void {
  if (input.order !== undefined && input.order !== order) {
    throw new SolverError(
      "order",
      `${name} has the single order ${order}, got ${JSON.stringify(input.order)}`,
    );
  }
}

/** Rejects `variant` for solvers that have none (only unipc and dpmpp-3m have variants). */
export function noVariant(input: SolveInput, name: string): void {
  if (input.variant !== undefined) {
    throw new SolverError("variant", `only applies to unipc and dpmpp-3m, not ${name}`);
  }
}

/** The `variant` option, one of `values`, or `fallback` when it is not given. */
export function variantOption<V extends string>(
  input: SolveInput,
  name: string,
  values: readonly V[],
  fallback: V,
): V {
  const v = input.variant ?? fallback;
  if (!(values as readonly string[]).includes(v)) {
    throw new SolverError(
      "variant",
      `${name} has the variants ${values.join(" and ")}, got ${JSON.stringify(input.variant)}`,
    );
  }
  return v as V;
}

/** The `lowerOrderFinal` option (default `fallback`, true unless the solver says otherwise). */
export function lowerOrderFinalOption(input: SolveInput, fallback = true): boolean {
  const v = input.lowerOrderFinal ?? fallback;
  if (typeof v !== "boolean") throw new SolverError("lowerOrderFinal", "must be true or false");
  return v;
}

/**
 * The order of step n (0-based) of N: warm-up from the first step, min(order, n + 1), since step n
 * has n + 1 evaluations behind it; with fewer than 15 steps and `lowerOrderFinal` also
 * min(order, N − n) on the final steps (as DPM-Solver's lower_order_final). With 15 steps or more
 * every step after the warm-up runs at full order.
 */
export function stepOrder(order: number, n: number, N: number, lowerOrderFinal: boolean): number {
  const warm = Math.min(order, n + 1);
  return lowerOrderFinal && N < LOWER_ORDER_FINAL_BELOW ? Math.min(warm, N - n) : warm;
}

/**
 * φ_k(z) = Σ_{j≥0} z^j/(j+k)!, so φ_0 = e^z and φ_{k+1}(z) = (φ_k(z) − 1/k!)/z. The series is used for
 * |z| < 1, where the recursion would cancel. The exact solution of dx̄/dλ = −x̄ + D(λ) over a step h in λ
 * with D(λ_s + τ) = Σ_i τ^i D⁽ⁱ⁾/i! is x̄_t = e^{−h} x̄_s + Σ_i h^{i+1} φ_{i+1}(−h) D⁽ⁱ⁾.
 */
export function phi(k: number, z: number): number {
  if (Math.abs(z) < 1) {
    let term = 1, sum = 0;
    for (let j = 1; j <= k; j++) term /= j;
    for (let j = 0; j < 30 && term !== 0; j++) {
      sum += term;
      term *= z / (j + k + 1);
    }
    return sum;
  }
  let f = exp(z), factorial = 1;
  for (let j = 0; j < k; j++) {
    f = (f - 1 / factorial) / z;
    factorial *= j + 1;
  }
  return f;
}

/**
 * GENIE: the second-order truncated Taylor method (TTM2) on dx̄/dγ = ε (docs/method.md §3):
 *
 *     x̄_{n+1} = x̄_n + h_n ε_n + ½ h_n² k_n,   k_n ≈ dε/dγ along the ODE.
 *
 * k comes from the model's own derivative ("head", or "exact" for analytic models), from a JVP
 * along the ODE's tangent ("jvp"), or from a finite difference of ε along the ODE ("fd").
 */
import { evalEps, finish, request, toBar, validateInput } from "./common.ts";
import { fixedOrder, noVariant } from "./multistep.ts";
import type { EvalRequest, EvalResult, SolveInput, SolverRun, Tensor } from "./types.ts";
import { SolverError } from "./types.ts";
import type { Schedule } from "../schedule.ts";

export function* genie(input: SolveInput): SolverRun {
  validateInput(input);
  fixedOrder(input, "genie", 2);
  noVariant(input, "genie");
  const source = input.derivative ?? "head";
  if (!["head", "jvp", "fd", "exact"].includes(source)) {
    throw new SolverError("derivative", `unknown derivative source ${JSON.stringify(source)}`);
  }
  const { schedule, grid } = input;
  const xbar = toBar(input.x, schedule.alpha(grid[0]));
  for (let n = 0; n < grid.length - 1; n++) {
    const h = schedule.gamma(grid[n + 1]) - schedule.gamma(grid[n]);
    if (n === 0 && input.afs) {
      // AFS: ε_0 := x_T and k_0 := 0, so the first step is a DDIM step at no cost.
      for (let i = 0; i < xbar.length; i++) xbar[i] = xbar[i] + h * input.x[i];
      continue;
    }
    const { eps, k } = yield* epsAndDerivative(input, xbar, grid[n], h, n);
    taylorStep(xbar, h, eps, k);
  }
  return yield* finish(input, xbar);
}

/** x̄ ← x̄ + h ε + ½ h² k, in place. */
function taylorStep(xbar: Float64Array, h: number, eps: Tensor, k: Tensor): void {
  for (let i = 0; i < xbar.length; i++) xbar[i] = (xbar[i] + h * eps[i]) + 0.5 * h * h * k[i];
}

/** ε_n and k_n ≈ dε/dγ at x̄ and time t from the configured derivative source. */
function* epsAndDerivative(
  input: SolveInput,
  xbar: Float64Array,
  t: number,
  h: number,
  step: number,
): Generator<EvalRequest, { eps: Tensor; k: Tensor }, EvalResult> {
  const source = input.derivative ?? "head";
  const { schedule } = input;
  if (source === "fd") {
    // k ≈ (ε(x̄ + δε, γ + δ) − ε(x̄, γ))/δ with δ = h/2: one more evaluation on the ODE's path.
    const eps = yield* evalEps(input, xbar, t, step);
    const delta = 0.5 * h;
    const gShift = schedule.gamma(t) + delta;
    const shifted = new Float64Array(xbar.length);
    for (let i = 0; i < xbar.length; i++) shifted[i] = xbar[i] + delta * eps[i];
    const epsShift = yield* evalEps(input, shifted, schedule.tFromGamma(gShift), step);
    const k = new Float64Array(xbar.length);
    for (let i = 0; i < xbar.length; i++) k[i] = (epsShift[i] - eps[i]) / delta;
    return { eps, k };
  }
  if (source === "jvp" && input.odeJvp && !input.tangentDerivative) {
    // one call: ε and its JVP along dx = α ε − γ α² x, dt = dt/dγ, the tangent made from that ε
    const r = yield {
      ...request(input, xbar, t, step, "eps+deriv"),
      odeTangent: odeTangentCoefficients(schedule, t, input.batch),
    };
    return { eps: r.eps, k: requireDeriv(r) };
  }
  if (source === "jvp" || input.tangentDerivative) {
    const first = yield request(input, xbar, t, step);
    const tangent = odeTangent(schedule, xbar, first.eps, t, input.batch);
    const second = yield { ...request(input, xbar, t, step, "eps+deriv"), tangent };
    return { eps: first.eps, k: requireDeriv(second) };
  }
  const r = yield request(input, xbar, t, step, "eps+deriv");
  return { eps: r.eps, k: requireDeriv(r) };
}

/**
 * The tangent of the probability-flow ODE in (x, t) per unit γ, with x = α x̄ and α = 1/sqrt(1+γ²):
 *
 *     dx/dγ = ε/sqrt(1+γ²) − γ x/(1+γ²),   dt/dγ.
 */
export function odeTangent(
  schedule: Schedule,
  xbar: Float64Array,
  eps: Tensor,
  t: number,
  batch: number,
): { x: Float64Array; t: Float64Array } {
  const c = odeTangentCoefficients(schedule, t, batch), alpha = schedule.alpha(t);
  const dx = new Float64Array(xbar.length);
  for (let i = 0; i < xbar.length; i++) dx[i] = c.eps[0] * eps[i] + c.x[0] * (alpha * xbar[i]);
  return { x: dx, t: c.t };
}

/**
 * {@link odeTangent} as per-sample coefficients of ε and of x (x = α x̄, the request's point), for a
 * model that makes the tangent from its own ε: dx = α ε − γ α² x, dt = dt/dγ.
 */
export function odeTangentCoefficients(
  schedule: Schedule,
  t: number,
  batch: number,
): { eps: Float64Array; x: Float64Array; t: Float64Array } {
  const g = schedule.gamma(t), alpha = schedule.alpha(t);
  return {
    eps: new Float64Array(batch).fill(alpha),
    x: new Float64Array(batch).fill(-g * alpha * alpha),
    t: new Float64Array(batch).fill(schedule.dtDgamma(t)),
  };
}

function requireDeriv(r: EvalResult): Tensor {
  if (!r.deriv) {
    throw new SolverError("deriv", "the model answered an eps+deriv request without a derivative");
  }
  return r.deriv;
}

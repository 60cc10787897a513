/**
 * Solvers are coroutines over model evaluations (docs/architecture.md). A solver never calls a model: it
 * yields {@link EvalRequest}s and receives {@link EvalResult}s. Whoever drives it decides how an
 * evaluation happens (an analytic model, one ONNX call, or a batch merged across requests).
 *
 * Tensors are flat row-major arrays of `batch × dim` numbers. Solver state is kept in float64;
 * results may come back as float32 (from a network) or float64 (from an analytic model).
 */
import type { Schedule } from "../schedule.ts";

export type Tensor = Float32Array | Float64Array;

/** What a solver asks of the model at one point. */
export interface EvalRequest {
  /** Points in VP x-space (x = α_t x̄), `batch × dim`. */
  x: Float64Array;
  /** Per-sample times, length `batch`. */
  t: Float64Array;
  /**
   * "eps": ε_θ(x, t) only. "eps+deriv": ε and a derivative:
   * - without `tangent`, the model's own estimate of the total derivative dε/dγ along its
   *   probability-flow ODE (the distilled head, or the closed form of an analytic model);
   * - with `tangent`, the directional derivative (∂ε/∂x)·tangent.x + (∂ε/∂t)·tangent.t (a JVP).
   */
  want: "eps" | "eps+deriv";
  tangent?: { x: Float64Array; t: Float64Array };
  /**
   * With "eps+deriv" and no `tangent`: the JVP along a tangent made from this very evaluation's ε, per
   * sample b: dx = eps[b]·ε(x, t) + x[b]·x, dt = t[b] (coefficients, `batch` numbers each). The
   * probability-flow ODE's own tangent has this form, so a model that can answer it returns ε and its
   * exact derivative along the ODE from ONE evaluation ({@link SolveInput.odeJvp}); it counts as one NFE.
   */
  odeTangent?: { eps: Float64Array; x: Float64Array; t: Float64Array };
  /** Class labels per sample (set by the guidance wrapper; models without classes ignore it). */
  classes?: Int32Array;
  /** Index of the solver step this evaluation belongs to (0-based) and the number of steps. */
  step: number;
  steps: number;
}

export interface EvalResult {
  eps: Tensor;
  deriv?: Tensor;
}

/** A running solver: yields evaluation requests and returns the final x (VP scale) or x̂₀. */
export type SolverRun = Generator<EvalRequest, Float64Array, EvalResult>;

export const DERIVATIVE_SOURCES = ["head", "jvp", "fd", "exact"] as const;
/** Where GENIE's second-order term k ≈ dε/dγ comes from (docs/method.md §3). */
export type DerivativeSource = typeof DERIVATIVE_SOURCES[number];

/** Every `variant` any solver accepts; each solver accepts its own (`getSolver(name).variants`). */
export const SOLVER_VARIANTS = ["bh1", "bh2", "reference", "quadratic-exact"] as const;
export type SolverVariant = typeof SOLVER_VARIANTS[number];

/** Everything a solver needs to integrate the ODE over a grid. */
export interface SolveInput {
  schedule: Schedule;
  /** Times t_0 … t_N; decreasing for sampling, increasing for encoding. */
  grid: Float64Array;
  /** x at grid[0] in VP scale, `batch × dim` (not modified). */
  x: Float64Array;
  batch: number;
  dim: number;
  /** Analytical first step: ε(x_T, t_max) := x_T (sampling only). */
  afs?: boolean;
  /** Final denoising x̂₀ = x̄_N − γ_N ε(x_N, t_N) (+1 NFE; sampling only). */
  denoise?: boolean;
  /** GENIE's derivative source (default "head"). */
  derivative?: DerivativeSource;
  /**
   * Send JVP requests along the solver's own tangent even for sources that could answer without one
   * ("exact"), so that a guidance wrapper obtains the exact guided derivative. Default false.
   */
  tangentDerivative?: boolean;
  /**
   * The model answers {@link EvalRequest.odeTangent} (ε and its JVP along the ODE's tangent in one call):
   * GENIE with the "jvp" source then asks for both at once instead of an ε call and a JVP call per step.
   * Ignored with `tangentDerivative` (a guided tangent mixes two branches' ε). Default false.
   */
  odeJvp?: boolean;
  /** Order of solvers that have several (unipc predictor 1–3, ipndm and ipndm-v 1–4). */
  order?: number;
  /**
   * The form of solvers that have several (docs/contracts.md §1): UniPC's B(h), "bh1" (default) or
   * "bh2"; DPM-Solver++(3M)'s update, "reference" (default) or "quadratic-exact".
   */
  variant?: SolverVariant;
  /**
   * Lower the order of the final steps when there are fewer than 15 steps (default true; false for
   * ipndm, whose published form has no such rule).
   */
  lowerOrderFinal?: boolean;
}

export type SolverFn = (input: SolveInput) => SolverRun;

/** A solver rejected its options; `field` names the offending one. */
export class SolverError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "SolverError";
  }
}

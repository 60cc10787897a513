/**
 * Class labels and classifier-free guidance (docs/method.md §6) as wrappers around a running solver.
 *
 * A wrapper is itself a {@link SolverRun}: it forwards every request of the inner solver to whoever
 * drives it, so solvers stay unaware of classes and drivers stay unaware of guidance.
 *
 * Guidance with scale w turns each request into ONE request of twice the batch — the conditional
 * half with the samples' classes, the unconditional half with the null class, x, t and any tangent
 * duplicated — and hands the inner solver
 *
 *     ε̃ = (1 + w) ε_c − w ε_u,   k̃ = (1 + w) k_c − w k_u,
 *
 * computed as ε_c + w (ε_c − ε_u) (the same number in exact arithmetic; in floating point it returns
 * ε_c bit for bit when w = 0 or ε_c = ε_u).
 *
 * Exactness of k̃: with a tangent, k_c and k_u are the JVPs of the two branches along the SAME
 * tangent, which the solver computed from ε̃; a JVP is linear, so k̃ is the exact JVP of ε̃, i.e. the
 * exact total derivative along the guided ODE. Without a tangent, k_c and k_u are each model's
 * derivative along its own ODE (conditional and unconditional), and k̃ only approximates the guided
 * derivative (first-order error in the step size overall). {@link guidedSolveInput} configures GENIE
 * for the exact version wherever the derivative source can answer JVPs.
 */
import { float64Array } from "./solvers/arrays.ts";
import type { EvalRequest, EvalResult, SolveInput, SolverRun, Tensor } from "./solvers/types.ts";

/** Invalid guidance or class options; `field` names the offending one. */
export class GuidanceError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "GuidanceError";
  }
}

export interface GuidanceOptions {
  /** Class label per sample of the inner solver's batch. */
  classes: Int32Array;
  /** The label of the unconditional model (e.g. the number of classes). */
  nullClass: number;
  /** Guidance scale w (0 = purely conditional). */
  scale: number;
}

function checkClasses(classes: Int32Array, batch: number): void {
  if (!(classes instanceof Int32Array)) throw new GuidanceError("classes", "must be an Int32Array");
  if (classes.length !== batch) {
    throw new GuidanceError("classes", `has ${classes.length} labels for a batch of ${batch}`);
  }
}

/** Forwards `inner`'s requests through `map`, and closes `inner` if the outer run is closed early. */
function* relay(
  inner: SolverRun,
  map: (req: EvalRequest) => Generator<EvalRequest, EvalResult, EvalResult>,
): SolverRun {
  let done = false;
  try {
    let next = inner.next();
    while (!next.done) next = inner.next(yield* map(next.value));
    done = true;
    return next.value;
  } finally {
    if (!done) inner.return(new Float64Array(0));
  }
}

/** Attaches class labels to every request of `run` (a class-conditional sampler, no guidance). */
export function withClasses(run: SolverRun, classes: Int32Array): SolverRun {
  return relay(run, function* (req) {
    checkClasses(classes, req.t.length);
    return yield { ...req, classes };
  });
}

function twice(a: Float64Array): Float64Array {
  const out = float64Array(2 * a.length);
  out.set(a);
  out.set(a, a.length);
  return out;
}

/** c + w (c − u) with c the first and u the second half of `both`. */
function guide(both: Tensor, n: number, w: number): Float64Array {
  const out = float64Array(n);
  for (let i = 0; i < n; i++) out[i] = both[i] + w * (both[i] - both[n + i]);
  return out;
}

/**
 * Classifier-free guidance around `run`: one doubled request per inner request (conditional half
 * first), answered with ε̃ = (1 + w) ε_c − w ε_u and k̃ = (1 + w) k_c − w k_u. Drivers count the
 * doubled request as one evaluation, as it is one batched network call.
 */
export function withGuidance(run: SolverRun, opts: GuidanceOptions): SolverRun {
  const { classes, nullClass, scale } = opts;
  if (!Number.isInteger(nullClass)) throw new GuidanceError("nullClass", "must be an integer label");
  if (!Number.isFinite(scale)) throw new GuidanceError("scale", "must be a finite number");
  // The labels of the doubled batch, the same for every request (checkClasses fixes the batch).
  let labels: Int32Array | undefined;
  return relay(run, function* (req) {
    const batch = req.t.length, n = req.x.length;
    checkClasses(classes, batch);
    if (req.odeTangent) {
      // each branch would make the tangent from its own ε, not from the guided ε̃
      throw new GuidanceError("odeTangent", "a guided run needs the JVP along the solver's own tangent");
    }
    if (!labels) {
      labels = new Int32Array(2 * batch).fill(nullClass);
      labels.set(classes);
    }
    const doubled: EvalRequest = {
      ...req,
      x: twice(req.x),
      t: twice(req.t),
      classes: labels,
      tangent: req.tangent && { x: twice(req.tangent.x), t: twice(req.tangent.t) },
    };
    if (!req.tangent) delete doubled.tangent;
    const res = yield doubled;
    if (res.eps.length !== 2 * n) {
      throw new GuidanceError("eps", `model returned ${res.eps.length} numbers, expected ${2 * n}`);
    }
    const out: EvalResult = { eps: guide(res.eps, n, scale) };
    if (req.want === "eps+deriv" && res.deriv) out.deriv = guide(res.deriv, n, scale);
    return out;
  });
}

export interface ConditioningOptions {
  /** Class label per sample; omit for an unconditional run. */
  classes?: Int32Array;
  /** The null (unconditional) label; without it there is no guidance. */
  nullClass?: number;
  /** Guidance scale w (default 0). */
  scale?: number;
}

/**
 * The right wrapper for a request's settings: the run itself without classes, {@link withClasses}
 * when w = 0 (no doubled batch), {@link withGuidance} otherwise.
 */
export function withConditioning(run: SolverRun, opts: ConditioningOptions): SolverRun {
  const scale = opts.scale ?? 0;
  if (opts.classes === undefined) {
    if (scale !== 0) throw new GuidanceError("guidance", "classifier-free guidance needs class labels");
    return run;
  }
  if (scale === 0) return withClasses(run, opts.classes);
  if (opts.nullClass === undefined) {
    throw new GuidanceError("guidance", "the model has no null class, so it cannot be guided");
  }
  return withGuidance(run, { classes: opts.classes, nullClass: opts.nullClass, scale });
}

/**
 * GENIE's settings under guidance: with w ≠ 0 and a derivative source that can answer JVPs ("jvp",
 * or "exact" on analytic models), ask for the derivative along the solver's own tangent so that
 * {@link withGuidance} returns the exact guided derivative. "head" and "fd" are left as they are
 * ("fd" differences ε̃ along the guided ODE already; a head only gives the approximate k̃).
 */
export function guidedSolveInput(input: SolveInput, scale: number): SolveInput {
  const source = input.derivative ?? "head";
  if (scale !== 0 && (source === "jvp" || source === "exact")) {
    return { ...input, tangentDerivative: true };
  }
  return input;
}

/**
 * Prediction types (docs/method.md §2, docs/contracts.md §4). A network predicts ε, x₀ or v; the solvers
 * always work with ε. With x = α x₀ + σ ε every kind is affine in the raw output f:
 *
 *     ε = a(t) f + b(t) x
 *     eps:  a = 1,     b = 0
 *     x0:   a = −α/σ,  b = 1/σ        (ε = (x − α x̂₀)/σ = (x̄ − x̂₀)/γ)
 *     v:    a = α,     b = σ          (ε = α v + σ x)
 *
 * and a derivative of f along a tangent (dx, dt) maps to the derivative of ε by the product rule:
 *
 *     dε = a'(t) dt f + a df + b'(t) dt x + b dx,
 *
 * with α' = −½ B' α, σ' = ½ B' α²/σ and B' = dB/dt = 2γ/((1 + γ²) dt/dγ).
 */
import type { Evaluator } from "./solvers/drive.ts";
import type { EvalRequest, EvalResult, Tensor } from "./solvers/types.ts";
import type { Schedule } from "./schedule.ts";

export const PREDICTION_KINDS = ["eps", "x0", "v"] as const;
/** What a network's output means: the noise ε, the clean data x₀, or the velocity v = α ε − σ x₀. */
export type PredictionKind = typeof PREDICTION_KINDS[number];

/** A conversion that cannot be done; `field` names the offending option or request part. */
export class PredictionError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "PredictionError";
  }
}

/** ε = a f + b x at one time, and the t-derivatives a', b'. */
export interface PredictionCoefficients {
  a: number;
  b: number;
  /** da/dt */
  da: number;
  /** db/dt */
  db: number;
}

/** The coefficients of ε = a(t) f + b(t) x for a prediction kind at time t. */
export function predictionCoefficients(
  kind: PredictionKind,
  schedule: Schedule,
  t: number,
): PredictionCoefficients {
  if (kind === "eps") return { a: 1, b: 0, da: 0, db: 0 };
  const alpha = schedule.alpha(t), sigma = schedule.sigma(t), gamma = schedule.gamma(t);
  const dB = (2 * gamma) / ((1 + gamma * gamma) * schedule.dtDgamma(t));
  const dAlpha = -0.5 * dB * alpha;
  const dSigma = (0.5 * dB * alpha * alpha) / sigma;
  switch (kind) {
    case "x0":
      // a = −α/σ, b = 1/σ: a' = −(α'σ − ασ')/σ², b' = −σ'/σ².
      return {
        a: -alpha / sigma,
        b: 1 / sigma,
        da: -(dAlpha * sigma - alpha * dSigma) / (sigma * sigma),
        db: -dSigma / (sigma * sigma),
      };
    case "v":
      return { a: alpha, b: sigma, da: dAlpha, db: dSigma };
    default:
      throw new PredictionError("prediction", `unknown prediction kind ${JSON.stringify(kind)}`);
  }
}

/** diffusers' names of the prediction kinds (its schedulers' `prediction_type`). */
export const PREDICTION_ALIASES: Readonly<Record<string, PredictionKind>> = {
  epsilon: "eps",
  sample: "x0",
  v_prediction: "v",
};

/**
 * Checks a prediction kind given as a string (e.g. from a model manifest); diffusers' names
 * ({@link PREDICTION_ALIASES}) are accepted and mapped to ours.
 */
export function parsePredictionKind(kind: unknown): PredictionKind {
  if (typeof kind === "string" && (PREDICTION_KINDS as readonly string[]).includes(kind)) {
    return kind as PredictionKind;
  }
  if (typeof kind === "string" && Object.hasOwn(PREDICTION_ALIASES, kind)) return PREDICTION_ALIASES[kind];
  throw new PredictionError(
    "prediction",
    `unknown prediction kind ${JSON.stringify(kind)} (expected ${PREDICTION_KINDS.join(", ")}, or ` +
      `diffusers' ${Object.keys(PREDICTION_ALIASES).join(", ")})`,
  );
}

/** ε from a raw output f at points x (`batch × dim`) with per-sample times t. */
export function epsFromPrediction(
  kind: PredictionKind,
  schedule: Schedule,
  f: Tensor,
  x: Float64Array,
  t: Float64Array,
): Float64Array {
  const out = new Float64Array(x.length);
  const dim = x.length / t.length;
  for (let s = 0; s < t.length; s++) {
    const { a, b } = predictionCoefficients(kind, schedule, t[s]);
    for (let i = s * dim; i < (s + 1) * dim; i++) out[i] = a * f[i] + b * x[i];
  }
  return out;
}

/**
 * The derivative of ε along a tangent (dx, dt) from the raw output f and its derivative df along the
 * same tangent: dε = a' dt f + a df + b' dt x + b dx.
 */
export function epsDerivativeFromPrediction(
  kind: PredictionKind,
  schedule: Schedule,
  f: Tensor,
  df: Tensor,
  x: Float64Array,
  t: Float64Array,
  tangent: { x: Float64Array; t: Float64Array },
): Float64Array {
  const out = new Float64Array(x.length);
  const dim = x.length / t.length;
  for (let s = 0; s < t.length; s++) {
    const { a, b, da, db } = predictionCoefficients(kind, schedule, t[s]);
    const dt = tangent.t[s];
    for (let i = s * dim; i < (s + 1) * dim; i++) {
      out[i] = da * dt * f[i] + a * df[i] + db * dt * x[i] + b * tangent.x[i];
    }
  }
  return out;
}

export interface WrapPredictionOptions {
  /**
   * What the raw model's derivative means when a request has no tangent (its own total derivative
   * along the probability-flow ODE, e.g. a distilled head):
   * - "eps": it is already dε/dγ and is passed through;
   * - "raw": it is df/dγ of the raw output along the ODE and is converted by the product rule along
   *   the ODE's tangent (dx/dγ, dt/dγ);
   * - undefined (default): such requests are refused for x0 and v models, since a raw derivative of
   *   unknown meaning cannot be converted.
   * Requests with a tangent (JVPs) are always converted; ε models pass everything through.
   */
  derivativeSpace?: "eps" | "raw";
}

/**
 * An evaluator in ε terms over a model that predicts `kind`. `raw` answers the same requests with the
 * raw output in `eps` and, for "eps+deriv", the raw output's derivative in `deriv`.
 */
export function wrapPrediction(
  kind: PredictionKind,
  raw: Evaluator,
  schedule: Schedule,
  opts: WrapPredictionOptions = {},
): Evaluator {
  parsePredictionKind(kind);
  if (kind === "eps") return raw;
  const space = opts.derivativeSpace;
  if (space !== undefined && space !== "eps" && space !== "raw") {
    throw new PredictionError("derivativeSpace", `must be "eps" or "raw", got ${JSON.stringify(space)}`);
  }
  return (req: EvalRequest): EvalResult => {
    if (req.odeTangent) {
      throw new PredictionError(
        "odeTangent",
        `a ${kind}-prediction model cannot make the ODE's tangent from its output in one call; ask for ` +
          `ε and then the JVP along a given tangent`,
      );
    }
    if (req.want === "eps+deriv" && !req.tangent && space === undefined) {
      throw new PredictionError(
        "deriv",
        `a ${kind}-prediction model cannot answer a derivative request without a tangent unless its ` +
          `derivative is declared as "eps" or "raw" (derivativeSpace); use the jvp derivative source`,
      );
    }
    const res = raw(req);
    const eps = epsFromPrediction(kind, schedule, res.eps, req.x, req.t);
    if (req.want !== "eps+deriv") return { eps };
    if (!res.deriv) {
      throw new PredictionError("deriv", "the raw model answered an eps+deriv request without a derivative");
    }
    if (req.tangent) {
      return {
        eps,
        deriv: epsDerivativeFromPrediction(kind, schedule, res.eps, res.deriv, req.x, req.t, req.tangent),
      };
    }
    if (space === "eps") return { eps, deriv: res.deriv };
    // df/dγ along the ODE: the tangent per unit γ is (dx/dγ, dt/dγ), built from this ε.
    return {
      eps,
      deriv: epsDerivativeFromPrediction(
        kind,
        schedule,
        res.eps,
        res.deriv,
        req.x,
        req.t,
        odeTangentPerSample(schedule, req.x, eps, req.t),
      ),
    };
  };
}

/**
 * The probability-flow ODE's tangent per unit γ at points x (VP scale) with per-sample times:
 * dx/dγ = α ε − γ α² x (x = α x̄, dx̄/dγ = ε, dα/dγ = −γ α³) and dt/dγ.
 */
function odeTangentPerSample(
  schedule: Schedule,
  x: Float64Array,
  eps: Float64Array,
  t: Float64Array,
): { x: Float64Array; t: Float64Array } {
  const dim = x.length / t.length;
  const out = { x: new Float64Array(x.length), t: new Float64Array(t.length) };
  for (let s = 0; s < t.length; s++) {
    const alpha = schedule.alpha(t[s]), gamma = schedule.gamma(t[s]);
    for (let i = s * dim; i < (s + 1) * dim; i++) out.x[i] = alpha * eps[i] - gamma * alpha * alpha * x[i];
    out.t[s] = schedule.dtDgamma(t[s]);
  }
  return out;
}

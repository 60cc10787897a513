/**
 * Noise schedules of the variance-preserving family, x_t = α_t x₀ + σ_t ε with σ_t² = 1 − α_t².
 *
 * Every schedule is described by one increasing function B(t) = −2 log α_t = log(1 + γ_t²), its
 * derivative B'(t) and its inverse t(B). All other quantities follow with care for float64 digits:
 * γ = sqrt(expm1(B)) and σ = sqrt(−expm1(−B)) never form 1 − α² directly.
 */
import { atan2, cos, exp, expm1, log, log1p, sin, tan } from "./math.ts";

/** A VP noise schedule: α, σ, γ = σ/α, λ = log(α/σ), the time change t(γ) and dt/dγ. */
export interface Schedule {
  /** A short name, e.g. "vp-linear". */
  readonly name: string;
  /** The JSON description this schedule was built from (round-trips through {@link scheduleFromSpec}). */
  readonly spec: ScheduleSpec;
  /** The default first time of sampling (largest t). */
  readonly tMax: number;
  /** The default last time of sampling (smallest t). */
  readonly tMin: number;
  /** B(t) = −2 log α_t = log(1 + γ_t²). */
  logOnePlusGamma2(t: number): number;
  alpha(t: number): number;
  sigma(t: number): number;
  /** γ_t = σ_t/α_t, the noise level of the x̄ = x/α coordinates (σ of EDM). */
  gamma(t: number): number;
  /** λ_t = log(α_t/σ_t) = −log γ_t, half the log signal-to-noise ratio. */
  lambda(t: number): number;
  /** The inverse of {@link gamma}. */
  tFromGamma(gamma: number): number;
  /** The inverse of {@link lambda}. */
  tFromLambda(lambda: number): number;
  /** dt/dγ at time t. */
  dtDgamma(t: number): number;
}

export type ScheduleSpec =
  | { type: "vp-linear"; beta_min?: number; beta_max?: number }
  | { type: "vp-cosine"; s?: number; t_max?: number }
  | {
    type: "ddpm-discrete";
    betas?: number[];
    beta_start?: number;
    beta_end?: number;
    steps?: number;
  }
  | DiscreteScheduleSpec;

/** The beta schedules of a discrete model, in diffusers' vocabulary (`beta_schedule`). */
export const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;
export type BetaSchedule = typeof BETA_SCHEDULES[number];

/**
 * A discrete-time model's schedule in diffusers' vocabulary: `beta_schedule` with `beta_start`,
 * `beta_end` and `num_train_timesteps` (defaults linear, 0.0001, 0.02, 1000), or `trained_betas`.
 */
export interface DiscreteScheduleSpec {
  type: "discrete";
  beta_schedule?: BetaSchedule;
  beta_start?: number;
  beta_end?: number;
  num_train_timesteps?: number;
  trained_betas?: number[];
}

/** An invalid schedule description; `field` names the offending field. */
export class ScheduleError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "ScheduleError";
  }
}

interface BFunction {
  name: string;
  spec: ScheduleSpec;
  tMin: number;
  tMax: number;
  B(t: number): number;
  dB(t: number): number;
  tFromB(b: number): number;
}

function fromB(f: BFunction): Schedule {
  const gamma = (t: number) => Math.sqrt(expm1(f.B(t)));
  return {
    name: f.name,
    spec: f.spec,
    tMin: f.tMin,
    tMax: f.tMax,
    logOnePlusGamma2: f.B,
    alpha: (t) => exp(-0.5 * f.B(t)),
    sigma: (t) => Math.sqrt(-expm1(-f.B(t))),
    gamma,
    lambda: (t) => -0.5 * log(expm1(f.B(t))),
    tFromGamma: (g) => f.tFromB(log1p(g * g)),
    tFromLambda: (l) => f.tFromB(log1p(exp(-2 * l))),
    dtDgamma: (t) => {
      const g = gamma(t);
      return (2 * g) / ((1 + g * g) * f.dB(t));
    },
  };
}

function positive(field: string, v: unknown, fallback: number): number {
  const x = v === undefined ? fallback : v;
  if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) {
    throw new ScheduleError(field, `must be a positive finite number, got ${JSON.stringify(v)}`);
  }
  return x;
}

/**
 * The linear VP schedule β(t) = β_min + (β_max − β_min) t, B(t) = β_min t + ½ β_d t².
 * Defaults β_min = 0.1, β_max = 20 (docs/method.md §1).
 */
export function vpLinearSchedule(betaMin = 0.1, betaMax = 20): Schedule {
  positive("beta_min", betaMin, 0.1);
  positive("beta_max", betaMax, 20);
  if (betaMax < betaMin) throw new ScheduleError("beta_max", "must be at least beta_min");
  const bd = betaMax - betaMin;
  return fromB({
    name: "vp-linear",
    spec: { type: "vp-linear", beta_min: betaMin, beta_max: betaMax },
    tMin: 1e-3,
    tMax: 1,
    B: (t) => betaMin * t + 0.5 * bd * t * t,
    dB: (t) => betaMin + bd * t,
    // Root of ½β_d t² + β_min t − B = 0 in the form that avoids cancellation.
    tFromB: (b) => (2 * b) / (betaMin + Math.sqrt(betaMin * betaMin + 2 * bd * b)),
  });
}

/**
 * The cosine schedule of improved DDPM, α_t = cos(π/2 (t+s)/(1+s)) / cos(π/2 s/(1+s)).
 * α reaches 0 at t = 1, so sampling starts at t_max = 0.9946 by default.
 */
export function vpCosineSchedule(s = 0.008, tMax = 0.9946): Schedule {
  positive("s", s, 0.008);
  if (!(tMax > 0 && tMax < 1)) throw new ScheduleError("t_max", "must lie in (0, 1)");
  const k = Math.PI / (2 * (1 + s));
  const cosA = cos(k * s), sinA = sin(k * s), tanA = tan(k * s);
  const logCos0 = log(cosA);
  return fromB({
    name: "vp-cosine",
    spec: { type: "vp-cosine", s, t_max: tMax },
    tMin: 1e-3,
    tMax,
    // B = −2 log r, r = α_t = cos(k(t+s))/cos(ks). For small t, 1 − r = 2 sin²(kt/2) + tan(ks) sin(kt)
    // keeps the digits that log cos(k(t+s)) − log cos(ks) cancels.
    B: (t) => {
      const h = sin(0.5 * k * t), m = 2 * h * h + tanA * sin(k * t);
      return m < 0.5 ? -2 * log1p(-m) : -2 * (log(cos(k * (t + s))) - logCos0);
    },
    dB: (t) => 2 * k * tan(k * (t + s)),
    // kt = atan2(sin kt, cos kt) from r = e^{−B/2} and 1 − r² = −expm1(−B), all terms positive:
    // sin kt = (1 − r²) cos ks / (S + r sin ks), cos kt = r cos² ks + S sin ks, S = sin k(t+s).
    tFromB: (b) => {
      const r = exp(-0.5 * b), q = -expm1(-b);
      const S = Math.sqrt(sinA * sinA + q * cosA * cosA);
      return atan2((q * cosA) / (S + r * sinA), r * cosA * cosA + S * sinA) / k;
    },
  });
}

/**
 * A discrete DDPM schedule (β_1 … β_N) made continuous: t_i = i/N carries B_i = −log ᾱ_i, with
 * B(0) = 0, and B is interpolated linearly in t between them (log-α interpolation).
 * Without explicit betas it uses the DDPM linear betas β_start … β_end over `steps` steps.
 */
export function ddpmDiscreteSchedule(
  opts: { betas?: number[]; beta_start?: number; beta_end?: number; steps?: number } = {},
): Schedule {
  let betas = opts.betas;
  if (betas === undefined) {
    const n = opts.steps ?? 1000;
    if (!Number.isInteger(n) || n < 2) throw new ScheduleError("steps", "must be an integer ≥ 2");
    const b0 = positive("beta_start", opts.beta_start, 1e-4);
    const b1 = positive("beta_end", opts.beta_end, 0.02);
    betas = Array.from({ length: n }, (_, i) => b0 + (b1 - b0) * i / (n - 1));
  }
  checkBetas("betas", betas);
  return piecewiseSchedule(betas, "ddpm-discrete", { type: "ddpm-discrete", betas: [...betas] }, 1e-3);
}

function checkBetas(field: string, betas: unknown): asserts betas is number[] {
  if (!Array.isArray(betas) || betas.length < 2) {
    throw new ScheduleError(field, "must be an array of at least 2 numbers");
  }
  betas.forEach((b, i) => {
    if (typeof b !== "number" || !(b > 0 && b < 1)) {
      throw new ScheduleError(`${field}[${i}]`, "must be a number in (0, 1)");
    }
  });
}

/**
 * The continuous schedule of betas β_0 … β_{N−1}: the knot t = (n+1)/N carries B = −log ᾱ_n
 * (ᾱ_n = Π_{i≤n} (1 − β_i)), the knot t = 0 carries B = 0 (ᾱ = 1), and B is linear in t between
 * knots, so log α is piecewise linear in t and dB/dt is constant on each piece.
 */
function piecewiseSchedule(betas: number[], name: string, spec: ScheduleSpec, tMin: number): Schedule {
  const n = betas.length;
  const knotsB = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) knotsB[i + 1] = knotsB[i] - log1p(-betas[i]);
  const segment = (t: number) => Math.min(n - 1, Math.max(0, Math.floor(t * n)));
  const slope = (i: number) => (knotsB[i + 1] - knotsB[i]) * n;
  return fromB({
    name,
    spec,
    tMin,
    tMax: 1,
    B: (t) => {
      const i = segment(t);
      return knotsB[i] + slope(i) * (t - i / n);
    },
    dB: (t) => slope(segment(t)),
    tFromB: (b) => {
      // Largest knot index i with knotsB[i] ≤ b, then invert the linear piece.
      let lo = 0, hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (knotsB[mid] <= b) lo = mid;
        else hi = mid - 1;
      }
      return lo / n + (b - knotsB[lo]) / slope(lo);
    },
  });
}

/** The betas of a diffusers beta schedule (computed in float64). */
export function discreteBetas(
  schedule: BetaSchedule,
  n: number,
  betaStart = 1e-4,
  betaEnd = 0.02,
): number[] {
  const lin = (a: number, b: number) => Array.from({ length: n }, (_, i) => a + (b - a) * i / (n - 1));
  switch (schedule) {
    case "linear":
      return lin(betaStart, betaEnd);
    case "scaled_linear":
      return lin(Math.sqrt(betaStart), Math.sqrt(betaEnd)).map((r) => r * r);
    case "squaredcos_cap_v2": {
      // 1 − ᾱ(t₂)/ᾱ(t₁) with ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), capped at 0.999 (improved DDPM).
      const abar = (t: number) => {
        const c = cos(((t + 0.008) / 1.008) * Math.PI / 2);
        return c * c;
      };
      return Array.from({ length: n }, (_, i) => Math.min(1 - abar((i + 1) / n) / abar(i / n), 0.999));
    }
    default:
      throw new ScheduleError(
        "beta_schedule",
        `unsupported beta schedule ${JSON.stringify(schedule)} (one of ${BETA_SCHEDULES.join(", ")})`,
      );
  }
}

/**
 * A discrete-time (DDPM-family) model's schedule in diffusers' vocabulary, made continuous as
 * DPM-Solver does: t ∈ [1/N, 1] stands for the timestep index n = N·t − 1, log α is interpolated
 * linearly between indices (so it is piecewise linear in t), and sampling ends at t_min = 1/N (index 0).
 * Below 1/N, B falls linearly to B(0) = 0 (index −1, ᾱ = 1). The model itself is fed the timestep
 * N·t − 1 (see the manifest's `time`).
 */
export function discreteSchedule(opts: Omit<DiscreteScheduleSpec, "type"> = {}): Schedule {
  let betas: number[];
  let spec: DiscreteScheduleSpec;
  if (opts.trained_betas !== undefined) {
    for (const key of ["beta_schedule", "beta_start", "beta_end"] as const) {
      if (opts[key] !== undefined) throw new ScheduleError(key, "cannot be given with trained_betas");
    }
    checkBetas("trained_betas", opts.trained_betas);
    betas = [...opts.trained_betas];
    if (opts.num_train_timesteps !== undefined && opts.num_train_timesteps !== betas.length) {
      throw new ScheduleError(
        "num_train_timesteps",
        `is ${opts.num_train_timesteps} but trained_betas has ${betas.length} values`,
      );
    }
    spec = { type: "discrete", trained_betas: betas };
  } else {
    const n = opts.num_train_timesteps ?? 1000;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 2) {
      throw new ScheduleError("num_train_timesteps", `must be an integer ≥ 2, got ${JSON.stringify(n)}`);
    }
    const kind = opts.beta_schedule ?? "linear";
    if (!(BETA_SCHEDULES as readonly string[]).includes(kind)) {
      throw new ScheduleError(
        "beta_schedule",
        `unsupported beta schedule ${JSON.stringify(kind)} (one of ${BETA_SCHEDULES.join(", ")})`,
      );
    }
    spec = { type: "discrete", beta_schedule: kind, num_train_timesteps: n };
    if (kind === "squaredcos_cap_v2") {
      for (const key of ["beta_start", "beta_end"] as const) {
        if (opts[key] !== undefined) positive(key, opts[key], 0); // checked, though the cosine ignores it
      }
      betas = discreteBetas(kind, n);
    } else {
      const b0 = positive("beta_start", opts.beta_start, 1e-4);
      const b1 = positive("beta_end", opts.beta_end, 0.02);
      if (b1 < b0) throw new ScheduleError("beta_end", "must be at least beta_start");
      if (b1 >= 1) throw new ScheduleError("beta_end", "must be below 1");
      betas = discreteBetas(kind, n, b0, b1);
      spec.beta_start = b0;
      spec.beta_end = b1;
    }
  }
  return piecewiseSchedule(betas, "discrete", spec, 1 / betas.length);
}

/** N, the number of training timesteps, of a discrete schedule (undefined for other schedules). */
export function discreteTimesteps(schedule: Schedule): number | undefined {
  const spec = schedule.spec;
  if (spec.type !== "discrete") return undefined;
  return spec.trained_betas?.length ?? spec.num_train_timesteps ?? 1000;
}

/** Builds a schedule from its JSON description, naming the offending field on error. */
export function scheduleFromSpec(spec: unknown): Schedule {
  if (spec === undefined) return vpLinearSchedule();
  if (typeof spec !== "object" || spec === null) {
    throw new ScheduleError("schedule", "must be an object with a 'type'");
  }
  const s = spec as Record<string, unknown>;
  try {
    switch (s.type) {
      case "vp-linear":
        return vpLinearSchedule(
          positive("schedule.beta_min", s.beta_min, 0.1),
          positive("schedule.beta_max", s.beta_max, 20),
        );
      case "vp-cosine":
        return vpCosineSchedule(
          positive("schedule.s", s.s, 0.008),
          positive("schedule.t_max", s.t_max, 0.9946),
        );
      case "ddpm-discrete":
        return ddpmDiscreteSchedule(s as Parameters<typeof ddpmDiscreteSchedule>[0]);
      case "discrete": {
        const keys = [
          "type",
          "beta_schedule",
          "beta_start",
          "beta_end",
          "num_train_timesteps",
          "trained_betas",
        ];
        for (const key of Object.keys(s)) {
          if (!keys.includes(key)) {
            throw new ScheduleError(`schedule.${key}`, `unknown field (one of ${keys.join(", ")})`);
          }
        }
        return discreteSchedule(s as Omit<DiscreteScheduleSpec, "type">);
      }
      default:
        throw new ScheduleError(
          "schedule.type",
          `unknown schedule ${
            JSON.stringify(s.type)
          } (expected vp-linear, vp-cosine, ddpm-discrete or discrete)`,
        );
    }
  } catch (e) {
    // The constructors name their own parameters; from a spec they are fields of `schedule`.
    if (e instanceof ScheduleError && !e.field.startsWith("schedule")) {
      throw new ScheduleError(`schedule.${e.field}`, e.message.slice(e.field.length + 2));
    }
    throw e;
  }
}

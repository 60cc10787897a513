/**
 * Analytic Gaussian-mixture diffusion models (docs/method.md §7): exact ε, its JVP in x, its partial
 * derivative in t and its total derivative along the probability-flow ODE.
 *
 * p₀ = Σ_k w_k N(μ_k, s_k² I). In x̄ = x/α coordinates p(x̄; γ) = Σ_k w_k N(μ_k, v_k I), v_k = s_k² + γ²:
 *
 *     r_k ∝ w_k N(x̄; μ_k, v_k I),  δ_k = x̄ − μ_k,  ε = γ Σ_k r_k δ_k / v_k
 *     (∇ε)·u = γ Σ_k r_k [u/v_k + (δ_k/v_k)((a_k − ā)·u)],  a_k = −δ_k/v_k
 *     ∂_γε = Σ_k r_k δ_k/v_k + γ Σ_k [ṙ_k δ_k/v_k − 2γ r_k δ_k/v_k²],  ṙ_k = r_k (b_k − b̄),
 *     b_k = −d γ/v_k + γ |δ_k|²/v_k²,   D = ∂_γε + (∇ε)·ε
 *
 * Components may carry class labels: the conditional model of class c is the mixture of the
 * components labelled c; the null class (= number of classes) is the whole mixture.
 */
import type { Evaluator } from "./solvers/drive.ts";
import type { EvalRequest, EvalResult } from "./solvers/types.ts";
import { type Schedule, scheduleFromSpec, type ScheduleSpec } from "./schedule.ts";
import { exp, log } from "./math.ts";

export interface GaussianMixture {
  /** Dimension d of a sample. */
  dim: number;
  /** Number of components K. */
  count: number;
  /** Mixture weights (normalised to sum 1). */
  weights: Float64Array;
  /** Means, K × d row-major. */
  means: Float64Array;
  /** Standard deviations s_k. */
  stds: Float64Array;
  /** Class label per component, when the mixture is class-conditional. */
  labels?: Int32Array;
  /** Number of classes; class `classes` is the null (unconditional) class. */
  classes?: number;
  schedule: Schedule;
}

/** A malformed mixture description; `field` names the offending field. */
export class GmmSpecError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "GmmSpecError";
  }
}

export interface GmmSpec {
  weights: number[];
  means: number[][];
  stds: number[];
  labels?: number[];
  classes?: number;
  schedule?: ScheduleSpec;
}

function finiteArray(field: string, v: unknown, length?: number): number[] {
  if (!Array.isArray(v)) throw new GmmSpecError(field, "must be an array of numbers");
  if (length !== undefined && v.length !== length) {
    throw new GmmSpecError(field, `must have ${length} entries, got ${v.length}`);
  }
  v.forEach((x, i) => {
    if (typeof x !== "number" || !Number.isFinite(x)) {
      throw new GmmSpecError(`${field}[${i}]`, `must be a finite number, got ${JSON.stringify(x)}`);
    }
  });
  return v as number[];
}

/** Validates a mixture description (the `gmm:SPEC.json` format) and builds the mixture. */
export function parseGmmSpec(spec: unknown): GaussianMixture {
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    throw new GmmSpecError("spec", "must be an object with weights, means and stds");
  }
  const s = spec as Record<string, unknown>;
  const weights = finiteArray("weights", s.weights);
  const K = weights.length;
  if (K === 0) throw new GmmSpecError("weights", "must not be empty");
  if (weights.some((w) => w < 0)) throw new GmmSpecError("weights", "must be non-negative");
  const total = weights.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new GmmSpecError("weights", "must not all be zero");
  if (!Array.isArray(s.means) || s.means.length !== K) {
    throw new GmmSpecError("means", `must be an array of ${K} vectors (one per weight)`);
  }
  const d = Array.isArray(s.means[0]) ? s.means[0].length : 0;
  if (d === 0) throw new GmmSpecError("means[0]", "must be a non-empty array of numbers");
  const means = new Float64Array(K * d);
  s.means.forEach((m, k) => means.set(finiteArray(`means[${k}]`, m, d), k * d));
  const stds = finiteArray("stds", s.stds, K);
  stds.forEach((x, k) => {
    if (!(x > 0)) throw new GmmSpecError(`stds[${k}]`, "must be positive");
  });
  let labels: Int32Array | undefined;
  let classes: number | undefined;
  if (s.labels !== undefined) {
    const l = finiteArray("labels", s.labels, K);
    classes = s.classes === undefined ? Math.max(...l) + 1 : Number(s.classes);
    if (!Number.isInteger(classes) || classes < 1) {
      throw new GmmSpecError("classes", "must be a positive integer");
    }
    l.forEach((c, k) => {
      if (!Number.isInteger(c) || c < 0 || c >= classes!) {
        throw new GmmSpecError(`labels[${k}]`, `must be an integer class in [0, ${classes})`);
      }
    });
    labels = Int32Array.from(l);
  }
  let schedule: Schedule;
  try {
    schedule = scheduleFromSpec(s.schedule);
  } catch (e) {
    throw new GmmSpecError("schedule", (e as Error).message);
  }
  return {
    dim: d,
    count: K,
    weights: Float64Array.from(weights, (w) => w / total),
    means,
    stds: Float64Array.from(stds),
    labels,
    classes,
    schedule,
  };
}

/** Per-sample quantities at one (x̄, γ): responsibilities and the pieces every formula shares. */
interface Posterior {
  gamma: number;
  /** Indices of components with non-negligible responsibility. */
  active: number[];
  r: Float64Array;
  v: Float64Array;
  /** |δ_k|² */
  dist2: Float64Array;
}

function posterior(
  mix: GaussianMixture,
  xbar: Float64Array,
  gamma: number,
  cls: number | undefined,
): Posterior {
  const { count: K, dim: d } = mix;
  const r = new Float64Array(K), v = new Float64Array(K), dist2 = new Float64Array(K);
  const allowed = (k: number) =>
    cls === undefined || mix.labels === undefined || cls === mix.classes || mix.labels[k] === cls;
  let maxLogit = -Infinity;
  const logits = new Float64Array(K).fill(-Infinity);
  for (let k = 0; k < K; k++) {
    if (!allowed(k) || mix.weights[k] === 0) continue;
    const vk = mix.stds[k] * mix.stds[k] + gamma * gamma;
    let s = 0;
    const off = k * d;
    for (let i = 0; i < d; i++) {
      const dx = xbar[i] - mix.means[off + i];
      s += dx * dx;
    }
    v[k] = vk;
    dist2[k] = s;
    logits[k] = log(mix.weights[k]) - 0.5 * d * log(vk) - s / (2 * vk);
    if (logits[k] > maxLogit) maxLogit = logits[k];
  }
  if (maxLogit === -Infinity) throw new GmmSpecError("class", `class ${cls} has no components`);
  let z = 0;
  for (let k = 0; k < K; k++) {
    r[k] = exp(logits[k] - maxLogit);
    z += r[k];
  }
  const active: number[] = [];
  for (let k = 0; k < K; k++) {
    r[k] /= z;
    if (r[k] > 1e-300) active.push(k);
  }
  return { gamma, active, r, v, dist2 };
}

/** out = A x̄ + B u − Σ_k c_k μ_k, the shape every formula of this model takes. */
function combine(
  mix: GaussianMixture,
  p: Posterior,
  xbar: Float64Array,
  A: number,
  B: number,
  u: Float64Array | undefined,
  c: Float64Array,
): Float64Array {
  const d = mix.dim;
  const out = new Float64Array(d);
  for (let i = 0; i < d; i++) out[i] = A * xbar[i] + (u ? B * u[i] : 0);
  for (const k of p.active) {
    if (c[k] === 0) continue;
    const off = k * d;
    for (let i = 0; i < d; i++) out[i] -= c[k] * mix.means[off + i];
  }
  return out;
}

/** ε(x̄, γ) = γ Σ_k r_k δ_k / v_k. */
function epsFrom(mix: GaussianMixture, p: Posterior, xbar: Float64Array): Float64Array {
  const c = new Float64Array(mix.count);
  let s0 = 0;
  for (const k of p.active) {
    c[k] = (p.gamma * p.r[k]) / p.v[k];
    s0 += c[k];
  }
  return combine(mix, p, xbar, s0, 0, undefined, c);
}

/** (∇_x̄ ε)·u = γ Σ_k r_k [u/v_k + (δ_k/v_k)((a_k − ā)·u)]. */
function jvpFrom(mix: GaussianMixture, p: Posterior, xbar: Float64Array, u: Float64Array): Float64Array {
  const d = mix.dim, g = p.gamma;
  // (a_k − ā)·u = −δ_k·u/v_k + Σ_j r_j δ_j·u/v_j
  const proj = new Float64Array(mix.count);
  let mean = 0;
  for (const k of p.active) {
    let s = 0;
    const off = k * d;
    for (let i = 0; i < d; i++) s += (xbar[i] - mix.means[off + i]) * u[i];
    proj[k] = -s / p.v[k];
    mean += p.r[k] * (s / p.v[k]);
  }
  const c = new Float64Array(mix.count);
  let S0 = 0, A = 0;
  for (const k of p.active) {
    S0 += p.r[k] / p.v[k];
    c[k] = (g * p.r[k] * (proj[k] + mean)) / p.v[k];
    A += c[k];
  }
  return combine(mix, p, xbar, A, g * S0, u, c);
}

/** ∂_γ ε at fixed x̄. */
function dGammaFrom(mix: GaussianMixture, p: Posterior, xbar: Float64Array): Float64Array {
  const g = p.gamma, d = mix.dim;
  const b = new Float64Array(mix.count);
  let bBar = 0;
  for (const k of p.active) {
    b[k] = (-d * g) / p.v[k] + (g * p.dist2[k]) / (p.v[k] * p.v[k]);
    bBar += p.r[k] * b[k];
  }
  const c = new Float64Array(mix.count);
  let A = 0;
  for (const k of p.active) {
    const rDot = p.r[k] * (b[k] - bBar);
    c[k] = p.r[k] / p.v[k] + (g * rDot) / p.v[k] - (2 * g * g * p.r[k]) / (p.v[k] * p.v[k]);
    A += c[k];
  }
  return combine(mix, p, xbar, A, 0, undefined, c);
}

/** Exact quantities of one sample at (x̄, γ), in x̄ coordinates. */
export function gmmAt(
  mix: GaussianMixture,
  xbar: Float64Array,
  gamma: number,
  cls?: number,
): {
  eps: Float64Array;
  jvp: (u: Float64Array) => Float64Array;
  dGamma: () => Float64Array;
  total: () => Float64Array;
} {
  const p = posterior(mix, xbar, gamma, cls);
  const eps = epsFrom(mix, p, xbar);
  const jvp = (u: Float64Array) => jvpFrom(mix, p, xbar, u);
  const dGamma = () => dGammaFrom(mix, p, xbar);
  return {
    eps,
    jvp,
    dGamma,
    total: () => {
      const a = dGamma(), b = jvp(eps);
      for (let i = 0; i < a.length; i++) a[i] += b[i];
      return a;
    },
  };
}

/**
 * An evaluator answering solver requests exactly: ε, the total derivative along the ODE (no
 * tangent), or the JVP along an (x, t) tangent, given or made from ε (`odeTangent`). Each sample uses
 * its own t and class.
 */
export function gmmEvaluator(mix: GaussianMixture, schedule: Schedule = mix.schedule): Evaluator {
  return (req: EvalRequest): EvalResult => {
    const d = mix.dim, B = req.t.length;
    if (req.x.length !== B * d) {
      throw new GmmSpecError("x", `expected ${B} × ${d} numbers, got ${req.x.length}`);
    }
    const eps = new Float64Array(B * d);
    const deriv = req.want === "eps+deriv" ? new Float64Array(B * d) : undefined;
    for (let b = 0; b < B; b++) {
      const t = req.t[b];
      const alpha = schedule.alpha(t), gamma = schedule.gamma(t);
      const x = req.x.subarray(b * d, (b + 1) * d);
      const xbar = x.map((xi) => xi / alpha);
      const cls = req.classes?.[b];
      const at = gmmAt(mix, xbar, gamma, cls);
      eps.set(at.eps, b * d);
      if (!deriv) continue;
      if (!req.tangent && !req.odeTangent) {
        deriv.set(at.total(), b * d);
        continue;
      }
      // Tangent (dx, dt) in (x, t) → (dx̄, dγ): dγ = dt/(dt/dγ), dx̄ = (dx − x (d log α/dt) dt)/α,
      // d log α/dt = −γ/((1+γ²) dt/dγ).
      const dtdg = schedule.dtDgamma(t);
      const dt = req.tangent ? req.tangent.t[b] : req.odeTangent!.t[b];
      const dgamma = dt / dtdg;
      const dlogAlpha = -gamma / ((1 + gamma * gamma) * dtdg);
      const dx = req.tangent
        ? req.tangent.x.subarray(b * d, (b + 1) * d)
        : odeTangentRow(req.odeTangent!, b, at.eps, x);
      const dxbar = new Float64Array(d);
      for (let i = 0; i < d; i++) dxbar[i] = (dx[i] - x[i] * dlogAlpha * dt) / alpha;
      const j = at.jvp(dxbar);
      if (dgamma !== 0) {
        const pg = at.dGamma();
        for (let i = 0; i < d; i++) j[i] += pg[i] * dgamma;
      }
      deriv.set(j, b * d);
    }
    return { eps, deriv };
  };
}

/** Row b of the tangent dx = a ε + c x of an {@link EvalRequest.odeTangent} request. */
function odeTangentRow(
  tangent: NonNullable<EvalRequest["odeTangent"]>,
  b: number,
  eps: ArrayLike<number>,
  x: ArrayLike<number>,
): Float64Array {
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) dx[i] = tangent.eps[b] * eps[i] + tangent.x[b] * x[i];
  return dx;
}

/** Exact samples from p₀, drawing standard normals from `normal` (i.i.d. N(0,1)) and uniforms from `uniform`. */
export function sampleGmm(
  mix: GaussianMixture,
  n: number,
  normal: () => number,
  uniform: () => number,
): Float64Array {
  const d = mix.dim, out = new Float64Array(n * d);
  for (let j = 0; j < n; j++) {
    let u = uniform(), k = 0;
    while (k < mix.count - 1 && u >= mix.weights[k]) u -= mix.weights[k++];
    for (let i = 0; i < d; i++) out[j * d + i] = mix.means[k * d + i] + mix.stds[k] * normal();
  }
  return out;
}

/**
 * The exact ODE trajectory of a single Gaussian N(μ, s² I) in x̄ coordinates:
 * x̄(γ) = μ + (x̄(γ₀) − μ) sqrt((s² + γ²)/(s² + γ₀²)).
 */
export function singleGaussianTrajectory(
  mu: ArrayLike<number>,
  s: number,
  xbar0: ArrayLike<number>,
  gamma0: number,
  gamma: number,
): Float64Array {
  const f = Math.sqrt((s * s + gamma * gamma) / (s * s + gamma0 * gamma0));
  return Float64Array.from(xbar0, (x, i) => mu[i] + (x - mu[i]) * f);
}

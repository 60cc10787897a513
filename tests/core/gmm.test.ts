/**
 * The analytic Gaussian-mixture model (docs/method.md §7) against independent truth: closed forms for a
 * single Gaussian, a naive re-implementation of ε written in x coordinates, and central finite
 * differences of ε for the JVP, ∂γε and the total derivative along the exact ODE.
 */
import { assert, assertStrictEquals, assertThrows, maxAbsDiff, test } from "../testing.ts";
import {
  type GaussianMixture,
  gmmAt,
  gmmEvaluator,
  type GmmSpec,
  GmmSpecError,
  parseGmmSpec,
  singleGaussianTrajectory,
} from "../../core/gmm.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import type { EvalRequest } from "../../core/solvers/types.ts";
import { rng, SPEC_2D as spec2d } from "./fixtures.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** Finite-difference step (float64). */
const ETA = 1e-5;

/** max|a − b| / max(|b|, |floor|): relative error, optionally against a larger scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>, floor: ArrayLike<number> = []): number {
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < floor.length; i++) scale = Math.max(scale, Math.abs(floor[i]));
  return maxAbsDiff(a, b) / scale;
}

/**
 * The derivative at s = 0 of a vector function by the five-point central difference
 * (−f(2η) + 8f(η) − 8f(−η) + f(−2η))/(12η), truncation O(η⁴) so that rounding dominates.
 */
function central(f: (s: number) => Float64Array, eta = ETA): Float64Array {
  const p1 = f(eta), m1 = f(-eta), p2 = f(2 * eta), m2 = f(-2 * eta);
  return Float64Array.from(p1, (_, i) => (8 * (p1[i] - m1[i]) - (p2[i] - m2[i])) / (12 * eta));
}

function axpy(x: ArrayLike<number>, a: number, y: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (xi, i) => xi + a * y[i]);
}

/**
 * ε(x, t) written from scratch in VP x coordinates (docs/method.md §7):
 *     ε = σ Σ_k r_k (x − α μ_k)/(α² s_k² + σ²),  r_k ∝ w_k N(x; α μ_k, (α² s_k² + σ²) I).
 * Only components whose index passes `use` take part.
 */
function naiveEpsX(
  spec: GmmSpec,
  x: ArrayLike<number>,
  alpha: number,
  sigma: number,
  use: (k: number) => boolean = () => true,
): Float64Array {
  const d = x.length, K = spec.weights.length;
  const logits: number[] = [];
  for (let k = 0; k < K; k++) {
    if (!use(k)) {
      logits.push(-Infinity);
      continue;
    }
    const varK = alpha * alpha * spec.stds[k] ** 2 + sigma * sigma;
    let q = 0;
    for (let i = 0; i < d; i++) q += (x[i] - alpha * spec.means[k][i]) ** 2;
    logits.push(Math.log(spec.weights[k]) - 0.5 * d * Math.log(2 * Math.PI * varK) - q / (2 * varK));
  }
  const m = Math.max(...logits);
  const e = logits.map((l) => Math.exp(l - m));
  const z = e.reduce((a, b) => a + b, 0);
  const out = new Float64Array(d);
  for (let k = 0; k < K; k++) {
    if (e[k] === 0) continue;
    const varK = alpha * alpha * spec.stds[k] ** 2 + sigma * sigma;
    const c = (sigma * e[k]) / z / varK;
    for (let i = 0; i < d; i++) out[i] += c * (x[i] - alpha * spec.means[k][i]);
  }
  return out;
}

/** ε(x̄, γ) from the naive x-space form, with x = x̄/sqrt(1+γ²) (α = 1/sqrt(1+γ²), σ = γ α). */
function naiveEpsBar(spec: GmmSpec, xbar: ArrayLike<number>, gamma: number): Float64Array {
  const alpha = 1 / Math.sqrt(1 + gamma * gamma);
  return naiveEpsX(spec, Array.from(xbar, (v) => v * alpha), alpha, gamma * alpha);
}

/** A mixture with K components in d dimensions, means N(0, spread²), stds spread over [sMin, sMax]. */
function randomSpec(d: number, K: number, seed: number, spread: number, sMin: number, sMax: number): GmmSpec {
  const g = rng(seed);
  return {
    weights: Array.from({ length: K }, () => 0.2 + g.uniform()),
    means: Array.from({ length: K }, () => Array.from({ length: d }, () => spread * g.normal())),
    stds: Array.from({ length: K }, (_, k) => sMin * Math.pow(sMax / sMin, k / Math.max(1, K - 1))),
  };
}

const spec50d = randomSpec(50, 20, 7, 0.35, 0.05, 1.0);

/**
 * Test points where several components share the posterior: between two means, at the noise level
 * of γ, plus a few near a single mean.
 */
function testPoints(spec: GmmSpec, gamma: number, count: number, seed: number): Float64Array[] {
  const g = rng(seed), K = spec.weights.length, d = spec.means[0].length;
  const pts: Float64Array[] = [];
  for (let j = 0; j < count; j++) {
    const a = Math.floor(g.uniform() * K), b = (a + 1 + Math.floor(g.uniform() * (K - 1))) % K;
    const u = j % 3 === 0 ? 0 : g.uniform();
    const noise = Math.sqrt(spec.stds[a] ** 2 + gamma * gamma) / Math.sqrt(d);
    pts.push(
      Float64Array.from(
        { length: d },
        (_, i) => (1 - u) * spec.means[a][i] + u * spec.means[b][i] + noise * g.normal(),
      ),
    );
  }
  return pts;
}

// ---------------------------------------------------------------------------------------------
// Single Gaussian: closed forms

test("gmm: single Gaussian ε and total derivative match the closed forms", () => {
  const mu = [0.3, -0.7, 1.1], s = 0.4;
  const mix = parseGmmSpec({ weights: [1], means: [mu], stds: [s] });
  const g = rng(1);
  for (const gamma of [0.01, 0.2, 1, 5, 80]) {
    const xbar = Float64Array.from(mu, (m) => m + (1 + gamma) * g.normal());
    const at = gmmAt(mix, xbar, gamma);
    const v = s * s + gamma * gamma;
    const eps = Float64Array.from(xbar, (x, i) => (gamma * (x - mu[i])) / v);
    const D = Float64Array.from(xbar, (x, i) => (s * s * (x - mu[i])) / (v * v));
    assert(relErr(at.eps, eps) < 1e-14, `ε at γ=${gamma}: ${relErr(at.eps, eps)}`);
    // D = ∂γε + J·ε cancels down to s²/v² from terms of size 1/v: allow that many rounding units.
    const tol = 1e-14 * (1 + (gamma * gamma) / (s * s));
    assert(relErr(at.total(), D) < tol, `D at γ=${gamma}: ${relErr(at.total(), D)}`);
  }
});

test("gmm: single Gaussian trajectory solves dx̄/dγ = ε", () => {
  const mu = [0.5, -1], s = 0.3, gamma0 = 2;
  const mix = parseGmmSpec({ weights: [1], means: [mu], stds: [s] });
  const x0 = Float64Array.from([1.7, 0.4]);
  for (const gamma of [0.05, 0.7, 1.5]) {
    const eta = 1e-5;
    const plus = singleGaussianTrajectory(mu, s, x0, gamma0, gamma + eta);
    const minus = singleGaussianTrajectory(mu, s, x0, gamma0, gamma - eta);
    const slope = Float64Array.from(plus, (p, i) => (p - minus[i]) / (2 * eta));
    const at = gmmAt(mix, singleGaussianTrajectory(mu, s, x0, gamma0, gamma), gamma);
    assert(relErr(slope, at.eps) < 1e-8, `slope vs ε at γ=${gamma}: ${relErr(slope, at.eps)}`);
  }
  assert(maxAbsDiff(singleGaussianTrajectory(mu, s, x0, gamma0, gamma0), x0) < 1e-15);
});

// ---------------------------------------------------------------------------------------------
// Mixtures: ε against a naive x-space implementation

test("gmm: mixture ε equals the x-space formula (2-D and 50-D with 20 components)", () => {
  const sched = vpLinearSchedule();
  for (const spec of [spec2d, spec50d]) {
    const mix = parseGmmSpec(spec);
    const ev = gmmEvaluator(mix);
    for (const t of [1e-3, 0.05, 0.2, 0.5, 1]) {
      const gamma = sched.gamma(t), alpha = sched.alpha(t), sigma = sched.sigma(t);
      for (const xbar of testPoints(spec, gamma, 6, 11)) {
        const x = Float64Array.from(xbar, (v) => v * alpha);
        const want = naiveEpsX(spec, x, alpha, sigma);
        const bar = gmmAt(mix, xbar, gamma).eps;
        assert(relErr(bar, want) < 1e-11, `d=${mix.dim} t=${t}: x̄ form ${relErr(bar, want)}`);
        const req: EvalRequest = { x, t: Float64Array.of(t), want: "eps", step: 0, steps: 1 };
        const viaEval = ev(req).eps;
        assert(relErr(viaEval, want) < 1e-11, `d=${mix.dim} t=${t}: evaluator ${relErr(viaEval, want)}`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Derivatives against central finite differences (float64, step 1e-5)

test("gmm: JVP (∇_x̄ ε)·u matches central finite differences", () => {
  for (const spec of [spec2d, spec50d]) {
    const mix = parseGmmSpec(spec), d = mix.dim, g = rng(3);
    for (const gamma of [0.05, 0.3, 1, 4]) {
      for (const xbar of testPoints(spec, gamma, 5, 5)) {
        const u = Float64Array.from({ length: d }, () => g.normal() / Math.sqrt(d));
        const fd = central((s) => naiveEpsBar(spec, axpy(xbar, s, u), gamma));
        const jvp = gmmAt(mix, xbar, gamma).jvp(u);
        assert(relErr(jvp, fd) < 1e-7, `d=${d} γ=${gamma}: JVP rel err ${relErr(jvp, fd)}`);
      }
    }
  }
});

test("gmm: ∂γε at fixed x̄ matches central finite differences", () => {
  for (const spec of [spec2d, spec50d]) {
    const mix = parseGmmSpec(spec), d = mix.dim;
    for (const gamma of [0.05, 0.3, 1, 4]) {
      for (const xbar of testPoints(spec, gamma, 5, 8)) {
        const fd = central((s) => naiveEpsBar(spec, xbar, gamma + s));
        const dg = gmmAt(mix, xbar, gamma).dGamma();
        // Relative to |ε| as well: ∂γε vanishes where s_k = γ near a mean (here at s = γ = 0.3).
        const err = relErr(dg, fd, gmmAt(mix, xbar, gamma).eps);
        assert(err < 1e-7, `d=${d} γ=${gamma}: ∂γε rel err ${err}`);
      }
    }
  }
});

/** One classical RK4 step of dx̄/dγ = ε(x̄, γ) with the naive ε. */
function rk4(spec: GmmSpec, xbar: Float64Array, gamma: number, h: number): Float64Array {
  const k1 = naiveEpsBar(spec, xbar, gamma);
  const k2 = naiveEpsBar(spec, axpy(xbar, h / 2, k1), gamma + h / 2);
  const k3 = naiveEpsBar(spec, axpy(xbar, h / 2, k2), gamma + h / 2);
  const k4 = naiveEpsBar(spec, axpy(xbar, h, k3), gamma + h);
  return Float64Array.from(xbar, (x, i) => x + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
}

test("gmm: total derivative D = dε/dγ along the exact ODE matches finite differences", () => {
  for (const spec of [spec2d, spec50d]) {
    const mix = parseGmmSpec(spec), d = mix.dim;
    for (const gamma of [0.05, 0.3, 1, 4]) {
      for (const xbar of testPoints(spec, gamma, 5, 9)) {
        const at = gmmAt(mix, xbar, gamma);
        const D = at.total();
        // (1) D = ∂γε + (∇ε)·ε with both pieces taken by finite differences.
        const e = naiveEpsBar(spec, xbar, gamma);
        const pieces = axpy(
          central((s) => naiveEpsBar(spec, xbar, gamma + s)),
          1,
          central((s) => naiveEpsBar(spec, axpy(xbar, s, e), gamma)),
        );
        assert(relErr(D, pieces) < 1e-7, `d=${d} γ=${gamma}: D vs ∂γε+J·ε ${relErr(D, pieces)}`);
        // (2) A central difference of ε along the ODE's own solution: x̄(γ + s) by one RK4 step
        // (local error O(s⁵), far below the difference's rounding).
        const along = central((s) => naiveEpsBar(spec, rk4(spec, xbar, gamma, s), gamma + s));
        assert(relErr(D, along) < 1e-7, `d=${d} γ=${gamma}: D vs FD along ODE ${relErr(D, along)}`);
      }
    }
  }
});

test("gmm: evaluator JVP with an (x, t) tangent matches central FD of ε(x, t)", () => {
  const sched = vpLinearSchedule();
  for (const spec of [spec2d, spec50d]) {
    const mix = parseGmmSpec(spec), d = mix.dim, ev = gmmEvaluator(mix), g = rng(21);
    const ts = [0.02, 0.1, 0.3, 0.6, 0.95];
    const B = ts.length;
    const x = new Float64Array(B * d), dx = new Float64Array(B * d);
    ts.forEach((t, b) => {
      const pt = testPoints(spec, sched.gamma(t), 1, 100 + b)[0];
      for (let i = 0; i < d; i++) {
        x[b * d + i] = sched.alpha(t) * pt[i];
        dx[b * d + i] = g.normal() / Math.sqrt(d);
      }
    });
    const t = Float64Array.from(ts);
    const dt = Float64Array.from(ts, (_, b) => (b % 2 === 0 ? 0.3 : -0.2));
    const r = ev({ x, t, want: "eps+deriv", tangent: { x: dx, t: dt }, step: 0, steps: 1 });
    const epsAt = (s: number) =>
      Float64Array.from(ev({ x: axpy(x, s, dx), t: axpy(t, s, dt), want: "eps", step: 0, steps: 1 }).eps);
    const fdAll = central(epsAt);
    for (let b = 0; b < B; b++) {
      const fd = fdAll.subarray(b * d, (b + 1) * d);
      const got = r.deriv!.subarray(b * d, (b + 1) * d);
      assert(relErr(got, fd) < 1e-7, `d=${d} t=${ts[b]}: x-space JVP rel err ${relErr(got, fd)}`);
    }
    // A pure time tangent and a pure space tangent, separately.
    const zeroX = new Float64Array(B * d), zeroT = new Float64Array(B);
    const onlyT = ev({ x, t, want: "eps+deriv", tangent: { x: zeroX, t: dt }, step: 0, steps: 1 }).deriv!;
    const onlyX = ev({ x, t, want: "eps+deriv", tangent: { x: dx, t: zeroT }, step: 0, steps: 1 }).deriv!;
    const fdT = central((s) =>
      Float64Array.from(ev({ x, t: axpy(t, s, dt), want: "eps", step: 0, steps: 1 }).eps)
    );
    assert(relErr(onlyT, fdT) < 1e-7, `d=${d}: time-only JVP ${relErr(onlyT, fdT)}`);
    assert(relErr(axpy(onlyT, 1, onlyX), r.deriv!) < 1e-12, "JVP is linear in the tangent");
  }
});

test("gmm: evaluator's derivative without a tangent is the total derivative in x̄ coordinates", () => {
  const sched = vpLinearSchedule();
  const mix = parseGmmSpec(spec50d), d = mix.dim, ev = gmmEvaluator(mix);
  const ts = [0.01, 0.2, 0.7];
  const x = new Float64Array(ts.length * d);
  const pts = ts.map((t, b) => testPoints(spec50d, sched.gamma(t), 1, 40 + b)[0]);
  ts.forEach((t, b) => x.set(pts[b].map((v) => v * sched.alpha(t)), b * d));
  const r = ev({ x, t: Float64Array.from(ts), want: "eps+deriv", step: 0, steps: 1 });
  ts.forEach((t, b) => {
    const want = gmmAt(mix, pts[b], sched.gamma(t)).total();
    assert(relErr(r.deriv!.subarray(b * d, (b + 1) * d), want) < 1e-12, `t=${t}`);
  });
});

// ---------------------------------------------------------------------------------------------
// Class conditioning

test("gmm: class c uses only its components; the null class and no class use all", () => {
  const sched = vpLinearSchedule();
  const spec: GmmSpec = { ...randomSpec(4, 6, 13, 1.2, 0.1, 0.6), labels: [0, 1, 2, 0, 1, 2], classes: 3 };
  const mix = parseGmmSpec(spec), d = 4, ev = gmmEvaluator(mix);
  assertStrictEquals(mix.classes, 3);
  const t = 0.3, alpha = sched.alpha(t), sigma = sched.sigma(t);
  const g = rng(17);
  const point = Float64Array.from({ length: d }, () => alpha * g.normal());
  const classes = Int32Array.from([0, 1, 2, 3]);
  const x = new Float64Array(4 * d);
  for (let b = 0; b < 4; b++) x.set(point, b * d);
  const tangent = {
    x: Float64Array.from({ length: 4 * d }, () => g.normal()),
    t: new Float64Array(4).fill(0.1),
  };
  const r = ev({ x, t: new Float64Array(4).fill(t), want: "eps+deriv", tangent, classes, step: 0, steps: 1 });
  for (let b = 0; b < 4; b++) {
    const c = classes[b];
    const use = (k: number) => c === 3 || spec.labels![k] === c;
    const want = naiveEpsX(spec, point, alpha, sigma, use);
    assert(relErr(r.eps.subarray(b * d, (b + 1) * d), want) < 1e-12, `class ${c} ε`);
    // The conditional model is the mixture of class c's components: compare the whole evaluator.
    const sub: GmmSpec = {
      weights: spec.weights.filter((_, k) => use(k)),
      means: spec.means.filter((_, k) => use(k)),
      stds: spec.stds.filter((_, k) => use(k)),
    };
    const rs = gmmEvaluator(parseGmmSpec(sub))({
      x: point,
      t: Float64Array.of(t),
      want: "eps+deriv",
      tangent: { x: tangent.x.subarray(b * d, (b + 1) * d), t: Float64Array.of(0.1) },
      step: 0,
      steps: 1,
    });
    assert(relErr(r.deriv!.subarray(b * d, (b + 1) * d), rs.deriv!) < 1e-12, `class ${c} JVP`);
  }
  // Without class labels in the request the model is the whole mixture.
  const unc = ev({ x: point, t: Float64Array.of(t), want: "eps", step: 0, steps: 1 }).eps;
  assert(relErr(unc, r.eps.subarray(3 * d, 4 * d)) < 1e-14, "no class = null class");
  // A class with no components is an error naming the class.
  const sparse = parseGmmSpec({ ...spec2d, labels: [0, 0, 2], classes: 4 });
  assertThrows(
    () =>
      gmmEvaluator(sparse)({
        x: Float64Array.of(0, 0),
        t: Float64Array.of(0.5),
        want: "eps",
        classes: Int32Array.of(1),
        step: 0,
        steps: 1,
      }),
    (e: unknown) => e instanceof GmmSpecError && e.field === "class",
  );
});

// ---------------------------------------------------------------------------------------------
// Spec validation

function specError(spec: unknown): GmmSpecError {
  try {
    parseGmmSpec(spec);
  } catch (e) {
    assert(e instanceof GmmSpecError, `expected GmmSpecError, got ${e}`);
    return e;
  }
  throw new Error(`spec accepted: ${JSON.stringify(spec)}`);
}

test("gmm: spec errors name the offending field", () => {
  const cases: [unknown, string][] = [
    [null, "spec"],
    [[1, 2], "spec"],
    [{ ...spec2d, weights: "x" }, "weights"],
    [{ ...spec2d, weights: [] }, "weights"],
    [{ ...spec2d, weights: [0.3, -0.5, 0.2] }, "weights"],
    [{ ...spec2d, weights: [0, 0, 0] }, "weights"],
    [{ ...spec2d, weights: [0.3, "a", 0.2] }, "weights[1]"],
    [{ ...spec2d, weights: [0.3, NaN, 0.2] }, "weights[1]"],
    [{ ...spec2d, means: [[0, 0]] }, "means"],
    [{ ...spec2d, means: [[], [1, 1], [2, 2]] }, "means[0]"],
    [{ ...spec2d, means: [[0, 0], [1, 1], [2]] }, "means[2]"],
    [{ ...spec2d, means: [[0, 0], [1, Infinity], [2, 2]] }, "means[1][1]"],
    [{ ...spec2d, stds: [0.1, 0.2] }, "stds"],
    [{ ...spec2d, stds: [0.1, -0.2, 0.3] }, "stds[1]"],
    [{ ...spec2d, stds: [0.1, 0.2, 0] }, "stds[2]"],
    [{ ...spec2d, labels: [0, 1] }, "labels"],
    [{ ...spec2d, labels: [0, 1.5, 0], classes: 3 }, "labels[1]"],
    [{ ...spec2d, labels: [0, 1.5, 0] }, "classes"],
    [{ ...spec2d, labels: [0, 1, 5], classes: 3 }, "labels[2]"],
    [{ ...spec2d, labels: [0, 1, 0], classes: 0 }, "classes"],
    [{ ...spec2d, schedule: { type: "nope" } }, "schedule"],
  ];
  for (const [spec, field] of cases) {
    const e = specError(spec);
    assertStrictEquals(e.field, field, `${JSON.stringify(spec)} → ${e.message}`);
    assert(e.message.startsWith(field), e.message);
  }
  // A valid spec normalises its weights and keeps its schedule.
  const mix: GaussianMixture = parseGmmSpec({
    ...spec2d,
    weights: [3, 5, 2],
    schedule: { type: "vp-linear", beta_min: 0.1, beta_max: 20 },
  });
  assert(maxAbsDiff(mix.weights, [0.3, 0.5, 0.2]) < 1e-15);
  assertStrictEquals(mix.dim, 2);
  assertStrictEquals(mix.count, 3);
});

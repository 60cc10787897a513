/**
 * Fixtures shared by the core tests: the 2-D three-component mixture, a seeded generator, the RK4
 * reference integrator and the log-log slope that turns errors into observed orders. Runtime-neutral
 * (the core tests also run under Node.js): imports only from core/.
 */
import { type GaussianMixture, gmmAt, type GmmSpec } from "../../core/gmm.ts";
import type { Schedule } from "../../core/schedule.ts";

/** The 2-D three-component mixture most solver tests run on (well separated, unequal widths). */
export const SPEC_2D: GmmSpec = {
  weights: [0.3, 0.5, 0.2],
  means: [[-1, 0.5], [0.8, -0.3], [0.2, 1.2]],
  stds: [0.15, 0.3, 0.08],
};

/** A small deterministic generator (mulberry32) with Box–Muller normals. */
export function rng(seed: number): { uniform: () => number; normal: () => number } {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => {
    const u = 1 - uniform(), v = uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  return { uniform, normal };
}

/** `n` standard normals from {@link rng}. */
export function normals(seed: number, n: number): Float64Array {
  const g = rng(seed);
  return Float64Array.from({ length: n }, g.normal);
}

/**
 * The reference: classical RK4 on dx̄/dγ = ε(x̄, γ) with the exact ε of `mix`, written here (not a
 * project solver), with `M` steps uniform in log γ from t0 to t1. `x` holds samples of `mix.dim`
 * values at t0 (VP scale); returns them at t1 (VP scale).
 */
export function rk4LogGamma(
  mix: GaussianMixture,
  schedule: Schedule,
  x: Float64Array,
  M: number,
  t0: number,
  t1: number,
): Float64Array {
  const d = mix.dim, out = new Float64Array(x.length);
  const l0 = Math.log(schedule.gamma(t0)), l1 = Math.log(schedule.gamma(t1));
  const f = (xb: Float64Array, g: number) => gmmAt(mix, xb, g).eps;
  for (let b = 0; b < x.length / d; b++) {
    let xb = Float64Array.from(x.subarray(b * d, (b + 1) * d), (v) => v / schedule.alpha(t0));
    for (let j = 0; j < M; j++) {
      const g = Math.exp(l0 + ((l1 - l0) * j) / M), gNext = Math.exp(l0 + ((l1 - l0) * (j + 1)) / M);
      const h = gNext - g;
      const k1 = f(xb, g);
      const k2 = f(xb.map((v, i) => v + (h / 2) * k1[i]), g + h / 2);
      const k3 = f(xb.map((v, i) => v + (h / 2) * k2[i]), g + h / 2);
      const k4 = f(xb.map((v, i) => v + h * k3[i]), gNext);
      xb = xb.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
    }
    out.set(xb.map((v) => v * schedule.alpha(t1)), b * d);
  }
  return out;
}

/** Least-squares slope of log(err) against log(N). */
export function logLogSlope(ns: number[], errs: number[]): number {
  const xs = ns.map(Math.log), ys = errs.map(Math.log);
  const mx = xs.reduce((a, b) => a + b) / xs.length, my = ys.reduce((a, b) => a + b) / ys.length;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxy / sxx;
}

/** The observed order of convergence: the slope of log(err) against log(1/N). */
export function observedOrder(ns: number[], errs: number[]): number {
  return -logLogSlope(ns, errs);
}

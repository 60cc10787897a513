/**
 * The reference solution the solver-error benchmarks measure against, written independently of the
 * solvers: classical RK4 on the analytic mixture, and the per-sample RMSE against it.
 */
import { type GaussianMixture, gmmAt } from "../core/gmm.ts";

/**
 * Classical RK4 on dx̄/dγ = ε(x̄, γ) of the analytic mixture (float64; `cls` as in {@link gmmAt}) with
 * `steps` steps uniform in log γ from t_max to t_min. `x` holds `batch` latents at t_max (VP scale);
 * returns x at t_min (VP scale), batch × dim.
 */
export function rk4Reference(
  mix: GaussianMixture,
  x: Float64Array,
  batch: number,
  steps: number,
  cls?: number,
): Float64Array {
  const s = mix.schedule, d = mix.dim, out = new Float64Array(x.length);
  const l0 = Math.log(s.gamma(s.tMax)), l1 = Math.log(s.gamma(s.tMin));
  const f = (xb: Float64Array, g: number) => gmmAt(mix, xb, g, cls).eps;
  const shifted = (xb: Float64Array, h: number, k: Float64Array) => xb.map((v, i) => v + h * k[i]);
  for (let b = 0; b < batch; b++) {
    let xb = x.slice(b * d, (b + 1) * d).map((v) => v / s.alpha(s.tMax));
    for (let j = 0; j < steps; j++) {
      const g = Math.exp(l0 + ((l1 - l0) * j) / steps), gNext = Math.exp(l0 + ((l1 - l0) * (j + 1)) / steps);
      const h = gNext - g;
      const k1 = f(xb, g), k2 = f(shifted(xb, h / 2, k1), g + h / 2);
      const k3 = f(shifted(xb, h / 2, k2), g + h / 2), k4 = f(shifted(xb, h, k3), gNext);
      xb = xb.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
    }
    out.set(xb.map((v) => v * s.alpha(s.tMin)), b * d);
  }
  return out;
}

/** RMSE of each of the `batch` samples (`dim` values each) of `x` against the reference. */
export function rmsePerSample(x: ArrayLike<number>, ref: Float64Array, batch: number, dim: number): number[] {
  return Array.from({ length: batch }, (_, b) => {
    let s = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) s += (x[i] - ref[i]) ** 2;
    return Math.sqrt(s / dim);
  });
}

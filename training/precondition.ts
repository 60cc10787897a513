/**
 * The training side of mnist-unet's EDM-style preconditioning (training/unet.ts, `VpPrecondition`): the
 * coefficients in float64, the training time distribution, and the batch of one step.
 *
 * On a VP-linear schedule (α² + σ² = 1) with D = σ² + σ_d² α², the served graph computes
 *
 *     ε̂ = a x_t − b F(c_in x_t, t),    c_in = 1/√D,  a = σ/D,  b = σ_d α/√D,
 *
 * and F is trained with unit weight against
 *
 *     F* = (σ x₀ − σ_d² α ε)/(σ_d √D),
 *
 * the value for which ε̂ = ε exactly (a x_t − b F* = ε, since x_t = α x₀ + σ ε). Unit weight on F is
 * EDM's loss weighting: in ε terms it is ‖ε̂ − ε‖² · D/(σ_d² α²), which counts errors at high noise as
 * much as the x₀ error they cause.
 */
import type { RngStream } from "../core/rng.ts";
import type { Schedule } from "../core/schedule.ts";
import type { VpPrecondition } from "./unet.ts";
import type { Batch } from "./trainer.ts";
import { type Digits, NULL_CLASS, PIXELS, SIZE } from "./common.ts";

/** c_in, a, b of one time (float64). */
export interface Coefficients {
  alpha: number;
  sigma: number;
  cIn: number;
  a: number;
  b: number;
}

export function coefficients(s: Schedule, sigmaData: number, t: number): Coefficients {
  const alpha = s.alpha(t), sigma = s.sigma(t);
  const d = sigma * sigma + sigmaData * sigmaData * alpha * alpha;
  return { alpha, sigma, cIn: 1 / Math.sqrt(d), a: sigma / d, b: (sigmaData * alpha) / Math.sqrt(d) };
}

/** F* for one pixel: the network output that makes ε̂ equal the noise ε. */
export function targetF(c: Coefficients, sigmaData: number, x0: number, eps: number): number {
  return (c.sigma * x0 - sigmaData * sigmaData * c.alpha * eps) / (sigmaData / c.cIn);
}

/** How the training times are drawn. */
export interface TimeSampling {
  /** Probability of t ~ U[t_min, 1]; otherwise log(σ/α) ~ N(pMean, pStd²) (EDM), clipped to [t_min, 1]. */
  uniform: number;
  pMean: number;
  pStd: number;
}

/**
 * One training time. Uniform t covers the high-noise end that the first steps of a sampler visit;
 * EDM's log-normal concentrates on the noise levels (σ/α ≈ 0.1–3) where a digit's shape is decided.
 */
export function drawTime(s: Schedule, ts: TimeSampling, r: RngStream): number {
  const pick = r.uniform(), u = r.uniform(), z = r.normal();
  if (pick < ts.uniform) return s.tMin + (s.tMax - s.tMin) * u;
  const t = s.tFromGamma(Math.exp(ts.pMean + ts.pStd * z));
  return Math.min(s.tMax, Math.max(s.tMin, t));
}

/**
 * The batch of one step for the network F: x = c_in x_t, t, class (the null class with probability
 * `drop`), and the target F*; everything from the step's random stream `r`.
 */
export function preconditionedBatch(
  digits: Digits,
  batch: number,
  drop: number,
  s: Schedule,
  p: VpPrecondition,
  ts: TimeSampling,
): (step: number, r: RngStream) => Batch {
  return (_step, r) => {
    const x = new Float32Array(batch * PIXELS), target = new Float32Array(batch * PIXELS);
    const t = new Float32Array(batch), cls = new BigInt64Array(batch);
    for (let i = 0; i < batch; i++) {
      const k = Math.min(digits.count - 1, Math.floor(r.uniform() * digits.count));
      cls[i] = BigInt(r.uniform() < drop ? NULL_CLASS : digits.labels[k]);
      t[i] = Math.fround(drawTime(s, ts, r));
      const c = coefficients(s, p.sigmaData, t[i]);
      for (let j = 0, at = i * PIXELS; j < PIXELS; j++, at++) {
        const x0 = digits.pixels[k * PIXELS + j], e = r.normal();
        x[at] = c.cIn * (c.alpha * x0 + c.sigma * e);
        target[at] = targetF(c, p.sigmaData, x0, e);
      }
    }
    const dims = [batch, 1, SIZE, SIZE];
    return {
      x: { type: "float32", data: x, dims },
      t: { type: "float32", data: t, dims: [batch] },
      class: { type: "int64", data: cls, dims: [batch] },
      eps_target: { type: "float32", data: target, dims },
    };
  };
}

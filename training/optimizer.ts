/**
 * The optimiser of training/trainer.ts: learning-rate schedules, Adam (AdamW with weight decay) on the
 * parameters' typed arrays, and gradient-norm clipping. Only + − × ÷ √ in a fixed order and the portable
 * cos of core/math.ts, so an update gives the same bits in every runtime.
 */
import { cos } from "../core/math.ts";

export type FloatArray = Float32Array | Float64Array;

/** A training run cannot go on (non-finite loss, mismatched checkpoint, missing values). */
export class TrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainError";
  }
}

// ----- learning-rate schedules

/** The learning rate of step k (0-based). */
export type LrSchedule = (step: number) => number;

export interface LrScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up from lr/warmup to lr over this many steps (default 0). */
  warmup?: number;
  /** After warm-up: constant (default), or cosine/linear decay to `minLr` at step `total`. */
  decay?: "constant" | "cosine" | "linear";
  /** Total steps (needed for decay). */
  total?: number;
  /** Final learning rate of the decay (default 0). */
  minLr?: number;
}

/** A constant learning rate. */
export function constantLr(lr: number): LrSchedule {
  return () => lr;
}

/** Linear warm-up, then constant, cosine or linear decay. */
export function lrSchedule(o: LrScheduleOptions): LrSchedule {
  const warmup = o.warmup ?? 0, minLr = o.minLr ?? 0, decay = o.decay ?? "constant";
  if (decay !== "constant" && !(o.total && o.total > warmup)) {
    throw new TrainError(`lrSchedule: ${decay} decay needs total > warmup`);
  }
  return (step) => {
    if (step < warmup) return (o.lr * (step + 1)) / warmup;
    if (decay === "constant") return o.lr;
    const progress = Math.min(1, (step - warmup) / (o.total! - warmup));
    const shape = decay === "cosine" ? 0.5 * (1 + cos(Math.PI * progress)) : 1 - progress;
    return minLr + (o.lr - minLr) * shape;
  };
}

// ----- Adam

export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW): p ← p·(1 − lr·wd) before the Adam step (default 0). */
  weightDecay?: number;
}

/** b^n by squaring (only multiplications: the same bits in every runtime). */
function powInt(b: number, n: number): number {
  let result = 1, base = b;
  for (let e = n; e > 0; e = Math.floor(e / 2)) {
    if (e % 2) result *= base;
    base *= base;
  }
  return result;
}

/** Adam with bias correction (Kingma & Ba), moments stored in the parameters' element types. */
export class Adam {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** First and second moments per parameter. */
  readonly m: Record<string, FloatArray> = {};
  readonly v: Record<string, FloatArray> = {};
  /** Updates made so far. */
  t = 0;

  constructor(params: Readonly<Record<string, FloatArray>>, options: AdamOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    for (const [name, p] of Object.entries(params)) {
      this.m[name] = new (p.constructor as typeof Float32Array)(p.length);
      this.v[name] = new (p.constructor as typeof Float32Array)(p.length);
    }
  }

  /** One update of `params` in place with gradients `grads`·`gradScale` and learning rate `lr`. */
  step(
    params: Record<string, FloatArray>,
    grads: Readonly<Record<string, ArrayLike<number>>>,
    lr: number,
    gradScale = 1,
  ): void {
    this.t++;
    const { beta1: b1, beta2: b2, eps } = this;
    const c1 = 1 - powInt(b1, this.t), c2 = 1 - powInt(b2, this.t);
    const decay = 1 - lr * this.weightDecay;
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name], m = this.m[name], v = this.v[name];
      if (!g || g.length !== p.length) {
        throw new TrainError(`Adam: gradient of '${name}' missing or mis-sized`);
      }
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * gradScale;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        const pi = this.weightDecay ? p[i] * decay : p[i];
        p[i] = pi - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
      }
    }
  }
}

/** The global L2 norm of several gradients (accumulated in float64 in a fixed order). */
export function globalNorm(grads: readonly ArrayLike<number>[]): number {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** The factor that clips a gradient of norm `norm` to at most `maxNorm` (1 when already within). */
export function clipFactor(norm: number, maxNorm: number): number {
  return norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}

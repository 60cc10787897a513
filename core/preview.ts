/**
 * Live previews of a running solve (docs/contracts.md §2–§3): the model's current prediction of the clean
 * sample,
 *
 *     x̂₀ = (x_t − σ_t ε̂(x_t, t)) / α_t,
 *
 * from the point x_t (VP scale, core/solvers/types.ts) of an evaluation and the ε̂ it returned, with α and
 * σ of the schedule (core/schedule.ts). In VP scale x_t = α_t x₀ + σ_t ε, so x̂₀ is in model space
 * (images in [−1, 1]).
 *
 * {@link withPreview} wraps a running solver as the guidance wrappers of core/guidance.ts do: it forwards
 * every request unchanged and, after the first evaluation of every `every`-th step, computes x̂₀ of the
 * first sample from the request and the ε̂ the solver receives (the guided ε̃ under classifier-free
 * guidance when it wraps the solver inside the guidance wrapper).
 */
import type { Schedule } from "./schedule.ts";
import type { EvalRequest, EvalResult, SolverRun, Tensor } from "./solvers/types.ts";

/** The largest side of an image preview (larger images are box-averaged down). */
export const PREVIEW_MAX_SIDE = 64;
/** Previews of non-image samples hold at most this many values; larger samples get none. */
export const PREVIEW_MAX_VALUES = 3 * PREVIEW_MAX_SIDE * PREVIEW_MAX_SIDE;

/** A preview: x̂₀ of one sample at a solver step, at most {@link PREVIEW_MAX_SIDE} pixels a side. */
export interface PreviewValues {
  /** The solver step whose evaluation it comes from (0-based). */
  step: number;
  /** The sample's shape, or [C, H', W'] for a shrunk image. */
  shape: number[];
  data: Float32Array;
}

/** Previews every this many steps of a run with `steps` steps: max(1, ⌊steps / 8⌋). */
export function previewEvery(steps: number): number {
  return Math.max(1, Math.floor(steps / 8));
}

/** x̂₀ = (x − σ_t ε̂)/α_t of sample `row` of an evaluation (`dim` numbers per sample). */
export function predictedX0(
  schedule: Schedule,
  x: Float64Array,
  eps: Tensor,
  t: number,
  row: number,
  dim: number,
): Float64Array {
  const alpha = schedule.alpha(t), sigma = schedule.sigma(t);
  const out = new Float64Array(dim);
  for (let i = 0, k = row * dim; i < dim; i++, k++) out[i] = (x[k] - sigma * eps[k]) / alpha;
  return out;
}

/**
 * A sample as a preview: images [C, H, W] box-averaged to at most {@link PREVIEW_MAX_SIDE} pixels a side;
 * other shapes as they are, or undefined when they hold more than {@link PREVIEW_MAX_VALUES} values.
 */
export function shrinkPreview(
  values: ArrayLike<number>,
  shape: readonly number[],
): { shape: number[]; data: Float32Array } | undefined {
  if (shape.length === 3) {
    const [c, h, w] = shape;
    const f = Math.ceil(Math.max(h, w) / PREVIEW_MAX_SIDE);
    if (f > 1) {
      const h2 = Math.ceil(h / f), w2 = Math.ceil(w / f);
      const data = new Float32Array(c * h2 * w2);
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < h2; y++) {
          for (let x = 0; x < w2; x++) {
            let sum = 0, count = 0;
            for (let yy = y * f; yy < Math.min(h, (y + 1) * f); yy++) {
              for (let xx = x * f; xx < Math.min(w, (x + 1) * f); xx++) {
                sum += values[(ch * h + yy) * w + xx];
                count++;
              }
            }
            data[(ch * h2 + y) * w2 + x] = sum / count;
          }
        }
      }
      return { shape: [c, h2, w2], data };
    }
  }
  if (values.length > PREVIEW_MAX_VALUES) return undefined;
  return { shape: [...shape], data: Float32Array.from(values) };
}

export interface PreviewOptions {
  schedule: Schedule;
  /** The per-sample shape. */
  shape: readonly number[];
  /** Steps between previews (default {@link previewEvery} of the run's step count). */
  every?: number;
  /** Receives each preview; a throw is ignored (a preview never fails the run). */
  onPreview: (p: PreviewValues) => void;
}

/**
 * `run` with previews: after the first evaluation of steps 0, every, 2·every, … (not the final denoising
 * evaluation, step === steps), `onPreview` gets x̂₀ of the first sample. Requests and results pass
 * through unchanged; closing the outer run closes `run`.
 */
export function* withPreview(run: SolverRun, opts: PreviewOptions): SolverRun {
  const dim = opts.shape.reduce((a, b) => a * b, 1);
  let done = false, last = -1;
  try {
    let next = run.next();
    while (!next.done) {
      const req: EvalRequest = next.value;
      const res: EvalResult = yield req;
      const every = opts.every ?? previewEvery(req.steps);
      if (req.step < req.steps && req.step !== last && req.step % every === 0 && req.t.length > 0) {
        last = req.step;
        try {
          const x0 = predictedX0(opts.schedule, req.x, res.eps, req.t[0], 0, dim);
          const small = shrinkPreview(x0, opts.shape);
          if (small) opts.onPreview({ step: req.step, ...small });
        } catch {
          // a preview never fails the run
        }
      }
      next = run.next(res);
    }
    done = true;
    return next.value;
  } finally {
    if (!done) run.return(new Float64Array(0));
  }
}

/**
 * The data a head is distilled on when none are given: the model's own samples (DPM-Solver++(2M) on its
 * registry grid), and the noised points x_t = α x₀ + σ ε drawn from such a pool. Part of
 * training/model_folder.ts.
 */
import { makeGrid } from "../../core/grid.ts";
import { withClasses } from "../../core/guidance.ts";
import { epsFromPrediction } from "../../core/prediction.ts";
import { gaussianNoise, type RngStream } from "../../core/rng.ts";
import { type AsyncEvaluator, runSolverAsync } from "../../core/solvers/drive.ts";
import { getSolver, stepsForNfe } from "../../core/solvers/registry.ts";
import type { EvalRequest } from "../../core/solvers/types.ts";
import { runSession } from "../../onnx/ort.ts";
import { baseFeeds, type FolderGraphs } from "./graphs.ts";
import type { FolderModel } from "./read.ts";

/** An evaluator of ε (converted from x₀ or v) over the features session, `maxBatch` rows per call. */
function folderEvaluator(g: FolderGraphs): AsyncEvaluator {
  const m = g.model;
  return async (req: EvalRequest) => {
    const rows = req.t.length, out = new Float64Array(rows * m.dim);
    for (let from = 0; from < rows; from += m.maxBatch) {
      const n = Math.min(m.maxBatch, rows - from);
      const x = Float32Array.from(req.x.subarray(from * m.dim, (from + n) * m.dim));
      const t = req.t.subarray(from, from + n);
      const cls = BigInt64Array.from(
        { length: n },
        (_, i) => BigInt(req.classes ? req.classes[from + i] : m.classes?.nullClass ?? 0),
      );
      const r = await runSession(g.features, baseFeeds(m, x, t, cls), [m.names.eps]);
      const raw = r[m.names.eps].data as Float32Array;
      out.set(
        epsFromPrediction(m.prediction, m.schedule, raw, Float64Array.from(x), Float64Array.from(t)),
        from * m.dim,
      );
    }
    return { eps: out };
  };
}

/** x₀ samples to noise for distillation, with their class labels (−1: none). */
export interface DataPool {
  x: Float32Array;
  labels: Int32Array;
  count: number;
}

/**
 * `n` samples of the model itself: DPM-Solver++(2M) at `nfe` evaluations on its registry grid with the
 * final denoising step, from the noise of seeds seed·2²⁰ + i, sample i of class i mod count for a
 * class-conditional model. `onProgress` gets the samples done so far.
 */
export async function samplePool(
  g: FolderGraphs,
  o: { n: number; nfe: number; seed: number; onProgress?: (done: number) => void },
): Promise<DataPool> {
  const m = g.model, solver = getSolver("dpmpp-2m"), evaluate = folderEvaluator(g);
  const steps = stepsForNfe("dpmpp-2m", o.nfe, { afs: false, denoise: true });
  const grid = makeGrid(m.schedule, { kind: solver.grid.kind, rho: solver.grid.rho, steps });
  const x = new Float32Array(o.n * m.dim), labels = new Int32Array(o.n).fill(-1);
  const chunk = Math.max(1, m.maxBatch);
  for (let from = 0; from < o.n; from += chunk) {
    const n = Math.min(chunk, o.n - from);
    const noise = new Float64Array(n * m.dim);
    for (let i = 0; i < n; i++) noise.set(gaussianNoise(o.seed * 2 ** 20 + from + i, 0, m.dim), i * m.dim);
    let run = solver.fn({ schedule: m.schedule, grid, x: noise, batch: n, dim: m.dim, denoise: true });
    if (m.classes) {
      const cls = Int32Array.from({ length: n }, (_, i) => (from + i) % m.classes!.count);
      labels.set(cls, from);
      run = withClasses(run, cls);
    }
    const r = await runSolverAsync(run, evaluate);
    x.set(Float32Array.from(r.x), from * m.dim);
    o.onProgress?.(from + n);
  }
  return { x, labels, count: o.n };
}

/**
 * x_t = α x₀ + σ ε for `batch` draws from `r`: x₀ from the pool, t ~ U[t_min, 1] (or `tFixed`), the class
 * the pool sample has (the null class with probability `drop`, or always when the sample has none and
 * the model has a null class).
 */
export function drawFromPool(
  model: FolderModel,
  pool: DataPool,
  batch: number,
  r: RngStream,
  drop: number,
  tFixed?: number[],
): { x: Float32Array; t: Float32Array; cls: BigInt64Array } {
  const { dim, schedule } = model, nullClass = model.classes?.nullClass;
  const x = new Float32Array(batch * dim), t = new Float32Array(batch), cls = new BigInt64Array(batch);
  for (let b = 0; b < batch; b++) {
    const k = Math.min(pool.count - 1, Math.floor(r.uniform() * pool.count));
    const u = r.uniform();
    const tb = Math.fround(tFixed ? tFixed[b] : schedule.tMin + (1 - schedule.tMin) * u);
    t[b] = tb;
    const label = pool.labels[k], dropped = r.uniform() < drop;
    cls[b] = BigInt(
      nullClass !== undefined && (dropped || label < 0)
        ? nullClass
        : label >= 0
        ? label
        : model.classes
        ? Math.floor(r.uniform() * model.classes.count) % model.classes.count
        : 0,
    );
    const alpha = schedule.alpha(tb), sigma = schedule.sigma(tb);
    for (let i = 0; i < dim; i++) {
      x[b * dim + i] = alpha * pool.x[k * dim + i] + sigma * r.normal();
    }
  }
  return { x, t, cls };
}

/**
 * The head's training graph and its feeds from distillation data, with the loss weights that make it the
 * mean squared relative error, and the held-out measures: the head's k on a batch, per-sample relative
 * errors and their medians per range of t. Part of `deno task distill` (training/distill.ts).
 */
import { median } from "../../core/stats.ts";
import { gradModel, meanSquaredErrorLoss } from "../../onnx/grad.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import { type GradientSetup, onSetup, SIZE } from "../common.ts";
import { buildHeadModel, type HeadOptions } from "../head.ts";
import type { HeadData } from "../targets.ts";
import type { Batch, FloatArray } from "../trainer.ts";

/** The head's training-graph feeds from distillation data (mnist-unet's digits). */
export function headFeeds(d: HeadData): Batch {
  return headFeedsFor(d, [1, SIZE, SIZE]);
}

/** The head's training-graph feeds from distillation data of images `shape` [C, H, W] (no temb when E = 0). */
export function headFeedsFor(d: HeadData, shape: readonly number[]): Batch {
  const img = [d.batch, ...shape];
  return {
    x: { type: "float32", data: d.x, dims: img },
    eps: { type: "float32", data: d.eps, dims: img },
    features: { type: "float32", data: d.features, dims: [d.batch, d.featureChannels, shape[1], shape[2]] },
    ...(d.embed > 0 ? { temb: { type: "float32" as const, data: d.temb, dims: [d.batch, d.embed] } } : {}),
    gamma: { type: "float32", data: d.gamma, dims: [d.batch] },
    ...Object.fromEntries((d.coarse ?? []).map((c, j) => [`coarse${j}`, {
      type: "float32" as const,
      data: c.data,
      dims: [d.batch, ...c.dims],
    }])),
    k_target: { type: "float32", data: d.target, dims: img },
    w: { type: "float32", data: relativeWeights(d.target, d.batch), dims: [d.batch] },
  };
}

/**
 * Per-sample loss weights 1/max(‖τ_b‖², P·τ_floor²) (P values per sample): the weighted loss
 * Σ_b w_b ‖k_b − τ_b‖² / B is then the mean squared relative error, the measure the head is judged by,
 * wherever the target's RMS exceeds `floor`. ‖τ‖ falls from about 0.1/γ at small γ to about 0.03/γ² at
 * large γ (1e−6 at t = 1), where a step's Taylor term ½h²k is negligible next to x̄; without the floor
 * those samples' relative error, hypersensitive to any output at all, dominates the loss.
 */
export function relativeWeights(target: ArrayLike<number>, batch: number, floor = TAU_FLOOR): Float32Array {
  const per = target.length / batch, w = new Float32Array(batch);
  for (let b = 0; b < batch; b++) {
    let sum = 0;
    for (let i = b * per; i < (b + 1) * per; i++) sum += target[i] * target[i];
    w[b] = 1 / Math.max(sum, per * floor * floor);
  }
  return w;
}

/** The RMS of τ below which the loss counts absolute rather than relative error (about t = 0.65). */
const TAU_FLOOR = 1e-3;

/**
 * The head's training graph: loss = mean_b w_b Σ (k − τ)² with w from {@link relativeWeights}; `size` is
 * the image's side, or [H, W].
 */
export function headTrainingGraph(
  options: Partial<HeadOptions> = {},
  size: number | readonly [number, number] = SIZE,
  setup: GradientSetup = { formulation: 2, grad: 2 },
) {
  const head = buildHeadModel(size, options);
  const graph = onSetup(
    gradModel(meanSquaredErrorLoss(head.model, "k", { weight: "w", perSample: "sum" }), {
      params: head.params,
      formulation: setup.grad,
    }),
    setup,
  );
  return { head, graph };
}

/** k of the head with parameter values `params` on distillation data (of images `shape`, default MNIST's). */
export async function runHead(
  params: Readonly<Record<string, FloatArray>>,
  d: HeadData,
  options: Partial<HeadOptions> = {},
  shape: readonly number[] = [1, SIZE, SIZE],
): Promise<Float32Array> {
  const size = shape[1] === SIZE && shape[2] === SIZE ? SIZE : [shape[1], shape[2]] as const;
  const head = buildHeadModel(size, options, (name) => Float32Array.from(params[name]));
  const { session } = await createSession(encodeModel(head.model), { providers: ["cpu"], threads: 1 });
  const feeds = headFeedsFor(d, shape);
  delete feeds.k_target;
  delete feeds.w;
  const out = await runSession(session, feeds, ["k"]);
  await session.release?.();
  return out.k.data as Float32Array;
}

/** Per-sample relative error ‖k − τ‖/‖τ‖. */
export function relativeErrors(k: ArrayLike<number>, target: ArrayLike<number>, batch: number): number[] {
  const per = target.length / batch;
  return Array.from({ length: batch }, (_, b) => {
    let num = 0, den = 0;
    for (let i = b * per; i < (b + 1) * per; i++) {
      num += (k[i] - target[i]) ** 2;
      den += target[i] ** 2;
    }
    return Math.sqrt(num / den);
  });
}

/** Median errors per range of t (`t[i]` is sample i's time). */
export function summary(errors: number[], t: ArrayLike<number>): string {
  const buckets: [number, number][] = [[0, 0.1], [0.1, 0.3], [0.3, 0.6], [0.6, 1.01]];
  return buckets.map(([a, b]) => {
    const sel = errors.filter((_, i) => t[i] >= a && t[i] < b);
    return `t∈[${a},${Math.min(b, 1)}): ${sel.length ? median(sel).toFixed(3) : "-"}`;
  }).join("  ");
}

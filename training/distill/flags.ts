/**
 * The flags of `deno task distill` (training/distill.ts) and their defaults: mnist-unet's program, the
 * model-folder program's, and the flags the training loop reads in both.
 */
import { UsageError } from "../../core/flags.ts";
import { HEAD_DEFAULTS, type HeadOptions } from "../head.ts";
import type { Focus } from "./dataset.ts";

/**
 * mnist-unet's defaults (the digits are the data): the recipe of the shipped head, so a plain
 * `deno task distill` resumes it (and with `--formulation 1`, the gradients it was distilled with,
 * reproduces it bit for bit from scratch). The head reads x̂₀, dx/dγ and two coarse decoder maps
 * through 3 hidden 3×3 layers of width 64 on the 14×14 grid (stride 2); 32,768 samples' targets are
 * computed once, and 70% of each batch has t ∈ [0.25, 0.85), the times where the derivative matters
 * most to a few-step sampler (docs/head.md, "Where the derivative matters").
 */
export const DISTILL_DEFAULTS = {
  steps: 20000,
  batch: 32,
  lr: 1e-3,
  minLr: 1e-5,
  warmup: 200,
  ema: 0.999,
  drop: 0.1,
  width: 64,
  depth: 3,
  kernel: 3,
  stride: 2,
  derived: true,
  coarse: 2,
  targets: 32768,
  refresh: 0,
  focus: 0.7,
  focusFrom: 0.25,
  focusTo: 0.85,
  seed: 1,
  threads: 2,
  model: "models/mnist-unet",
  ckpt: "training/checkpoints/mnist-unet-head",
  every: 250,
  progress: 20,
  evalBatch: 48,
  evalEvery: 1000,
  maxMinutes: 0,
  stopAt: 0,
  /** The gradient formulation (training/common.ts); 1 reproduces the shipped head's run bit for bit. */
  formulation: 3,
  /**
   * Data-parallel sessions sharing `threads` (training/parallel.ts; 0 chooses as `deno task train` does).
   * 1: a head's training graph is small, and splitting it was measured no faster on 2 cores.
   */
  parallel: 1,
};

/**
 * The defaults of `deno task distill --model NAME` for a model other than mnist-unet: a short run
 * (2000 steps at batch 16: minutes on a small model) of the smallest head (training/head.ts
 * `HEAD_DEFAULTS`) with fresh targets every step and a faster weight average, and the data flags.
 */
export const FOLDER_DISTILL_DEFAULTS = {
  ...DISTILL_DEFAULTS,
  width: HEAD_DEFAULTS.width,
  depth: HEAD_DEFAULTS.depth,
  kernel: HEAD_DEFAULTS.kernel,
  stride: HEAD_DEFAULTS.stride,
  derived: HEAD_DEFAULTS.derived,
  coarse: 0,
  targets: 0,
  focus: 0,
  steps: 2000,
  batch: 16,
  warmup: 100,
  ema: 0.995,
  model: "",
  ckpt: "",
  every: 100,
  evalBatch: 32,
  evalEvery: 500,
  features: "",
  temb: "",
  data: "",
  labels: "",
  pool: 256,
  poolNfe: 20,
};

/** The flags only the model-folder path has: given for mnist-unet, they select it there too. */
export const FOLDER_ONLY = ["--features", "--temb", "--data", "--labels", "--pool", "--pool-nfe"];

/** The integer flags and their least values. */
export const INTEGER_FLAGS = {
  steps: 1,
  batch: 1,
  warmup: 0,
  width: 1,
  depth: 1,
  kernel: 1,
  stride: 1,
  coarse: 0,
  targets: 0,
  refresh: 0,
  seed: 0,
  threads: 1,
  every: 1,
  progress: 1,
  evalBatch: 1,
  evalEvery: 0,
  stopAt: 0,
  formulation: 1,
  parallel: 0,
};

/**
 * The head's architecture flags as {@link HeadOptions}: `kernel` must be odd ("same" padding), and
 * `stride` must divide the image's height and width (`size`).
 */
export function headArchitecture(
  f: { width: number; depth: number; kernel: number; stride: number; derived: boolean },
  size: readonly [number, number],
): Pick<HeadOptions, "width" | "depth" | "kernel" | "stride" | "derived"> {
  if (f.kernel % 2 === 0) {
    throw new UsageError("--kernel", `${f.kernel} is even; the head's convolutions need an odd size`);
  }
  if (size.some((d) => d % f.stride !== 0)) {
    throw new UsageError("--stride", `${f.stride} does not divide the image size ${size.join("×")}`);
  }
  return { width: f.width, depth: f.depth, kernel: f.kernel, stride: f.stride, derived: f.derived };
}

/** `--focus P --focus-from A --focus-to B` as the target set's {@link Focus} (it needs `--targets`). */
export function focusOf(
  f: { focus: number; focusFrom: number; focusTo: number; targets: number },
): Focus | undefined {
  if (f.focus === 0) return undefined;
  if (!(f.focus > 0 && f.focus <= 1)) {
    throw new UsageError("--focus", `${f.focus} is not a probability in (0, 1]`);
  }
  if (f.targets === 0) {
    throw new UsageError("--focus", "favours times within the target set: give --targets N too");
  }
  if (!(f.focusFrom >= 0 && f.focusFrom < f.focusTo && f.focusTo <= 1.01)) {
    throw new UsageError("--focus-from", `[${f.focusFrom}, ${f.focusTo}) is not a range of t within [0, 1]`);
  }
  return { p: f.focus, from: f.focusFrom, to: f.focusTo };
}

/** Checks `--refresh S` (a new target set every S steps): it needs `--targets`. */
export function refreshOf(f: { refresh: number; targets: number }): void {
  if (f.refresh > 0 && f.targets === 0) {
    throw new UsageError("--refresh", "replaces the target set every S steps: give --targets N too");
  }
}

/** The flags the training loop reads (both programs). */
export type LoopFlags = Pick<
  typeof DISTILL_DEFAULTS,
  | "steps"
  | "every"
  | "progress"
  | "evalEvery"
  | "maxMinutes"
  | "stopAt"
  | "ckpt"
  | "threads"
  | "formulation"
  | "parallel"
>;

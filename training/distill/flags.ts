/**
 * The flags of `deno task distill` (training/distill.ts) and their defaults: mnist-unet's program, the
 * model-folder program's, and the flags the training loop reads in both.
 */
import { HEAD_DEFAULTS } from "../head.ts";

/** mnist-unet's defaults (the digits are the data). */
export const DISTILL_DEFAULTS = {
  steps: 20000,
  batch: 32,
  lr: 1e-3,
  minLr: 1e-5,
  warmup: 200,
  ema: 0.999,
  drop: 0.1,
  width: HEAD_DEFAULTS.width,
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
};

/**
 * The defaults of `deno task distill --model NAME` for a model other than mnist-unet: a short run
 * (2000 steps at batch 16: minutes on a small model) with a faster weight average, and the data flags.
 */
export const FOLDER_DISTILL_DEFAULTS = {
  ...DISTILL_DEFAULTS,
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
  seed: 0,
  threads: 1,
  every: 1,
  progress: 1,
  evalBatch: 1,
  evalEvery: 0,
  stopAt: 0,
};

/** The flags the training loop reads (both programs). */
export type LoopFlags = Pick<
  typeof DISTILL_DEFAULTS,
  "steps" | "every" | "progress" | "evalEvery" | "maxMinutes" | "stopAt" | "ckpt" | "threads"
>;

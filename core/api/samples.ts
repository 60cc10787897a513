/**
 * `POST /v1/samples` and `POST /v1/encode` (docs/contracts.md §2): the request schemas, the per-model
 * checks that need the model's description, and the response shapes. The edge validates with these
 * before forwarding; the OpenAPI document is generated from the same schemas. The per-model checks are in
 * checks.ts, re-exported here.
 */
import { z } from "zod";
import { GRID_KINDS } from "../grid.ts";
import { MAX_PNG_SCALE } from "../image.ts";
import { DEFAULT_NFE, DEFAULT_SOLVER } from "../plan.ts";
import { DERIVATIVE_SOURCES, SOLVER_VARIANTS } from "../solvers/types.ts";
import { ModelName } from "./models.ts";
import { Tensor, TensorOutput } from "./tensor.ts";

export {
  checkEncodeForModel,
  checkSamplesForModel,
  checkTensorForModel,
  guidanceOf,
  type Img2ImgLegs,
  img2imgLegs,
  isImageModel,
  requestedCount,
} from "./checks.ts";

/** Hard caps that hold whatever a model allows. */
export const HARD_LIMITS = {
  n: 4096,
  steps: 10_000,
  nfe: 20_000,
  deadline_ms: 3_600_000,
  images: 4096,
} as const;
/** The defaults of a solve are decided in core/plan.ts; re-exported for the API's users. */
export { DEFAULT_NFE, DEFAULT_SOLVER, nearestNfes } from "../plan.ts";
export const OUTPUTS = ["png", "tensor"] as const;
export const VARIANTS = SOLVER_VARIANTS;

/** Images given as input: PNGs (base64) or a tensor [n, …sample shape] in model space. */
export const InputImages = z.union([z.array(z.base64()).min(1).max(HARD_LIMITS.images), Tensor]);

/** Solver settings shared by sampling and encoding. */
const solveFields = {
  model: ModelName,
  solver: z.string().min(1).max(64).optional().meta({
    description: `Solver name (default "${DEFAULT_SOLVER}")`,
  }),
  steps: z.int().min(1).max(HARD_LIMITS.steps).optional().meta({ description: "Solver steps (or give nfe)" }),
  nfe: z.int().min(1).max(HARD_LIMITS.nfe).optional().meta({
    description: `Network evaluations; steps are chosen to use exactly this many (default ${DEFAULT_NFE})`,
  }),
  grid: z.enum(GRID_KINDS).optional().meta({
    description:
      "Time grid (default: the model's default grid for the solver, else the solver's recommended " +
      "grid; GET /v1/models lists them as default_grids)",
  }),
  rho: z.number().positive().max(1000).optional().meta({
    description:
      "Exponent of the power (default 2) and edm (default 7) grids; the quadratic grid is ρ = 2. " +
      "Without grid it applies to the default grid (a default quadratic grid becomes power with this ρ); " +
      "refused on the uniform and logsnr grids",
  }),
  t_min: z.number().positive().max(1000).optional().meta({
    description: "Last time of the grid (default: the model's schedule's, e.g. 1e-3 for vp-linear)",
  }),
  t_max: z.number().positive().max(1000).optional().meta({
    description: "First time of the grid, above t_min (default and at most: the schedule's, e.g. 1 for " +
      "vp-linear)",
  }),
  order: z.int().min(1).max(4).optional().meta({ description: "Order of solvers that have several" }),
  variant: z.enum(VARIANTS).optional().meta({
    description: "the form of solvers that have several: UniPC's B(h) (bh1, bh2); dpmpp-3m's update " +
      "(reference, quadratic-exact)",
  }),
  deadline_ms: z.int().min(1).max(HARD_LIMITS.deadline_ms).optional().meta({
    description: "Give up (504) after this many milliseconds",
  }),
};

function notBoth(v: { steps?: number; nfe?: number }, ctx: z.core.$RefinementCtx<unknown>): void {
  if (v.steps !== undefined && v.nfe !== undefined) {
    ctx.addIssue({ code: "custom", path: ["nfe"], message: "give steps or nfe, not both" });
  }
}

/** `guidance` (w) and `guidance_scale` (s = 1 + w) say the same thing: one of them at most. */
function oneGuidance(
  v: { guidance?: number; guidance_scale?: number },
  ctx: z.core.$RefinementCtx<unknown>,
): void {
  if (v.guidance !== undefined && v.guidance_scale !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["guidance_scale"],
      message: "give guidance (w) or guidance_scale (s = 1 + w), not both",
    });
  }
}

export const SamplesRequest = z.strictObject({
  ...solveFields,
  n: z.int().min(1).max(HARD_LIMITS.n).optional().meta({ description: "Number of samples (default 1)" }),
  afs: z.boolean().optional().meta({ description: "Analytical first step" }),
  denoise: z.boolean().optional().meta({ description: "Final denoising step (+1 NFE)" }),
  seed: z.int().min(-1).max(0xffffffff).optional().meta({
    description: "Seed of the first sample; sample i uses seed + i (mod 2³²). -1 or absent: a random " +
      "seed, drawn by the server and echoed in the response (seeds, the X-Genie-Seeds header)",
  }),
  class: z.int().min(0).optional().meta({ description: "Class label (class-conditional models)" }),
  guidance: z.number().optional().meta({
    description: "Classifier-free guidance weight w: ε̃ = (1 + w) ε_c − w ε_u; 0 (the default) is off",
  }),
  guidance_scale: z.number().optional().meta({
    description: "The same as diffusers' guidance_scale s = 1 + w (1 is off, 7.5 is w = 6.5); " +
      "give guidance or guidance_scale, not both",
  }),
  scale: z.int().min(1).max(MAX_PNG_SCALE).optional().meta({
    description: "Integer upscaling factor of PNG outputs (the grid and each image), nearest neighbour " +
      "(default 1)",
  }),
  latents: Tensor.optional().meta({ description: "x at t_max, shape [n, …sample shape]; overrides seed" }),
  genie_derivative: z.enum(DERIVATIVE_SOURCES).optional(),
  output: z.enum(OUTPUTS).optional().meta({
    description: 'JSON/msgpack output: "png" (images, the default for image models) or "tensor"',
  }),
  images: InputImages.optional().meta({
    description: "img2img: the starting images, PNGs (base64, each of the model's sample shape) or a " +
      "tensor [n, …sample shape] in model space (values in [−1, 1]); needs strength. They are encoded " +
      "along the ODE from t_min to t = strength · t_max, then sampled back from there with the same " +
      "solver settings",
  }),
  strength: z.number().gt(0).max(1).optional().meta({
    description: "img2img: how far into the noise the images are taken, in (0, 1]: the encoding ends " +
      "and the sampling starts at t = strength · t_max (1: all the way, as sampling from the images' " +
      "latents); needs images",
  }),
  preview: z.boolean().optional().meta({
    description: "With Accept: text/event-stream, progress events carry a preview of the model's " +
      "current prediction x̂₀ of the first sample every max(1, ⌊steps/8⌋) steps (also ?preview=1)",
  }),
}).superRefine((v, ctx) => {
  notBoth(v, ctx);
  oneGuidance(v, ctx);
  if (v.strength !== undefined && v.images === undefined) {
    ctx.addIssue({ code: "custom", path: ["strength"], message: "needs images (img2img)" });
  }
  if (v.images !== undefined && v.strength === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["strength"],
      message: "is required with images: how far to take them into the noise, in (0, 1] (e.g. 0.6)",
    });
  }
  if (v.images !== undefined && v.latents !== undefined) {
    ctx.addIssue({ code: "custom", path: ["images"], message: "give images or latents, not both" });
  }
}).meta({ id: "SamplesRequest" });
export type SamplesRequest = z.infer<typeof SamplesRequest>;

export const EncodeRequest = z.strictObject({
  ...solveFields,
  class: z.int().min(0).optional().meta({
    description: "Class label: encode along the class-conditional ODE (as samples of that class are drawn)",
  }),
  guidance: z.number().optional().meta({
    description: "Classifier-free guidance weight w of the ODE (needs class; 0, the default, is off)",
  }),
  guidance_scale: z.number().optional().meta({ description: "diffusers' s = 1 + w; excludes guidance" }),
  genie_derivative: z.enum(DERIVATIVE_SOURCES).optional(),
  images: z.array(z.base64()).min(1).max(HARD_LIMITS.images).optional().meta({
    description: "PNG images (base64), each of the model's sample shape",
  }),
  tensor: Tensor.optional().meta({
    description: "Images in model space [n, …sample shape] (values in [−1, 1])",
  }),
}).superRefine((v, ctx) => {
  notBoth(v, ctx);
  oneGuidance(v, ctx);
  if ((v.images === undefined) === (v.tensor === undefined)) {
    ctx.addIssue({ code: "custom", path: ["images"], message: "give exactly one of images or tensor" });
  }
}).meta({ id: "EncodeRequest" });
export type EncodeRequest = z.infer<typeof EncodeRequest>;

/** The price of a run, per sample trajectory (core/cost.ts). */
const costFields = {
  calls: z.int().optional().meta({
    description:
      "Graph calls of every kind (eps, head, jvp) per sample trajectory; a GENIE step with the jvp " +
      "derivative makes two (eps, then the JVP), with the head one",
  }),
  cost: z.number().optional().meta({
    description:
      "Forward-pass equivalents per sample trajectory: Σ over the calls of the graph's cost ratio to " +
      "one eps call (the model's measured ratios; GET /v1/models lists them as costs)",
  }),
  cost_estimated: z.boolean().optional().meta({
    description: "True when a called graph has no measured ratio and cost uses the fallback (head 1, jvp 3)",
  }),
  grid: z.enum(GRID_KINDS).optional().meta({ description: "The time grid the run used" }),
  rho: z.number().optional().meta({ description: "The grid's ρ (power, quadratic and edm grids)" }),
};

export const Timings = z.object({
  queue_ms: z.number(),
  compute_ms: z.number(),
  total_ms: z.number().meta({ description: "Wall time at the edge, forwarding included" }),
}).meta({ id: "Timings" });

export const SamplesResponse = z.object({
  id: z.string(),
  model: z.string(),
  solver: z.string(),
  steps: z.int(),
  nfe: z.int().meta({ description: "Evaluations of ε per sample trajectory (a head call counts as one)" }),
  ...costFields,
  seeds: z.array(z.int()),
  shape: z.array(z.int()),
  images: z.array(z.object({
    seed: z.int(),
    png: z.string().meta({ description: "base64 PNG (raw bytes in msgpack)" }),
  })).optional(),
  tensor: TensorOutput.optional(),
  timings: Timings,
}).meta({ id: "SamplesResponse" });

export const EncodeResponse = z.object({
  id: z.string(),
  model: z.string(),
  solver: z.string(),
  steps: z.int(),
  nfe: z.int().meta({ description: "Evaluations of ε per sample trajectory" }),
  ...costFields,
  latents: TensorOutput,
  timings: Timings,
}).meta({ id: "EncodeResponse" });

/**
 * SSE `progress` event data: `queued` (step 0), `running` events as the solver steps advance (`step`
 * 0 … steps − 1 in order, each value once: the step every chunk has started; functions/sampling.ts),
 * an event per finished chunk (`done` grows), the last with phase `done` and step = steps.
 * `steps_done`/`steps_total` count solver steps over every worker call of the request (img2img: its
 * encoding and its sampling): they grow from the first step and equal only in the last event. From a
 * worker that does not stream steps, only the chunk events come.
 */
export const ProgressEvent = z.object({
  step: z.int(),
  steps: z.int(),
  done: z.int().meta({ description: "Samples finished" }),
  n: z.int(),
  phase: z.enum(["queued", "running", "done"]),
  steps_done: z.int().meta({
    description: "Solver steps finished, summed over every worker call (chunk) of the request",
  }),
  steps_total: z.int().meta({ description: "steps_done at the end: steps × chunks (img2img: both legs)" }),
  preview: z.union([z.string(), z.array(z.number())]).optional().meta({
    description: "With preview: x̂₀ of the first sample, the model's current prediction of the clean " +
      "sample: a PNG data URL (data:image/png;base64,…; image models, at most 64 px a side) or the " +
      "sample's values (other models)",
  }),
  preview_step: z.int().optional().meta({ description: "The solver step the preview comes from" }),
}).meta({ id: "ProgressEvent" });

/** The first seed of a request: its `seed`, or a random one when it is absent or −1. */
export function firstSeedOf(seed: number | undefined): number {
  return seed === undefined || seed === -1 ? randomSeed() : seed;
}

/** Per-sample seeds: seed, seed + 1, … (mod 2³²). */
export function seedsFrom(first: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (first + i) >>> 0);
}

/** A uniformly random u32 (web crypto). */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

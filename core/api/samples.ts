/**
 * `POST /v1/samples` and `POST /v1/encode` (docs/contracts.md §2): the request schemas, the per-model
 * checks that need the model's description, and the response shapes. The edge validates with these
 * before forwarding; the OpenAPI document is generated from the same schemas.
 */
import { z } from "zod";
import { GRID_KINDS } from "../grid.ts";
import { MAX_PNG_SCALE } from "../image.ts";
import {
  DEFAULT_NFE,
  DEFAULT_SOLVER,
  type Direction,
  PlanError,
  planModelOf,
  planSolve,
  type SolveRequest,
} from "../plan.ts";
import { DERIVATIVE_SOURCES, SOLVER_VARIANTS } from "../solvers/types.ts";
import type { Issue } from "./errors.ts";
import { type ModelInfo, ModelName } from "./models.ts";
import { shapeSize, Tensor, TensorOutput } from "./tensor.ts";

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
  if (v.guidance !== undefined && v.guidance_scale !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["guidance_scale"],
      message: "give guidance (w) or guidance_scale (s = 1 + w), not both",
    });
  }
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
  if (v.guidance !== undefined && v.guidance_scale !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["guidance_scale"],
      message: "give guidance (w) or guidance_scale (s = 1 + w), not both",
    });
  }
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

function issue(path: (string | number)[], message: string): Issue {
  return { path, message, code: "invalid_value" };
}

/** The sample count a request asks for: latents' (or images') first dimension, else n, else 1. */
export function requestedCount(req: SamplesRequest): number {
  if (req.latents) return req.latents.shape[0];
  if (req.images) return Array.isArray(req.images) ? req.images.length : req.images.shape[0];
  return req.n ?? 1;
}

/** The two legs of an img2img request (`images` with `strength`): encode to t, then sample from t. */
export interface Img2ImgLegs {
  /** t = strength · t_max, where the encoding ends and the sampling starts. */
  t: number;
  /** The encoding's request (its images are the request's). */
  encode: Omit<EncodeRequest, "images" | "tensor">;
  /** The sampling's request, without images (the edge adds the encoding's latents). */
  sample: SamplesRequest;
}

/**
 * The legs of an img2img request on `model`: both with the request's solver settings, the encoding
 * from t_min to t = strength · t_max (t_max: the request's, else the schedule's), the sampling from t
 * back to t_min. A string says why there are none (the schedule is unknown here).
 */
export function img2imgLegs(req: SamplesRequest, model: ModelInfo): Img2ImgLegs | string {
  const tMax = req.t_max ?? planModelOf(model).schedule?.tMax;
  if (tMax === undefined) return `${model.name}'s schedule is unknown here; give t_max`;
  const t = (req.strength ?? 1) === 1 ? tMax : (req.strength ?? 1) * tMax;
  const { images: _, strength: __, latents: ___, preview: ____, n: _____, ...rest } = req;
  const sample: SamplesRequest = { ...rest, n: requestedCount(req), t_max: t };
  const encode: Img2ImgLegs["encode"] = {
    model: req.model,
    solver: req.solver,
    steps: req.steps,
    nfe: req.nfe,
    grid: req.grid,
    rho: req.rho,
    t_min: req.t_min,
    t_max: t,
    order: req.order,
    variant: req.variant,
    genie_derivative: req.genie_derivative,
    class: req.class,
    guidance: guidanceOf(req),
    deadline_ms: req.deadline_ms,
  };
  for (const k of Object.keys(encode) as (keyof typeof encode)[]) {
    if (encode[k] === undefined) delete encode[k];
  }
  return { t, encode, sample };
}

/**
 * The solve settings of a request against one model: the plan of core/plan.ts (the one place solve
 * defaults and rules are decided), its refusals as issues naming each field (with `valid` NFEs where it
 * can tell).
 */
function checkSolve(
  req: SolveRequest & { guidance_scale?: number },
  model: ModelInfo,
  direction: Direction,
): Issue[] {
  try {
    planSolve(
      { ...req, guidance: guidanceOf(req) },
      planModelOf(model),
      direction,
    );
    return [];
  } catch (e) {
    if (!(e instanceof PlanError)) throw e;
    return e.all.map((p) => ({ ...issue([p.field], p.detail), ...(p.valid ? { valid: p.valid } : {}) }));
  }
}

/** The guidance weight w of a request: `guidance`, or `guidance_scale` − 1 (diffusers' s = 1 + w). */
export function guidanceOf(req: { guidance?: number; guidance_scale?: number }): number | undefined {
  if (req.guidance !== undefined) return req.guidance;
  return req.guidance_scale === undefined ? undefined : Number((req.guidance_scale - 1).toPrecision(12));
}

/** diffusers' guidance scale s of a weight w. */
function fromW(w: number): number {
  return Number((w + 1).toPrecision(12));
}

/** The first seed of a request: its `seed`, or a random one when it is absent or −1. */
export function firstSeedOf(seed: number | undefined): number {
  return seed === undefined || seed === -1 ? randomSeed() : seed;
}

/**
 * The solve settings of an img2img request: the request's own (as plain sampling) and both legs' plans,
 * each refusal once, named by the request's fields (a leg's t_max is strength · t_max: its refusal is
 * about `strength`).
 */
function checkImg2Img(req: SamplesRequest, model: ModelInfo): Issue[] {
  const { images: _, strength: __, ...plain } = req;
  const out = checkSolve(plain, model, "sample");
  if (out.length > 0) return out;
  const legs = img2imgLegs(req, model);
  if (typeof legs === "string") return [issue(["strength"], legs)];
  const seen = new Set<string>();
  const add = (i: Issue) => {
    if (i.path[0] === "t_max" || i.path[0] === "t_min") {
      i = issue(
        ["strength"],
        `strength ${req.strength} starts at t = ${legs.t} (strength · t_max): ${i.message}`,
      );
    }
    const key = `${i.path.join(".")}\u0000${i.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(i);
    }
  };
  checkSolve(legs.sample, model, "sample").forEach(add);
  checkSolve(legs.encode, model, "encode").forEach(add);
  return out;
}

/** `class` and `guidance` (or `guidance_scale`) of a request against the model. */
function checkConditioning(
  req: { class?: number; guidance?: number; guidance_scale?: number },
  model: ModelInfo,
): Issue[] {
  const out: Issue[] = [];
  const { limits } = model;
  if (req.class !== undefined) {
    if (!model.classes) out.push(issue(["class"], `${model.name} is not class-conditional`));
    else if (req.class >= model.classes.count && req.class !== model.classes.null_class) {
      out.push(issue(["class"], `must be below ${model.classes.count} for ${model.name}`));
    }
  }
  const guidance = guidanceOf(req);
  if (guidance !== undefined) {
    const field = req.guidance === undefined ? "guidance_scale" : "guidance";
    if (!model.classes) out.push(issue([field], `${model.name} is not class-conditional`));
    else {
      const g = limits.guidance;
      if (g && (guidance < g.min || guidance > g.max)) {
        out.push(
          issue(
            [field],
            field === "guidance"
              ? `must be within [${g.min}, ${g.max}] for ${model.name}`
              : `must be within [${fromW(g.min)}, ${fromW(g.max)}] for ${model.name} (guidance w = s − 1 ` +
                `within [${g.min}, ${g.max}])`,
          ),
        );
      }
      if (req.class === undefined) out.push(issue(["class"], `${field} needs a class`));
    }
  }
  return out;
}

/** Everything about a schema-valid samples request that depends on the model; [] when it is fine. */
export function checkSamplesForModel(req: SamplesRequest, model: ModelInfo): Issue[] {
  const out = req.images ? checkImg2Img(req, model) : checkSolve(req, model, "sample");
  const { limits } = model;
  const n = requestedCount(req);
  if (n > limits.max_n) {
    const field = req.latents ? "latents" : req.images ? "images" : "n";
    out.push(issue([field], `at most ${limits.max_n} samples for ${model.name}`));
  }
  out.push(...checkConditioning(req, model));
  if (req.latents) out.push(...checkTensorForModel(req.latents, model, "latents", req.n));
  if (req.images) {
    if (Array.isArray(req.images)) {
      if (!isImageModel(model)) {
        out.push(issue(["images"], `${model.name} does not take PNG images; give a tensor`));
      }
      if (req.n !== undefined && req.n !== req.images.length) {
        out.push(issue(["n"], `is ${req.n} but images hold ${req.images.length}`));
      }
    } else out.push(...checkTensorForModel(req.images, model, "images", req.n));
  }
  if (req.output === "png" && !isImageModel(model)) {
    out.push(issue(["output"], `${model.name} does not produce images; use "tensor"`));
  }
  return out;
}

/** Everything about a schema-valid encode request that depends on the model. */
export function checkEncodeForModel(req: EncodeRequest, model: ModelInfo): Issue[] {
  const out = checkSolve(req, model, "encode");
  out.push(...checkConditioning(req, model));
  if (req.tensor) out.push(...checkTensorForModel(req.tensor, model, "tensor"));
  if (req.images && !isImageModel(model)) out.push(issue(["images"], `${model.name} does not take images`));
  const count = req.tensor ? req.tensor.shape[0] : req.images?.length ?? 0;
  if (count > model.limits.max_n) {
    out.push(issue([req.tensor ? "tensor" : "images"], `at most ${model.limits.max_n} for ${model.name}`));
  }
  return out;
}

/** A tensor must be [n, …model shape] with n (when given) matching, and hold exactly that many float32. */
export function checkTensorForModel(t: Tensor, model: ModelInfo, field: string, n?: number): Issue[] {
  const want = model.shape;
  const out: Issue[] = [];
  if (t.shape.length !== want.length + 1 || want.some((d, i) => t.shape[i + 1] !== d)) {
    out.push(issue([field, "shape"], `must be [n, ${want.join(", ")}] for ${model.name}`));
    return out;
  }
  if (n !== undefined && t.shape[0] !== n) {
    out.push(issue(["n"], `is ${n} but ${field} hold ${t.shape[0]} samples`));
  }
  const bytes = typeof t.data === "string" ? base64Length(t.data) : t.data.byteLength;
  if (bytes !== shapeSize(t.shape) * 4) {
    out.push(
      issue(
        [field, "data"],
        `holds ${bytes} bytes; shape [${t.shape.join(", ")}] needs ${shapeSize(t.shape) * 4}`,
      ),
    );
  }
  return out;
}

/** True for models whose samples are images [C, H, W] with C = 1 or 3. */
export function isImageModel(model: Pick<ModelInfo, "shape">): boolean {
  const s = model.shape;
  return s.length === 3 && (s[0] === 1 || s[0] === 3);
}

/** Decoded length of a base64 string. */
function base64Length(text: string): number {
  let pad = 0;
  while (pad < 2 && text.charCodeAt(text.length - 1 - pad) === 61) pad++;
  return Math.floor(((text.length - pad) * 3) / 4);
}

/** Per-sample seeds: seed, seed + 1, … (mod 2³²). */
export function seedsFrom(first: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (first + i) >>> 0);
}

/** A uniformly random u32 (web crypto). */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * The checks of `POST /v1/samples` and `POST /v1/encode` requests (schemas in samples.ts) against one
 * model's description (docs/contracts.md §2): the solve settings through core/plan.ts, conditioning,
 * tensors and images, counts; and what the edge uses beside them: a request's sample count, its guidance
 * weight, the two legs of img2img. samples.ts re-exports all of it.
 */
import { type Direction, PlanError, planModelOf, planSolve, type SolveRequest } from "../plan.ts";
import type { Issue } from "./errors.ts";
import type { ModelInfo } from "./models.ts";
import type { EncodeRequest, SamplesRequest } from "./samples.ts";
import { shapeSize, type Tensor } from "./tensor.ts";

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

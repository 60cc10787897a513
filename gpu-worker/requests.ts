/**
 * From a decoded protocol message to a running solver (docs/contracts.md §3). Bodies are checked with the
 * shared schemas of core/api/worker.ts, then against the model: every problem is a 422 naming the
 * field (404 for an unknown model).
 *
 * - Sampling starts from per-sample noise: sample j is `gaussianNoise(seeds[j], 0, dim)` (core/rng.ts),
 *   so a sample depends on its own seed only, never on its batch; `latents` replace the noise.
 * - Class-conditional models: `class` applies to every sample; without it the samples are
 *   unconditional (the null class). `guidance` w ≠ 0 runs classifier-free guidance.
 * - Encoding integrates from t_min up to t_max on the reversed grid (no AFS, no denoising); `images`
 *   are x at t_min in model space; `class` and `guidance` condition it as they condition sampling.
 * - Previews (`stream` with `preview: true`): x̂₀ of the first sample every few steps
 *   (core/preview.ts), sent with the progress frames (gpu-worker/stream.ts).
 * - Solver, order, derivative, steps and NFE, grid and ρ, t_min and t_max: planned by core/plan.ts (the
 *   one place their defaults and rules are decided, shared with the edge and the command line) on the
 *   model as the manifest describes it ({@link planModelOfServed}).
 * - Top-level nil values count as absent fields.
 * - Extensions: `priority` (integer −10…10, higher first).
 */
import { issuesFromZod } from "../core/api/errors.ts";
import { DEFAULT_LIMITS, type ModelLimits } from "../core/api/models.ts";
import { firstOutOfRange, float32FromBytes, outOfRangeMessage } from "../core/api/tensor.ts";
import { BatchRequest, EncodeBatchRequest } from "../core/api/worker.ts";
import type { GridKind } from "../core/grid.ts";
import { guidedSolveInput, withConditioning } from "../core/guidance.ts";
import { type Direction, type PlanModel, planSolve, planTimes, type SolvePlan } from "../core/plan.ts";
import { type PreviewValues, withPreview } from "../core/preview.ts";
import { gaussianBatch } from "../core/rng.ts";
import { getSolver, solverNames } from "../core/solvers/registry.ts";
import type { DerivativeSource, SolveInput, SolverFn, SolverRun } from "../core/solvers/types.ts";
import { asWorkerError, invalidField, WorkerError } from "./errors.ts";
import type { ServedModel } from "./served.ts";
import { servesOdeTangent } from "./manifest.ts";

/** A validated request, ready to submit to the scheduler. */
export interface PlannedSolve {
  id: string;
  model: ServedModel;
  run: SolverRun;
  /** Output shape [n, …sample shape]. */
  shape: number[];
  solver: string;
  steps: number;
  /** NFE by the registry's accounting (the response reports the measured count). */
  nfe: number;
  /** The grid the run uses and its ρ (where the grid has one). */
  grid: GridKind;
  rho?: number;
  derivative?: DerivativeSource;
  /** Every resolved setting of the solve (core/plan.ts). */
  plan: SolvePlan;
  priority: number;
  /** Absolute deadline (Date.now() scale). */
  deadline?: number;
  /** Answer as a stream of progress frames then the result (`stream: true`, batch only). */
  stream?: boolean;
  /**
   * With `stream` and `preview: true`: the latest preview of the first sample's x̂₀ (core/preview.ts),
   * set as the solve runs; the stream sends it with its next progress frame and clears it.
   */
  previews?: { latest?: PreviewValues };
}

/** The limits a model's requests must respect: the manifest's, completed with the API's defaults. */
export function modelLimits(model: ServedModel): ModelLimits {
  const l = model.info.manifest.limits as Partial<ModelLimits> & { max_batch: number };
  const limits: ModelLimits = {
    max_batch: l.max_batch,
    max_n: l.max_n ?? Math.max(DEFAULT_LIMITS.max_n, l.max_batch),
    max_steps: l.max_steps ?? DEFAULT_LIMITS.max_steps,
    max_nfe: l.max_nfe ?? DEFAULT_LIMITS.max_nfe,
  };
  if (model.info.manifest.classes) limits.guidance = l.guidance ?? DEFAULT_LIMITS.guidance;
  return limits;
}

/**
 * The derivative sources a model can serve, default first: `jvp` wherever there is a JVP graph, the
 * manifest's or one the worker derived from eps.onnx (models.ts).
 */
export function derivativesOf(model: ServedModel): DerivativeSource[] {
  const g = model.info.graphPaths, m = model.info.manifest, out: DerivativeSource[] = [];
  if (g.head ?? m.graphs.head) out.push("head");
  if (g.jvp ?? m.graphs.jvp) out.push("jvp");
  out.push("fd");
  if (m.analytic && (g.head ?? m.graphs.head)) out.push("exact");
  return out;
}

/** The request id for error responses, when the body has a usable one. */
export function idOf(body: unknown): string | undefined {
  const id = (body as { id?: unknown } | null)?.id;
  return typeof id === "string" && id.length <= 128 ? id : undefined;
}

function parse<T>(
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: unknown } },
  body: unknown,
): T {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new WorkerError("bad_request", "the body must be a msgpack map");
  }
  // msgpack nil stands for an absent optional field (many encoders write undefined as nil).
  const fields = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
  const r = schema.safeParse(fields);
  if (r.success) return r.data;
  const issues = issuesFromZod(r.error as Parameters<typeof issuesFromZod>[0]);
  const first = issues[0];
  const field = first?.path.length ? first.path.join(".") : "body";
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problems)` : "";
  throw invalidField(field, `${first?.message ?? "invalid"}${more}`);
}

function lookupModel(name: string, models: Map<string, ServedModel>): ServedModel {
  const model = models.get(name);
  if (!model) {
    throw new WorkerError(
      "not_found",
      `unknown model ${JSON.stringify(name)} (serving ${[...models.keys()].join(", ")})`,
    );
  }
  return model;
}

function priorityOf(body: unknown): number {
  const p = (body as { priority?: unknown }).priority;
  if (p === undefined) return 0;
  if (typeof p !== "number" || !Number.isInteger(p) || p < -10 || p > 10) {
    throw invalidField("priority", "must be an integer in [-10, 10]");
  }
  return p;
}

/**
 * The model as core/plan.ts sees it: the derivatives it serves, the manifest's `defaults` and `costs`,
 * its schedule and limits. `GET /v1/models` describes the same (gpu-worker/serving.ts), so the edge plans
 * a request exactly as this worker will.
 */
function planModelOfServed(model: ServedModel): PlanModel {
  const m = model.info.manifest;
  return {
    name: m.name,
    derivatives: derivativesOf(model),
    ...(model.info.unavailable ? { unavailable: model.info.unavailable } : {}),
    ...(m.defaults ? { defaults: m.defaults } : {}),
    schedule: model.info.schedule,
    limits: modelLimits(model),
    solvers: solverNames(),
    ...(m.costs ? { costs: m.costs } : {}),
    odeJvp: servesOdeTangent(model.info),
  };
}

interface Common {
  plan: SolvePlan;
  fn: SolverFn;
  /** Times in the direction of integration. */
  times: Float64Array;
}

function common(
  model: ServedModel,
  req: Parameters<typeof planSolve>[0],
  direction: Direction,
): Common {
  try {
    const plan = planSolve(req, planModelOfServed(model), direction);
    return { plan, fn: getSolver(plan.solver).fn, times: planTimes(plan, model.info.schedule) };
  } catch (e) {
    throw asWorkerError(e);
  }
}

/** Checks the conditioning fields and returns the labels (or undefined for unconditional samples). */
function conditioning(
  model: ServedModel,
  n: number,
  cls: number | undefined,
  guidance: number | undefined,
): { classes?: Int32Array; nullClass?: number; scale: number } {
  const m = model.info.manifest, scale = guidance ?? 0;
  if (!Number.isFinite(scale)) throw invalidField("guidance", "must be a finite number");
  if (!m.classes) {
    if (cls !== undefined) throw invalidField("class", `model ${m.name} is not class-conditional`);
    if (scale !== 0) throw invalidField("guidance", `model ${m.name} is not class-conditional`);
    return { scale: 0 };
  }
  const nullClass = m.classes.null_class;
  if (cls === undefined) {
    if (scale !== 0) throw invalidField("guidance", "classifier-free guidance needs a class");
    if (nullClass === undefined) {
      throw invalidField("class", `model ${m.name} needs a class (it has no null class)`);
    }
    return { scale: 0 };
  }
  if (cls >= m.classes.count && cls !== nullClass) {
    throw invalidField(
      "class",
      `must be in [0, ${m.classes.count - 1}]${nullClass !== undefined ? ` or ${nullClass}` : ""}`,
    );
  }
  const range = modelLimits(model).guidance;
  if (range && (scale < range.min || scale > range.max)) {
    throw invalidField("guidance", `must be in [${range.min}, ${range.max}]`);
  }
  if (scale !== 0 && nullClass === undefined) {
    throw invalidField("guidance", `model ${m.name} has no null class`);
  }
  return { classes: new Int32Array(n).fill(cls), nullClass, scale };
}

/** Input values must be finite and within ±MAX_INPUT_MAGNITUDE (core/api/tensor.ts says why). */
function checkFinite(field: string, x: Float32Array): void {
  const bad = firstOutOfRange(x);
  if (bad) throw invalidField(field, outOfRangeMessage(bad));
}

/** Plans `POST /v1/batch`. */
export function planBatch(body: unknown, models: Map<string, ServedModel>, now = Date.now()): PlannedSolve {
  const req = parse(BatchRequest, body);
  const model = lookupModel(req.model, models);
  const priority = priorityOf(body);
  const { info } = model, dim = info.dim, n = req.seeds.length;
  const limits = modelLimits(model);
  if (n > limits.max_n) {
    throw invalidField("seeds", `at most ${limits.max_n} samples per request for this model`);
  }
  const c = common(model, req, "sample");
  let x: Float64Array;
  if (req.latents !== undefined) {
    if (req.latents.byteLength !== n * dim * 4) {
      throw invalidField(
        "latents",
        `must be ${n} × ${dim} float32 (${
          n * dim * 4
        } bytes, one sample per seed), got ${req.latents.byteLength} bytes`,
      );
    }
    const latents = float32FromBytes(req.latents);
    checkFinite("latents", latents);
    x = Float64Array.from(latents);
  } else {
    x = gaussianBatch(req.seeds, dim);
  }
  const cond = conditioning(model, n, req.class, req.guidance);
  let input: SolveInput = {
    schedule: info.schedule,
    grid: c.times,
    x,
    batch: n,
    dim,
    afs: c.plan.afs,
    denoise: c.plan.denoise,
    derivative: c.plan.derivative,
    odeJvp: servesOdeTangent(info),
    order: c.plan.order,
    variant: c.plan.variant,
  };
  input = guidedSolveInput(input, cond.scale);
  // Previews wrap the solver inside the conditioning: x̂₀ from the ε̃ the solver itself receives.
  const stream = req.stream ?? false;
  const previews = stream && req.preview === true ? {} as { latest?: PreviewValues } : undefined;
  const solver = previews
    ? withPreview(c.fn(input), {
      schedule: info.schedule,
      shape: info.manifest.shape,
      onPreview: (p) => previews.latest = p,
    })
    : c.fn(input);
  const run = withConditioning(solver, cond);
  return {
    id: req.id,
    model,
    run,
    shape: [n, ...info.manifest.shape],
    ...planned(c.plan),
    priority,
    deadline: req.deadline_ms !== undefined ? now + req.deadline_ms : undefined,
    stream,
    ...(previews ? { previews } : {}),
  };
}

/** The plan's fields of a {@link PlannedSolve}. */
function planned(
  plan: SolvePlan,
): Pick<PlannedSolve, "solver" | "steps" | "nfe" | "grid" | "rho" | "derivative" | "plan"> {
  return {
    solver: plan.solver,
    steps: plan.steps,
    nfe: plan.nfe,
    grid: plan.grid,
    rho: plan.rho,
    derivative: plan.derivative,
    plan,
  };
}

/** Plans `POST /v1/encode`: images (x at t_min) to latents at t_max. */
export function planEncode(body: unknown, models: Map<string, ServedModel>, now = Date.now()): PlannedSolve {
  const req = parse(EncodeBatchRequest, body);
  const model = lookupModel(req.model, models);
  const priority = priorityOf(body);
  const { info } = model, dim = info.dim;
  if (req.images.byteLength === 0 || req.images.byteLength % (dim * 4) !== 0) {
    throw invalidField(
      "images",
      `must be n × ${dim} float32 (a multiple of ${dim * 4} bytes), got ${req.images.byteLength} bytes`,
    );
  }
  const n = req.images.byteLength / (dim * 4);
  if (req.shape !== undefined) {
    const want = [n, ...info.manifest.shape];
    if (req.shape.length !== want.length || req.shape.some((d, i) => d !== want[i])) {
      throw invalidField("shape", `must be [${want.join(", ")}] for these images`);
    }
  }
  if (n > modelLimits(model).max_n) {
    throw invalidField("images", `at most ${modelLimits(model).max_n} images per request`);
  }
  const c = common(model, req, "encode");
  const images = float32FromBytes(req.images);
  checkFinite("images", images);
  // `class` and `guidance` condition the ODE as in sampling, so a latent decodes back under them.
  const cond = conditioning(model, n, req.class, req.guidance);
  const input: SolveInput = guidedSolveInput({
    schedule: info.schedule,
    grid: c.times,
    x: Float64Array.from(images),
    batch: n,
    dim,
    derivative: c.plan.derivative,
    odeJvp: servesOdeTangent(info),
    order: c.plan.order,
    variant: c.plan.variant,
  }, cond.scale);
  return {
    id: req.id,
    model,
    run: withConditioning(c.fn(input), cond),
    shape: [n, ...info.manifest.shape],
    ...planned(c.plan),
    priority,
    deadline: req.deadline_ms !== undefined ? now + req.deadline_ms : undefined,
    stream: req.stream ?? false,
  };
}

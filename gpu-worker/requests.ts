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
 *   are x at t_min in model space.
 * - Grid: the request's `grid` (with its `rho`, else that grid's default ρ); without one, the model's
 *   default for the solver (model.json `defaults`), else the solver's recommended grid, with the
 *   request's `rho` if given, else the default's.
 * - Top-level nil values count as absent fields.
 * - Extensions: `priority` (integer −10…10, higher first).
 */
import { issuesFromZod } from "../core/api/errors.ts";
import { DEFAULT_LIMITS, type ModelLimits } from "../core/api/models.ts";
import { DEFAULT_NFE } from "../core/api/samples.ts";
import { firstOutOfRange, float32FromBytes, outOfRangeMessage } from "../core/api/tensor.ts";
import { BatchRequest, EncodeBatchRequest } from "../core/api/worker.ts";
import { defaultRho, type GridKind, makeGrid, reversedGrid } from "../core/grid.ts";
import { guidedSolveInput, withConditioning } from "../core/guidance.ts";
import { gaussianBatch } from "../core/rng.ts";
import {
  defaultGrid,
  getSolver,
  nfeFor,
  type SolverInfo,
  solverNames,
  stepsForNfe,
} from "../core/solvers/registry.ts";
import type { DerivativeSource, SolveInput, SolverRun } from "../core/solvers/types.ts";
import { asWorkerError, invalid, WorkerError } from "./errors.ts";
import type { ServedModel } from "./scheduler.ts";

/** A validated request, ready to submit to the scheduler. */
export interface PlannedJob {
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
  priority: number;
  /** Absolute deadline (Date.now() scale). */
  deadline?: number;
  /** Answer as a stream of progress frames then the result (`stream: true`, batch only). */
  stream?: boolean;
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
  throw invalid(field, `${first?.message ?? "invalid"}${more}`);
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

function lookupSolver(name: string): SolverInfo {
  try {
    return getSolver(name);
  } catch {
    throw invalid("solver", `unknown solver ${JSON.stringify(name)} (one of ${solverNames().join(", ")})`);
  }
}

function chooseDerivative(model: ServedModel, asked: DerivativeSource | undefined): DerivativeSource {
  const served = derivativesOf(model);
  if (asked === undefined) return served[0];
  if (!served.includes(asked)) {
    const unavailable = model.info.unavailable?.[asked as "jvp" | "head"];
    const why = asked === "exact"
      ? "is for analytic models with a closed-form head"
      : unavailable
      ? `is unavailable for model ${model.info.manifest.name}: ${unavailable.reason}`
      : `needs a ${asked} graph, which model ${model.info.manifest.name} does not have`;
    throw invalid("genie_derivative", `${asked} ${why} (available: ${served.join(", ")})`);
  }
  return asked;
}

function priorityOf(body: unknown): number {
  const p = (body as { priority?: unknown }).priority;
  if (p === undefined) return 0;
  if (typeof p !== "number" || !Number.isInteger(p) || p < -10 || p > 10) {
    throw invalid("priority", "must be an integer in [-10, 10]");
  }
  return p;
}

interface Common {
  solver: SolverInfo;
  steps: number;
  grid: Float64Array;
  kind: GridKind;
  rho?: number;
  derivative: DerivativeSource;
}

/**
 * The grid of a request: its own `grid` (ρ: its `rho`, else the grid's default), else the model's
 * default for the solver, else the solver's (ρ: the request's `rho`, else the default's).
 */
export function gridOf(
  model: ServedModel,
  solver: string,
  req: { grid?: string; rho?: number },
): { kind: GridKind; rho?: number } {
  if (req.grid !== undefined) return { kind: req.grid as GridKind, rho: req.rho };
  const d = defaultGrid(solver, model.info.manifest.defaults);
  return { kind: d.kind, rho: req.rho ?? d.rho };
}

function common(
  model: ServedModel,
  req: {
    solver: string;
    steps?: number;
    nfe?: number;
    grid?: string;
    rho?: number;
    genie_derivative?: DerivativeSource;
    afs?: boolean;
    denoise?: boolean;
  },
): Common {
  const limits = modelLimits(model);
  const solver = lookupSolver(req.solver);
  const derivative = chooseDerivative(model, req.genie_derivative);
  if (req.steps !== undefined && req.nfe !== undefined) throw invalid("nfe", "give steps or nfe, not both");
  const accounting = { afs: req.afs, denoise: req.denoise, derivative };
  let steps: number;
  try {
    steps = req.steps ?? stepsForNfe(solver.name, req.nfe ?? DEFAULT_NFE, accounting);
  } catch (e) {
    throw asWorkerError(e);
  }
  if (steps > limits.max_steps) throw invalid("steps", `at most ${limits.max_steps} for this model`);
  if (nfeFor(solver.name, steps, accounting) > limits.max_nfe) {
    throw invalid("nfe", `at most ${limits.max_nfe} for this model`);
  }
  const { kind, rho } = gridOf(model, solver.name, req);
  let grid: Float64Array;
  try {
    grid = makeGrid(model.info.schedule, { kind, steps, rho });
  } catch (e) {
    throw asWorkerError(e);
  }
  // ρ as reported: the one used, on the grids that have one.
  const used = defaultRho(kind) === undefined ? undefined : rho ?? defaultRho(kind);
  return { solver, steps, grid, kind, rho: used, derivative };
}

/** Checks the conditioning fields and returns the labels (or undefined for unconditional samples). */
function conditioning(
  model: ServedModel,
  n: number,
  cls: number | undefined,
  guidance: number | undefined,
): { classes?: Int32Array; nullClass?: number; scale: number } {
  const m = model.info.manifest, scale = guidance ?? 0;
  if (!Number.isFinite(scale)) throw invalid("guidance", "must be a finite number");
  if (!m.classes) {
    if (cls !== undefined) throw invalid("class", `model ${m.name} is not class-conditional`);
    if (scale !== 0) throw invalid("guidance", `model ${m.name} is not class-conditional`);
    return { scale: 0 };
  }
  const nullClass = m.classes.null_class;
  if (cls === undefined) {
    if (scale !== 0) throw invalid("guidance", "classifier-free guidance needs a class");
    if (nullClass === undefined) {
      throw invalid("class", `model ${m.name} needs a class (it has no null class)`);
    }
    return { scale: 0 };
  }
  if (cls >= m.classes.count && cls !== nullClass) {
    throw invalid(
      "class",
      `must be in [0, ${m.classes.count - 1}]${nullClass !== undefined ? ` or ${nullClass}` : ""}`,
    );
  }
  const range = modelLimits(model).guidance;
  if (range && (scale < range.min || scale > range.max)) {
    throw invalid("guidance", `must be in [${range.min}, ${range.max}]`);
  }
  if (scale !== 0 && nullClass === undefined) throw invalid("guidance", `model ${m.name} has no null class`);
  return { classes: new Int32Array(n).fill(cls), nullClass, scale };
}

/** Input values must be finite and within ±MAX_INPUT_MAGNITUDE (core/api/tensor.ts says why). */
function checkFinite(field: string, x: Float32Array): void {
  const bad = firstOutOfRange(x);
  if (bad) throw invalid(field, outOfRangeMessage(bad));
}

/** Plans `POST /v1/batch`. */
export function planBatch(body: unknown, models: Map<string, ServedModel>, now = Date.now()): PlannedJob {
  const req = parse(BatchRequest, body);
  const model = lookupModel(req.model, models);
  const priority = priorityOf(body);
  const { info } = model, dim = info.dim, n = req.seeds.length;
  const limits = modelLimits(model);
  if (n > limits.max_n) throw invalid("seeds", `at most ${limits.max_n} samples per request for this model`);
  const c = common(model, req);
  let x: Float64Array;
  if (req.latents !== undefined) {
    if (req.latents.byteLength !== n * dim * 4) {
      throw invalid(
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
    grid: c.grid,
    x,
    batch: n,
    dim,
    afs: req.afs ?? false,
    denoise: req.denoise ?? false,
    derivative: c.derivative,
    order: req.order,
    variant: req.variant,
  };
  input = guidedSolveInput(input, cond.scale);
  const run = withConditioning(c.solver.fn(input), cond);
  return {
    id: req.id,
    model,
    run,
    shape: [n, ...info.manifest.shape],
    solver: c.solver.name,
    steps: c.steps,
    nfe: nfeFor(c.solver.name, c.steps, { afs: input.afs, denoise: input.denoise, derivative: c.derivative }),
    grid: c.kind,
    rho: c.rho,
    derivative: c.derivative,
    priority,
    deadline: req.deadline_ms !== undefined ? now + req.deadline_ms : undefined,
    stream: req.stream ?? false,
  };
}

/** Plans `POST /v1/encode`: images (x at t_min) to latents at t_max. */
export function planEncode(body: unknown, models: Map<string, ServedModel>, now = Date.now()): PlannedJob {
  const req = parse(EncodeBatchRequest, body);
  const model = lookupModel(req.model, models);
  const priority = priorityOf(body);
  const { info } = model, dim = info.dim;
  if (req.images.byteLength === 0 || req.images.byteLength % (dim * 4) !== 0) {
    throw invalid(
      "images",
      `must be n × ${dim} float32 (a multiple of ${dim * 4} bytes), got ${req.images.byteLength} bytes`,
    );
  }
  const n = req.images.byteLength / (dim * 4);
  if (req.shape !== undefined) {
    const want = [n, ...info.manifest.shape];
    if (req.shape.length !== want.length || req.shape.some((d, i) => d !== want[i])) {
      throw invalid("shape", `must be [${want.join(", ")}] for these images`);
    }
  }
  if (n > modelLimits(model).max_n) {
    throw invalid("images", `at most ${modelLimits(model).max_n} images per request`);
  }
  const c = common(model, req);
  if (!c.solver.encodes) throw invalid("solver", `${c.solver.name} does not support encoding`);
  const images = float32FromBytes(req.images);
  checkFinite("images", images);
  const cond = conditioning(model, n, undefined, undefined);
  const input: SolveInput = {
    schedule: info.schedule,
    grid: reversedGrid(c.grid),
    x: Float64Array.from(images),
    batch: n,
    dim,
    derivative: c.derivative,
    order: req.order,
    variant: req.variant,
  };
  return {
    id: req.id,
    model,
    run: withConditioning(c.solver.fn(input), cond),
    shape: [n, ...info.manifest.shape],
    solver: c.solver.name,
    steps: c.steps,
    nfe: nfeFor(c.solver.name, c.steps, { derivative: c.derivative }),
    grid: c.kind,
    rho: c.rho,
    derivative: c.derivative,
    priority,
    deadline: req.deadline_ms !== undefined ? now + req.deadline_ms : undefined,
  };
}

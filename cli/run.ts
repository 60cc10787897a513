/**
 * The sampling logic behind `deno task sample` and `deno task encode`, shared with tests: choose the
 * steps for the requested NFE, build the grid, draw or take the starting point, drive the solver
 * against the model and keep its accounts.
 */
import { GridError, type GridKind } from "../core/grid.ts";
import { seedsFrom } from "../core/api/samples.ts";
import {
  PlanError,
  type PlanModel,
  planSolve as planCore,
  planTimes,
  type SolvePlan as CorePlan,
} from "../core/plan.ts";
import { gaussianBatch } from "../core/rng.ts";
import { runSolverAsync, type RunStats } from "../core/solvers/drive.ts";
import { getSolver, type SolverInfo } from "../core/solvers/registry.ts";
import { costFields } from "../core/cost.ts";
import { type DerivativeSource, type SolveInput, SolverError } from "../core/solvers/types.ts";
import {
  type ConditioningOptions,
  GuidanceError,
  guidedSolveInput,
  withConditioning,
} from "../core/guidance.ts";
import { type SolveArgs, solveRequestOf, UsageError, usageFromField, type Variant } from "./args.ts";
import type { ResolvedModel } from "./models.ts";

/** NFE used when neither steps nor NFE is given (decided in core/plan.ts). */
export { DEFAULT_NFE } from "../core/plan.ts";

/** A tensor with its shape, row-major. */
export interface ShapedData {
  shape: number[];
  data: ArrayLike<number>;
}

/** What both directions share: the solver, its step count and its grid. */
export interface SolveOptions {
  /** The solver (default: core/plan.ts's). */
  solver?: string;
  steps?: number;
  /** Exact NFE to spend (excludes `steps`); default {@link DEFAULT_NFE} when neither is given. */
  nfe?: number;
  grid?: GridKind;
  rho?: number;
  tMin?: number;
  tMax?: number;
  /** GENIE's derivative source (default head when the model has one, else jvp). */
  derivative?: DerivativeSource;
  order?: number;
  variant?: Variant;
  class?: number;
  guidance?: number;
  /** Called before each model evaluation with the solver's step (0-based) and step count. */
  onStep?: (step: number, steps: number) => void;
}

export interface SampleOptions extends SolveOptions {
  afs?: boolean;
  denoise?: boolean;
  /** Number of samples (default 1); ignored with `latents`. */
  n?: number;
  /**
   * Seed of the first sample (default 0): sample i has seed (seed + i) mod 2³² and starts from
   * gaussianNoise(seed + i, 0, dim), as in the API (docs/contracts.md §2); ignored with `latents`.
   */
  seed?: number;
  /** x at t_max in VP scale, shape [n, …sample shape]. */
  latents?: ShapedData;
}

export interface EncodeOptions extends SolveOptions {
  /** Data (x at t_min), shape [n, …sample shape]. */
  images: ShapedData;
}

/** The solve options of a parsed command line (`--genie-derivative` becomes `derivative`). */
export function solveOptionsFrom(args: SolveArgs): SolveOptions {
  return {
    solver: args.solver,
    steps: args.steps,
    nfe: args.nfe,
    grid: args.grid,
    rho: args.rho,
    tMin: args.tMin,
    tMax: args.tMax,
    derivative: args.genieDerivative,
    order: args.order,
    variant: args.variant,
    class: args.class,
    guidance: args.guidance,
  };
}

/** The resolved settings of one solve (core/plan.ts), as reported in summaries. */
export interface SolvePlan {
  solver: string;
  steps: number;
  /** NFE predicted by the registry's accounting. */
  nfe: number;
  grid: GridKind;
  /** The ρ the grid is built with, on grids that have one. */
  rho?: number;
  tMin: number;
  tMax: number;
  afs: boolean;
  denoise: boolean;
  derivative?: DerivativeSource;
  order?: number;
  variant?: SolveInput["variant"];
  /** Times t_0 … t_N in the direction of integration. */
  times: Float64Array;
  /** The plan of core/plan.ts it was made from (with the predicted cost). */
  core: CorePlan;
}

export interface SolveResult {
  /** Samples (or latents), float32, shape `shape`. */
  data: Float32Array;
  shape: number[];
  plan: SolvePlan;
  /** Measured accounts of the run; `stats.nfe` equals `plan.nfe`. */
  stats: RunStats;
  /** Wall time of the solve itself in seconds. */
  seconds: number;
}

/** An option error of the core (which names a field) as a UsageError naming the flag; others unchanged. */
function toUsage(e: unknown): unknown {
  if (e instanceof PlanError) return usageFromField(e.field, e.detail) ?? e;
  if (e instanceof GridError || e instanceof SolverError || e instanceof GuidanceError) {
    return usageFromField(e.field, e.message.slice(e.field.length + 2)) ?? e;
  }
  return e;
}

function asUsage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw toUsage(e);
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks a given tensor against the model's sample shape: [n, …shape] with n ≥ 1. */
function checkBatch(flag: string, model: ResolvedModel, t: ShapedData): number {
  const want = `[n, ${model.shape.join(", ")}]`;
  if (t.shape.length !== model.shape.length + 1 || !sameShape(t.shape.slice(1), model.shape)) {
    throw new UsageError(flag, `has shape [${t.shape.join(", ")}], the model ${model.name} needs ${want}`);
  }
  if (t.shape[0] < 1) throw new UsageError(flag, "holds no samples");
  for (let i = 0; i < t.data.length; i++) {
    if (!Number.isFinite(t.data[i])) throw new UsageError(flag, `holds a non-finite number at index ${i}`);
  }
  return t.shape[0];
}

/** A resolved model as core/plan.ts sees it (no service limits on the command line). */
export function planModelOfResolved(model: ResolvedModel): PlanModel {
  return {
    name: model.name,
    derivatives: model.derivatives,
    ...(model.defaults ? { defaults: model.defaults } : {}),
    schedule: model.schedule,
    ...(model.costs ? { costs: model.costs } : {}),
  };
}

/**
 * The solver, its steps, NFE and grid for a model, planned by core/plan.ts as the API and the worker
 * plan them; every problem names its flag.
 */
export function planSolve(
  model: ResolvedModel,
  opts: SolveOptions & { afs?: boolean; denoise?: boolean },
  direction: "sample" | "encode",
): { info: SolverInfo; plan: SolvePlan } {
  const request = solveRequestOf({
    ...opts,
    genieDerivative: opts.derivative,
    afs: direction === "sample" ? opts.afs : undefined,
    denoise: direction === "sample" ? opts.denoise : undefined,
  });
  const core = asUsage(() => planCore(request, planModelOfResolved(model), direction));
  return {
    info: getSolver(core.solver),
    plan: {
      solver: core.solver,
      steps: core.steps,
      nfe: core.nfe,
      grid: core.grid,
      rho: core.rho,
      tMin: core.t_min!,
      tMax: core.t_max!,
      afs: core.afs,
      denoise: core.denoise,
      derivative: core.derivative,
      order: core.order,
      variant: core.variant,
      times: asUsage(() => planTimes(core, model.schedule)),
      core,
    },
  };
}

/** Per-sample class labels and guidance settings for a run, checked against the model. */
function conditioning(model: ResolvedModel, opts: SolveOptions, batch: number): ConditioningOptions {
  if (opts.class === undefined) {
    if (opts.guidance !== undefined && opts.guidance !== 0) {
      throw new UsageError("--guidance", "needs --class");
    }
    return {};
  }
  const cls = opts.class;
  if (!model.classes) throw new UsageError("--class", `${model.name} is not class-conditional`);
  if (!(Number.isInteger(cls) && cls >= 0 && cls < model.classes.count)) {
    throw new UsageError("--class", `must be an integer in [0, ${model.classes.count}), got ${cls}`);
  }
  const scale = opts.guidance ?? 0;
  if (!Number.isFinite(scale)) throw new UsageError("--guidance", `must be a finite number, got ${scale}`);
  if (scale !== 0 && model.classes.nullClass === undefined) {
    throw new UsageError("--guidance", `${model.name} has no unconditional (null) class to guide against`);
  }
  return { classes: new Int32Array(batch).fill(cls), nullClass: model.classes.nullClass, scale };
}

async function solve(
  model: ResolvedModel,
  opts: SolveOptions & { afs?: boolean; denoise?: boolean },
  direction: "sample" | "encode",
  x: Float64Array,
  batch: number,
): Promise<SolveResult> {
  const { info, plan } = planSolve(model, opts, direction);
  const cond = conditioning(model, opts, batch);
  const dim = model.shape.reduce((a, b) => a * b, 1);
  const input = guidedSolveInput({
    schedule: model.schedule,
    grid: plan.times,
    x,
    batch,
    dim,
    afs: plan.afs,
    denoise: plan.denoise,
    derivative: plan.derivative,
    order: plan.order,
    variant: plan.variant,
  }, cond.scale ?? 0);
  const run = asUsage(() => withConditioning(info.fn(input), cond));
  const evaluate = model.evaluator;
  const start = performance.now();
  // Solvers validate their input on the first resume; option errors there still name a flag.
  const onStep = opts.onStep;
  const result = await runSolverAsync(run, async (req) => await evaluate(req), { onStep }).catch((e) => {
    throw toUsage(e);
  });
  const seconds = (performance.now() - start) / 1000;
  return {
    data: Float32Array.from(result.x),
    shape: [batch, ...model.shape],
    plan,
    stats: result.stats,
    seconds,
  };
}

/**
 * The starting points x_T of a sampling run: the given latents, or per-sample noise. Seeds are
 * per-sample, as in the API and the worker: sample i of `--seed S --n N` has seed (S + i) mod 2³²
 * and starts from gaussianNoise(S + i, 0, dim), so it does not depend on N or on i's position.
 */
export function startingPoint(model: ResolvedModel, opts: SampleOptions): { x: Float64Array; n: number } {
  const dim = model.shape.reduce((a, b) => a * b, 1);
  if (opts.latents) {
    const n = checkBatch("--latents", model, opts.latents);
    return { x: Float64Array.from(opts.latents.data), n };
  }
  const n = opts.n ?? 1, seed = opts.seed ?? 0;
  if (!(Number.isInteger(n) && n >= 1)) throw new UsageError("--n", `must be a positive integer, got ${n}`);
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff)) {
    throw new UsageError("--seed", `must be an integer in [0, 2^32 − 1], got ${seed}`);
  }
  return { x: gaussianBatch(seedsFrom(seed, n), dim), n };
}

/** Draws samples: integrates the probability-flow ODE from t_max to t_min. */
export async function sampleOnce(model: ResolvedModel, opts: SampleOptions): Promise<SolveResult> {
  const { x, n } = startingPoint(model, opts);
  return await solve(model, opts, "sample", x, n);
}

/** Encodes data into latents: integrates the same ODE from t_min to t_max (no AFS, no denoising). */
export async function encodeOnce(model: ResolvedModel, opts: EncodeOptions): Promise<SolveResult> {
  const n = checkBatch("--images", model, opts.images);
  return await solve(model, opts, "encode", Float64Array.from(opts.images.data), n);
}

/**
 * The JSON summary of a run (docs/contracts.md §1): solver, steps, nfe, seconds, n, shape, model and settings
 * (and the execution provider of an ONNX model), with the run's price per sample trajectory: `calls`
 * (graph calls of every kind), `cost` (forward-pass equivalents with the model's cost ratios),
 * `cost_estimated` and `graph_calls` (core/cost.ts).
 */
export function summary(
  model: ResolvedModel,
  result: SolveResult,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const { plan, stats } = result;
  const price = costFields(stats, model.costs);
  return {
    solver: plan.solver,
    steps: plan.steps,
    nfe: stats.nfe,
    calls: price.calls,
    cost: price.cost,
    cost_estimated: price.cost_estimated,
    seconds: Number(result.seconds.toFixed(6)),
    n: result.shape[0],
    shape: result.shape,
    model: model.name,
    provider: model.provider,
    grid: plan.grid,
    rho: plan.rho,
    t_min: plan.tMin,
    t_max: plan.tMax,
    afs: plan.afs,
    denoise: plan.denoise,
    genie_derivative: plan.derivative,
    order: plan.order,
    variant: plan.variant,
    deriv_evals: stats.derivEvals,
    graph_calls: price.graph_calls,
    ...extra,
  };
}

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
import { type CallGraph, runSolverAsync, type RunStats } from "../core/solvers/drive.ts";
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
  /** Exact NFE to spend (excludes `steps`); default core/plan.ts's DEFAULT_NFE when neither is given. */
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
function planModelOfResolved(model: ResolvedModel): PlanModel {
  return {
    name: model.name,
    derivatives: model.derivatives,
    ...(model.defaults ? { defaults: model.defaults } : {}),
    schedule: model.schedule,
    ...(model.costs ? { costs: model.costs } : {}),
    ...(model.odeJvp ? { odeJvp: true } : {}),
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
    odeJvp: model.odeJvp,
    order: plan.order,
    variant: plan.variant,
  }, cond.scale ?? 0);
  const run = asUsage(() => withConditioning(info.fn(input), cond));
  const evaluate = model.evaluator;
  // Load and warm up what the run will call, at its batch sizes, before the clock starts.
  await model.prepare?.(graphsCalled(plan, input), cond.scale ? 2 * batch : batch);
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
 * The graphs a planned run calls (core/solvers/drive.ts `callGraph`): ε only, except GENIE, which asks
 * the head for ε and its derivative together, or the JVP graph alone (along the ODE's tangent, made in the
 * graph: `odeJvp`), or ε then the JVP graph (guided, or a model without it); with denoising, one more ε call.
 * A graph left out here would still be loaded on first use (gpu-worker/engine.ts), only slower.
 */
export function graphsCalled(
  plan: { solver: string; derivative?: string; denoise?: boolean },
  input: SolveInput,
): CallGraph[] {
  if (plan.solver !== "genie") return ["eps"];
  const source = input.tangentDerivative ? "jvp" : plan.derivative;
  if (source === "head") return plan.denoise ? ["head", "eps"] : ["head"];
  if (source === "jvp") {
    if (!input.odeJvp || input.tangentDerivative) return ["eps", "jvp"];
    return plan.denoise ? ["jvp", "eps"] : ["jvp"];
  }
  if (source === "fd") return ["eps"];
  return ["eps", "head", "jvp"];
}

/**
 * The starting points x_T of a sampling run: the given latents, or per-sample noise. Seeds are
 * per-sample, as in the API and the worker: sample i of `--seed S --n N` has seed (S + i) mod 2³²
 * and starts from gaussianNoise(S + i, 0, dim), so it does not depend on N or on i's position.
 */
function startingPoint(model: ResolvedModel, opts: SampleOptions): { x: Float64Array; n: number } {
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

export interface Img2ImgOptions extends SolveOptions {
  afs?: boolean;
  denoise?: boolean;
  /** The starting images (x at t_min, model space), shape [n, …sample shape]. */
  images: ShapedData;
  /** How far into the noise they are taken, in (0, 1]: both legs meet at t = strength · t_max. */
  strength: number;
}

/** The time where an img2img run's encoding ends and its sampling starts: strength · t_max. */
export function img2imgTime(model: ResolvedModel, opts: { tMax?: number; strength: number }): number {
  const tMax = opts.tMax ?? model.schedule.tMax;
  return opts.strength === 1 ? tMax : opts.strength * tMax;
}

/**
 * img2img, as `POST /v1/samples` with `images` and `strength` runs it (docs/contracts.md §1–§2): the
 * images encoded from t_min to t = strength · t_max, then sampled back from t with the same settings.
 * The result's plan is the sampling's; its stats add both legs up. A leg's t_max that cannot work is a
 * UsageError naming --strength.
 */
export async function img2imgOnce(model: ResolvedModel, opts: Img2ImgOptions): Promise<SolveResult> {
  if (!(opts.strength > 0 && opts.strength <= 1)) {
    throw new UsageError("--strength", `must be in (0, 1], got ${opts.strength}`);
  }
  checkBatch("--images", model, opts.images);
  // The request's own settings first (an error names their flag), then both legs at t.
  planSolve(model, opts, "sample");
  const t = img2imgTime(model, opts);
  const leg = { ...opts, tMax: t };
  const legPlan = (direction: "sample" | "encode") => {
    try {
      return planSolve(model, leg, direction).plan;
    } catch (e) {
      if (e instanceof UsageError && (e.flag === "--t-max" || e.flag === "--t-min")) {
        throw new UsageError(
          "--strength",
          `${opts.strength} starts at t = ${t} (strength · t_max): ${e.message}`,
        );
      }
      throw e;
    }
  };
  const encodeSteps = legPlan("encode").steps, total = encodeSteps + legPlan("sample").steps;
  const onStep = opts.onStep;
  const encoded = await encodeOnce(model, {
    ...leg,
    onStep: onStep && ((step) => onStep(step, total)),
  });
  const sampled = await sampleOnce(model, {
    ...leg,
    latents: { shape: encoded.shape, data: encoded.data },
    onStep: onStep && ((step) => onStep(encodeSteps + step, total)),
  });
  const a = encoded.stats, b = sampled.stats;
  const graphCalls = { ...a.graphCalls };
  for (const [g, k] of Object.entries(b.graphCalls) as [keyof typeof graphCalls, number][]) {
    graphCalls[g] = (graphCalls[g] ?? 0) + k;
  }
  return {
    ...sampled,
    stats: {
      nfe: a.nfe + b.nfe,
      derivEvals: a.derivEvals + b.derivEvals,
      calls: a.calls + b.calls,
      graphCalls,
    },
    seconds: encoded.seconds + sampled.seconds,
  };
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

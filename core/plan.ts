/**
 * One plan for a solve: the only place where the defaults and the validity of a request's solve settings
 * are decided — solver, order, derivative source, steps and NFE, grid and ρ, t_min and t_max, AFS and
 * denoising — for the command line (cli/run.ts), the edge (core/api/samples.ts, functions/sampling.ts,
 * functions/jobs/routes.ts) and the worker (gpu-worker/requests.ts) alike. Each of them describes its
 * model as a {@link PlanModel} and calls {@link planSolve}; what it gets back is what runs.
 *
 * Rules (docs/contracts.md §1–§3, docs/method.md §4):
 *
 * - **Solver**: `solver`, default {@link DEFAULT_SOLVER}; one of the registry's (core/solvers/registry.ts)
 *   and of the model's `solvers` where it lists them. Encoding needs a solver that encodes.
 * - **Order, variant**: solvers with several orders (variants) take `order` (`variant`) among theirs,
 *   default theirs (core/solvers/registry.ts); the others get them as given, and the solver refuses any
 *   but its own order and any variant (naming `order`, `variant`).
 * - **GENIE's derivative** (`genie_derivative`): only for `genie`; one the model offers; default the
 *   first of `head`, `jvp`, `fd`, `exact` the model offers (a head when it has one, else a JVP).
 * - **Steps and NFE**: `steps` or `nfe`, not both; without either, `nfe` {@link DEFAULT_NFE}. An NFE is
 *   turned into the step count that uses exactly that many evaluations with these AFS, denoising and
 *   derivative settings, or refused naming `nfe` with the nearest NFEs that work (`valid`). The model's
 *   `max_steps` and `max_nfe` bound both.
 * - **Grid and ρ**: `grid` with its `rho`, else that grid's own default ρ. Without `grid`: the model's
 *   default grid for the solver (model.json `defaults`), else the solver's recommended grid, with that
 *   default's ρ. ρ belongs to the grids that have one — `power` (default 2), `edm` (default 7) and
 *   `quadratic`, which is the power grid with ρ = 2 only. So:
 *   - `rho` with `grid: "uniform"` or `"logsnr"` is refused naming `rho` (it would be ignored), and
 *     `quadratic` takes no ρ but 2;
 *   - `rho` alone applies to the default grid: `power` and `edm` take it; a default `quadratic` grid
 *     becomes `power` with that ρ (the same family, another exponent: the rule of the command line's
 *     contract, docs/contracts.md §1, and of docs/method.md §4, kept for both); a default `uniform` or
 *     `logsnr` grid refuses it naming `rho`.
 * - **t_min, t_max**: default the schedule's; 0 < t_min < t_max ≤ the schedule's t_max.
 * - **AFS, denoising**: sampling only.
 *
 * Refusals are {@link PlanError}s naming the field by its request name (`rho`, `t_max`, …): the API
 * reports them as `details` entries with that path, the worker as 422s naming it, the command line as
 * usage errors naming the matching flag.
 *
 * Service limits (`max_steps`, `max_nfe`) apply where the model has them: the command line runs without.
 */
import type { ModelInfo } from "./api/models.ts";
import { type CostRatios, runCost } from "./cost.ts";
import { defaultRho, GRID_KINDS, GridError, type GridKind, makeGrid, reversedGrid } from "./grid.ts";
import { type Schedule, scheduleFromSpec } from "./schedule.ts";
import type { CallGraph } from "./solvers/drive.ts";
import {
  defaultGrid,
  getSolver,
  type GridDefaults,
  nfeFor,
  type SolverInfo,
  stepsForNfe,
} from "./solvers/registry.ts";
import { DERIVATIVE_SOURCES, type DerivativeSource, type SolveInput, SolverError } from "./solvers/types.ts";

/** The NFE of a request that gives neither steps nor NFE. */
export const DEFAULT_NFE = 10;
/** The solver of a request that names none (the HTTP API; the command line requires `--solver`). */
export const DEFAULT_SOLVER = "genie";
/** GENIE's derivative sources in the order a default is picked from what the model offers. */
export const DERIVATIVE_PREFERENCE: readonly DerivativeSource[] = ["head", "jvp", "fd", "exact"];

export type Direction = "sample" | "encode";

/** The solve settings of a request, by their API names (docs/contracts.md §2); absent means default. */
export interface SolveRequest {
  solver?: string;
  steps?: number;
  nfe?: number;
  grid?: string;
  rho?: number;
  t_min?: number;
  t_max?: number;
  afs?: boolean;
  denoise?: boolean;
  genie_derivative?: string;
  order?: number;
  variant?: string;
  /**
   * Classifier-free guidance weight w: it only changes what the plan's `cost` predicts (GENIE asks for
   * the exact derivative along its tangent under guidance, core/guidance.ts).
   */
  guidance?: number;
}

/** What the plan needs to know of a model; each caller builds it from its own description. */
export interface PlanModel {
  /** For messages. */
  name: string;
  /** GENIE's derivative sources the model serves. */
  derivatives: readonly string[];
  /** Why a source is unavailable (e.g. jvp: an operator the JVP transform cannot differentiate). */
  unavailable?: Readonly<Record<string, { reason: string } | undefined>>;
  /** The model's preferred grids (model.json `defaults`). */
  defaults?: GridDefaults;
  /**
   * Or, where the manifest is not at hand (the edge), the grid per solver as `GET /v1/models` lists it
   * (`default_grids`, computed by the worker from the same `defaults`); `defaults` wins when both are given.
   */
  defaultGrids?: Readonly<
    Record<string, { grid: GridKind; rho?: number; source?: "model" | "solver" } | undefined>
  >;
  /** The noise schedule: default and largest t_max, default t_min. Absent: unknown here (not checked). */
  schedule?: Schedule;
  /** Service limits; absent: none (the command line). */
  limits?: { max_steps: number; max_nfe: number };
  /** The solvers the model is served with; absent: every registered solver. */
  solvers?: readonly string[];
  /** Measured cost ratios of the graphs (model.json `costs`); missing ones use the fallback. */
  costs?: CostRatios;
}

/** The price of a planned run per sample trajectory, as responses report it (core/cost.ts). */
export interface PlanCost {
  calls: number;
  cost: number;
  cost_estimated: boolean;
  graph_calls: Partial<Record<CallGraph, number>>;
}

/** A solve's settings, every default resolved. */
export interface SolvePlan {
  direction: Direction;
  /** The solver's registered name. */
  solver: string;
  /** The order of solvers that have several (given or their default); else as given. */
  order?: number;
  /** The variant of solvers that have several (given or their default); else as given. */
  variant?: SolveInput["variant"];
  grid: GridKind;
  /** The ρ the grid is built with, on grids that have one (quadratic 2, power default 2, edm default 7). */
  rho?: number;
  /** Where the grid came from: the request, the model's defaults or the solver's. */
  grid_source: "request" | "model" | "solver";
  steps: number;
  /** Evaluations of ε by the registry's accounting (core/solvers/registry.ts). */
  nfe: number;
  /** The grid's ends; undefined only when the model's schedule is unknown here (the worker decides). */
  t_min?: number;
  t_max?: number;
  afs: boolean;
  denoise: boolean;
  /** GENIE's derivative source (genie only). */
  derivative?: DerivativeSource;
  /** The predicted price of the run per sample trajectory (what the response will report). */
  cost: PlanCost;
}

/** A refused solve setting; `field` names it by its request name, `valid` lists values that would work. */
export class PlanError extends Error {
  /** Every refusal found in the request, this one first (the API reports them all, the CLI the first). */
  all: PlanError[] = [this];

  constructor(readonly field: string, message: string, readonly valid?: number[]) {
    super(`${field}: ${message}`);
    this.name = "PlanError";
  }

  /** The message without the leading field name. */
  get detail(): string {
    return this.message.slice(this.field.length + 2);
  }
}

/** Core errors that name a field (GridError, SolverError) as PlanErrors. */
function asPlanError(e: unknown): unknown {
  if (e instanceof PlanError) return e;
  if (e instanceof GridError || e instanceof SolverError) {
    return new PlanError(e.field, e.message.slice(e.field.length + 2));
  }
  return e;
}

function positiveFinite(field: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === "number" && Number.isFinite(v) && v > 0)) {
    throw new PlanError(field, `must be a positive finite number, got ${JSON.stringify(v)}`);
  }
}

function positiveInteger(field: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === "number" && Number.isInteger(v) && v >= 1)) {
    throw new PlanError(field, `must be a positive integer, got ${JSON.stringify(v)}`);
  }
}

/** ρ on a grid a request names: refused on grids without one, and on quadratic unless it is 2. */
function checkRhoFor(kind: GridKind, rho: number | undefined, why = ""): void {
  if (rho === undefined) return;
  if (defaultRho(kind) === undefined) {
    throw new PlanError(
      "rho",
      `the ${kind} grid has no ρ${why}; ρ applies to the power, quadratic (ρ = 2) and edm grids`,
    );
  }
  if (kind === "quadratic" && rho !== 2) {
    throw new PlanError("rho", `the quadratic grid has ρ = 2; give grid "power" for ρ = ${rho}`);
  }
}

/** The variants a solver offers (core/solvers/registry.ts), where the registry lists them. */
function variantsOf(
  info: SolverInfo | undefined,
): { values: readonly string[]; default: string } | undefined {
  return (info as { variants?: { values: readonly string[]; default: string } } | undefined)?.variants;
}

/** Collects refusals: each rule runs once, and a rule whose inputs were refused is skipped. */
class Checks {
  readonly errors: PlanError[] = [];
  /** Fields refused so far. */
  readonly refused = new Set<string>();

  /** Runs `rule`; a PlanError (or a core error naming a field) is recorded and gives undefined. */
  run<T>(rule: () => T): T | undefined {
    try {
      return rule();
    } catch (e) {
      const p = asPlanError(e);
      if (!(p instanceof PlanError)) throw p;
      this.errors.push(p);
      this.refused.add(p.field);
      return undefined;
    }
  }

  /** Whether any of these fields was refused. */
  any(...fields: string[]): boolean {
    return fields.some((f) => this.refused.has(f));
  }

  /** Throws the first refusal, with all of them attached. */
  throwIfAny(): void {
    if (this.errors.length === 0) return;
    const first = this.errors[0];
    first.all = [...this.errors];
    throw first;
  }
}

/** The rules that need no model; the solver's info when it is known. */
function independentRules(req: SolveRequest, direction: Direction, checks: Checks): SolverInfo | undefined {
  const info = checks.run(() => {
    const info = getSolver(req.solver ?? DEFAULT_SOLVER);
    if (direction === "encode" && !info.encodes) {
      throw new PlanError("solver", `${info.name} does not support encoding`);
    }
    return info;
  });
  checks.run(() => {
    if (req.steps !== undefined && req.nfe !== undefined) {
      throw new PlanError("nfe", "give steps or nfe, not both");
    }
  });
  checks.run(() => positiveInteger("steps", req.steps));
  checks.run(() => positiveInteger("nfe", req.nfe));
  checks.run(() => {
    if (req.grid !== undefined && !(GRID_KINDS as readonly string[]).includes(req.grid)) {
      throw new PlanError(
        "grid",
        `unknown grid ${JSON.stringify(req.grid)} (one of ${GRID_KINDS.join(", ")})`,
      );
    }
  });
  checks.run(() => {
    positiveFinite("rho", req.rho);
    if (req.grid !== undefined && !checks.any("grid")) checkRhoFor(req.grid as GridKind, req.rho);
  });
  checks.run(() => positiveFinite("t_min", req.t_min));
  checks.run(() => {
    positiveFinite("t_max", req.t_max);
    if (
      req.t_min !== undefined && req.t_max !== undefined && !checks.any("t_min") && !(req.t_max > req.t_min)
    ) {
      throw new PlanError("t_max", `must exceed t_min (${req.t_min}), got ${req.t_max}`);
    }
  });
  checks.run(() => {
    if (req.genie_derivative === undefined) return;
    if (!(DERIVATIVE_SOURCES as readonly string[]).includes(req.genie_derivative)) {
      throw new PlanError(
        "genie_derivative",
        `unknown derivative source ${JSON.stringify(req.genie_derivative)} (one of ${
          DERIVATIVE_SOURCES.join(", ")
        })`,
      );
    }
    if (info && info.name !== "genie") {
      throw new PlanError("genie_derivative", `only applies to the genie solver, not ${info.name}`);
    }
  });
  if (direction === "encode") {
    checks.run(() => {
      if (req.afs) throw new PlanError("afs", "the analytical first step is for sampling only");
    });
    checks.run(() => {
      if (req.denoise) throw new PlanError("denoise", "final denoising is for sampling only");
    });
  }
  checks.run(() => {
    const variants = variantsOf(info);
    if (req.variant === undefined || variants === undefined) return;
    if (!variants.values.includes(req.variant)) {
      throw new PlanError(
        "variant",
        `must be one of ${variants.values.join(", ")} for ${info!.name}, got ${JSON.stringify(req.variant)}`,
      );
    }
  });
  checks.run(() => {
    if (req.order === undefined) return;
    if (!Number.isInteger(req.order)) {
      throw new PlanError("order", `must be an integer, got ${JSON.stringify(req.order)}`);
    }
    const range = info?.orders;
    if (range && !(req.order >= range.min && req.order <= range.max)) {
      throw new PlanError(
        "order",
        `must be an integer from ${range.min} to ${range.max} for ${info!.name}, got ${req.order}`,
      );
    }
  });
  return info;
}

/**
 * The rules that need no model: the solver, types and ranges of each setting, `steps` or `nfe`, ρ on the
 * grid a request names, `t_max` above `t_min`, GENIE's derivative for `genie` only, the order within
 * the solver's range, AFS and denoising for sampling only. {@link planSolve} applies them first; the
 * command line also applies them while parsing its flags (cli/args.ts), before it loads a model.
 * Throws a {@link PlanError} (the first refusal, with `all` of them).
 */
export function checkSolveRequest(req: SolveRequest, direction: Direction = "sample"): SolverInfo {
  const checks = new Checks();
  const info = independentRules(req, direction, checks);
  checks.throwIfAny();
  return info!;
}

/** The derivative GENIE uses on a model: the one asked for, checked, else the model's preferred one. */
function derivativeFor(model: PlanModel, asked: string | undefined): DerivativeSource {
  const offered = model.derivatives;
  if (asked === undefined) {
    const d = DERIVATIVE_PREFERENCE.find((s) => offered.includes(s));
    if (!d) throw new PlanError("genie_derivative", `${model.name} offers no derivative source for genie`);
    return d;
  }
  if (!offered.includes(asked)) {
    const why = model.unavailable?.[asked]?.reason;
    throw new PlanError(
      "genie_derivative",
      (why
        ? `${asked} is unavailable for ${model.name}: ${why}`
        : asked === "exact"
        ? `exact is for analytic models with a closed-form derivative, which ${model.name} is not`
        : `${model.name} has no ${asked} derivative`) +
        ` (available: ${offered.join(", ") || "none"})`,
    );
  }
  return asked as DerivativeSource;
}

/** The grid of a request that names none: the model's default for the solver, else the solver's. */
function defaultGridFor(
  model: PlanModel,
  solver: string,
): { kind: GridKind; rho?: number; source: "model" | "solver" } {
  if (model.defaults === undefined && model.defaultGrids !== undefined) {
    const listed = model.defaultGrids[solver];
    if (listed) {
      const own = defaultGrid(solver);
      // A worker says whose default it is; else it is the solver's when it is the solver's grid.
      const source = listed.source ??
        (listed.grid === own.kind &&
            (listed.rho ?? defaultRho(listed.grid)) === (own.rho ?? defaultRho(own.kind))
          ? "solver"
          : "model");
      return { kind: listed.grid, ...(listed.rho !== undefined ? { rho: listed.rho } : {}), source };
    }
  }
  return defaultGrid(solver, model.defaults);
}

/**
 * The NFEs a solver can use that are nearest to `nfe`: [nfe] itself when it can, else the largest below
 * and the smallest above (only the latter when none is below).
 */
export function nearestNfes(
  solver: string,
  nfe: number,
  opts: { afs?: boolean; denoise?: boolean; derivative?: DerivativeSource } = {},
): number[] {
  const per = getSolver(solver).evalsPerStep(opts.derivative ?? "head");
  let below: number | undefined, above: number | undefined;
  for (let steps = 1; steps <= Math.ceil(nfe / per) + 3; steps++) {
    const v = nfeFor(solver, steps, opts);
    if (v === nfe) return [nfe];
    if (v >= 1 && v < nfe) below = v;
    if (v > nfe && above === undefined) above = v;
  }
  return [below, above].filter((v): v is number => v !== undefined);
}

/** Graph calls per sample trajectory of a planned run (what the drivers count, core/solvers/drive.ts). */
function predictedCalls(
  info: SolverInfo,
  steps: number,
  nfe: number,
  afs: boolean,
  denoise: boolean,
  derivative: DerivativeSource | undefined,
  guided: boolean,
): Record<CallGraph, number> {
  const calls: Record<CallGraph, number> = { eps: 0, head: 0, jvp: 0 };
  if (info.name !== "genie" || derivative === undefined) {
    calls.eps = nfe;
    return calls;
  }
  // GENIE: one step per grid interval, the first free with AFS (core/solvers/genie.ts).
  const evaluated = steps - (afs ? 1 : 0);
  if (derivative === "fd") calls.eps = 2 * evaluated;
  else if (derivative === "jvp" || (derivative === "exact" && guided)) {
    calls.eps = evaluated;
    calls.jvp = evaluated;
  } else calls.head = evaluated;
  if (denoise) calls.eps++;
  return calls;
}

/**
 * Plans a solve of `request` on `model` (see the rules at the top of this file). Throws a
 * {@link PlanError} naming the first offending field, with every refusal it found in `all`.
 */
export function planSolve(
  request: SolveRequest,
  model: PlanModel,
  direction: Direction = "sample",
): SolvePlan {
  const checks = new Checks();
  const info = independentRules(request, direction, checks);
  const limits = model.limits;
  // The model's solvers and limits on the values given.
  if (info) {
    checks.run(() => {
      if (model.solvers && model.solvers.length > 0 && !model.solvers.includes(info.name)) {
        throw new PlanError(
          "solver",
          `${model.name} has no solver ${JSON.stringify(request.solver ?? info.name)} (one of ${
            model.solvers.join(", ")
          })`,
        );
      }
    });
  }
  checks.run(() => {
    if (limits && request.steps !== undefined && request.steps > limits.max_steps) {
      throw new PlanError("steps", `at most ${limits.max_steps} for ${model.name}`);
    }
  });
  checks.run(() => {
    if (limits && request.nfe !== undefined && request.nfe > limits.max_nfe) {
      throw new PlanError("nfe", `at most ${limits.max_nfe} for ${model.name}`);
    }
  });
  const solverKnown = info !== undefined && !checks.any("solver");
  // GENIE's derivative.
  let derivative: DerivativeSource | undefined;
  if (solverKnown && info.name === "genie" && !checks.any("genie_derivative")) {
    derivative = checks.run(() => derivativeFor(model, request.genie_derivative));
  }
  // Steps and NFE.
  const afs = direction === "sample" && request.afs === true;
  const denoise = direction === "sample" && request.denoise === true;
  const accounting = { afs, denoise, derivative };
  let steps: number | undefined, nfe: number | undefined;
  if (solverKnown && !checks.any("steps", "nfe", "genie_derivative")) {
    checks.run(() => {
      let s: number;
      if (request.steps !== undefined) s = request.steps;
      else {
        const asked = request.nfe ?? DEFAULT_NFE;
        const near = nearestNfes(info.name, asked, accounting);
        if (!near.includes(asked)) {
          const what = [afs ? "afs" : "", denoise ? "denoise" : "", derivative ?? ""].filter(Boolean).join(
            ", ",
          );
          throw new PlanError(
            "nfe",
            `${info.name} cannot use exactly ${asked} evaluations${what ? ` (${what})` : ""}; the nearest ` +
              `it can use: ${near.join(" or ")}`,
            near,
          );
        }
        s = stepsForNfe(info.name, asked, accounting);
        if (limits && s > limits.max_steps) {
          throw new PlanError(
            "steps",
            `at most ${limits.max_steps} for ${model.name} (nfe ${asked} needs ${s})`,
          );
        }
      }
      const n = nfeFor(info.name, s, accounting);
      if (limits && n > limits.max_nfe) {
        throw new PlanError("nfe", `at most ${limits.max_nfe} for ${model.name} (${s} steps use ${n})`);
      }
      steps = s;
      nfe = n;
    });
  }
  // Grid and ρ.
  let grid: GridKind | undefined, rho: number | undefined, source: SolvePlan["grid_source"] = "request";
  if (request.grid !== undefined) {
    if (!checks.any("grid", "rho")) {
      grid = request.grid as GridKind;
      rho = request.rho ?? defaultRho(grid);
    }
  } else if (solverKnown && !checks.any("rho")) {
    const d = defaultGridFor(model, info.name);
    source = d.source;
    if (request.rho === undefined) {
      grid = d.kind;
      rho = d.rho ?? defaultRho(grid);
    } else {
      // ρ alone: on the default grid's family (a default quadratic grid is the power grid with ρ = 2).
      const kind = d.kind === "quadratic" ? "power" : d.kind;
      const whose = d.source === "model"
        ? `${model.name}'s default for ${info.name}`
        : `${info.name}'s default`;
      checks.run(() => checkRhoFor(kind, request.rho, ` (${whose}); give a grid with one`));
      if (!checks.any("rho")) {
        grid = kind;
        rho = request.rho;
      }
    }
  }
  if (grid !== undefined && defaultRho(grid) === undefined) rho = undefined;
  // t_min and t_max.
  const schedule = model.schedule;
  let tMin = request.t_min, tMax = request.t_max;
  if (schedule && !checks.any("t_min", "t_max")) {
    checks.run(() => {
      if (tMax !== undefined && tMax > schedule.tMax) {
        throw new PlanError(
          "t_max",
          `must be at most ${schedule.tMax} (the end of ${model.name}'s ${schedule.name} schedule), got ${tMax}`,
        );
      }
      tMin ??= schedule.tMin;
      tMax ??= schedule.tMax;
      if (!(tMax > tMin)) {
        throw request.t_min !== undefined && request.t_max === undefined
          ? new PlanError("t_min", `must be below t_max (${tMax}), got ${tMin}`)
          : new PlanError("t_max", `must exceed t_min (${tMin}), got ${tMax}`);
      }
    });
  }
  checks.throwIfAny();
  if (info === undefined || steps === undefined || nfe === undefined || grid === undefined) {
    throw new Error("planSolve: a setting was left unresolved without a refusal"); // unreachable
  }
  // The grid itself: every rule above holds, so this only fails on a schedule's own limits.
  if (schedule) {
    checks.run(() => makeGrid(schedule, { kind: grid!, steps: steps!, rho, tMin, tMax }));
    checks.throwIfAny();
  }
  const graphCalls = predictedCalls(
    info,
    steps,
    nfe,
    afs,
    denoise,
    derivative,
    (request.guidance ?? 0) !== 0,
  );
  const calls = graphCalls.eps + graphCalls.head + graphCalls.jvp;
  const price = runCost({ nfe, calls, graphCalls }, model.costs);
  return {
    direction,
    solver: info.name,
    ...(request.order !== undefined || info.orders ? { order: request.order ?? info.orders!.default } : {}),
    ...(request.variant !== undefined || variantsOf(info)
      ? { variant: (request.variant ?? variantsOf(info)!.default) as SolveInput["variant"] }
      : {}),
    grid,
    ...(rho !== undefined ? { rho } : {}),
    grid_source: source,
    steps,
    nfe,
    ...(tMin !== undefined ? { t_min: tMin } : {}),
    ...(tMax !== undefined ? { t_max: tMax } : {}),
    afs,
    denoise,
    ...(derivative !== undefined ? { derivative } : {}),
    cost: {
      calls,
      cost: price.cost,
      cost_estimated: price.costEstimated,
      graph_calls: price.graphCalls,
    },
  };
}

/** The times t_0 … t_N of a plan in the direction of integration (encoding runs the sampling grid reversed). */
export function planTimes(plan: SolvePlan, schedule: Schedule): Float64Array {
  try {
    const grid = makeGrid(schedule, {
      kind: plan.grid,
      steps: plan.steps,
      rho: plan.rho,
      tMin: plan.t_min,
      tMax: plan.t_max,
    });
    return plan.direction === "encode" ? reversedGrid(grid) : grid;
  } catch (e) {
    throw asPlanError(e);
  }
}

const schedules = new WeakMap<object, Schedule | null>();

/** A schedule description of `GET /v1/models` as a schedule, or undefined when this core cannot read it. */
function scheduleOf(spec: Record<string, unknown>): Schedule | undefined {
  let s = schedules.get(spec);
  if (s === undefined) {
    try {
      s = scheduleFromSpec(spec);
    } catch {
      s = null;
    }
    schedules.set(spec, s);
  }
  return s ?? undefined;
}

/**
 * A model as `GET /v1/models` describes it (core/api/models.ts) as a {@link PlanModel}: the edge plans with
 * what the workers say of their models. Graphs priced with the fallback (`estimated_costs`) stay
 * unpriced here, so the plan marks their cost as estimated too.
 */
export function planModelOf(info: ModelInfo): PlanModel {
  const estimated = new Set(info.estimated_costs ?? []);
  const schedule = scheduleOf(info.schedule);
  const costs = info.costs
    ? Object.fromEntries(Object.entries(info.costs).filter(([g]) => !estimated.has(g))) as CostRatios
    : undefined;
  return {
    name: info.name,
    derivatives: info.derivatives,
    ...(info.unavailable_derivatives ? { unavailable: info.unavailable_derivatives } : {}),
    ...(info.default_grids ? { defaultGrids: info.default_grids } : {}),
    ...(schedule ? { schedule } : {}),
    limits: info.limits,
    solvers: info.solvers,
    ...(costs ? { costs } : {}),
  };
}

/**
 * The solve fields of a worker message (core/api/worker.ts, `POST /v1/batch` and `POST /v1/encode`) for a
 * request: the solver and `steps` or `nfe` with the API's defaults filled in, and the other settings as
 * the request gave them. The worker plans these same fields with {@link planSolve} on its own description
 * of the model — the one `GET /v1/models` reports and the edge checked the request against — so the run
 * is the one planned here. Undefined fields are left out of the message.
 */
export function workerSolveFields(
  req: SolveRequest,
  direction: Direction = "sample",
): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    solver: req.solver ?? DEFAULT_SOLVER,
    steps: req.steps,
    nfe: req.steps === undefined ? req.nfe ?? DEFAULT_NFE : undefined,
    grid: req.grid,
    rho: req.rho,
    t_min: req.t_min,
    t_max: req.t_max,
    order: req.order,
    variant: req.variant,
  };
  if (direction === "sample") {
    fields.afs = req.afs;
    fields.denoise = req.denoise;
    fields.genie_derivative = req.genie_derivative;
  }
  for (const [k, v] of Object.entries(fields)) if (v === undefined) delete fields[k];
  return fields;
}

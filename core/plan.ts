/**
 * One plan for a solve: the only place where the defaults and the validity of a request's solve settings
 * are decided — solver, order, derivative source, steps and NFE, grid and ρ, t_min and t_max, AFS and
 * denoising — for the command line (cli/run.ts), the edge (core/api/checks.ts, functions/sampling.ts,
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
 *
 * The pieces live in core/plan/: the vocabulary (`types.ts`), the refusals and the rules that need no
 * model (`checks.ts`), the choices made from what the model and the solver offer (`choices.ts`), the
 * predicted price (`cost.ts`) and the adapters to the API's descriptions (`adapters.ts`). This module is
 * their entry: import from here.
 */
import { defaultRho, type GridKind, makeGrid, reversedGrid } from "./grid.ts";
import type { Schedule } from "./schedule.ts";
import { nfeFor, stepsForNfe } from "./solvers/registry.ts";
import type { DerivativeSource, SolveInput } from "./solvers/types.ts";
import { asPlanError, checkRhoFor, Checks, independentRules, variantsOf } from "./plan/checks.ts";
import { defaultGridFor, derivativeFor, nearestNfes } from "./plan/choices.ts";
import { planCost } from "./plan/cost.ts";
import {
  DEFAULT_NFE,
  type Direction,
  PlanError,
  type PlanModel,
  type SolvePlan,
  type SolveRequest,
} from "./plan/types.ts";

export {
  DEFAULT_NFE,
  DEFAULT_SOLVER,
  type Direction,
  type PlanCost,
  PlanError,
  type PlanModel,
  type SolvePlan,
  type SolveRequest,
} from "./plan/types.ts";
export { checkSolveRequest } from "./plan/checks.ts";
export { nearestNfes } from "./plan/choices.ts";
export { planModelOf, workerSolveFields } from "./plan/adapters.ts";

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
  const cost = planCost(info, {
    steps,
    nfe,
    afs,
    denoise,
    derivative,
    guided: (request.guidance ?? 0) !== 0,
    odeJvp: model.odeJvp ?? false,
  }, model.costs);
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
    cost,
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

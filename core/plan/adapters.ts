/**
 * A solve plan's adapters to the API's descriptions (core/plan.ts): a model as `GET /v1/models` lists it
 * as a {@link PlanModel} (the edge plans with it), and a request's solve fields as the worker message
 * carries them (the worker plans them again on its own description of the model).
 */
import type { ModelInfo } from "../api/models.ts";
import type { CostRatios } from "../cost.ts";
import { type Schedule, scheduleFromSpec } from "../schedule.ts";
import { DEFAULT_NFE, DEFAULT_SOLVER, type Direction, type PlanModel, type SolveRequest } from "./types.ts";

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
 * the request gave them. The worker plans these same fields with `planSolve` (core/plan.ts) on its own
 * description of the model — the one `GET /v1/models` reports and the edge checked the request against —
 * so the run is the one planned here. Undefined fields are left out of the message.
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
    genie_derivative: req.genie_derivative,
  };
  if (direction === "sample") {
    fields.afs = req.afs;
    fields.denoise = req.denoise;
  }
  for (const [k, v] of Object.entries(fields)) if (v === undefined) delete fields[k];
  return fields;
}

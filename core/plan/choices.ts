/**
 * The choices a solve plan (core/plan.ts) makes from what the model and the solver offer: GENIE's
 * derivative source, the grid of a request that names none, and the NFEs a solver can use.
 */
import { defaultRho, type GridKind } from "../grid.ts";
import { defaultGrid, getSolver, nfeFor } from "../solvers/registry.ts";
import type { DerivativeSource } from "../solvers/types.ts";
import { DERIVATIVE_PREFERENCE, PlanError, type PlanModel } from "./types.ts";

/** The derivative GENIE uses on a model: the one asked for, checked, else the model's preferred one. */
export function derivativeFor(model: PlanModel, asked: string | undefined): DerivativeSource {
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
export function defaultGridFor(
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

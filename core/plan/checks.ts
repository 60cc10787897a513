/**
 * The refusals of a solve plan (core/plan.ts): the collector {@link Checks}, which records every
 * refusal of a request rather than only the first, and the rules that need no model
 * ({@link checkSolveRequest}).
 */
import { defaultRho, GRID_KINDS, GridError, type GridKind } from "../grid.ts";
import { getSolver, type SolverInfo } from "../solvers/registry.ts";
import { DERIVATIVE_SOURCES, SolverError } from "../solvers/types.ts";
import { DEFAULT_SOLVER, type Direction, PlanError, type SolveRequest } from "./types.ts";

/** Core errors that name a field (GridError, SolverError) as PlanErrors. */
export function asPlanError(e: unknown): unknown {
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
export function checkRhoFor(kind: GridKind, rho: number | undefined, why = ""): void {
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
export function variantsOf(
  info: SolverInfo | undefined,
): { values: readonly string[]; default: string } | undefined {
  return (info as { variants?: { values: readonly string[]; default: string } } | undefined)?.variants;
}

/** Collects refusals: each rule runs once, and a rule whose inputs were refused is skipped. */
export class Checks {
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
export function independentRules(
  req: SolveRequest,
  direction: Direction,
  checks: Checks,
): SolverInfo | undefined {
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
 * the solver's range, AFS and denoising for sampling only. `planSolve` (core/plan.ts) applies them
 * first; the command line also applies them while parsing its flags (cli/args.ts), before it loads a
 * model.
 * Throws a {@link PlanError} (the first refusal, with `all` of them).
 */
export function checkSolveRequest(req: SolveRequest, direction: Direction = "sample"): SolverInfo {
  const checks = new Checks();
  const info = independentRules(req, direction, checks);
  checks.throwIfAny();
  return info!;
}

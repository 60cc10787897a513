/**
 * The vocabulary of a solve plan (core/plan.ts): the API's defaults, a request's solve settings, what the
 * plan needs to know of a model, the plan itself and its refusal, {@link PlanError}.
 */
import type { CostRatios } from "../cost.ts";
import type { GridKind } from "../grid.ts";
import type { Schedule } from "../schedule.ts";
import type { CallGraph } from "../solvers/drive.ts";
import type { GridDefaults } from "../solvers/registry.ts";
import type { DerivativeSource, SolveInput } from "../solvers/types.ts";

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
  /**
   * The model answers ε and its JVP along the ODE's tangent in one call (SolveInput `odeJvp`), so an
   * unguided GENIE (jvp) step is one JVP-graph call. Absent (the edge, which `GET /v1/models` does not
   * tell): the plan's price assumes an ε call and a JVP call; responses report what the worker counted.
   */
  odeJvp?: boolean;
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

/**
 * What a model offers and the limits requests to it must respect: the items of `GET /v1/models`
 * (docs/contracts.md §2). Workers describe their models; {@link normalizeModelInfo} reads such a
 * description leniently and fills the limits the worker leaves out with {@link DEFAULT_LIMITS}.
 */
import { z } from "zod";
import { GRID_KINDS } from "../grid.ts";
import { normalSolverName, resolveSolverName, solverAliases } from "../solvers/registry.ts";
import { DERIVATIVE_SOURCES } from "../solvers/types.ts";

/** The solver names of docs/contracts.md §1, the fallback when a worker does not list its solvers. */
export const CONTRACT_SOLVERS = [
  "ddim",
  "genie",
  "heun",
  "dpmpp-2m",
  "dpmpp-3m",
  "unipc",
  "ipndm",
  "ipndm-v",
] as const;

export const ModelName = z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]*$/, {
  message: "Model names are letters, digits and . _ : @ / -",
});

export const GuidanceRange = z.object({ min: z.number(), max: z.number() });

export const ModelLimits = z.object({
  max_batch: z.int().min(1).meta({ description: "Samples per worker call (larger requests are split)" }),
  max_n: z.int().min(1).meta({ description: "Samples per request" }),
  max_steps: z.int().min(1),
  max_nfe: z.int().min(1),
  guidance: GuidanceRange.optional().meta({
    description: "Allowed guidance scales (class-conditional models)",
  }),
}).meta({ id: "ModelLimits" });
export type ModelLimits = z.infer<typeof ModelLimits>;

export const ModelClasses = z.object({
  count: z.int().min(1),
  null_class: z.int().min(0).optional(),
});

/** The grid a solver uses on a model when a request names none. */
export const DefaultGrid = z.object({
  grid: z.enum(GRID_KINDS),
  rho: z.number().positive().optional(),
  source: z.enum(["model", "solver"]).optional().meta({
    description: "model: the model's own default (its manifest); solver: the solver's recommended grid",
  }),
});

const DefaultGrids = z.record(z.string(), DefaultGrid).meta({
  description: "Per solver, the grid a request without grid gets (a request's grid and rho win)",
});
const Costs = z.record(z.string(), z.number().positive()).meta({
  description: "Cost of one call of each graph the model runs (eps, head, jvp) as a ratio to one eps call; " +
    "responses price their calls with it",
});
const UnavailableDerivatives = z.record(
  z.string(),
  z.object({ reason: z.string(), operators: z.array(z.string()).optional() }),
).meta({
  description: "Derivative sources the model cannot offer, with why (e.g. jvp: an operator the JVP " +
    "transform cannot differentiate, named in operators)",
});
const SolverAliases = z.record(z.string(), z.string()).meta({
  description: "Other names a request's solver may have (alias → the name in solvers); names also match " +
    'ignoring case, spaces, "_", "-" and parentheses, with "++" read as "pp" (e.g. "DPM++ 2M", "dpmpp_2m")',
});
const EstimatedCosts = z.array(z.string()).meta({
  description: "Graphs in costs without a measured ratio, priced with the fallback (head 1, jvp 3)",
});

export const ModelInfo = z.object({
  name: ModelName,
  shape: z.array(z.int().min(1)).min(1).max(4).meta({ description: "Per-sample shape: [C, H, W] or [D]" }),
  classes: ModelClasses.optional(),
  schedule: z.record(z.string(), z.unknown()),
  solvers: z.array(z.string()),
  solver_aliases: SolverAliases.optional(),
  derivatives: z.array(z.string()).meta({
    description: 'GENIE derivative sources: "head", "jvp", "fd", "exact"',
  }),
  unavailable_derivatives: UnavailableDerivatives.optional(),
  limits: ModelLimits,
  default_grids: DefaultGrids.optional(),
  costs: Costs.optional(),
  estimated_costs: EstimatedCosts.optional(),
  prediction: z.string().optional(),
  version: z.string().optional(),
  description: z.string().optional(),
}).meta({ id: "Model" });
export type ModelInfo = z.infer<typeof ModelInfo>;

export const ModelList = z.array(ModelInfo).meta({ id: "ModelList" });

export const DEFAULT_LIMITS: ModelLimits = {
  max_batch: 64,
  max_n: 256,
  max_steps: 1000,
  max_nfe: 2000,
  guidance: { min: 0, max: 20 },
};

const LenientModel = z.looseObject({
  name: ModelName,
  shape: z.array(z.int().min(1)).min(1).max(4),
  classes: z.union([z.int().min(1), ModelClasses, z.null()]).optional(),
  schedule: z.record(z.string(), z.unknown()).optional(),
  solvers: z.array(z.string()).optional(),
  solver_aliases: SolverAliases.optional().catch(undefined),
  derivatives: z.array(z.string()).optional(),
  limits: z.looseObject({
    max_batch: z.int().min(1).optional(),
    max_n: z.int().min(1).optional(),
    max_steps: z.int().min(1).optional(),
    max_nfe: z.int().min(1).optional(),
    guidance: z.union([GuidanceRange, z.tuple([z.number(), z.number()])]).optional(),
  }).optional(),
  // Malformed entries of these informational fields are dropped, not the model.
  unavailable_derivatives: UnavailableDerivatives.optional().catch(undefined),
  default_grids: DefaultGrids.optional().catch(undefined),
  costs: Costs.optional().catch(undefined),
  estimated_costs: EstimatedCosts.optional().catch(undefined),
  prediction: z.string().optional(),
  version: z.union([z.string(), z.number()]).optional(),
  description: z.string().optional(),
});

/**
 * A worker's description of one model as a {@link ModelInfo}, or null when it lacks a usable name or
 * shape or its `status` is not "ready" (or "ok", older workers' word): a folder the worker is loading
 * or could not load. `classes` may be a count or
 * `{count, null_class}`; missing limits take the defaults (with `max_n` at least `max_batch`).
 */
export function normalizeModelInfo(raw: unknown, defaults: ModelLimits = DEFAULT_LIMITS): ModelInfo | null {
  // a worker lists the folders it is loading or could not load with another status: not models to use
  const status = raw && typeof raw === "object" ? (raw as { status?: unknown }).status : undefined;
  if (status !== undefined && status !== "ready" && status !== "ok") return null;
  const r = LenientModel.safeParse(raw);
  if (!r.success) return null;
  const m = r.data;
  const classes = typeof m.classes === "number" ? { count: m.classes } : m.classes ?? undefined;
  const l = m.limits ?? {};
  const maxBatch = l.max_batch ?? defaults.max_batch;
  const g = Array.isArray(l.guidance) ? { min: l.guidance[0], max: l.guidance[1] } : l.guidance;
  const limits: ModelLimits = {
    max_batch: maxBatch,
    max_n: l.max_n ?? Math.max(defaults.max_n, maxBatch),
    max_steps: l.max_steps ?? defaults.max_steps,
    max_nfe: l.max_nfe ?? defaults.max_nfe,
  };
  if (classes) limits.guidance = g ?? defaults.guidance;
  const info: ModelInfo = {
    name: m.name,
    shape: m.shape,
    schedule: m.schedule ?? {},
    solvers: m.solvers ?? [...CONTRACT_SOLVERS],
    derivatives: (m.derivatives ?? ["jvp", "fd"]).filter((d) =>
      (DERIVATIVE_SOURCES as readonly string[]).includes(d)
    ),
    limits,
  };
  // The worker's aliases, else this registry's for the solvers it lists (an alias of a solver the
  // model does not list is left out).
  const aliases = Object.entries(m.solver_aliases ?? solverAliases(info.solvers))
    .filter(([, canonical]) => info.solvers.includes(canonical));
  if (aliases.length > 0) info.solver_aliases = Object.fromEntries(aliases);
  if (classes) info.classes = classes;
  if (m.unavailable_derivatives !== undefined) info.unavailable_derivatives = m.unavailable_derivatives;
  if (m.default_grids !== undefined) info.default_grids = m.default_grids;
  if (m.costs !== undefined) info.costs = m.costs;
  if (m.estimated_costs !== undefined) info.estimated_costs = m.estimated_costs;
  if (m.prediction !== undefined) info.prediction = m.prediction;
  if (m.version !== undefined) info.version = String(m.version);
  if (m.description !== undefined) info.description = m.description;
  return info;
}

/**
 * The name in `model.solvers` that a request's `solver` means: the name itself, one of the model's
 * `solver_aliases`, or an alias core/solvers/registry.ts knows, compared as normalSolverName does; or
 * undefined when the model has no such solver.
 */
export function modelSolverName(model: ModelInfo, name: string): string | undefined {
  if (model.solvers.includes(name)) return name;
  const key = normalSolverName(name);
  const own = model.solvers.find((s) => normalSolverName(s) === key);
  if (own !== undefined) return own;
  for (const [alias, canonical] of Object.entries(model.solver_aliases ?? {})) {
    if (normalSolverName(alias) === key && model.solvers.includes(canonical)) return canonical;
  }
  const canonical = resolveSolverName(name);
  return canonical !== undefined && model.solvers.includes(canonical) ? canonical : undefined;
}

/** A worker's model list — an array, or `{models: [...]}` — normalized, unusable entries dropped. */
export function normalizeModelList(raw: unknown, defaults: ModelLimits = DEFAULT_LIMITS): ModelInfo[] {
  const list = Array.isArray(raw)
    ? raw
    : raw && typeof raw === "object" && Array.isArray((raw as { models?: unknown }).models)
    ? (raw as { models: unknown[] }).models
    : [];
  return list.map((m) => normalizeModelInfo(m, defaults)).filter((m): m is ModelInfo => m !== null);
}

/**
 * The solvers by their public names (docs/contracts.md §1) and exact NFE accounting: how many network
 * evaluations of ε a solve costs, and which step count gives a requested NFE.
 */
import { ddim } from "./ddim.ts";
import { dpmpp2m, dpmpp3m, DPMPP_3M_VARIANTS } from "./dpmpp.ts";
import { genie } from "./genie.ts";
import { heun } from "./heun.ts";
import { ipndm, ipndmV } from "./ipndm.ts";
import { unipc, UNIPC_VARIANTS } from "./unipc.ts";
import type { DerivativeSource, SolverFn, SolverVariant } from "./types.ts";
import { SolverError } from "./types.ts";
import type { GridKind } from "../grid.ts";

export interface SolverInfo {
  name: string;
  fn: SolverFn;
  /** Network evaluations per step (before AFS and denoising adjustments). */
  evalsPerStep: (derivative: DerivativeSource) => number;
  /** Network evaluations the analytical first step saves (it replaces the first ε by x_T). */
  afsSaves: (derivative: DerivativeSource) => number;
  /** The grid this solver is recommended with, and its ρ where it has one. */
  grid: { kind: GridKind; rho?: number };
  /** Orders this solver supports through `order`, and its default. */
  orders?: { min: number; max: number; default: number };
  /** Variants this solver supports through `variant`, and its default. */
  variants?: { values: readonly SolverVariant[]; default: SolverVariant };
  /** Whether it supports encoding (integration on an increasing grid). */
  encodes: boolean;
  /** One-line description for help texts. */
  summary: string;
}

const SOLVERS: SolverInfo[] = [
  {
    name: "ddim",
    fn: ddim,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    grid: { kind: "quadratic" },
    encodes: true,
    summary: "DDIM: Euler on dx̄/dγ = ε (first order)",
  },
  {
    name: "genie",
    fn: genie,
    evalsPerStep: (d) => (d === "fd" ? 2 : 1),
    // AFS sets ε_0 := x_T and k_0 := 0: the whole first step is free (both evaluations with "fd").
    afsSaves: (d) => (d === "fd" ? 2 : 1),
    grid: { kind: "quadratic" },
    encodes: true,
    summary: "GENIE: second-order Taylor step with a derivative head, JVP, finite difference or closed form",
  },
  {
    name: "heun",
    fn: heun,
    evalsPerStep: () => 2,
    // Only the first step's first evaluation; its corrector still evaluates at the predicted point.
    afsSaves: () => 1,
    grid: { kind: "edm", rho: 7 },
    encodes: true,
    summary:
      "Heun (EDM): Euler predictor and trapezoidal corrector in γ (second order, 2 evaluations a step)",
  },
  {
    name: "dpmpp-2m",
    fn: dpmpp2m,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    grid: { kind: "logsnr" },
    encodes: true,
    summary: "DPM-Solver++(2M): second-order multistep exponential integrator in λ with data prediction",
  },
  {
    name: "dpmpp-3m",
    fn: dpmpp3m,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    grid: { kind: "logsnr" },
    variants: { values: DPMPP_3M_VARIANTS, default: "reference" },
    encodes: true,
    summary: "DPM-Solver++(3M): multistep exponential integrator in λ with data prediction; variant " +
      "reference (the authors' update, second order) or quadratic-exact (third order)",
  },
  {
    name: "unipc",
    fn: unipc,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    grid: { kind: "logsnr" },
    orders: { min: 1, max: 3, default: 3 },
    variants: { values: UNIPC_VARIANTS, default: "bh1" },
    encodes: true,
    summary: "UniPC: predictor UniP-p and corrector UniC (order p + 1) with data prediction, B(h) bh1 or bh2",
  },
  {
    name: "ipndm",
    fn: ipndm,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    // The log-SNR grid: with these fixed coefficients, on the 2-D and 784-D mixtures of
    // docs/benchmarks.md (AFS off or on, whichever was better) its endpoint errors were smaller than on
    // EDM's ρ = 7 at every NFE from 4 to 20 and than on the quadratic grid at 12 of the 14 (e.g. 10 NFE:
    // 4.6e-3 vs 9.9e-3 in 2-D, 7.9e-3 vs 2.5e-2 in 784-D).
    grid: { kind: "logsnr" },
    orders: { min: 1, max: 4, default: 4 },
    encodes: true,
    summary: "iPNDM: Adams–Bashforth on dx̄/dγ = ε with the history of ε (fixed coefficients, order 1–4)",
  },
  {
    name: "ipndm-v",
    fn: ipndmV,
    evalsPerStep: () => 1,
    afsSaves: () => 1,
    // The time-quadratic grid, not EDM's ρ = 7: on 2-D and 4-D analytic mixtures its endpoint errors
    // were 2–4× smaller at 8–20 NFE with AFS (e.g. 2.6e-2 vs 8.8e-2 RMS at 10 NFE) and 2–3× smaller at
    // 16–256 steps.
    grid: { kind: "quadratic" },
    orders: { min: 1, max: 4, default: 4 },
    encodes: true,
    summary: "iPNDM-v: Adams–Bashforth on dx̄/dγ = ε with the history of ε (variable-step weights, " +
      "order 1–4)",
  },
];

export function solverNames(): string[] {
  return SOLVERS.map((s) => s.name);
}

/**
 * Other names of the solvers, as users type them from other tools (k-diffusion and its front ends,
 * diffusers, the papers), by canonical name. Names are matched after {@link normalSolverName}, so
 * `dpmpp_2m`, `DPM++ 2M`, `dpm++2m` and `DPMPP-2M` all name dpmpp-2m even where not listed here; the
 * list is what `GET /v1/models` shows as `solver_aliases`. `euler` is Euler's method in (γ, x̄) on the
 * probability-flow ODE, which is DDIM (docs/method.md §3).
 */
const ALIASES: Record<string, readonly string[]> = {
  ddim: ["euler", "k_euler"],
  heun: ["k_heun"],
  "dpmpp-2m": ["dpmpp_2m", "DPM++ 2M", "dpm++2m", "k_dpmpp_2m", "DPM-Solver++(2M)"],
  "dpmpp-3m": ["dpmpp_3m", "DPM++ 3M", "dpm++3m", "DPM-Solver++(3M)"],
  unipc: ["uni_pc", "UniPC"],
  ipndm: ["iPNDM"],
  "ipndm-v": ["ipndm_v", "iPNDM-v"],
};

/**
 * The form names are compared in: lower case, without spaces, `_`, `-`, `(` and `)`, with `++` read
 * as `pp` (so `DPM++ 2M` → `dpmpp2m`).
 */
export function normalSolverName(name: string): string {
  return name.toLowerCase().replace(/\+\+/g, "pp").replace(/[\s_()-]/g, "");
}

/** Normalised name → canonical name, for every canonical name and alias; built once, checked for clashes. */
const BY_NORMAL_NAME: Map<string, string> = (() => {
  const out = new Map<string, string>();
  const add = (key: string, canonical: string) => {
    const k = normalSolverName(key), had = out.get(k);
    if (had !== undefined && had !== canonical) {
      throw new Error(`solver name ${JSON.stringify(key)} would name both ${had} and ${canonical}`);
    }
    out.set(k, canonical);
  };
  for (const s of SOLVERS) add(s.name, s.name);
  for (const [canonical, aliases] of Object.entries(ALIASES)) {
    if (!SOLVERS.some((s) => s.name === canonical)) throw new Error(`aliases of unknown solver ${canonical}`);
    for (const a of aliases) add(a, canonical);
  }
  return out;
})();

/** The canonical name of a solver name or alias (see {@link normalSolverName}), or undefined. */
export function resolveSolverName(name: string): string | undefined {
  return typeof name === "string" ? BY_NORMAL_NAME.get(normalSolverName(name)) : undefined;
}

/** The listed aliases of the given solvers (default: all), alias → canonical name. */
export function solverAliases(solvers: readonly string[] = solverNames()): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [canonical, aliases] of Object.entries(ALIASES)) {
    if (!solvers.includes(canonical)) continue;
    for (const a of aliases) out[a] = canonical;
  }
  return out;
}

/** The solver a name or alias names; `.name` is its canonical name. */
export function getSolver(name: string): SolverInfo {
  const canonical = resolveSolverName(name);
  const s = SOLVERS.find((s) => s.name === canonical);
  if (!s) {
    throw new SolverError(
      "solver",
      `unknown solver ${JSON.stringify(name)} (one of ${solverNames().join(", ")})`,
    );
  }
  return s;
}

/** A grid kind and its ρ where it has one (undefined: the kind's default ρ). */
export interface GridChoice {
  kind: GridKind;
  rho?: number;
}

/**
 * A model's preferred grids (model.json `defaults`): `grid` and `rho` for every solver, `solvers` for
 * one solver by name. A request that names a grid uses its own.
 */
export interface GridDefaults {
  grid?: GridKind;
  rho?: number;
  solvers?: Record<string, { grid: GridKind; rho?: number }>;
}

/**
 * The grid of a request that names none: the model's default for this solver, else the model's
 * default for every solver, else the solver's recommended grid. `source` says which it is.
 */
export function defaultGrid(
  solver: string,
  defaults?: GridDefaults,
): GridChoice & { source: "model" | "solver" } {
  solver = getSolver(solver).name;
  const own = defaults?.solvers?.[solver] ??
    (defaults?.grid !== undefined ? { grid: defaults.grid, rho: defaults.rho } : undefined);
  if (own) return { kind: own.grid, ...(own.rho !== undefined ? { rho: own.rho } : {}), source: "model" };
  const s = getSolver(solver).grid;
  return { kind: s.kind, ...(s.rho !== undefined ? { rho: s.rho } : {}), source: "solver" };
}

export interface NfeOptions {
  afs?: boolean;
  denoise?: boolean;
  derivative?: DerivativeSource;
}

/**
 * NFE = steps × evaluations per step − [AFS] × (evaluations AFS saves) + [denoise]. AFS replaces the
 * first ε by x_T, which saves one evaluation; for GENIE it also sets k_0 = 0, saving the whole first
 * step (two evaluations with the finite-difference derivative).
 */
export function nfeFor(name: string, steps: number, opts: NfeOptions = {}): number {
  const s = getSolver(name), d = opts.derivative ?? "head";
  return steps * s.evalsPerStep(d) - (opts.afs ? s.afsSaves(d) : 0) + (opts.denoise ? 1 : 0);
}

/** The step count whose NFE equals `nfe` exactly, or a SolverError naming `nfe`. */
export function stepsForNfe(name: string, nfe: number, opts: NfeOptions = {}): number {
  if (!Number.isInteger(nfe) || nfe < 1) throw new SolverError("nfe", "must be a positive integer");
  const per = getSolver(name).evalsPerStep(opts.derivative ?? "head");
  const upper = Math.ceil(nfe / per) + 2;
  for (let steps = 1; steps <= upper; steps++) {
    if (nfeFor(name, steps, opts) === nfe) return steps;
  }
  throw new SolverError("nfe", `${name} cannot use exactly ${nfe} evaluations with these options`);
}

/**
 * The solvers by their public names (CONTRACTS.md §1) and exact NFE accounting: how many network
 * evaluations of ε a solve costs, and which step count gives a requested NFE.
 */
import { ddim } from "./ddim.ts";
import { genie } from "./genie.ts";
import type { DerivativeSource, SolverFn } from "./types.ts";
import { SolverError } from "./types.ts";
import type { GridKind } from "../grid.ts";

export interface SolverInfo {
  name: string;
  fn: SolverFn;
  /** Network evaluations per step (before AFS and denoising adjustments). */
  evalsPerStep: (derivative: DerivativeSource) => number;
  /** The grid this solver is recommended with, and its ρ where it has one. */
  grid: { kind: GridKind; rho?: number };
  /** Orders this solver supports through `order`, and its default. */
  orders?: { min: number; max: number; default: number };
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
    grid: { kind: "quadratic" },
    encodes: true,
    summary: "DDIM: Euler on dx̄/dγ = ε (first order)",
  },
  {
    name: "genie",
    fn: genie,
    evalsPerStep: (d) => (d === "fd" ? 2 : 1),
    grid: { kind: "quadratic" },
    encodes: true,
    summary: "GENIE: second-order Taylor step with a derivative head, JVP, finite difference or closed form",
  },
];

/** Adds a solver to the registry (used by the modules that define the baseline solvers). */
export function registerSolver(info: SolverInfo): void {
  const i = SOLVERS.findIndex((s) => s.name === info.name);
  if (i >= 0) SOLVERS[i] = info;
  else SOLVERS.push(info);
}

export function solverNames(): string[] {
  return SOLVERS.map((s) => s.name);
}

export function getSolver(name: string): SolverInfo {
  const s = SOLVERS.find((s) => s.name === name);
  if (!s) {
    throw new SolverError(
      "solver",
      `unknown solver ${JSON.stringify(name)} (one of ${solverNames().join(", ")})`,
    );
  }
  return s;
}

export interface NfeOptions {
  afs?: boolean;
  denoise?: boolean;
  derivative?: DerivativeSource;
}

/**
 * NFE = steps × evaluations per step − [AFS] × (evaluations of the first step saved) + [denoise].
 * AFS replaces the first ε by x_T; for GENIE it also sets k_0 = 0, saving the whole first step.
 */
export function nfeFor(name: string, steps: number, opts: NfeOptions = {}): number {
  const s = getSolver(name);
  const per = s.evalsPerStep(opts.derivative ?? "head");
  const saved = opts.afs ? (name === "genie" ? per : 1) : 0;
  return steps * per - saved + (opts.denoise ? 1 : 0);
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

/**
 * The integration-error runs of the solver benchmark (bench/solvers.ts): every configuration at every NFE,
 * with and without AFS, against an RK4 reference of each model.
 */
import { gmmEvaluator } from "../../core/gmm.ts";
import { defaultRho, makeGrid } from "../../core/grid.ts";
import { gaussianNoise } from "../../core/rng.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { getSolver, nfeFor, solverNames, stepsForNfe } from "../../core/solvers/registry.ts";
import type { DerivativeSource, SolverVariant } from "../../core/solvers/types.ts";
import { median } from "../../core/stats.ts";
import { rk4Reference, rmsePerSample } from "../reference.ts";
import type { Model } from "./models.ts";

export const NFES = [3, 4, 5, 6, 8, 10, 15, 20];
export const SEED = 0;

export interface Config {
  /** Display name, e.g. "genie (exact)". */
  label: string;
  solver: string;
  derivative?: DerivativeSource;
  variant?: SolverVariant;
}

/**
 * Every registered solver with its default options, and each of its other variants as its own row
 * (e.g. "dpmpp-3m (quadratic-exact)"); GENIE with its exact and fd derivatives.
 */
export function configs(): Config[] {
  const out: Config[] = [];
  for (const name of solverNames()) {
    if (name === "genie") {
      out.push({ label: "genie (exact)", solver: name, derivative: "exact" });
      out.push({ label: "genie (fd)", solver: name, derivative: "fd" });
      continue;
    }
    out.push({ label: name, solver: name });
    const variants = getSolver(name).variants;
    for (const variant of variants?.values ?? []) {
      if (variant !== variants!.default) out.push({ label: `${name} (${variant})`, solver: name, variant });
    }
  }
  return out;
}

export interface Cell {
  nfe: number;
  afs: boolean;
  /** Steps, or undefined when this NFE is impossible for the solver with this AFS setting. */
  steps?: number;
  error?: number;
}

export interface Row {
  config: Config;
  grid: string;
  rho: string;
  afs: boolean;
  cells: Cell[];
}

function runConfig(
  model: Model,
  config: Config,
  afs: boolean,
  latents: Float64Array,
  ref: Float64Array,
): Row {
  const info = getSolver(config.solver), { mix, batch } = model;
  const rho = info.grid.rho ?? defaultRho(info.grid.kind);
  const evaluate = gmmEvaluator(mix);
  const cells = NFES.map((nfe): Cell => {
    const opts = { afs, denoise: false, derivative: config.derivative };
    let steps: number;
    try {
      steps = stepsForNfe(config.solver, nfe, opts);
    } catch {
      return { nfe, afs };
    }
    const grid = makeGrid(mix.schedule, { kind: info.grid.kind, steps, rho: info.grid.rho });
    const { x, stats } = runSolver(
      info.fn({
        schedule: mix.schedule,
        grid,
        x: latents,
        batch,
        dim: mix.dim,
        afs,
        derivative: config.derivative,
        variant: config.variant,
      }),
      evaluate,
    );
    if (stats.nfe !== nfe || nfeFor(config.solver, steps, opts) !== nfe) {
      throw new Error(`${config.label}: counted ${stats.nfe} evaluations, expected ${nfe}`);
    }
    return { nfe, afs, steps, error: median(rmsePerSample(x, ref, batch, mix.dim)) };
  });
  return { config, grid: info.grid.kind, rho: rho === undefined ? "—" : String(rho), afs, cells };
}

export interface ModelResult {
  model: Model;
  refSelf: { median: number; max: number };
  refSteps: number;
  rows: Row[];
  seconds: number;
  /** The latents (x at t_max) and the reference endpoints, batch × dim. */
  latents: Float64Array;
  ref: Float64Array;
}

export function benchModel(model: Model): ModelResult {
  const start = performance.now();
  const { mix, batch } = model;
  const latents = new Float64Array(batch * mix.dim);
  for (let i = 0; i < batch; i++) latents.set(gaussianNoise(SEED, i, mix.dim), i * mix.dim);
  const ref = rk4Reference(mix, latents, batch, model.refSteps);
  const half = rk4Reference(mix, latents, batch, model.refSteps / 2);
  const self = rmsePerSample(half, ref, batch, mix.dim);
  const rows: Row[] = [];
  for (const config of configs()) {
    for (const afs of [false, true]) rows.push(runConfig(model, config, afs, latents, ref));
  }
  return {
    model,
    refSelf: { median: median(self), max: Math.max(...self) },
    refSteps: model.refSteps,
    rows,
    seconds: (performance.now() - start) / 1000,
    latents,
    ref,
  };
}

/** For the summary and the plot: per NFE, the better of AFS off/on where both are possible. */
export function best(result: ModelResult, label: string): (Cell | undefined)[] {
  const [off, on] = result.rows.filter((r) => r.config.label === label);
  return NFES.map((_, j) => {
    const c = [off.cells[j], on.cells[j]].filter((c) => c.error !== undefined);
    return c.length === 0 ? undefined : c.reduce((a, b) => (b.error! < a.error! ? b : a));
  });
}

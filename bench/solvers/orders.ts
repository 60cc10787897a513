/**
 * The measured orders of convergence of the solver benchmark (bench/solvers.ts): the same configurations
 * at 32–256 steps, on the 2-D mixture against its reference and on a single Gaussian against its
 * closed-form trajectory.
 */
import {
  type GaussianMixture,
  gmmEvaluator,
  parseGmmSpec,
  singleGaussianTrajectory,
} from "../../core/gmm.ts";
import { defaultRho, makeGrid } from "../../core/grid.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { getSolver } from "../../core/solvers/registry.ts";
import { type Config, configs, type ModelResult } from "./runs.ts";

export const ORDER_STEPS = [32, 64, 128, 256];
/** The order runs use the first samples of the 2-D model's batch. */
export const ORDER_BATCH = 16;
/** The single Gaussian N(μ, s² I) of the order runs, whose ODE trajectory is known in closed form. */
const GAUSSIAN = { mu: [0.3, -0.2], s: 0.5 };

interface OrderRow {
  config: Config;
  grid: string;
  rho: string;
  /** RMSE at each of ORDER_STEPS. */
  errors: number[];
}

export interface OrderResult {
  title: string;
  /** What the errors are measured against. */
  against: string;
  /** An error below 100 × this is at the reference's own accuracy. */
  floor: number;
  rows: OrderRow[];
}

/** RMSE over every value. */
function rmse(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < ref.length; i++) s += (x[i] - ref[i]) ** 2;
  return Math.sqrt(s / ref.length);
}

function orderRows(mix: GaussianMixture, latents: Float64Array, ref: Float64Array): OrderRow[] {
  const batch = latents.length / mix.dim, evaluate = gmmEvaluator(mix);
  return configs().map((config) => {
    const info = getSolver(config.solver);
    const rho = info.grid.rho ?? defaultRho(info.grid.kind);
    const errors = ORDER_STEPS.map((steps) => {
      const grid = makeGrid(mix.schedule, { kind: info.grid.kind, steps, rho: info.grid.rho });
      const { x } = runSolver(
        info.fn({
          schedule: mix.schedule,
          grid,
          x: latents,
          batch,
          dim: mix.dim,
          derivative: config.derivative,
          variant: config.variant,
        }),
        evaluate,
      );
      return rmse(x, ref);
    });
    return { config, grid: info.grid.kind, rho: rho === undefined ? "—" : String(rho), errors };
  });
}

/** Orders on the 2-D model (against its reference) and on the single Gaussian (against the closed form). */
export function benchOrders(r2d: ModelResult): OrderResult[] {
  const dim = r2d.model.mix.dim;
  const latents = r2d.latents.slice(0, ORDER_BATCH * dim);
  const mixture: OrderResult = {
    title: `(a) ${r2d.model.title}`,
    against: `its RK4 reference (${r2d.refSteps} steps)`,
    floor: r2d.refSelf.max,
    rows: orderRows(r2d.model.mix, latents, r2d.ref.slice(0, ORDER_BATCH * dim)),
  };
  const mu = GAUSSIAN.mu.slice(0, dim);
  const gauss = parseGmmSpec({ weights: [1], means: [mu], stds: [GAUSSIAN.s] });
  const sch = gauss.schedule, exact = new Float64Array(latents.length);
  for (let b = 0; b < ORDER_BATCH; b++) {
    const x0 = latents.slice(b * dim, (b + 1) * dim).map((v) => v / sch.alpha(sch.tMax));
    const end = singleGaussianTrajectory(mu, GAUSSIAN.s, x0, sch.gamma(sch.tMax), sch.gamma(sch.tMin));
    exact.set(end.map((v) => v * sch.alpha(sch.tMin)), b * dim);
  }
  const gaussian: OrderResult = {
    title: `(c) single Gaussian N(μ = (${mu.join(", ")}), ${GAUSSIAN.s}² I)`,
    against: "its closed-form trajectory",
    floor: 1e-14,
    rows: orderRows(gauss, latents, exact),
  };
  return [mixture, gaussian];
}

/** Least-squares slope of log(1/error) against log(steps). */
export function fittedOrder(steps: number[], errors: number[]): number {
  const xs = steps.map(Math.log), ys = errors.map((e) => -Math.log(e));
  const mx = xs.reduce((a, b) => a + b) / xs.length, my = ys.reduce((a, b) => a + b) / ys.length;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxy / sxx;
}

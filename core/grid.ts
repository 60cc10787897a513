/**
 * Time grids t_0 = t_start, …, t_N = t_end. Sampling grids decrease (t_max → t_min); encoding uses
 * the same grid reversed. Endpoints are exact and every grid is strictly monotone.
 */
import type { Schedule } from "./schedule.ts";
import { pow } from "./math.ts";

export const GRID_KINDS = ["uniform", "quadratic", "power", "logsnr", "edm"] as const;
export type GridKind = typeof GRID_KINDS[number];

export interface GridOptions {
  kind: GridKind;
  steps: number;
  /** Exponent of `power` (default 2) and `edm` (default 7) grids. */
  rho?: number;
  tMin?: number;
  tMax?: number;
}

/** An invalid grid; `field` names the offending option. */
export class GridError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "GridError";
  }
}

/** The default ρ of each grid kind. */
export function defaultRho(kind: GridKind): number | undefined {
  return kind === "edm" ? 7 : kind === "power" || kind === "quadratic" ? 2 : undefined;
}

/** ρ-power interpolation between a and b: (a^{1/ρ} + u (b^{1/ρ} − a^{1/ρ}))^ρ. */
function powerInterp(a: number, b: number, u: number, rho: number): number {
  const ar = pow(a, 1 / rho), br = pow(b, 1 / rho);
  return pow(ar + u * (br - ar), rho);
}

/** A decreasing sampling grid from t_max to t_min with `steps` steps (steps + 1 points). */
export function makeGrid(schedule: Schedule, opts: GridOptions): Float64Array {
  const { kind, steps } = opts;
  if (!Number.isInteger(steps) || steps < 1) throw new GridError("steps", "must be an integer ≥ 1");
  const tMax = opts.tMax ?? schedule.tMax;
  const tMin = opts.tMin ?? schedule.tMin;
  if (!(Number.isFinite(tMin) && tMin > 0)) throw new GridError("t_min", "must be positive");
  if (!(Number.isFinite(tMax) && tMax > tMin)) throw new GridError("t_max", "must exceed t_min");
  if (!GRID_KINDS.includes(kind)) {
    throw new GridError("grid", `unknown grid ${JSON.stringify(kind)} (one of ${GRID_KINDS.join(", ")})`);
  }
  const rho = opts.rho ?? (kind === "quadratic" ? 2 : defaultRho(kind));
  if (kind === "quadratic" && opts.rho !== undefined && opts.rho !== 2) {
    throw new GridError("rho", "the quadratic grid has ρ = 2; use grid 'power' for another ρ");
  }
  if (rho !== undefined && !(Number.isFinite(rho) && rho > 0)) {
    throw new GridError("rho", "must be a positive number");
  }
  const t = new Float64Array(steps + 1);
  for (let n = 0; n <= steps; n++) {
    const u = n / steps;
    switch (kind) {
      case "uniform":
        t[n] = tMax + u * (tMin - tMax);
        break;
      case "quadratic":
      case "power":
        t[n] = powerInterp(tMax, tMin, u, rho!);
        break;
      case "logsnr": {
        const l0 = schedule.lambda(tMax), l1 = schedule.lambda(tMin);
        t[n] = schedule.tFromLambda(l0 + u * (l1 - l0));
        break;
      }
      case "edm":
        t[n] = schedule.tFromGamma(
          powerInterp(schedule.gamma(tMax), schedule.gamma(tMin), u, rho!),
        );
        break;
    }
  }
  t[0] = tMax;
  t[steps] = tMin;
  checkGrid(t);
  return t;
}

/**
 * Validates an explicit grid: at least two finite positive times, strictly monotone (either
 * direction), no duplicates. Returns it as a Float64Array.
 */
export function explicitGrid(times: ArrayLike<number>): Float64Array {
  const t = Float64Array.from(times);
  checkGrid(t);
  return t;
}

function checkGrid(t: Float64Array): void {
  if (t.length < 2) throw new GridError("grid", "needs at least two times");
  for (let i = 0; i < t.length; i++) {
    if (!(Number.isFinite(t[i]) && t[i] > 0)) {
      throw new GridError(`grid[${i}]`, `time must be finite and positive, got ${t[i]}`);
    }
  }
  const dir = Math.sign(t[1] - t[0]);
  for (let i = 1; i < t.length; i++) {
    const d = Math.sign(t[i] - t[i - 1]);
    if (d === 0) throw new GridError(`grid[${i}]`, `duplicate time ${t[i]}`);
    if (d !== dir) throw new GridError(`grid[${i}]`, "times must be strictly monotone");
  }
}

/** The same grid in the opposite direction (a sampling grid becomes an encoding grid). */
export function reversedGrid(t: Float64Array): Float64Array {
  return Float64Array.from(t).reverse();
}

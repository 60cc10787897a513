/**
 * UniPC (Zhao et al. 2023): the predictor UniP and corrector UniC with data prediction D = x̄ − γ ε, in
 * λ = −log γ. Both are one update from λ_s to λ_t = λ_s + h through the points (λ_k, D_k), k = 1…m,
 * other than the base point, with r_k = (λ_k − λ_s)/h:
 *
 *     x̄_t = e^{−h} x̄_s + (1 − e^{−h}) D_s − B(h) Σ_k ρ_k (D_k − D_s)/r_k,
 *     Σ_k ρ_k r_k^{i−1} = b_i = i! φ_{i+1}(−h) (−h)/B(h),   i = 1…m,
 *
 * (ρ = ½ when m = 1), with B(h) = −h ("bh1") or e^{−h} − 1 ("bh2"). The two variants differ only where
 * ρ = ½ replaces the exact b₁; UniP-2 with bh2 is DPM-Solver++(2M).
 *
 * UniP-p uses D_n and the p − 1 points before it (order p). After it, the model is evaluated at the
 * predicted point, and UniC-p adds that evaluation (r = 1) to the same points and corrects x̄_{n+1}
 * (order p + 1). The evaluation at the predicted point is reused by the next predictor, so a step costs
 * one evaluation; the last step has no corrector (it would cost one more), so NFE = steps.
 *
 * Defaults: order 3 (4 with the corrector) and bh1, which the UniPC authors recommend for
 * unconditional sampling with fewer than 10 steps (bh2 otherwise, e.g. with guidance).
 * On analytic mixtures at 5–10 NFE bh2 was as accurate or better; pick it with `variant`.
 *
 * Warm-up with lower orders from the first step; with fewer than 15 steps the final steps lower their
 * order too (min(order, steps left)), unless `lowerOrderFinal` is false.
 */
import { dataPrediction, evalEps, finish, toBar, validateInput } from "./common.ts";
import { lowerOrderFinalOption, orderOption, phi, stepOrder, variantOption } from "./multistep.ts";
import type { SolveInput, SolverRun, Tensor } from "./types.ts";
import { exp, expm1, powi } from "../math.ts";

export const UNIPC_VARIANTS = ["bh1", "bh2"] as const;
export type UniPCVariant = typeof UNIPC_VARIANTS[number];

/** A point of the data-prediction history: λ and x̂₀ there. */
interface Point {
  lambda: number;
  D: Tensor;
}

export function* unipc(input: SolveInput): SolverRun {
  validateInput(input);
  const order = orderOption(input, 1, 3, 3);
  const variant = variantOption(input, "unipc", UNIPC_VARIANTS, "bh1");
  const lowerOrderFinal = lowerOrderFinalOption(input);
  const { schedule, grid } = input;
  const N = grid.length - 1;
  let xbar = toBar(input.x, schedule.alpha(grid[0]));
  const eps0: Tensor = input.afs ? input.x : yield* evalEps(input, xbar, grid[0], 0);
  // Newest first: history[0] is the point x̄ sits at.
  const history: Point[] = [{
    lambda: schedule.lambda(grid[0]),
    D: dataPrediction(xbar, schedule.gamma(grid[0]), eps0),
  }];
  for (let n = 0; n < N; n++) {
    const p = stepOrder(order, n, N, lowerOrderFinal);
    const [base, ...before] = history.slice(0, p);
    const lambdaT = schedule.lambda(grid[n + 1]);
    const predicted = uniUpdate(xbar, base, before, lambdaT, variant); // UniP-p
    if (n === N - 1) {
      xbar = predicted;
      break;
    }
    const eps = yield* evalEps(input, predicted, grid[n + 1], n + 1);
    const next: Point = { lambda: lambdaT, D: dataPrediction(predicted, schedule.gamma(grid[n + 1]), eps) };
    xbar = uniUpdate(xbar, base, [...before, next], lambdaT, variant); // UniC-p
    history.unshift(next);
    history.length = Math.min(history.length, order);
  }
  return yield* finish(input, xbar);
}

/** The UniPC update from x̄ at `base` to λ_t through the `others` points (see the module comment). */
function uniUpdate(
  xbar: Float64Array,
  base: Point,
  others: Point[],
  lambdaT: number,
  variant: UniPCVariant,
): Float64Array {
  const h = lambdaT - base.lambda;
  const B = variant === "bh1" ? -h : expm1(-h);
  const r = others.map((o) => (o.lambda - base.lambda) / h);
  const rho = others.length === 1 ? [0.5] : solveLinear(
    r.map((_, i) => r.map((rk) => powi(rk, i))),
    r.map((_, i) => factorial(i + 1) * phi(i + 2, -h) * (-h / B)),
  );
  const decay = exp(-h), gain = -expm1(-h);
  const out = new Float64Array(xbar.length);
  for (let i = 0; i < xbar.length; i++) {
    let correction = 0;
    for (let k = 0; k < others.length; k++) correction += (rho[k] * (others[k].D[i] - base.D[i])) / r[k];
    out[i] = decay * xbar[i] + gain * base.D[i] - B * correction;
  }
  return out;
}

function factorial(n: number): number {
  return n <= 1 ? 1 : n * factorial(n - 1);
}

/** Solves A ρ = b (m ≤ 3) by Gaussian elimination with partial pivoting. */
function solveLinear(A: number[][], b: number[]): number[] {
  const m = b.length;
  const M = A.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < m; c++) {
    let p = c;
    for (let i = c + 1; i < m; i++) if (Math.abs(M[i][c]) > Math.abs(M[p][c])) p = i;
    [M[c], M[p]] = [M[p], M[c]];
    for (let i = c + 1; i < m; i++) {
      const f = M[i][c] / M[c][c];
      for (let j = c; j <= m; j++) M[i][j] -= f * M[c][j];
    }
  }
  const x = new Array<number>(m).fill(0);
  for (let i = m - 1; i >= 0; i--) {
    let s = M[i][m];
    for (let j = i + 1; j < m; j++) s -= M[i][j] * x[j];
    x[i] = s / M[i][i];
  }
  return x;
}

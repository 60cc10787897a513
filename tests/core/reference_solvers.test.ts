/**
 * The baselines reproduce the implementations users compare against, from the same latents on the same
 * grid, to float32 precision:
 *
 * - `dpmpp-3m` (default variant "reference") against DPM-Solver++ multistep with data prediction as its
 *   authors' code writes it (first-, second- and third-order multistep updates in VP x-space with
 *   α_t, σ_t, λ_t, the second order in diffusers' "midpoint" form), with diffusers' order schedule:
 *   warm-up from the first step, and below 15 steps order 2 and 1 on the last two steps;
 * - `ipndm` against diff-sampler's `ipndm` sampler (fixed Adams–Bashforth coefficients in EDM's
 *   (σ, x) = (γ, x̄) coordinates, warm-up from the first step, full order to the end, its AFS).
 *
 * Each reference is transcribed below as a plain loop over arrays in float64, independently of
 * core/solvers, with the VP-linear schedule written out as the authors' code has it (log α_t =
 * −¼ t² (β₁ − β₀) − ½ t β₀). The model is the analytic mixture of core/gmm.ts, and a single Gaussian
 * whose ε is written here in closed form.
 */
import { assert, maxAbsDiff, test } from "../testing.ts";
import { gmmAt, gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import { type GridKind, makeGrid } from "../../core/grid.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { getSolver } from "../../core/solvers/registry.ts";
import type { SolveInput } from "../../core/solvers/types.ts";
import { normals, SPEC_2D } from "./fixtures.ts";

const mixture = parseGmmSpec(SPEC_2D);
const schedule = mixture.schedule; // VP-linear, β 0.1–20
const MU = [0.3, -0.2], S = 0.4;
const gaussian = parseGmmSpec({ weights: [1], means: [MU], stds: [S] });
const BATCH = 8, DIM = 2;
const xT = normals(31, BATCH * DIM);
/** Float32 precision on samples of order 1. */
const TOL = 1e-6;

// The VP-linear schedule as the authors' code writes it.
const B0 = 0.1, B1 = 20;
const logAlpha = (t: number) => -0.25 * t * t * (B1 - B0) - 0.5 * t * B0;
const alphaOf = (t: number) => Math.exp(logAlpha(t));
const sigmaOf = (t: number) => Math.sqrt(1 - Math.exp(2 * logAlpha(t)));
const lambdaOf = (t: number) => logAlpha(t) - 0.5 * Math.log(1 - Math.exp(2 * logAlpha(t)));

/** ε of one sample at x̄ and noise level γ. */
type Eps = (xbar: number[], gamma: number) => number[];
const mixtureEps: Eps = (xbar, gamma) => Array.from(gmmAt(mixture, Float64Array.from(xbar), gamma).eps);
/** N(μ, s² I): ε(x̄, γ) = γ (x̄ − μ)/(s² + γ²). */
const gaussianEps: Eps = (xbar, gamma) => xbar.map((v, i) => (gamma * (v - MU[i])) / (S * S + gamma * gamma));

const MODELS = [
  { label: "mixture", mix: mixture, eps: mixtureEps },
  { label: "single Gaussian (closed form)", mix: gaussian, eps: gaussianEps },
];

/** The samples of `xT`, one array each. */
function samples(x: Float64Array): number[][] {
  return Array.from({ length: BATCH }, (_, b) => Array.from(x.subarray(b * DIM, (b + 1) * DIM)));
}

// ---------------------------------------------------------------------------------------------
// DPM-Solver++ multistep, data prediction.

function dpmSolverPP(eps: Eps, ts: number[], x0: number[], order: number): number[] {
  const N = ts.length - 1;
  /** The data prediction x̂₀ = (x − σ ε)/α at VP-scale x and time t. */
  const model = (x: number[], t: number) => {
    const a = alphaOf(t), s = sigmaOf(t);
    const e = eps(x.map((v) => v / a), s / a);
    return x.map((v, i) => (v - s * e[i]) / a);
  };
  let x = x0.slice();
  const modelList: number[][] = [], tList: number[] = [];
  let lowerOrderNums = 0;
  for (let i = 0; i < N; i++) {
    modelList.push(model(x, ts[i]));
    tList.push(ts[i]);
    if (modelList.length > order) {
      modelList.shift();
      tList.shift();
    }
    const lowerOrderFinal = i === N - 1 && N < 15;
    const lowerOrderSecond = i === N - 2 && N < 15;
    const t = ts[i + 1];
    const sigmaT = sigmaOf(t), alphaT = alphaOf(t), lambdaT = lambdaOf(t);
    const m0 = modelList[modelList.length - 1], s0 = tList[tList.length - 1];
    const h = lambdaT - lambdaOf(s0);
    const ratio = sigmaT / sigmaOf(s0);
    if (order === 1 || lowerOrderNums < 1 || lowerOrderFinal) {
      // first-order update (DDIM)
      const phi1 = Math.expm1(-h);
      x = x.map((v, j) => ratio * v - alphaT * phi1 * m0[j]);
    } else if (order === 2 || lowerOrderNums < 2 || lowerOrderSecond) {
      // second-order multistep update, "midpoint" form
      const m1 = modelList[modelList.length - 2], s1 = tList[tList.length - 2];
      const h0 = lambdaOf(s0) - lambdaOf(s1), r0 = h0 / h;
      const phi1 = Math.expm1(-h);
      x = x.map((v, j) => {
        const D0 = m0[j], D1 = (1 / r0) * (m0[j] - m1[j]);
        return ratio * v - alphaT * phi1 * D0 - 0.5 * (alphaT * phi1) * D1;
      });
    } else {
      // third-order multistep update
      const m1 = modelList[modelList.length - 2], m2 = modelList[modelList.length - 3];
      const s1 = tList[tList.length - 2], s2 = tList[tList.length - 3];
      const lambda0 = lambdaOf(s0), lambda1 = lambdaOf(s1), lambda2 = lambdaOf(s2);
      const h1 = lambda1 - lambda2, h0 = lambda0 - lambda1;
      const r0 = h0 / h, r1 = h1 / h;
      const phi1 = Math.expm1(-h);
      const phi2 = phi1 / h + 1;
      const phi3 = phi2 / h - 0.5;
      x = x.map((v, j) => {
        const D1_0 = (1 / r0) * (m0[j] - m1[j]);
        const D1_1 = (1 / r1) * (m1[j] - m2[j]);
        const D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
        const D2 = (1 / (r0 + r1)) * (D1_0 - D1_1);
        return ratio * v - alphaT * phi1 * m0[j] + alphaT * phi2 * D1 - alphaT * phi3 * D2;
      });
    }
    lowerOrderNums = Math.min(lowerOrderNums + 1, order);
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// iPNDM (diff-sampler), in EDM's coordinates: x = x̄, t = σ = γ, d = (x − D(x; σ))/σ = ε.

function ipndmSampler(eps: Eps, ts: number[], latent: number[], maxOrder: number, afs: boolean): number[] {
  const tSteps = ts.map((t) => sigmaOf(t) / alphaOf(t));
  let xNext = latent.map((v) => v / alphaOf(ts[0])); // x̄ at t_max
  const bufferModel: number[][] = [];
  for (let i = 0; i < tSteps.length - 1; i++) {
    const tCur = tSteps[i], tNext = tSteps[i + 1];
    const xCur = xNext;
    let dCur: number[];
    if (afs && i === 0) {
      dCur = xCur.map((v) => v / Math.sqrt(1 + tCur * tCur));
    } else {
      const e = eps(xCur, tCur);
      const denoised = xCur.map((v, j) => v - tCur * e[j]);
      dCur = xCur.map((v, j) => (v - denoised[j]) / tCur);
    }
    const order = Math.min(maxOrder, i + 1);
    const b = (k: number) => bufferModel[bufferModel.length - k];
    if (order === 1) {
      xNext = xCur.map((v, j) => v + (tNext - tCur) * dCur[j]);
    } else if (order === 2) {
      xNext = xCur.map((v, j) => v + ((tNext - tCur) * (3 * dCur[j] - b(1)[j])) / 2);
    } else if (order === 3) {
      xNext = xCur.map((v, j) => v + ((tNext - tCur) * (23 * dCur[j] - 16 * b(1)[j] + 5 * b(2)[j])) / 12);
    } else {
      xNext = xCur.map((v, j) =>
        v + ((tNext - tCur) * (55 * dCur[j] - 59 * b(1)[j] + 37 * b(2)[j] - 9 * b(3)[j])) / 24
      );
    }
    if (bufferModel.length === maxOrder - 1) {
      for (let k = 0; k < maxOrder - 2; k++) bufferModel[k] = bufferModel[k + 1];
      bufferModel[bufferModel.length - 1] = dCur;
    } else {
      bufferModel.push(dCur);
    }
  }
  return xNext.map((v) => v * alphaOf(ts[ts.length - 1])); // VP scale at t_min
}

// ---------------------------------------------------------------------------------------------

function solve(name: string, mix: typeof mixture, grid: Float64Array, opts: Partial<SolveInput> = {}) {
  const input: SolveInput = { schedule, grid, x: xT, batch: BATCH, dim: DIM, ...opts };
  return runSolver(getSolver(name).fn(input), gmmEvaluator(mix)).x;
}

/** The reference loop over every sample, flattened like the solvers' output. */
function reference(run: (x0: number[]) => number[]): Float64Array {
  return Float64Array.from(samples(xT).flatMap(run));
}

const CASES: { kind: GridKind; steps: number; rho?: number }[] = [
  { kind: "logsnr", steps: 16 },
  { kind: "edm", steps: 16, rho: 7 },
  { kind: "quadratic", steps: 20 },
  // Below 15 steps: the lower orders on the final steps (dpmpp-3m) and full order to the end (ipndm).
  { kind: "logsnr", steps: 8 },
  { kind: "edm", steps: 6, rho: 7 },
  { kind: "logsnr", steps: 3 },
  { kind: "logsnr", steps: 1 },
];

test("reference: the grids and schedule of the transcriptions are the solvers' own", () => {
  for (const t of [1, 0.5, 0.1, 1e-3]) {
    assert(Math.abs(alphaOf(t) - schedule.alpha(t)) < 1e-12, `α(${t})`);
    assert(Math.abs(sigmaOf(t) - schedule.sigma(t)) < 1e-10, `σ(${t})`);
    assert(Math.abs(lambdaOf(t) - schedule.lambda(t)) < 1e-8, `λ(${t})`);
  }
});

for (const { label, mix, eps } of MODELS) {
  test(`reference: dpmpp-3m equals DPM-Solver++(3M) of the authors' code on the ${label}`, () => {
    for (const c of CASES) {
      const grid = makeGrid(schedule, { kind: c.kind, steps: c.steps, rho: c.rho });
      const ref = reference((x0) => dpmSolverPP(eps, Array.from(grid), x0, 3));
      const what = `${label}, ${c.kind} ${c.steps} steps`;
      const got = solve("dpmpp-3m", mix, grid);
      const d = maxAbsDiff(got, ref);
      assert(d < TOL, `${what}: dpmpp-3m differs from the reference by ${d}`);
      assert(maxAbsDiff(solve("dpmpp-3m", mix, grid, { variant: "reference" }), got) === 0, what);
      // The same loop at order 2 is dpmpp-2m (unchanged): a check of the transcription itself.
      const ref2 = reference((x0) => dpmSolverPP(eps, Array.from(grid), x0, 2));
      const d2 = maxAbsDiff(solve("dpmpp-2m", mix, grid), ref2);
      assert(d2 < TOL, `${what}: dpmpp-2m differs from the order-2 reference by ${d2}`);
      // The quadratic-exact variant is another method wherever a third-order step is taken.
      if (c.steps >= 3 + (c.steps < 15 ? 2 : 0)) {
        const e = maxAbsDiff(solve("dpmpp-3m", mix, grid, { variant: "quadratic-exact" }), ref);
        assert(e > 100 * TOL, `${what}: quadratic-exact is within ${e} of the reference`);
      }
    }
  });

  test(`reference: ipndm equals diff-sampler's iPNDM on the ${label}`, () => {
    for (const c of CASES) {
      const grid = makeGrid(schedule, { kind: c.kind, steps: c.steps, rho: c.rho });
      for (const afs of [false, true]) {
        for (const order of [4, 3, 2, 1]) {
          const what = `${label}, ${c.kind} ${c.steps} steps, order ${order}, afs ${afs}`;
          const ref = reference((x0) => ipndmSampler(eps, Array.from(grid), x0, order, afs));
          const opts = order === 4 ? { afs } : { afs, order };
          const d = maxAbsDiff(solve("ipndm", mix, grid, opts), ref);
          assert(d < TOL, `${what}: ipndm differs from the reference by ${d}`);
          // The variable-step form is another method wherever an order-2+ step is taken on unequal steps.
          if (order > 1 && c.steps > 1) {
            const e = maxAbsDiff(solve("ipndm-v", mix, grid, { ...opts, lowerOrderFinal: false }), ref);
            assert(e > 100 * TOL, `${what}: ipndm-v is within ${e} of the reference`);
          }
        }
      }
    }
  });
}

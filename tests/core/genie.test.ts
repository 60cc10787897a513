/**
 * GENIE (TTM2) and DDIM (TTM1) on analytic mixtures (docs/method.md §3, §4, §8): convergence orders against
 * a tight reference, one-step local error ratios, k ≡ 0 equals DDIM bit for bit, x- and x̄-space forms
 * of a step, derivative sources, AFS and final denoising.
 */
import { assert, assertStrictEquals, maxAbsDiff, test } from "../testing.ts";
import {
  type GaussianMixture,
  gmmAt,
  gmmEvaluator,
  parseGmmSpec,
  singleGaussianTrajectory,
} from "../../core/gmm.ts";
import { explicitGrid, makeGrid } from "../../core/grid.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { ddim } from "../../core/solvers/ddim.ts";
import { genie } from "../../core/solvers/genie.ts";
import { type Evaluator, runSolver } from "../../core/solvers/drive.ts";
import type { DerivativeSource, EvalRequest, SolveInput, SolverFn } from "../../core/solvers/types.ts";
import { normals, observedOrder, rk4LogGamma, SPEC_2D } from "./fixtures.ts";

const schedule = vpLinearSchedule();

const mix = parseGmmSpec(SPEC_2D);
const evaluate = gmmEvaluator(mix);
const BATCH = 8;
const latents = normals(2022, BATCH * mix.dim);

function solve(
  fn: SolverFn,
  grid: Float64Array,
  opts: Partial<SolveInput> = {},
  ev: Evaluator = evaluate,
  m: GaussianMixture = mix,
  x: Float64Array = latents,
) {
  return runSolver(fn({ schedule, grid, x, batch: x.length / m.dim, dim: m.dim, ...opts }), ev);
}

/** The reference: RK4 uniform in log γ from t = 1 to t_min (see {@link rk4LogGamma}). */
const rk4Reference = (m: GaussianMixture, x: Float64Array, M: number, t0 = 1, t1 = schedule.tMin) =>
  rk4LogGamma(m, schedule, x, M, t0, t1);

const reference = rk4Reference(mix, latents, 4000);

test("genie: the RK4 reference has converged", () => {
  const coarse = rk4Reference(mix, latents, 2000);
  const selfErr = maxAbsDiff(reference, coarse);
  assert(selfErr < 1e-9, `reference self-consistency ${selfErr}`);
});

const NS = [32, 64, 128, 256, 512];

function orderOf(fn: SolverFn, derivative: DerivativeSource, kind: "quadratic" | "logsnr" = "quadratic") {
  const errs = NS.map((steps) =>
    maxAbsDiff(solve(fn, makeGrid(schedule, { kind, steps }), { derivative }).x, reference)
  );
  return { errs, p: observedOrder(NS, errs) };
}

test("genie: DDIM converges at order 1 and GENIE (exact k) at order 2 on a mixture", () => {
  const d = orderOf(ddim, "exact"), g = orderOf(genie, "exact");
  assert(Math.abs(d.p - 1) < 0.25, `DDIM order ${d.p} (errors ${d.errs})`);
  assert(Math.abs(g.p - 2) < 0.25, `GENIE order ${g.p} (errors ${g.errs})`);
  // The reference is far tighter than the smallest error measured.
  assert(g.errs[g.errs.length - 1] > 1e3 * maxAbsDiff(reference, rk4Reference(mix, latents, 2000)));
  const l = orderOf(genie, "exact", "logsnr");
  assert(Math.abs(l.p - 2) < 0.25, `GENIE order on a logSNR grid ${l.p}`);
});

test("genie: fd derivative converges at order 2", () => {
  const f = orderOf(genie, "fd");
  assert(Math.abs(f.p - 2) < 0.25, `fd order ${f.p} (errors ${f.errs})`);
});

// ---------------------------------------------------------------------------------------------
// Local error

/** The error of one step from (x̄₀, γ₀) to γ₀ + h against the exact solution `exact(γ₁)`. */
function oneStepError(
  fn: SolverFn,
  m: GaussianMixture,
  xbar0: Float64Array,
  gamma0: number,
  h: number,
  exact: (gamma1: number) => Float64Array,
): number {
  const t0 = schedule.tFromGamma(gamma0), grid = explicitGrid([t0, schedule.tFromGamma(gamma0 + h)]);
  const x = xbar0.map((v) => v * schedule.alpha(t0));
  const out = solve(fn, grid, { derivative: "exact" }, gmmEvaluator(m), m, x).x;
  const g1 = schedule.gamma(grid[1]), a1 = schedule.alpha(grid[1]);
  return maxAbsDiff(out.map((v) => v / a1), exact(g1)) / maxAbsDiff(exact(g1), new Float64Array(m.dim));
}

test("genie: one-step local error ratios ≈ 4 (Euler) and ≈ 8 (TTM2) when h halves", () => {
  // (a) a single Gaussian against its exact trajectory; (b) the mixture against tiny RK4 steps.
  const mu = [0.4, -0.9, 1.3], s = 0.5;
  const single = parseGmmSpec({ weights: [1], means: [mu], stds: [s] });
  const xs0 = Float64Array.of(2.1, 0.3, -1.4), gs0 = 1.5;
  const exactSingle = (g1: number) =>
    singleGaussianTrajectory(mu, s, xs0, schedule.gamma(schedule.tFromGamma(gs0)), g1);
  const xm0 = Float64Array.of(0.9, 0.7), gm0 = 0.8;
  const exactMix = (g1: number) => {
    const g0 = schedule.gamma(schedule.tFromGamma(gm0));
    let xb = xm0;
    const M = 200, h = (g1 - g0) / M;
    for (let j = 0; j < M; j++) {
      const g = g0 + j * h, f = (y: Float64Array, gg: number) => gmmAt(mix, y, gg).eps;
      const k1 = f(xb, g), k2 = f(xb.map((v, i) => v + (h / 2) * k1[i]), g + h / 2);
      const k3 = f(xb.map((v, i) => v + (h / 2) * k2[i]), g + h / 2),
        k4 = f(xb.map((v, i) => v + h * k3[i]), g + h);
      xb = xb.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
    }
    return xb;
  };
  const cases = [
    {
      name: "single Gaussian",
      m: single,
      x0: xs0,
      g0: gs0,
      exact: exactSingle,
      hs: [-0.2, -0.1, -0.05, -0.025],
    },
    { name: "mixture", m: mix, x0: xm0, g0: gm0, exact: exactMix, hs: [-0.04, -0.02, -0.01, -0.005] },
  ];
  for (const c of cases) {
    for (const [fn, want, label] of [[ddim, 4, "Euler"], [genie, 8, "TTM2"]] as const) {
      const errs = c.hs.map((h) => oneStepError(fn, c.m, c.x0, c.g0, h, c.exact));
      const ratios = errs.slice(1).map((e, i) => errs[i] / e);
      const last = ratios[ratios.length - 1];
      assert(Math.abs(last / want - 1) < 0.08, `${c.name} ${label} ratios ${ratios} (want ${want})`);
      // Also in the other direction (encoding: h > 0).
      const up = c.hs.map((h) => oneStepError(fn, c.m, c.x0, c.g0, -h, c.exact));
      const r = up[up.length - 2] / up[up.length - 1];
      assert(Math.abs(r / want - 1) < 0.08, `${c.name} ${label} ratio for h > 0: ${r}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Exactness properties

/** ε from the mixture and a derivative that is identically zero (k ≡ 0), with or without a tangent. */
const zeroDerivative: Evaluator = (req: EvalRequest) => {
  const { eps } = evaluate({ ...req, want: "eps", tangent: undefined });
  return req.want === "eps+deriv" ? { eps, deriv: new Float64Array(eps.length) } : { eps };
};

function sameBits(a: Float64Array, b: Float64Array): boolean {
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return ua.length === ub.length && ua.every((v, i) => v === ub[i]);
}

test("genie: with k ≡ 0 GENIE equals DDIM bit for bit", () => {
  for (const kind of ["uniform", "quadratic", "logsnr", "edm"] as const) {
    for (const steps of [1, 2, 5, 13]) {
      const grid = makeGrid(schedule, { kind, steps });
      for (const afs of [false, true]) {
        for (const denoise of [false, true]) {
          const d = solve(ddim, grid, { afs, denoise });
          for (const derivative of ["head", "exact", "jvp"] as const) {
            const g = solve(genie, grid, { afs, denoise, derivative }, zeroDerivative);
            assert(sameBits(g.x, d.x), `${kind} steps=${steps} afs=${afs} denoise=${denoise} ${derivative}`);
            assertStrictEquals(g.stats.nfe, d.stats.nfe);
          }
        }
      }
    }
  }
  // And on an encoding grid.
  const up = makeGrid(schedule, { kind: "quadratic", steps: 9 }).reverse();
  assert(sameBits(solve(genie, up, {}, zeroDerivative).x, solve(ddim, up).x), "encoding");
});

test("genie: reproduces the single-Gaussian closed-form trajectory at order 2", () => {
  const mu = [0.4, -0.9, 1.3, 0], s = 0.3;
  const single = parseGmmSpec({ weights: [1], means: [mu], stds: [s] });
  const x = normals(5, 3 * 4);
  const g0 = schedule.gamma(1), g1 = schedule.gamma(schedule.tMin);
  const exact = new Float64Array(x.length);
  for (let b = 0; b < 3; b++) {
    const xbar0 = x.subarray(b * 4, b * 4 + 4).map((v) => v / schedule.alpha(1));
    exact.set(
      singleGaussianTrajectory(mu, s, xbar0, g0, g1).map((v) => v * schedule.alpha(schedule.tMin)),
      b * 4,
    );
  }
  const ns = [16, 32, 64, 128, 256];
  const errs = ns.map((steps) =>
    maxAbsDiff(
      solve(
        genie,
        makeGrid(schedule, { kind: "quadratic", steps }),
        { derivative: "exact" },
        gmmEvaluator(single),
        single,
        x,
      )
        .x,
      exact,
    )
  );
  const p = observedOrder(ns, errs);
  assert(Math.abs(p - 2) < 0.25, `order ${p} (errors ${errs})`);
  assert(errs.every((e, i) => i === 0 || e < errs[i - 1]), `errors fall: ${errs}`);
  assert(errs[errs.length - 1] < 1e-4, `error at N=256: ${errs[errs.length - 1]}`);
});

test("genie: the x-space form of a step agrees with the x̄-space step", () => {
  // x_{n+1} = (α_{n+1}/α_n) x_n + α_{n+1} (h ε_n + ½ h² k_n), written here independently.
  for (const kind of ["quadratic", "edm"] as const) {
    const grid = makeGrid(schedule, { kind, steps: 12 });
    const seen: EvalRequest[] = [];
    const recording: Evaluator = (req) => {
      seen.push(req);
      return evaluate(req);
    };
    const out = solve(genie, grid, { derivative: "exact" }, recording).x;
    assertStrictEquals(seen.length, 12);
    for (let n = 0; n < 12; n++) {
      const xn = n === 0 ? latents : seen[n].x;
      const r = evaluate({
        x: xn,
        t: new Float64Array(BATCH).fill(grid[n]),
        want: "eps+deriv",
        step: n,
        steps: 12,
      });
      const an = schedule.alpha(grid[n]), an1 = schedule.alpha(grid[n + 1]);
      const h = schedule.gamma(grid[n + 1]) - schedule.gamma(grid[n]);
      const next = xn.map((x, i) => (an1 / an) * x + an1 * (h * r.eps[i] + 0.5 * h * h * r.deriv![i]));
      const want = n + 1 < 12 ? seen[n + 1].x : out;
      const scale = Math.max(...want.map(Math.abs));
      const diff = maxAbsDiff(next, want) / scale;
      assert(diff < 1e-14, `${kind} step ${n}: x vs x̄ forms differ by ${diff}`);
    }
  }
});

test("genie: jvp derivative source equals the exact source on the analytic model", () => {
  for (const kind of ["quadratic", "logsnr"] as const) {
    for (const steps of [4, 10, 25]) {
      const grid = makeGrid(schedule, { kind, steps });
      for (const afs of [false, true]) {
        const exact = solve(genie, grid, { derivative: "exact", afs });
        const jvp = solve(genie, grid, { derivative: "jvp", afs });
        const viaTangent = solve(genie, grid, { derivative: "exact", afs, tangentDerivative: true });
        const scale = Math.max(...exact.x.map(Math.abs));
        assert(maxAbsDiff(jvp.x, exact.x) / scale < 1e-12, `${kind} ${steps} jvp vs exact`);
        assert(maxAbsDiff(viaTangent.x, exact.x) / scale < 1e-12, `${kind} ${steps} tangentDerivative`);
        assertStrictEquals(jvp.stats.nfe, exact.stats.nfe);
        assertStrictEquals(jvp.stats.derivEvals, exact.stats.derivEvals);
        assertStrictEquals(jvp.stats.calls, 2 * exact.stats.calls);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// AFS and final denoising

test("genie/ddim: AFS uses x_T for the first step and saves one evaluation", () => {
  const steps = 6, grid = makeGrid(schedule, { kind: "quadratic", steps });
  for (
    const [fn, derivative, saved] of [[ddim, "exact", 1], [genie, "exact", 1], [genie, "fd", 2]] as const
  ) {
    const seen: EvalRequest[] = [];
    const rec: Evaluator = (req) => {
      seen.push(req);
      return evaluate(req);
    };
    const plain = solve(fn, grid, { derivative });
    const afs = solve(fn, grid, { derivative, afs: true }, rec);
    assertStrictEquals(afs.stats.nfe, plain.stats.nfe - saved);
    // No evaluation at t_max; the first one is at t_1, at x̄_1 = x̄_T + h_0 x_T.
    assert(seen.every((r) => r.step >= 1 && r.t[0] < grid[0]), "no request at step 0");
    assertStrictEquals(seen[0].t[0], grid[1]);
    const a0 = schedule.alpha(grid[0]), a1 = schedule.alpha(grid[1]);
    const h0 = schedule.gamma(grid[1]) - schedule.gamma(grid[0]);
    const x1 = latents.map((x) => a1 * (x / a0 + h0 * x));
    assert(maxAbsDiff(seen[0].x, x1) < 1e-14, "first step uses ε_0 = x_T (and k_0 = 0)");
  }
});

test("genie/ddim: denoise adds one evaluation and returns x̂₀ = x̄_N − γ_N ε(x_N, t_N)", () => {
  const steps = 7, grid = makeGrid(schedule, { kind: "quadratic", steps });
  const tN = grid[steps], aN = schedule.alpha(tN), gN = schedule.gamma(tN);
  for (const fn of [ddim, genie]) {
    for (const afs of [false, true]) {
      const plain = solve(fn, grid, { derivative: "exact", afs });
      const den = solve(fn, grid, { derivative: "exact", afs, denoise: true });
      assertStrictEquals(den.stats.nfe, plain.stats.nfe + 1);
      const eps =
        evaluate({ x: plain.x, t: new Float64Array(BATCH).fill(tN), want: "eps", step: steps, steps }).eps;
      const x0 = plain.x.map((x, i) => x / aN - gN * eps[i]);
      assert(maxAbsDiff(den.x, x0) < 1e-13, "x̂₀");
    }
  }
});

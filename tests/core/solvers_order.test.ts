/**
 * Observed convergence orders of the baseline solvers (heun, dpmpp-2m, dpmpp-3m and its variants, unipc,
 * ipndm, ipndm-v) on analytic models, from endpoint errors against references that are themselves
 * checked:
 * - a 2-D three-component mixture, against classical RK4 in γ with the exact ε at 2000 steps (checked
 *   against 1000 steps);
 * - a single Gaussian, against its closed-form trajectory (no reference solver needed).
 * The order is the least-squares slope of log error against log steps over step counts where the
 * asymptotic rate has set in; errors stay far above float64 round-off. Also: the building blocks
 * (φ-functions, Adams–Bashforth weights), warm-up and lower-order-final, order-1 identities, AFS
 * accounting and encoding round trips.
 */
import { assert, assertStrictEquals, maxAbsDiff, test } from "../testing.ts";
import {
  type GaussianMixture,
  gmmAt,
  gmmEvaluator,
  parseGmmSpec,
  singleGaussianTrajectory,
} from "../../core/gmm.ts";
import { explicitGrid, type GridKind, makeGrid, reversedGrid } from "../../core/grid.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { adamsBashforthWeights } from "../../core/solvers/ipndm.ts";
import { phi, stepOrder } from "../../core/solvers/multistep.ts";
import { getSolver, nfeFor } from "../../core/solvers/registry.ts";
import type { SolveInput } from "../../core/solvers/types.ts";
import { observedOrder } from "./fixtures.ts";

const mixture = parseGmmSpec({
  weights: [0.5, 0.3, 0.2],
  means: [[1, 0.5], [-1, -0.3], [0.2, -1]],
  stds: [0.3, 0.4, 0.25],
});
const MU = [0.3, -0.2], S = 0.5;
const gaussian = parseGmmSpec({ weights: [1], means: [MU], stds: [S] });
const schedule = mixture.schedule;
const BATCH = 6, DIM = 2;
const T_MAX = schedule.tMax, T_MIN = schedule.tMin;

/** Fixed latents x_T: a deterministic spread of points around N(0, I). */
const xT = Float64Array.from(
  { length: BATCH * DIM },
  (_, i) => 1.4 * Math.sin(1.7 * i + 0.3) + 0.2 * Math.cos(5.1 * i),
);

/** Classical RK4 on dx̄/dγ = ε(x̄, γ) with the exact ε, over an EDM grid of M steps; x at t_min. */
function rk4(mix: GaussianMixture, M: number): Float64Array {
  const grid = makeGrid(schedule, { kind: "edm", steps: M });
  const gamma = Array.from(grid, (t) => schedule.gamma(t));
  const f = (y: Float64Array, g: number) => gmmAt(mix, y, g).eps;
  const out = new Float64Array(xT.length);
  for (let b = 0; b < BATCH; b++) {
    let y = xT.slice(b * DIM, (b + 1) * DIM).map((v) => v / schedule.alpha(T_MAX));
    for (let n = 0; n < M; n++) {
      const g = gamma[n], h = gamma[n + 1] - gamma[n];
      const k1 = f(y, g);
      const k2 = f(y.map((v, i) => v + 0.5 * h * k1[i]), g + 0.5 * h);
      const k3 = f(y.map((v, i) => v + 0.5 * h * k2[i]), g + 0.5 * h);
      const k4 = f(y.map((v, i) => v + h * k3[i]), g + h);
      y = y.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
    }
    out.set(y.map((v) => v * schedule.alpha(T_MIN)), b * DIM);
  }
  return out;
}

/** The exact x at t_min of the single Gaussian's ODE from x_T. */
function gaussianExact(): Float64Array {
  const out = new Float64Array(xT.length);
  const g0 = schedule.gamma(T_MAX), g1 = schedule.gamma(T_MIN);
  for (let b = 0; b < BATCH; b++) {
    const x0 = xT.slice(b * DIM, (b + 1) * DIM).map((v) => v / schedule.alpha(T_MAX));
    out.set(singleGaussianTrajectory(MU, S, x0, g0, g1).map((v) => v * schedule.alpha(T_MIN)), b * DIM);
  }
  return out;
}

let references: { mixture: Float64Array; gaussian: Float64Array; mixtureError: number } | undefined;
/** The references, computed once; `mixtureError` bounds the mixture reference's own error. */
function reference() {
  if (!references) {
    const fine = rk4(mixture, 2000), coarse = rk4(mixture, 1000);
    references = { mixture: fine, gaussian: gaussianExact(), mixtureError: maxAbsDiff(fine, coarse) };
  }
  return references;
}

function solve(
  name: string,
  mix: GaussianMixture,
  grid: Float64Array,
  x: Float64Array,
  opts: Partial<SolveInput> = {},
) {
  const input: SolveInput = { schedule, grid, x, batch: x.length / DIM, dim: DIM, ...opts };
  return runSolver(getSolver(name).fn(input), gmmEvaluator(mix));
}

interface OrderCase {
  name: string;
  opts?: Partial<SolveInput>;
  grid: GridKind;
  steps: number[];
  /** Accepted observed orders [low, high] on the mixture and on the single Gaussian. */
  mixture: [number, number];
  gaussian: [number, number];
}

const MID = [32, 64, 128], HIGH = [64, 128, 256], LATE = [128, 192, 256];
const CASES: OrderCase[] = [
  { name: "heun", grid: "edm", steps: MID, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  { name: "dpmpp-2m", grid: "logsnr", steps: MID, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  // The default "reference" 3M update weights the second derivative by half (core/solvers/dpmpp.ts).
  // Its local error is O(h³): second order (1.94 and 2.03 observed here).
  { name: "dpmpp-3m", grid: "logsnr", steps: LATE, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  // On the single Gaussian the quadratic-exact error is O(N⁻⁴) (superconvergence); 3 on the mixture.
  {
    name: "dpmpp-3m",
    opts: { variant: "quadratic-exact" },
    grid: "logsnr",
    steps: LATE,
    mixture: [2.7, 3.3],
    gaussian: [2.7, 4.3],
  },
  {
    name: "unipc",
    opts: { order: 1 },
    grid: "logsnr",
    steps: HIGH,
    mixture: [1.7, 2.3],
    gaussian: [1.7, 2.3],
  },
  {
    name: "unipc",
    opts: { order: 2 },
    grid: "logsnr",
    steps: HIGH,
    mixture: [2.7, 3.3],
    gaussian: [2.7, 3.3],
  },
  {
    name: "unipc",
    opts: { order: 2, variant: "bh2" },
    grid: "logsnr",
    steps: HIGH,
    mixture: [2.7, 3.3],
    gaussian: [2.7, 3.3],
  },
  // UniPC-3: predictor 3 + corrector → 4; 3.7–3.9 observed here, still rising towards 4.
  {
    name: "unipc",
    opts: { order: 3 },
    grid: "logsnr",
    steps: LATE,
    mixture: [3.5, 4.3],
    gaussian: [3.5, 4.3],
  },
  // iPNDM's fixed coefficients on grids that are not equally spaced in γ: second order whatever the
  // order (on equal steps it has its order: see below).
  { name: "ipndm", grid: "logsnr", steps: LATE, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  { name: "ipndm", grid: "quadratic", steps: LATE, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  { name: "ipndm", grid: "edm", steps: LATE, mixture: [1.7, 2.3], gaussian: [1.7, 2.3] },
  {
    name: "ipndm",
    opts: { order: 3 },
    grid: "logsnr",
    steps: LATE,
    mixture: [1.7, 2.3],
    gaussian: [1.7, 2.3],
  },
  {
    name: "ipndm",
    opts: { order: 2 },
    grid: "logsnr",
    steps: HIGH,
    mixture: [1.7, 2.3],
    gaussian: [1.7, 2.3],
  },
  {
    name: "ipndm-v",
    opts: { order: 4 },
    grid: "quadratic",
    steps: LATE,
    mixture: [3.3, 4.3],
    gaussian: [3.3, 4.3],
  },
  {
    name: "ipndm-v",
    opts: { order: 4 },
    grid: "edm",
    steps: LATE,
    mixture: [3.3, 4.3],
    gaussian: [3.3, 4.3],
  },
  {
    name: "ipndm-v",
    opts: { order: 3 },
    grid: "quadratic",
    steps: LATE,
    mixture: [2.6, 3.3],
    gaussian: [2.6, 3.3],
  },
  {
    name: "ipndm-v",
    opts: { order: 2 },
    grid: "quadratic",
    steps: HIGH,
    mixture: [1.7, 2.3],
    gaussian: [1.7, 2.3],
  },
];

test("orders: the references are converged", () => {
  const ref = reference();
  assert(ref.mixtureError < 1e-9, `RK4 2000 vs 1000 steps differ by ${ref.mixtureError}`);
  const rkGauss = maxAbsDiff(rk4(gaussian, 1000), ref.gaussian);
  assert(rkGauss < 1e-9, `RK4 vs the closed-form Gaussian trajectory: ${rkGauss}`);
});

for (const c of CASES) {
  const label = `${c.name}${c.opts ? " " + JSON.stringify(c.opts) : ""} on ${c.grid}`;
  test(`orders: ${label} converges at its order`, () => {
    const ref = reference();
    for (
      const [model, mix, exact, [lo, hi]] of [
        ["mixture", mixture, ref.mixture, c.mixture],
        ["gaussian", gaussian, ref.gaussian, c.gaussian],
      ] as const
    ) {
      const errs = c.steps.map((steps) =>
        maxAbsDiff(solve(c.name, mix, makeGrid(schedule, { kind: c.grid, steps }), xT, c.opts).x, exact)
      );
      const floor = model === "mixture" ? ref.mixtureError : 1e-13;
      assert(Math.min(...errs) > 100 * floor, `${label} ${model}: errors ${errs} too close to ${floor}`);
      const p = observedOrder(c.steps, errs);
      assert(
        p >= lo && p <= hi,
        `${label} ${model}: observed order ${p.toFixed(2)} ∉ [${lo}, ${hi}] (${errs})`,
      );
    }
  });
}

test("orders: φ-functions match their closed forms on both sides of the series cut-off |z| = 1", () => {
  const fact = [1, 1, 2, 6, 24, 120, 720];
  for (const z of [-3, -1.2, -1 - 1e-9, -1, -1 + 1e-9, -0.7, -0.1, 0.4, 2.5]) {
    const m = Math.expm1(z);
    const closed = [Math.exp(z), m / z, (m - z) / z ** 2, (m - z - z * z / 2) / z ** 3];
    for (let k = 0; k <= 3; k++) {
      const rel = Math.abs(phi(k, z) - closed[k]) / Math.abs(closed[k]);
      assert(rel < 1e-12, `φ_${k}(${z}) = ${phi(k, z)}, expected ${closed[k]}`);
    }
  }
  // Near 0, where the closed forms cancel: three terms of the series are exact to O(z³).
  for (const z of [0, 1e-6, -1e-5, 2e-4]) {
    for (let k = 0; k <= 4; k++) {
      const series = 1 / fact[k] + z / fact[k + 1] + (z * z) / fact[k + 2];
      assert(
        Math.abs(phi(k, z) - series) <= Math.abs(z) ** 3 + 1e-16,
        `φ_${k}(${z}) = ${phi(k, z)}, expected ${series}`,
      );
    }
  }
});

test("orders: Adams–Bashforth weights are iPNDM's fixed ones on an equal grid and integrate cubics", () => {
  const h = -0.3, g0 = 2;
  const fixed = [
    [1],
    [3, -1].map((c) => c / 2),
    [23, -16, 5].map((c) => c / 12),
    [55, -59, 37, -9].map((c) => c / 24),
  ];
  for (let k = 1; k <= 4; k++) {
    const nodes = Array.from({ length: k }, (_, j) => g0 - j * h);
    const w = adamsBashforthWeights(nodes, g0 + h);
    for (let j = 0; j < k; j++) {
      assert(
        Math.abs(w[j] - h * fixed[k - 1][j]) < 1e-14,
        `order ${k} weight ${j}: ${w[j]} vs ${h * fixed[k - 1][j]}`,
      );
    }
  }
  // Unequal nodes: Σ w_j p(γ_j) = ∫ p for a cubic p.
  const nodes = [1.3, 1.9, 2.2, 3.5], to = 0.7;
  const p = (g: number) => 2 - g + 0.5 * g * g - 0.3 * g ** 3;
  const P = (g: number) => 2 * g - g * g / 2 + g ** 3 / 6 - 0.075 * g ** 4;
  const w = adamsBashforthWeights(nodes, to);
  const sum = w.reduce((acc, wj, j) => acc + wj * p(nodes[j]), 0);
  assert(Math.abs(sum - (P(to) - P(nodes[0]))) < 1e-13, `∫p: ${sum} vs ${P(to) - P(nodes[0])}`);
});

test("orders: on steps equal in γ, ipndm equals ipndm-v (the fixed coefficients are exact there)", () => {
  // γ from 2 down to 0.2 in N equal steps. (Orders are not measured here: the warm-up's Euler and
  // AB2 steps, which both forms share, dominate the error on so short a range.)
  const G0 = 2, G1 = 0.2;
  for (const N of [4, 9, 16]) {
    const grid = explicitGrid(
      Array.from({ length: N + 1 }, (_, n) => schedule.tFromGamma(G0 + ((G1 - G0) * n) / N)),
    );
    for (const order of [1, 2, 3, 4]) {
      for (const afs of [false, true]) {
        const opts = { order, afs, lowerOrderFinal: false };
        const a = solve("ipndm", mixture, grid, xT, opts).x, b = solve("ipndm-v", mixture, grid, xT, opts).x;
        const d = maxAbsDiff(a, b);
        assert(d < 1e-12, `${N} steps, order ${order}, afs ${afs}: ipndm and ipndm-v differ by ${d}`);
      }
    }
  }
  // On a sampling grid they differ.
  const grid = makeGrid(schedule, { kind: "logsnr", steps: 16 });
  const d = maxAbsDiff(solve("ipndm", mixture, grid, xT).x, solve("ipndm-v", mixture, grid, xT).x);
  assert(d > 1e-4, `ipndm and ipndm-v on a log-SNR grid differ by only ${d}`);
});

test("orders: warm-up from the first step, lower order on the final steps only below 15 steps", () => {
  const orders = (order: number, N: number, lof: boolean) =>
    Array.from({ length: N }, (_, n) => stepOrder(order, n, N, lof)).join("");
  assertStrictEquals(orders(3, 6, true), "123321");
  assertStrictEquals(orders(3, 6, false), "123333");
  assertStrictEquals(orders(4, 14, true), "12344444444321");
  assertStrictEquals(orders(4, 15, true), "123444444444444");
  assertStrictEquals(orders(2, 1, true), "1");
  // The option reaches the solvers: with 2 steps, 2M lowered at the end is two DDIM steps.
  const grid = makeGrid(schedule, { kind: "logsnr", steps: 2 });
  const ddim = solve("ddim", mixture, grid, xT).x;
  assert(maxAbsDiff(solve("dpmpp-2m", mixture, grid, xT).x, ddim) < 1e-12, "2M with 2 steps = DDIM");
  assert(maxAbsDiff(solve("dpmpp-2m", mixture, grid, xT, { lowerOrderFinal: false }).x, ddim) > 1e-4);
  // ipndm keeps full order to the end unless asked (as published); ipndm-v lowers it by default.
  const grid8 = makeGrid(schedule, { kind: "logsnr", steps: 8 });
  const ipndm = (opts: Partial<SolveInput>) => solve("ipndm", mixture, grid8, xT, opts).x;
  const ipndmV = (opts: Partial<SolveInput>) => solve("ipndm-v", mixture, grid8, xT, opts).x;
  assertStrictEquals(maxAbsDiff(ipndm({}), ipndm({ lowerOrderFinal: false })), 0);
  assert(maxAbsDiff(ipndm({}), ipndm({ lowerOrderFinal: true })) > 1e-4, "ipndm lowerOrderFinal: true");
  assertStrictEquals(maxAbsDiff(ipndmV({}), ipndmV({ lowerOrderFinal: true })), 0);
  assert(maxAbsDiff(ipndmV({}), ipndmV({ lowerOrderFinal: false })) > 1e-4, "ipndm-v lowerOrderFinal: false");
  // With 15 steps or more the option changes nothing.
  const grid16 = makeGrid(schedule, { kind: "logsnr", steps: 16 });
  for (const name of ["dpmpp-2m", "dpmpp-3m", "unipc", "ipndm", "ipndm-v"]) {
    const a = solve(name, mixture, grid16, xT).x,
      b = solve(name, mixture, grid16, xT, { lowerOrderFinal: false }).x;
    assertStrictEquals(maxAbsDiff(a, b), 0, `${name} at 16 steps`);
  }
});

test("orders: first-order forms equal DDIM", () => {
  for (const kind of ["logsnr", "quadratic"] as const) {
    const grid = makeGrid(schedule, { kind, steps: 9 });
    const ddim = solve("ddim", mixture, grid, xT).x;
    for (const name of ["ipndm", "ipndm-v"]) {
      const d = maxAbsDiff(solve(name, mixture, grid, xT, { order: 1 }).x, ddim);
      assert(d < 1e-12, `${name} order 1 vs DDIM on ${kind}: ${d}`);
    }
    const one = makeGrid(schedule, { kind, steps: 1 });
    for (const name of ["dpmpp-2m", "dpmpp-3m", "unipc"]) {
      const e = maxAbsDiff(solve(name, mixture, one, xT).x, solve("ddim", mixture, one, xT).x);
      assert(e < 1e-12, `${name} with one step vs DDIM on ${kind}: ${e}`);
    }
  }
});

test("orders: AFS saves exactly one evaluation and uses ε(x_T) := x_T", () => {
  const grid = makeGrid(schedule, { kind: "logsnr", steps: 8 });
  for (const name of ["heun", "dpmpp-2m", "dpmpp-3m", "unipc", "ipndm", "ipndm-v"]) {
    const plain = solve(name, mixture, grid, xT), afs = solve(name, mixture, grid, xT, { afs: true });
    assertStrictEquals(plain.stats.nfe - afs.stats.nfe, 1, name);
    assertStrictEquals(afs.stats.nfe, nfeFor(name, 8, { afs: true }), name);
    // For N(0, I) data ε(x_T, t_max) is x_T up to α_max² ≈ 4e-5, so AFS changes the result by about that.
    const std = parseGmmSpec({ weights: [1], means: [[0, 0]], stds: [1] });
    const d = maxAbsDiff(solve(name, std, grid, xT).x, solve(name, std, grid, xT, { afs: true }).x);
    assert(d < 1e-3, `${name}: AFS on N(0, I) moved the result by ${d}`);
  }
  assertStrictEquals(nfeFor("heun", 8, { afs: true, denoise: true }), 16);
});

test("orders: encoding then decoding on the same grid returns the data", () => {
  // x at t_min: points near the mixture's components.
  const data = Float64Array.of(1.1, 0.4, -0.8, -0.5, 0.3, -0.9, 0.9, 0.7, -1.2, 0, 0.1, -1.3);
  for (const name of ["heun", "dpmpp-2m", "dpmpp-3m", "unipc", "ipndm", "ipndm-v"]) {
    const info = getSolver(name);
    const errs = [32, 64].map((steps) => {
      const down = makeGrid(schedule, { kind: info.grid.kind, rho: info.grid.rho, steps });
      const latent = solve(name, mixture, reversedGrid(down), data).x;
      return maxAbsDiff(solve(name, mixture, down, latent).x, data);
    });
    assert(
      errs[1] < errs[0] / 3.5,
      `${name}: round-trip errors ${errs} do not fall at second order or better`,
    );
    assert(errs[1] < 1e-3, `${name}: round trip at 64 steps: ${errs[1]}`);
  }
});

/**
 * Imported diffusers models against closed-form truth. For Gaussian data x₀ ~ N(0, s² I) and
 * x = α x₀ + σ ε the optimal predictors are known exactly,
 *
 *     ε* = σ x / D,   x̂₀* = α s² x / D,   v* = α ε* − σ x̂₀* = α σ (1 − s²) x / D,   D = α² s² + σ²,
 *
 * and so is the probability-flow ODE: x is N(0, D_t I) at every t and the flow is linear, so
 * x(t) = x(T) · sqrt(D_t / D_T) per element. In x̄ = x/α and γ = σ/α (core/solvers/genie.ts) it reads
 * dx̄/dγ = ε = γ x̄ / (s² + γ²), whose total derivative along the ODE is dε/dγ = s² x̄ / (s² + γ²)².
 *
 * For each beta schedule and prediction type a diffusers-shaped export (scheduler_config.json and
 * unet/model.onnx: `sample`, float32 `timestep`, `out_sample`) computes that predictor in its graph from
 * the timestep it is fed: the knots B_n = −log ᾱ_{n−1} (B_0 = 0) are gathered at the floor of
 * u = timestep + 1 and interpolated linearly, which is the schedule of docs/contracts.md §4 ("Discrete
 * schedules") under its time convention (the graph sees N·t − 1). The betas and knots are computed here
 * from diffusers' formulas, independently of core/schedule.ts, which is only compared with them.
 *
 * The exports are imported with gpu-worker/import.ts and served by the worker app in-process; samples
 * start from given latents. With the exact ε, a DDIM step and a GENIE step (exact dε/dγ) are closed forms
 * too, x̄ ← x̄ (1 + h γ/q + [½ h² s²/q²]) with q = s² + γ²: one step between two chosen times and 200 DDIM
 * and 50 GENIE (JVP derived from the graph) steps on the quadratic grid must match them to float32
 * accuracy, which tests the prediction conversion, its derivative and the time convention sharply (the
 * graph fed one timestep later moves the one-step results by more than 100 times the tolerance). DDIM and
 * DPM++(2M) at 200 steps and GENIE at 50 must also reach the ODE's endpoint
 * x(t_max) · sqrt(D_{t_min} / D_{t_max}) from the default t_max = 1 to t_min = 1/N, within their own
 * discretisation errors.
 */
import { join } from "node:path";
import { importDiffusers } from "../../gpu-worker/import.ts";
import type { WorkerApp } from "../../gpu-worker/app.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { type BetaSchedule, discreteSchedule } from "../../core/schedule.ts";
import { assert, assertEquals } from "../testing.ts";
import { bytesOf, floats, post, startApp } from "./helpers.ts";

const N = 1000;
const SHAPE = [1, 4, 4];
const DIM = 16;
const BATCH = 2;
/** The data's variance s² (s = 0.5: the ODE shrinks x by about half from t_max to t_min). */
const S2 = 0.25;

type Prediction = "epsilon" | "sample" | "v_prediction";
const PREDICTIONS: Prediction[] = ["epsilon", "sample", "v_prediction"];

/** diffusers' scheduler configurations of the three beta schedules. */
const SCHEDULES: { name: BetaSchedule; start: number; end: number }[] = [
  { name: "linear", start: 0.0001, end: 0.02 },
  { name: "scaled_linear", start: 0.00085, end: 0.012 },
  { name: "squaredcos_cap_v2", start: 0.0001, end: 0.02 },
];

/** The betas as diffusers computes them (in float64), from its own formulas. */
function diffusersBetas(kind: BetaSchedule, start: number, end: number): number[] {
  const linspace = (a: number, b: number) => Array.from({ length: N }, (_, i) => a + (b - a) * i / (N - 1));
  if (kind === "linear") return linspace(start, end);
  if (kind === "scaled_linear") return linspace(Math.sqrt(start), Math.sqrt(end)).map((r) => r * r);
  // betas_for_alpha_bar with the cosine ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), max_beta = 0.999
  const abar = (s: number) => Math.cos(((s + 0.008) / 1.008) * Math.PI / 2) ** 2;
  return Array.from({ length: N }, (_, i) => Math.min(1 - abar((i + 1) / N) / abar(i / N), 0.999));
}

/** The knots B_0 = 0, B_{n+1} = −log ᾱ_n = −Σ_{i≤n} log(1 − β_i): B at timestep n, i.e. at t = (n+1)/N. */
function knotsOf(betas: number[]): Float64Array {
  const k = new Float64Array(N + 1);
  for (let n = 0; n < N; n++) k[n + 1] = k[n] - Math.log1p(-betas[n]);
  return k;
}

/** The schedule at a solver time t ∈ (0, 1]: B(t) linear between the knots at u = N·t. */
function scheduleAt(knots: Float64Array, t: number): { alpha: number; sigma: number; gamma: number } {
  const u = N * t, i = Math.min(N - 1, Math.floor(u));
  const b = knots[i] + (u - i) * (knots[i + 1] - knots[i]);
  return { alpha: Math.exp(-0.5 * b), sigma: Math.sqrt(-Math.expm1(-b)), gamma: Math.sqrt(Math.expm1(b)) };
}

/** The graph of the optimal predictor of `prediction` for N(0, s² I) data under the knots' schedule. */
function truthGraph(knots: Float64Array, prediction: Prediction): Uint8Array {
  const g = new GraphBuilder("gaussian-optimal-unet", { opset: 17 });
  g.input("sample", "float32", ["batch", ...SHAPE]);
  const timestep = g.input("timestep", "float32", ["batch"]);
  const k = (v: number) => g.constant(v, [], "float32");
  // u = timestep + 1 = N·t; the piece of u is [i, i + 1] with i = min(⌊u⌋, N − 1)
  const u = g.op("Add", [timestep, k(1)]);
  const floor = g.op("Floor", [g.op("Max", [g.op("Min", [u, k(N - 1)]), k(0)])]);
  const index = g.op("Cast", [floor], { to: 7 }); // int64
  const at = g.initializer("log_alpha_bar_knots", Float32Array.from(knots.subarray(0, N)), [N]);
  const rise = g.initializer(
    "log_alpha_bar_steps",
    Float32Array.from({ length: N }, (_, i) => knots[i + 1] - knots[i]),
    [N],
  );
  // B = B_i + (u − i)(B_{i+1} − B_i); only u carries a tangent
  const B = g.op("Add", [
    g.op("Gather", [at, index], { axis: 0 }),
    g.op("Mul", [g.op("Sub", [u, floor]), g.op("Gather", [rise, index], { axis: 0 })]),
  ]);
  const alpha2 = g.op("Exp", [g.op("Neg", [B])]);
  const alpha = g.op("Exp", [g.op("Mul", [B, k(-0.5)])]);
  // σ² = 1 − e^{−B}, for small B as tanh(B/2)(1 + e^{−B}), without the cancellation (in value and
  // in tangent: near α = 0 the tangent of tanh, 1 − tanh², would cancel instead)
  const sigma2 = g.op("Where", [
    g.op("Less", [B, k(1)]),
    g.op("Mul", [g.op("Tanh", [g.op("Mul", [B, k(0.5)])]), g.op("Add", [alpha2, k(1)])]),
    g.op("Sub", [k(1), alpha2]),
  ]);
  const sigma = g.op("Sqrt", [sigma2]);
  const D = g.op("Add", [g.op("Mul", [alpha2, k(S2)]), sigma2]);
  const numerator = prediction === "epsilon"
    ? sigma
    : prediction === "sample"
    ? g.op("Mul", [alpha, k(S2)])
    : g.op("Mul", [g.op("Mul", [alpha, sigma]), k(1 - S2)]);
  const coef = g.op("Div", [numerator, D]);
  const col = g.constant(BigInt64Array.of(-1n, 1n, 1n, 1n), [4], "int64", "col");
  g.node("Mul", ["sample", g.op("Reshape", [coef, col])], ["out_sample"]);
  g.output("out_sample", "float32", ["batch", ...SHAPE]);
  return g.bytes();
}

interface Case {
  name: string;
  schedule: typeof SCHEDULES[number];
  prediction: Prediction;
  knots: Float64Array;
}

const CASES: Case[] = SCHEDULES.flatMap((schedule) =>
  PREDICTIONS.map((prediction) => ({
    name: `gauss-${schedule.name}-${prediction}`.replaceAll("_", "-"),
    schedule,
    prediction,
    knots: knotsOf(diffusersBetas(schedule.name, schedule.start, schedule.end)),
  }))
);

/** Writes the export folder of a case and returns its path. */
function exportFolder(root: string, c: Case): string {
  const dir = join(root, `export-${c.name}`);
  Deno.mkdirSync(join(dir, "unet"), { recursive: true });
  Deno.writeTextFileSync(
    join(dir, "scheduler_config.json"),
    JSON.stringify({
      _class_name: "DDIMScheduler",
      beta_schedule: c.schedule.name,
      beta_start: c.schedule.start,
      beta_end: c.schedule.end,
      num_train_timesteps: N,
      prediction_type: c.prediction,
      clip_sample: false,
      set_alpha_to_one: false,
      steps_offset: 1,
    }),
  );
  Deno.writeFileSync(join(dir, "unet", "model.onnx"), truthGraph(c.knots, c.prediction));
  return dir;
}

/** The latents: x at t_max, two samples of [1, 4, 4], none near zero. */
const LATENTS = Float32Array.from(
  { length: BATCH * DIM },
  (_, i) => (i % 2 ? 1 : -1) * (0.4 + Math.abs(Math.sin(1 + 2.3 * i))),
);

/**
 * The factor by which DDIM (order 1) or GENIE (order 2, exact dε/dγ) scales x over `grid`: per step,
 * x̄ ← x̄ (1 + h γ/q [+ ½ h² s²/q²]) with q = s² + γ², h = γ_{n+1} − γ_n; x = α x̄ at both ends.
 */
function mapFactor(c: Case, grid: Float64Array, order: 1 | 2): number {
  let f = 1 / scheduleAt(c.knots, grid[0]).alpha;
  for (let n = 0; n + 1 < grid.length; n++) {
    const g = scheduleAt(c.knots, grid[n]).gamma, h = scheduleAt(c.knots, grid[n + 1]).gamma - g;
    const q = S2 + g * g;
    f *= 1 + (h * g) / q + (order === 2 ? (0.5 * h * h * S2) / (q * q) : 0);
  }
  return f * scheduleAt(c.knots, grid[grid.length - 1]).alpha;
}

/** The quadratic grid of core/grid.ts: √t linear in the step index, from tMax to tMin. */
function quadraticGrid(tMax: number, tMin: number, steps: number): Float64Array {
  const a = Math.sqrt(tMax), b = Math.sqrt(tMin);
  const t = Float64Array.from({ length: steps + 1 }, (_, n) => (a + (n / steps) * (b - a)) ** 2);
  t[0] = tMax;
  t[steps] = tMin;
  return t;
}

/** max |x − truth| / max |truth|. */
function relativeError(x: Float32Array, truth: Float64Array): number {
  let err = 0, scale = 0;
  for (let i = 0; i < x.length; i++) {
    err = Math.max(err, Math.abs(x[i] - truth[i]));
    scale = Math.max(scale, Math.abs(truth[i]));
  }
  return err / scale;
}

/** The samples of one request from LATENTS. */
async function sample(app: WorkerApp, model: string, fields: Record<string, unknown>): Promise<Float32Array> {
  const r = await post(app, "/v1/batch", {
    v: 1,
    id: "truth",
    model,
    seeds: [1, 2],
    latents: bytesOf(LATENTS),
    ...fields,
  });
  assertEquals(r.status, 200, `${model} ${JSON.stringify(fields)}: ${JSON.stringify(r.body)}`);
  const x = floats(r.body.data);
  assertEquals(x.length, BATCH * DIM);
  return x;
}

/** The single step's t_max and t_min (timesteps 332.7 and 49.5, between integers). */
const T_ONE = 0.3337, T_ONE_END = 0.0505;
/**
 * Relative tolerances: against the solvers' maps (measured at most 4e-7 over the nine cases) and against
 * the ODE (measured at most 8.0e-3 for DDIM, its first-order error on this grid, 3.5e-4 for DPM++(2M) and
 * 2.1e-3 for GENIE at 50 steps; a wrong prediction conversion is off by more than 0.1).
 */
const TOL_MAP = 2e-6;
const TOL_ODE = { ddim: 2e-2, "dpmpp-2m": 1e-3, genie: 5e-3 } as const;

Deno.test({
  name:
    "imported diffusers models (3 beta schedules × 3 predictions) follow the closed-form ODE of Gaussian data",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = Deno.makeTempDirSync({ prefix: "genie-import-truth-" });
    const models = join(root, "models");
    try {
      await t.step("the knots agree with core/schedule.ts's discrete schedules", () => {
        for (const c of CASES.filter((c) => c.prediction === "epsilon")) {
          const s = discreteSchedule({
            beta_schedule: c.schedule.name,
            num_train_timesteps: N,
            ...(c.schedule.name === "squaredcos_cap_v2" ? {} : {
              beta_start: c.schedule.start,
              beta_end: c.schedule.end,
            }),
          });
          for (const tv of [1 / N, 0.0015, 0.0505, 0.3337, 0.5, 0.99949, 1]) {
            const mine = scheduleAt(c.knots, tv);
            for (
              const [what, a, b] of [["alpha", mine.alpha, s.alpha(tv)], [
                "sigma",
                mine.sigma,
                s.sigma(tv),
              ]] as const
            ) {
              assert(Math.abs(a / b - 1) < 1e-12, `${c.schedule.name}: ${what}(${tv}) = ${b}, expected ${a}`);
            }
          }
          assertEquals(s.tMin, 1 / N);
          assertEquals(s.tMax, 1);
        }
      });

      await t.step("import: the discrete schedule, the prediction and a derived JVP graph", () => {
        for (const c of CASES) {
          const r = importDiffusers({ source: exportFolder(root, c), name: c.name, out: models });
          assertEquals(r.manifest.time, { kind: "discrete", scale: N, offset: -1 });
          assertEquals(
            r.manifest.prediction,
            ({ epsilon: "eps", sample: "x0", v_prediction: "v" } as const)[c.prediction],
          );
          assertEquals(
            (r.manifest.schedule as { beta_schedule?: string }).beta_schedule,
            c.schedule.name,
          );
          assert(r.facts.some((l) => l.startsWith("derivatives: jvp (derived")), r.facts.join("\n"));
        }
      });

      const app = await startApp({ modelsDir: models, models: CASES.map((c) => c.name) });
      try {
        for (const c of CASES) {
          await t.step(c.name, async () => {
            const scaled = (factor: number) => Float64Array.from(LATENTS, (v) => v * factor);
            const check = (what: string, x: Float32Array, truth: Float64Array, tol: number) => {
              const err = relativeError(x, truth);
              assert(
                err < tol,
                `${c.name}: ${what}: relative error ${err.toExponential(2)} (tolerance ${tol})`,
              );
            };
            // one DDIM and one GENIE step between two chosen times, and the solvers' maps over a whole grid
            const one = { steps: 1, t_max: T_ONE, t_min: T_ONE_END };
            const oneGrid = Float64Array.of(T_ONE, T_ONE_END);
            check(
              "one ddim step",
              await sample(app, c.name, { solver: "ddim", ...one }),
              scaled(mapFactor(c, oneGrid, 1)),
              TOL_MAP,
            );
            check(
              "one genie step",
              await sample(app, c.name, { solver: "genie", genie_derivative: "jvp", ...one }),
              scaled(mapFactor(c, oneGrid, 2)),
              TOL_MAP,
            );
            const ddim = await sample(app, c.name, { solver: "ddim", steps: 200, grid: "quadratic" });
            check(
              "200 ddim steps vs its map",
              ddim,
              scaled(mapFactor(c, quadraticGrid(1, 1 / N, 200), 1)),
              TOL_MAP,
            );
            const genie = await sample(app, c.name, {
              solver: "genie",
              genie_derivative: "jvp",
              steps: 50,
              grid: "quadratic",
            });
            check(
              "50 genie steps vs its map",
              genie,
              scaled(mapFactor(c, quadraticGrid(1, 1 / N, 50), 2)),
              TOL_MAP,
            );

            // the ODE from t_max = 1 to t_min = 1/N (the defaults): x(t_min) = x(1) sqrt(D_min / D_max)
            const D = (tv: number) => {
              const s = scheduleAt(c.knots, tv);
              return s.alpha ** 2 * S2 + s.sigma ** 2;
            };
            const truth = scaled(Math.sqrt(D(1 / N) / D(1)));
            check("200 ddim steps vs the ODE", ddim, truth, TOL_ODE.ddim);
            check(
              "200 dpmpp-2m steps vs the ODE",
              await sample(app, c.name, { solver: "dpmpp-2m", steps: 200 }),
              truth,
              TOL_ODE["dpmpp-2m"],
            );
            check("50 genie steps vs the ODE", genie, truth, TOL_ODE.genie);
          });
        }
      } finally {
        await app.shutdown();
      }
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

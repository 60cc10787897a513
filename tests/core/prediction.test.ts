import { assert, assertEquals, assertThrows, maxAbsDiff, test } from "../testing.ts";
import { gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import {
  parsePredictionKind,
  predictionCoefficients,
  PredictionError,
  type PredictionKind,
  wrapPrediction,
} from "../../core/prediction.ts";
import { makeGrid } from "../../core/grid.ts";
import { rngStream } from "../../core/rng.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import type { Evaluator } from "../../core/solvers/drive.ts";
import { ddim } from "../../core/solvers/ddim.ts";
import { genie } from "../../core/solvers/genie.ts";
import type { EvalRequest, SolveInput } from "../../core/solvers/types.ts";

const BETA_MIN = 0.1, BETA_MAX = 20;
const schedule = vpLinearSchedule(BETA_MIN, BETA_MAX);
const mix = parseGmmSpec({
  weights: [0.3, 0.5, 0.2],
  means: [[0.6, -0.4, 0.1], [-0.5, 0.3, 0.7], [0.1, 0.8, -0.6]],
  stds: [0.2, 0.35, 0.15],
});
const epsModel = gmmEvaluator(mix, schedule);

/** α, σ, γ and their t-derivatives from β(t) = β_min + β_d t directly (B' = β). */
function coeffs(t: number) {
  const beta = BETA_MIN + (BETA_MAX - BETA_MIN) * t;
  const alpha = schedule.alpha(t), sigma = schedule.sigma(t);
  return {
    alpha,
    sigma,
    gamma: sigma / alpha,
    dAlpha: -0.5 * beta * alpha,
    dSigma: (0.5 * beta * alpha * alpha) / sigma,
  };
}

/**
 * An x₀- or v-prediction model made from the exact ε model: x̂₀ = (x − σ ε)/α, v = (ε − σ x)/α, with
 * JVPs by the product rule. Without a tangent its derivative is either the raw output's total
 * derivative along the ODE (dx̂₀/dγ = −γ D, dv/dγ = sqrt(1+γ²) D − x̄ (1+γ²)^{−3/2}, D = dε/dγ) or,
 * with `epsDeriv`, D itself.
 */
function rawModel(kind: "x0" | "v", epsDeriv = false): Evaluator {
  return (req: EvalRequest) => {
    const r = epsModel(req);
    const eps = r.eps, B = req.t.length, d = req.x.length / B;
    const f = new Float64Array(eps.length);
    const df = req.want === "eps+deriv" ? new Float64Array(eps.length) : undefined;
    for (let s = 0; s < B; s++) {
      const { alpha, sigma, gamma, dAlpha, dSigma } = coeffs(req.t[s]);
      for (let i = s * d; i < (s + 1) * d; i++) {
        const x = req.x[i];
        f[i] = kind === "x0" ? (x - sigma * eps[i]) / alpha : (eps[i] - sigma * x) / alpha;
        if (!df) continue;
        const D = r.deriv![i];
        if (req.tangent) {
          const dt = req.tangent.t[s], dx = req.tangent.x[i];
          // f = g/α with g = x − σε (x0) or ε − σx (v): df = (dg − f dα)/α.
          const dg = kind === "x0" ? dx - dSigma * dt * eps[i] - sigma * D : D - dSigma * dt * x - sigma * dx;
          df[i] = (dg - f[i] * dAlpha * dt) / alpha;
        } else if (epsDeriv) {
          df[i] = D;
        } else {
          const xbar = x / alpha, q = 1 + gamma * gamma;
          df[i] = kind === "x0" ? -gamma * D : Math.sqrt(q) * D - xbar / q ** 1.5;
        }
      }
    }
    return { eps: f, deriv: df };
  };
}

function input(extra: Partial<SolveInput> = {}): SolveInput {
  const batch = 4, dim = 3, rng = rngStream(5);
  const x = Float64Array.from({ length: batch * dim }, () => rng.normal());
  return { schedule, grid: makeGrid(schedule, { kind: "quadratic", steps: 12 }), x, batch, dim, ...extra };
}

test("predictionCoefficients: ε = a f + b x and a', b' match finite differences", () => {
  for (const kind of ["x0", "v"] as const) {
    for (const t of [2e-3, 0.05, 0.3, 0.9]) {
      const c = predictionCoefficients(kind, schedule, t), h = 1e-6 * t;
      const p = predictionCoefficients(kind, schedule, t + h),
        m = predictionCoefficients(kind, schedule, t - h);
      const scale = Math.abs(c.da) + Math.abs(c.a) / t;
      assert(Math.abs((p.a - m.a) / (2 * h) - c.da) < 1e-6 * scale, `${kind} a' at ${t}`);
      assert(
        Math.abs((p.b - m.b) / (2 * h) - c.db) < 1e-6 * (Math.abs(c.db) + Math.abs(c.b) / t),
        `${kind} b'`,
      );
    }
  }
  assertEquals(predictionCoefficients("eps", schedule, 0.5), { a: 1, b: 0, da: 0, db: 0 });
});

test("wrapped x0 and v models give the exact ε and ε-JVPs at random points", () => {
  const rng = rngStream(8), B = 5, d = 3;
  const x = Float64Array.from({ length: B * d }, () => rng.normal());
  const t = Float64Array.of(1e-3, 0.02, 0.2, 0.6, 1);
  const tangent = {
    x: Float64Array.from({ length: B * d }, () => rng.normal()),
    t: Float64Array.from({ length: B }, () => rng.normal()),
  };
  const req: EvalRequest = { x, t, want: "eps+deriv", tangent, step: 0, steps: 1 };
  const want = epsModel(req);
  for (const kind of ["x0", "v"] as const) {
    const got = wrapPrediction(kind, rawModel(kind), schedule)(req);
    assert(maxAbsDiff(got.eps, want.eps) < 1e-12, `${kind} eps ${maxAbsDiff(got.eps, want.eps)}`);
    const scale = Math.max(...want.deriv!.map(Math.abs));
    assert(
      maxAbsDiff(got.deriv!, want.deriv!) < 1e-11 * scale,
      `${kind} jvp ${maxAbsDiff(got.deriv!, want.deriv!)}`,
    );
    // Total derivative along the ODE, from the raw space or passed through as ε-space.
    const total = { ...req, tangent: undefined };
    const wantTotal = epsModel(total).deriv!;
    const tScale = Math.max(...wantTotal.map(Math.abs));
    for (const space of ["raw", "eps"] as const) {
      const g = wrapPrediction(kind, rawModel(kind, space === "eps"), schedule, { derivativeSpace: space })(
        total,
      );
      assert(maxAbsDiff(g.deriv!, wantTotal) < 1e-11 * tScale, `${kind}/${space} total derivative`);
    }
  }
});

function solveWith(kind: PredictionKind, extra: Partial<SolveInput>, solver = genie, space?: "eps" | "raw") {
  const model = kind === "eps" ? epsModel : wrapPrediction(kind, rawModel(kind, space === "eps"), schedule, {
    derivativeSpace: space,
  });
  return runSolver(solver(input(extra)), model);
}

test("x0 and v models solve to the same endpoint as the ε model (genie jvp/exact, ddim)", () => {
  const cases: [Partial<SolveInput>, typeof genie, "eps" | "raw" | undefined][] = [
    [{ derivative: "jvp" }, genie, undefined],
    [{ derivative: "jvp", afs: true, denoise: true }, genie, undefined],
    [{ derivative: "exact" }, genie, "raw"],
    [{ derivative: "exact", denoise: true }, genie, "eps"],
    [{ derivative: "fd" }, genie, undefined],
    [{}, ddim, undefined],
    [{ denoise: true }, ddim, undefined],
  ];
  for (const [extra, solver, space] of cases) {
    const ref = solveWith("eps", extra, solver);
    for (const kind of ["x0", "v"] as const) {
      const got = solveWith(kind, extra, solver, space);
      const err = maxAbsDiff(got.x, ref.x);
      assert(err < 1e-10, `${kind} ${JSON.stringify(extra)}: endpoint differs by ${err}`);
      assertEquals(got.stats, ref.stats);
    }
  }
});

test("an ε model is passed through unchanged", () => {
  const w = wrapPrediction("eps", epsModel, schedule);
  assertEquals(
    runSolver(genie(input({ derivative: "exact" })), w).x,
    solveWith("eps", { derivative: "exact" }).x,
  );
});

test("x0/v models refuse tangent-less derivatives unless their derivative space is declared", () => {
  for (const kind of ["x0", "v"] as const) {
    const w = wrapPrediction(kind, rawModel(kind), schedule);
    assertThrows(() => runSolver(genie(input({ derivative: "exact" })), w), PredictionError);
    assertThrows(() => runSolver(genie(input({ derivative: "head" })), w), /derivativeSpace/);
    // the ODE's tangent made from the raw output would be wrong: refused, naming the field
    assertThrows(
      () => runSolver(genie(input({ derivative: "jvp", odeJvp: true })), w),
      PredictionError,
      "odeTangent",
    );
    // without it, GENIE (jvp) asks for ε and then the JVP along the tangent it made: converted exactly
    runSolver(genie(input({ derivative: "jvp" })), w);
  }
  assertThrows(() => parsePredictionKind("score"), PredictionError);
  assertEquals(parsePredictionKind("v"), "v");
  assertThrows(
    () => wrapPrediction("x0", epsModel, schedule, { derivativeSpace: "bad" as "eps" }),
    PredictionError,
  );
});

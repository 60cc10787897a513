import { assert, assertEquals, assertThrows, maxAbsDiff, test } from "../testing.ts";
import { type GaussianMixture, gmmAt, gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import {
  GuidanceError,
  guidedSolveInput,
  withClasses,
  withConditioning,
  withGuidance,
} from "../../core/guidance.ts";
import { makeGrid } from "../../core/grid.ts";
import { rngStream } from "../../core/rng.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { type Evaluator, runSolver } from "../../core/solvers/drive.ts";
import { ddim } from "../../core/solvers/ddim.ts";
import { genie } from "../../core/solvers/genie.ts";
import type { EvalRequest, EvalResult, SolveInput, SolverFn, SolverRun } from "../../core/solvers/types.ts";

const schedule = vpLinearSchedule();
const spec = {
  weights: [0.3, 0.2, 0.25, 0.25],
  means: [[0.8, 0.2], [0.3, -0.7], [-0.6, 0.5], [-0.4, -0.5]],
  stds: [0.25, 0.3, 0.2, 0.35],
};
/** Two classes of two components each; class 2 is the null class (the whole mixture). */
const labelled = parseGmmSpec({ ...spec, labels: [0, 0, 1, 1], classes: 2 });
const NULL = 2;
const batch = 6, dim = 2;
const classes = Int32Array.from({ length: batch }, (_, i) => i % 2);
const rng = rngStream(3);
const xT = Float64Array.from({ length: batch * dim }, () => rng.normal());

function input(steps: number, extra: Partial<SolveInput> = {}): SolveInput {
  return { schedule, grid: makeGrid(schedule, { kind: "quadratic", steps }), x: xT, batch, dim, ...extra };
}

const SETTINGS: [string, SolverFn, Partial<SolveInput>][] = [
  ["ddim", ddim, {}],
  ["ddim afs+denoise", ddim, { afs: true, denoise: true }],
  ["genie exact", genie, { derivative: "exact" }],
  ["genie exact tangent", genie, { derivative: "exact", tangentDerivative: true, afs: true }],
  ["genie jvp", genie, { derivative: "jvp", denoise: true }],
  ["genie fd", genie, { derivative: "fd" }],
];

/** Records every request it answers. */
function recording(model: Evaluator): { model: Evaluator; seen: EvalRequest[] } {
  const seen: EvalRequest[] = [];
  return { seen, model: (req) => (seen.push(req), model(req)) };
}

test("the doubled request: conditional half with the classes, unconditional half with the null class", () => {
  const { model, seen } = recording(gmmEvaluator(labelled, schedule));
  const inner = recording(gmmEvaluator(labelled, schedule));
  runSolver(
    withGuidance(genie(input(4, { derivative: "jvp" })), { classes, nullClass: NULL, scale: 1.5 }),
    model,
  );
  runSolver(genie(input(4, { derivative: "jvp" })), inner.model);
  assertEquals(seen.length, inner.seen.length);
  for (const req of seen) {
    assertEquals(req.t.length, 2 * batch);
    assertEquals(req.x.length, 2 * batch * dim);
    assertEquals(Array.from(req.classes!), [...classes, ...Array(batch).fill(NULL)]);
    assertEquals(req.x.subarray(0, batch * dim), req.x.subarray(batch * dim));
    assertEquals(req.t.subarray(0, batch), req.t.subarray(batch));
    if (req.tangent) {
      assertEquals(req.tangent.x.subarray(0, batch * dim), req.tangent.x.subarray(batch * dim));
      assertEquals(req.tangent.t.subarray(0, batch), req.tangent.t.subarray(batch));
    }
  }
  assertEquals(
    seen.map((r) => [r.want, r.step, r.steps, !!r.tangent]),
    inner.seen.map((r) => [r.want, r.step, r.steps, !!r.tangent]),
  );
});

/** A one-request "solver" that hands back what it received. */
function* probe(req: EvalRequest, sink: EvalResult[]): SolverRun {
  sink.push(yield req);
  return new Float64Array(0);
}

test("guided ε and k are (1 + w) ε_c − w ε_u and (1 + w) k_c − w k_u of the exact model", () => {
  const model = gmmEvaluator(labelled, schedule), r = rngStream(4);
  const x = Float64Array.from({ length: batch * dim }, () => r.normal());
  const t = Float64Array.from({ length: batch }, (_, i) => 0.05 + 0.15 * i);
  const tangent = { x: x.map(() => r.normal()), t: t.map(() => r.normal()) };
  for (
    const req of [
      { x, t, want: "eps", step: 0, steps: 1 },
      { x, t, want: "eps+deriv", step: 0, steps: 1 },
      { x, t, want: "eps+deriv", tangent, step: 0, steps: 1 },
    ] as EvalRequest[]
  ) {
    for (const w of [0.7, 4]) {
      const sink: EvalResult[] = [];
      runSolver(withGuidance(probe(req, sink), { classes, nullClass: NULL, scale: w }), model);
      const c = model({ ...req, classes }), u = model({ ...req, classes: new Int32Array(batch).fill(NULL) });
      const eps = c.eps.map((v, i) => (1 + w) * v - w * u.eps[i]);
      assert(maxAbsDiff(sink[0].eps, eps) < 1e-13, `eps w=${w}`);
      if (req.want === "eps") {
        assertEquals(sink[0].deriv, undefined);
        continue;
      }
      const k = c.deriv!.map((v, i) => (1 + w) * v - w * u.deriv![i]);
      assert(maxAbsDiff(sink[0].deriv!, k) < 1e-12 * Math.max(...k.map(Math.abs)), `deriv w=${w}`);
    }
  }
});

test("w = 0 equals the class-conditional sampler bit for bit (same stats)", () => {
  const model = gmmEvaluator(labelled, schedule);
  for (const [name, solver, extra] of SETTINGS) {
    const cond = runSolver(withClasses(solver(input(8, extra)), classes), model);
    const guided = runSolver(
      withGuidance(solver(input(8, extra)), { classes, nullClass: NULL, scale: 0 }),
      model,
    );
    assertEquals(guided.x, cond.x, name);
    assertEquals(guided.stats, cond.stats, name);
    // The dispatcher takes the cheap path for w = 0.
    assertEquals(
      runSolver(withConditioning(solver(input(8, extra)), { classes, nullClass: NULL }), model).x,
      cond.x,
    );
  }
  // The conditional sampler really is conditional: class labels change the result.
  const uncond = runSolver(ddim(input(8)), model);
  assert(maxAbsDiff(runSolver(withClasses(ddim(input(8)), classes), model).x, uncond.x) > 1e-3);
});

test("ε_c = ε_u: the guided sampler equals the unguided one for any w", () => {
  const oneLabel = parseGmmSpec({ ...spec, labels: [0, 0, 0, 0], classes: 1 });
  const unlabelled = parseGmmSpec(spec); // ignores class labels
  const cases: [string, GaussianMixture, number][] = [["one label", oneLabel, 1], [
    "no labels",
    unlabelled,
    7,
  ]];
  for (const [what, mix, nullClass] of cases) {
    const model = gmmEvaluator(mix, schedule);
    const zeros = new Int32Array(batch);
    for (const [name, solver, extra] of SETTINGS) {
      for (const w of [0.5, 3, 7.25]) {
        // Also with GENIE configured for the exact guided derivative (tangent requests).
        for (const inp of [input(8, extra), guidedSolveInput(input(8, extra), w)]) {
          const plain = runSolver(solver(inp), model);
          const guided = runSolver(withGuidance(solver(inp), { classes: zeros, nullClass, scale: w }), model);
          assertEquals(guided.x, plain.x, `${what} ${name} w=${w}`);
          assertEquals(guided.stats, plain.stats);
        }
      }
    }
  }
});

/** The guided ODE dx̄/dγ = (1 + w) ε_c − w ε_u, integrated by classical RK4 straight from the mixture. */
function rk4Guided(mix: GaussianMixture, w: number, steps: number): Float64Array {
  const grid = makeGrid(schedule, { kind: "quadratic", steps });
  const out = new Float64Array(xT.length);
  for (let b = 0; b < batch; b++) {
    const f = (xb: Float64Array, g: number) => {
      const ec = gmmAt(mix, xb, g, classes[b]).eps, eu = gmmAt(mix, xb, g, NULL).eps;
      return ec.map((v, i) => (1 + w) * v - w * eu[i]);
    };
    const axpy = (y: Float64Array, a: number, k: Float64Array) => y.map((v, i) => v + a * k[i]);
    let g = schedule.gamma(grid[0]);
    let xb = xT.slice(b * dim, (b + 1) * dim).map((v) => v / schedule.alpha(grid[0]));
    for (let n = 0; n < steps; n++) {
      const g1 = schedule.gamma(grid[n + 1]), h = g1 - g;
      const k1 = f(xb, g), k2 = f(axpy(xb, h / 2, k1), g + h / 2);
      const k3 = f(axpy(xb, h / 2, k2), g + h / 2), k4 = f(axpy(xb, h, k3), g1);
      xb = xb.map((v, i) => v + (h / 6) * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]));
      g = g1;
    }
    out.set(xb.map((v) => v * schedule.alpha(grid[steps])), b * dim);
  }
  return out;
}

test("guided GENIE with the exact guided derivative converges at order 2; the combined k̃ at order 1", () => {
  const w = 2, model = gmmEvaluator(labelled, schedule);
  const opts = { classes, nullClass: NULL, scale: w };
  const solve = (steps: number, extra: Partial<SolveInput>) => {
    const inp = guidedSolveInput(input(steps, extra), w);
    return runSolver(withGuidance(genie(inp), opts), model);
  };
  // Truth: RK4 on the guided ODE, converged (two resolutions agree to 1e-10).
  const truth = rk4Guided(labelled, w, 2000);
  assert(maxAbsDiff(rk4Guided(labelled, w, 1000), truth) < 1e-10, "RK4 reference not converged");
  // GENIE's own tight reference solve (exact guided derivative, many steps) agrees with it, and two of
  // its resolutions differ by the expected O(N⁻²) amount.
  const fine = solve(2000, { derivative: "exact" }).x, finer = solve(4000, { derivative: "exact" }).x;
  assert(maxAbsDiff(fine, finer) < 2e-6 && maxAbsDiff(finer, truth) < 1e-6, "GENIE reference");

  const Ns = [20, 40, 80, 160];
  const order = (errs: number[]) => errs.slice(1).map((e, i) => Math.log2(errs[i] / e));
  const exact = Ns.map((N) => maxAbsDiff(solve(N, { derivative: "exact" }).x, truth));
  const jvp = Ns.map((N) => maxAbsDiff(solve(N, { derivative: "jvp" }).x, truth));
  // Without guidedSolveInput: each branch's own total derivative, combined.
  const approx = Ns.map((N) =>
    maxAbsDiff(runSolver(withGuidance(genie(input(N, { derivative: "exact" })), opts), model).x, truth)
  );
  for (const p of order(exact)) assert(p > 1.8 && p < 2.2, `exact guided order ${order(exact)}`);
  assertEquals(jvp, exact);
  for (const p of order(approx).slice(1)) assert(p > 0.9 && p < 1.3, `combined-k order ${order(approx)}`);
  assert(exact[3] * 5 < approx[3], `exact ${exact[3]} vs combined ${approx[3]}`);
});

test("NFE accounting counts each doubled request once", () => {
  const model = gmmEvaluator(labelled, schedule);
  for (const [name, solver, extra] of SETTINGS) {
    for (const steps of [5, 12]) {
      const plain = runSolver(withClasses(solver(input(steps, extra)), classes), model).stats;
      const guided =
        runSolver(withGuidance(solver(input(steps, extra)), { classes, nullClass: NULL, scale: 1 }), model)
          .stats;
      assertEquals(guided, plain, name);
    }
  }
  // GENIE exact-guided: one ε evaluation per step (no AFS) + one JVP per step; NFE = N.
  const stats = runSolver(
    withGuidance(genie(guidedSolveInput(input(10, { derivative: "exact" }), 2)), {
      classes,
      nullClass: NULL,
      scale: 2,
    }),
    model,
  ).stats;
  assertEquals(stats, { nfe: 10, derivEvals: 10, calls: 20, graphCalls: { eps: 10, head: 0, jvp: 10 } });
});

test("guidedSolveInput asks for tangent derivatives only where they give the exact guided derivative", () => {
  const base = input(4);
  assertEquals(guidedSolveInput({ ...base, derivative: "exact" }, 2).tangentDerivative, true);
  assertEquals(guidedSolveInput({ ...base, derivative: "jvp" }, 2).tangentDerivative, true);
  assertEquals(guidedSolveInput({ ...base, derivative: "head" }, 2).tangentDerivative, undefined);
  assertEquals(guidedSolveInput({ ...base, derivative: "fd" }, 2).tangentDerivative, undefined);
  assertEquals(guidedSolveInput(base, 2).tangentDerivative, undefined); // default source: head
  assertEquals(guidedSolveInput({ ...base, derivative: "exact" }, 0).tangentDerivative, undefined);
});

test("conditioning options are validated", () => {
  const model = gmmEvaluator(labelled, schedule);
  assertThrows(() => runSolver(withClasses(ddim(input(3)), new Int32Array(2)), model), GuidanceError);
  assertThrows(
    () =>
      runSolver(
        withGuidance(ddim(input(3)), { classes: new Int32Array(7), nullClass: NULL, scale: 1 }),
        model,
      ),
    /7 labels for a batch of 6/,
  );
  assertThrows(() => withGuidance(ddim(input(3)), { classes, nullClass: 1.5, scale: 1 }), GuidanceError);
  assertThrows(() => withGuidance(ddim(input(3)), { classes, nullClass: NULL, scale: NaN }), GuidanceError);
  assertThrows(() => withConditioning(ddim(input(3)), { scale: 1 }), /needs class labels/);
  assertThrows(() => withConditioning(ddim(input(3)), { classes, scale: 1 }), /no null class/);
  const plain = ddim(input(3));
  assert(withConditioning(plain, {}) === plain);
});

test("closing the guided run early closes the inner solver", () => {
  let closed = false;
  function* inner(): Generator<EvalRequest, Float64Array, unknown> {
    try {
      yield { x: new Float64Array(2), t: new Float64Array(1), want: "eps", step: 0, steps: 1 };
      return new Float64Array(2);
    } finally {
      closed = true;
    }
  }
  const run = withGuidance(inner() as ReturnType<typeof ddim>, {
    classes: new Int32Array(1),
    nullClass: 1,
    scale: 1,
  });
  run.next();
  run.return(new Float64Array(0));
  assert(closed);
});

test("GENIE (jvp) asks for ε and its JVP along the ODE in one call where the model can; guided runs keep two", () => {
  const model = gmmEvaluator(labelled, schedule), steps = 6;
  const conditioned = (inp: SolveInput, scale: number) =>
    runSolver(withConditioning(genie(inp), { classes, nullClass: NULL, scale }), model);
  const twoCalls = conditioned(input(steps, { derivative: "jvp" }), 0);
  const oneCall = conditioned(input(steps, { derivative: "jvp", odeJvp: true }), 0);
  const exact = conditioned(input(steps, { derivative: "exact" }), 0);
  // the mixture's JVP along the tangent made from its own ε is its closed-form total derivative
  assert(maxAbsDiff(oneCall.x, exact.x) < 1e-12, `one call vs exact: ${maxAbsDiff(oneCall.x, exact.x)}`);
  assert(maxAbsDiff(oneCall.x, twoCalls.x) < 1e-12);
  assertEquals([oneCall.stats.nfe, oneCall.stats.calls], [steps, steps]);
  assertEquals(oneCall.stats.graphCalls, { eps: 0, head: 0, jvp: steps });
  assertEquals([twoCalls.stats.nfe, twoCalls.stats.calls], [steps, 2 * steps]);
  // guided: the tangent is made from the guided ε̃, which mixes two rows, so ε and the JVP stay apart
  const guided = (odeJvp: boolean) =>
    conditioned(guidedSolveInput(input(steps, { derivative: "jvp", odeJvp }), 2), 2);
  const g1 = guided(true), g0 = guided(false);
  assertEquals(g1.x, g0.x);
  assertEquals(g1.stats, g0.stats);
  assertEquals(g1.stats.calls, 2 * steps);
});

test("guidance refuses a request whose tangent the model would make from one branch's ε", () => {
  const req: EvalRequest = {
    x: new Float64Array(batch * dim),
    t: new Float64Array(batch).fill(0.5),
    want: "eps+deriv",
    odeTangent: { eps: new Float64Array(batch), x: new Float64Array(batch), t: new Float64Array(batch) },
    step: 0,
    steps: 1,
  };
  const run = (function* (): SolverRun {
    yield req;
    return new Float64Array(0);
  })();
  const guided = withGuidance(run, { classes, nullClass: NULL, scale: 1 });
  assertThrows(() => runSolver(guided, gmmEvaluator(labelled, schedule)), GuidanceError, "odeTangent");
});

/**
 * core/plan.ts, the one plan of a solve: defaults (solver, NFE, derivative, grid and ρ, t_min and t_max,
 * order), the model's own defaults, refusals naming the field (several at once where they are
 * independent), the predicted cost, the edge's view of a model (planModelOf) and the worker message.
 */
import { normalizeModelInfo } from "../../core/api/models.ts";
import {
  checkSolveRequest,
  DEFAULT_NFE,
  nearestNfes,
  PlanError,
  type PlanModel,
  planModelOf,
  planSolve,
  planTimes,
  type SolveRequest,
  workerSolveFields,
} from "../../core/plan.ts";
import { defaultRho, makeGrid, reversedGrid } from "../../core/grid.ts";
import { getSolver, solverNames } from "../../core/solvers/registry.ts";
import { vpCosineSchedule, vpLinearSchedule } from "../../core/schedule.ts";
import { assert, assertEquals, assertMatch, assertStrictEquals, test } from "../testing.ts";

/** gmm2d as the worker describes it: a head, a JVP graph, fd and the closed form; vp-linear. */
const GMM2D: PlanModel = {
  name: "gmm2d",
  derivatives: ["head", "jvp", "fd", "exact"],
  schedule: vpLinearSchedule(),
  limits: { max_steps: 1000, max_nfe: 2000 },
};

/** The refusal of a request: its field, every field refused, and the `valid` values. */
function refusal(
  req: SolveRequest,
  model: PlanModel = GMM2D,
  direction: "sample" | "encode" = "sample",
): { field: string; all: string[]; message: string; valid?: number[] } {
  try {
    planSolve(req, model, direction);
  } catch (e) {
    if (!(e instanceof PlanError)) throw e;
    return { field: e.field, all: e.all.map((p) => p.field), message: e.message, valid: e.valid };
  }
  throw new Error(`expected a refusal of ${JSON.stringify(req)}`);
}

test("defaults: genie, 10 NFE, the head, quadratic ρ = 2, the schedule's ends", () => {
  const plan = planSolve({}, GMM2D);
  assertEquals(
    [plan.solver, plan.nfe, plan.steps, plan.derivative, plan.grid, plan.rho, plan.grid_source],
    ["genie", DEFAULT_NFE, 10, "head", "quadratic", 2, "solver"],
  );
  assertEquals([plan.t_min, plan.t_max, plan.afs, plan.denoise, plan.order], [
    1e-3,
    1,
    false,
    false,
    undefined,
  ]);
  assertEquals(plan.cost, { calls: 10, cost: 10, cost_estimated: true, graph_calls: { head: 10 } });
});

test("GENIE's default derivative: head, else jvp, else fd; exact only when asked", () => {
  const without = (...d: string[]) => ({ ...GMM2D, derivatives: d });
  assertStrictEquals(planSolve({}, without("jvp", "fd")).derivative, "jvp");
  assertStrictEquals(planSolve({}, without("fd")).derivative, "fd");
  // The command line's mixtures offer the closed form first; a JVP is still the default.
  assertStrictEquals(planSolve({}, without("exact", "jvp", "fd")).derivative, "jvp");
  assertStrictEquals(planSolve({ genie_derivative: "exact" }, GMM2D).derivative, "exact");
  // fd evaluates twice a step: 10 NFE are 5 steps.
  assertEquals([planSolve({ genie_derivative: "fd" }, GMM2D).steps], [5]);
  assertStrictEquals(planSolve({ solver: "ddim" }, GMM2D).derivative, undefined);
});

test("each solver's own grid (the registry's), order and step count", () => {
  for (const solver of solverNames()) {
    const info = getSolver(solver), p = planSolve({ solver }, GMM2D);
    const rho = info.grid.rho ?? defaultRho(info.grid.kind);
    assertEquals([p.grid, p.rho, p.grid_source], [info.grid.kind, rho, "solver"], solver);
    assertStrictEquals(p.steps, solver === "heun" ? 5 : 10, solver);
    assertStrictEquals(p.order, info.orders?.default, solver);
  }
  assertEquals([planSolve({ solver: "heun" }, GMM2D).grid, planSolve({ solver: "dpmpp-2m" }, GMM2D).rho], [
    "edm",
    undefined,
  ]);
  assertStrictEquals(planSolve({ solver: "unipc", order: 2 }, GMM2D).order, 2);
  assertStrictEquals(planSolve({ solver: "unipc" }, GMM2D).variant, "bh1");
});

test("the model's defaults: per solver, then for every solver; the request's grid and ρ win", () => {
  const tuned: PlanModel = {
    ...GMM2D,
    defaults: { grid: "power", rho: 3, solvers: { genie: { grid: "edm", rho: 5 } } },
  };
  const grid = (req: SolveRequest) => {
    const p = planSolve(req, tuned);
    return [p.grid, p.rho, p.grid_source];
  };
  assertEquals(grid({}), ["edm", 5, "model"]);
  assertEquals(grid({ solver: "ddim" }), ["power", 3, "model"]);
  assertEquals(grid({ grid: "edm" }), ["edm", 7, "request"]); // the grid's own ρ, not the model's
  assertEquals(grid({ grid: "logsnr" }), ["logsnr", undefined, "request"]);
  assertEquals(grid({ rho: 4 }), ["edm", 4, "model"]);
  assertEquals(grid({ solver: "heun", rho: 2.5 }), ["power", 2.5, "model"]);
});

test("ρ: only on grids that have one; alone it applies to the default grid's family", () => {
  const grid = (req: SolveRequest) => {
    const p = planSolve(req, GMM2D);
    return [p.grid, p.rho];
  };
  assertEquals(grid({ grid: "power", rho: 3 }), ["power", 3]);
  assertEquals(grid({ grid: "power" }), ["power", 2]);
  assertEquals(grid({ grid: "quadratic", rho: 2 }), ["quadratic", 2]);
  assertEquals(grid({ grid: "edm", rho: 5 }), ["edm", 5]);
  // ρ alone: genie's quadratic default becomes power; heun's edm takes it.
  assertEquals(grid({ rho: 3 }), ["power", 3]);
  assertEquals(grid({ solver: "heun", rho: 3 }), ["edm", 3]);
  // Refused, naming rho: grids without ρ, given or by default, and quadratic with another ρ.
  for (
    const req of [
      { grid: "logsnr", rho: 3 },
      { grid: "uniform", rho: 3 },
      { grid: "quadratic", rho: 3 },
      { solver: "dpmpp-2m", rho: 3 },
      { solver: "unipc", rho: 7 },
    ]
  ) {
    assertStrictEquals(refusal(req).field, "rho", JSON.stringify(req));
  }
  assertMatch(refusal({ solver: "dpmpp-2m", rho: 3 }).message, /logsnr grid has no ρ \(dpmpp-2m's default\)/);
  const model = { ...GMM2D, defaults: { solvers: { genie: { grid: "uniform" as const } } } };
  assertMatch(refusal({ rho: 3 }, model).message, /gmm2d's default for genie/);
});

test("steps and NFE: one of them, an NFE the solver can use exactly, within the model's limits", () => {
  assertEquals(refusal({ steps: 3, nfe: 4 }).field, "nfe");
  const heun = refusal({ solver: "heun", nfe: 3 });
  assertEquals([heun.field, heun.valid], ["nfe", [2, 4]]);
  assertMatch(heun.message, /heun cannot use exactly 3 evaluations; the nearest it can use: 2 or 4/);
  assertEquals(refusal({ genie_derivative: "fd", nfe: 7 }).valid, [6, 8]);
  assertEquals(nearestNfes("heun", 4, { afs: true }), [3, 5]);
  const small: PlanModel = { ...GMM2D, limits: { max_steps: 8, max_nfe: 12 } };
  assertEquals(refusal({ steps: 9 }, small).field, "steps");
  assertEquals(refusal({ nfe: 13 }, small).field, "nfe");
  assertEquals(
    refusal({ nfe: 10, genie_derivative: "head" }, { ...small, limits: { max_steps: 9, max_nfe: 99 } }).field,
    "steps",
  );
  assertEquals(refusal({ solver: "heun", steps: 7 }, small).field, "nfe"); // 7 steps use 14
  assertEquals([planSolve({ steps: 4, afs: true, denoise: true }, GMM2D).nfe], [4]);
  assertEquals(refusal({ steps: 0 }).field, "steps");
  assertEquals(refusal({ nfe: 2.5 }).field, "nfe");
});

test("t_min and t_max: the schedule's by default, 0 < t_min < t_max ≤ the schedule's end", () => {
  const p = planSolve({ t_min: 0.01, t_max: 0.5 }, GMM2D);
  assertEquals([p.t_min, p.t_max], [0.01, 0.5]);
  assertEquals([planSolve({ t_max: 0.5 }, GMM2D).t_min], [1e-3]);
  assertEquals(refusal({ t_max: 1.5 }).field, "t_max");
  assertEquals(refusal({ t_min: 0.5, t_max: 0.5 }).field, "t_max");
  assertEquals(refusal({ t_min: 1 }).field, "t_min");
  assertEquals(refusal({ t_max: 1e-4 }).field, "t_max");
  assertEquals(refusal({ t_min: 0 }).field, "t_min");
  assertEquals(refusal({ t_min: -1 }).field, "t_min");
  const cosine = { ...GMM2D, schedule: vpCosineSchedule() };
  assertEquals([planSolve({}, cosine).t_max], [0.9946]);
  assertMatch(refusal({ t_max: 1 }, cosine).message, /at most 0\.9946 .*vp-cosine/);
  // Without a schedule (an edge that cannot read a worker's), the ends are the request's and unchecked.
  const unknown = planSolve({ t_max: 5 }, { ...GMM2D, schedule: undefined });
  assertEquals([unknown.t_min, unknown.t_max], [undefined, 5]);
});

test("solver, derivative and direction refusals name their field", () => {
  assertEquals(refusal({ solver: "magic" }).field, "solver");
  assertEquals(refusal({ solver: "ddim" }, { ...GMM2D, solvers: ["genie"] }).field, "solver");
  assertEquals(refusal({ solver: "ddim", genie_derivative: "jvp" }).field, "genie_derivative");
  assertEquals(refusal({ genie_derivative: "magic" }).field, "genie_derivative");
  const noHead = { ...GMM2D, derivatives: ["jvp", "fd"], unavailable: { head: { reason: "no head graph" } } };
  assertMatch(
    refusal({ genie_derivative: "head" }, noHead).message,
    /head is unavailable for gmm2d: no head graph/,
  );
  assertMatch(refusal({ genie_derivative: "exact" }, noHead).message, /analytic/);
  assertEquals(refusal({ solver: "unipc", order: 4 }).field, "order");
  assertEquals(refusal({ afs: true }, GMM2D, "encode").field, "afs");
  assertEquals(refusal({ denoise: true }, GMM2D, "encode").field, "denoise");
  // Independent refusals are all reported, the first one first.
  assertEquals(refusal({ solver: "magic", steps: 2000, t_min: -1, rho: 0 }).all, [
    "solver",
    "rho",
    "t_min",
    "steps",
  ]);
  // The rules that need no model, on their own (the command line checks them while parsing).
  assertThrowsField(() => checkSolveRequest({ grid: "uniform", rho: 2 }), "rho");
  assertThrowsField(() => checkSolveRequest({ t_min: 0.5, t_max: 0.1 }), "t_max");
  assertStrictEquals(checkSolveRequest({ solver: "heun" }).name, "heun");
});

function assertThrowsField(f: () => unknown, field: string): void {
  try {
    f();
  } catch (e) {
    assert(e instanceof PlanError, String(e));
    assertStrictEquals(e.field, field);
    return;
  }
  throw new Error(`expected a refusal naming ${field}`);
}

test("encoding: no AFS or denoising, the sampling grid reversed", () => {
  const p = planSolve({ steps: 4, grid: "edm" }, GMM2D, "encode");
  assertEquals([p.direction, p.afs, p.denoise, p.nfe], ["encode", false, false, 4]);
  const schedule = vpLinearSchedule();
  assertEquals(
    Array.from(planTimes(p, schedule)),
    Array.from(reversedGrid(makeGrid(schedule, { kind: "edm", steps: 4, rho: 7 }))),
  );
});

test("the predicted cost: graph calls per trajectory priced with the model's ratios", () => {
  const cost = (req: SolveRequest, model: PlanModel = GMM2D) => planSolve(req, model).cost;
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6 }), {
    calls: 12,
    cost: 24,
    cost_estimated: true,
    graph_calls: { eps: 6, jvp: 6 },
  });
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6 }, { ...GMM2D, costs: { jvp: 2.5 } }).cost, 21);
  // a model that answers ε and its JVP along the ODE in one call: one JVP-graph call a step, unless guided
  const oneCall = { ...GMM2D, costs: { jvp: 2.5 }, odeJvp: true };
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6 }, oneCall).graph_calls, { jvp: 6 });
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6 }, oneCall).cost, 15);
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6, denoise: true }, oneCall).graph_calls, {
    eps: 1,
    jvp: 5,
  });
  assertEquals(cost({ genie_derivative: "jvp", nfe: 6, guidance: 1 }, oneCall).graph_calls, {
    eps: 6,
    jvp: 6,
  });
  assertEquals(cost({ genie_derivative: "fd", steps: 4, afs: true, denoise: true }).graph_calls, { eps: 7 });
  assertEquals(cost({ genie_derivative: "exact", steps: 4 }).graph_calls, { head: 4 });
  assertEquals(cost({ genie_derivative: "exact", steps: 4, guidance: 1 }).graph_calls, { eps: 4, jvp: 4 });
  assertEquals(cost({ solver: "heun", steps: 3, afs: true }), {
    calls: 5,
    cost: 5,
    cost_estimated: false,
    graph_calls: { eps: 5 },
  });
});

test("planModelOf: the edge plans with what GET /v1/models says", () => {
  const info = normalizeModelInfo({
    name: "m",
    shape: [2],
    schedule: { type: "vp-cosine" },
    derivatives: ["jvp", "fd"],
    unavailable_derivatives: { head: { reason: "no head" } },
    default_grids: { genie: { grid: "edm", rho: 5, source: "model" }, ddim: { grid: "quadratic", rho: 2 } },
    costs: { eps: 1, jvp: 2.5, head: 1 },
    estimated_costs: ["head"],
    limits: { max_batch: 8, max_steps: 50 },
  })!;
  const model = planModelOf(info);
  assertEquals([model.schedule?.name, model.limits?.max_steps, model.costs], ["vp-cosine", 50, {
    eps: 1,
    jvp: 2.5,
  }]);
  const p = planSolve({}, model);
  assertEquals([p.grid, p.rho, p.grid_source, p.derivative, p.t_max, p.cost.cost], [
    "edm",
    5,
    "model",
    "jvp",
    0.9946,
    35,
  ]);
  assertEquals([planSolve({ solver: "ddim" }, model).grid_source], ["solver"]);
  assertEquals(refusal({ steps: 51 }, model).field, "steps");
  // A schedule this core cannot read leaves the ends to the worker.
  const odd = planModelOf(normalizeModelInfo({ name: "o", shape: [2], schedule: { type: "spiral" } })!);
  assertStrictEquals(odd.schedule, undefined);
});

test("workerSolveFields: the solver and steps or nfe with the API's defaults, the rest as given", () => {
  assertEquals(workerSolveFields({}), { solver: "genie", nfe: 10 });
  assertEquals(
    workerSolveFields({ solver: "heun", steps: 4, rho: 3, t_min: 0.01, afs: true, genie_derivative: "jvp" }),
    { solver: "heun", steps: 4, rho: 3, t_min: 0.01, afs: true, genie_derivative: "jvp" },
  );
  assertEquals(workerSolveFields({ nfe: 5, afs: true, t_max: 0.5 }, "encode"), {
    solver: "genie",
    nfe: 5,
    t_max: 0.5,
  });
});

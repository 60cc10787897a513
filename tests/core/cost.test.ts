/**
 * A run's price (core/cost.ts): nfe counts ε evaluations, calls counts graph calls of every kind, cost
 * weighs each call by its graph's ratio to one eps call; and the default grid a model can set per solver
 * (core/solvers/registry.ts `defaultGrid`).
 */
import { assertEquals, assertStrictEquals, test } from "../testing.ts";
import { costFields, effectiveCosts, FALLBACK_COSTS, runCost } from "../../core/cost.ts";
import { gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import { makeGrid } from "../../core/grid.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { defaultGrid, getSolver, nfeFor } from "../../core/solvers/registry.ts";
import type { DerivativeSource } from "../../core/solvers/types.ts";
import { normals, SPEC_2D } from "./fixtures.ts";

const schedule = vpLinearSchedule();
const mix = parseGmmSpec(SPEC_2D);
const x = normals(7, 4 * mix.dim);

function run(solver: string, steps: number, derivative?: DerivativeSource, afs = false) {
  const grid = makeGrid(schedule, { kind: "quadratic", steps });
  const input = { schedule, grid, x, batch: 4, dim: mix.dim, derivative, afs };
  return runSolver(getSolver(solver).fn(input), gmmEvaluator(mix)).stats;
}

test("genie with the jvp derivative: nfe = steps, calls = 2 × nfe, cost from the model's ratios", () => {
  for (const afs of [false, true]) {
    const stats = run("genie", 10, "jvp", afs);
    const nfe = nfeFor("genie", 10, { derivative: "jvp", afs });
    assertStrictEquals(stats.nfe, nfe);
    assertEquals(stats.graphCalls, { eps: nfe, head: 0, jvp: nfe });
    const measured = runCost(stats, { eps: 1, jvp: 2.9 });
    assertEquals([measured.nfe, measured.calls], [nfe, 2 * nfe]);
    assertStrictEquals(measured.cost, Math.round(nfe * 3.9 * 1e6) / 1e6);
    assertStrictEquals(measured.costEstimated, false);
    // Without a recorded ratio the JVP is priced at the fallback and the cost is marked estimated.
    const fallback = runCost(stats);
    assertEquals([fallback.cost, fallback.costEstimated], [nfe * (1 + FALLBACK_COSTS.jvp), true]);
  }
});

test("genie with the model's own derivative: one call per step, cost = nfe × the head's ratio", () => {
  const stats = run("genie", 8, "exact");
  assertEquals([stats.nfe, stats.calls], [8, 8]);
  assertEquals(stats.graphCalls, { eps: 0, head: 8, jvp: 0 });
  assertEquals(costFields(stats, { head: 1.05 }), {
    nfe: 8,
    calls: 8,
    cost: 8.4,
    cost_estimated: false,
    graph_calls: { head: 8 },
  });
  assertEquals([runCost(stats).cost, runCost(stats).costEstimated], [8, true]);
});

test("ddim and genie fd call eps only: nfe = calls = cost, never estimated", () => {
  for (const [solver, derivative] of [["ddim", undefined], ["genie", "fd"]] as const) {
    const stats = run(solver, 6, derivative);
    const c = runCost(stats, { jvp: 2 });
    assertEquals([c.nfe, c.calls, c.cost, c.costEstimated], [stats.nfe, stats.nfe, stats.nfe, false], solver);
    assertEquals(c.graphCalls, { eps: stats.nfe });
  }
});

test("effectiveCosts lists the ratios of the graphs a model calls and which are fallbacks", () => {
  assertEquals(effectiveCosts(["eps", "head", "jvp"], { head: 1.1 }), {
    costs: { eps: 1, head: 1.1, jvp: 3 },
    estimated: ["jvp"],
  });
  assertEquals(effectiveCosts(["eps"]), { costs: { eps: 1 }, estimated: [] });
});

test("defaultGrid: the model's grid for the solver, else the model's grid, else the solver's", () => {
  const defaults = { grid: "power" as const, rho: 3, solvers: { genie: { grid: "edm" as const, rho: 5 } } };
  assertEquals(defaultGrid("genie", defaults), { kind: "edm", rho: 5, source: "model" });
  assertEquals(defaultGrid("ddim", defaults), { kind: "power", rho: 3, source: "model" });
  assertEquals(defaultGrid("ddim", { solvers: { genie: { grid: "edm" } } }), {
    kind: "quadratic",
    source: "solver",
  });
  assertEquals(defaultGrid("heun"), { kind: "edm", rho: 7, source: "solver" });
  assertEquals(defaultGrid("genie", { solvers: { genie: { grid: "logsnr" } } }), {
    kind: "logsnr",
    source: "model",
  });
});

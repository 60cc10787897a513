/**
 * A model's sampling defaults and the price of a run, through the worker:
 *
 * - the grid of a request (gpu-worker/requests.ts): the request's own grid and ρ, else the model's
 *   default for the solver (model.json `defaults.solvers`), else the model's default (`defaults.grid`),
 *   else the solver's recommended grid — checked on the times the solver actually evaluates at;
 * - the reply's nfe, calls, cost and cost_estimated, priced with model.json `costs`, on an analytic model
 *   with ONNX Runtime (CPU) in a temporary models folder.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GridKind, makeGrid, reversedGrid } from "../../core/grid.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import type { EvalRequest } from "../../core/solvers/types.ts";
import { validateManifest } from "../../gpu-worker/manifest.ts";
import { BUILTIN_MANIFESTS } from "../../gpu-worker/models.ts";
import { planBatch, planEncode, type PlannedSolve } from "../../gpu-worker/requests.ts";
import type { ServedModel } from "../../gpu-worker/served.ts";
import { assert, assertEquals, maxAbsDiff } from "../testing.ts";
import { bytesOf, floats, post, startApp } from "./helpers.ts";

const GMM2D = BUILTIN_MANIFESTS.find((m) => m.name === "gmm2d")!;
const DEFAULTS = { grid: "power", rho: 3, solvers: { genie: { grid: "edm", rho: 5 } } };

function served(extra: Record<string, unknown> = {}): Map<string, ServedModel> {
  const info = validateManifest({ ...structuredClone(GMM2D), ...extra });
  return new Map([["gmm2d", { info, inputs: {}, maxBatch: 64 }]]);
}

/** The distinct times a planned run evaluates at, in order (zeros stand in for the model). */
function evaluatedTimes(plan: PlannedSolve): number[] {
  const times: number[] = [];
  runSolver(plan.run, (req: EvalRequest) => {
    if (times.at(-1) !== req.t[0]) times.push(req.t[0]);
    return { eps: new Float64Array(req.x.length), deriv: new Float64Array(req.x.length) };
  });
  return times;
}

/** Asserts the plan's grid and that its solver evaluates at exactly that grid's times. */
function assertGrid(plan: PlannedSolve, kind: GridKind, rho: number | undefined, what: string): void {
  assertEquals([plan.grid, plan.rho], [kind, rho], what);
  const schedule = plan.model.info.schedule;
  const grid = Array.from(makeGrid(schedule, { kind, steps: plan.steps, rho }));
  // Every grid time but the last (where only Heun's corrector evaluates).
  assertEquals(evaluatedTimes(plan).filter((t) => t !== grid.at(-1)), grid.slice(0, -1), what);
}

const batch = (fields: Record<string, unknown>) => ({
  v: 1,
  id: "r",
  model: "gmm2d",
  seeds: [1, 2],
  ...fields,
});

Deno.test("grid precedence: request > the model's default for the solver > the model's default > the solver's", () => {
  const plain = served(), tuned = served({ defaults: DEFAULTS });
  const cases: [Map<string, ServedModel>, Record<string, unknown>, GridKind, number | undefined, string][] = [
    // Without defaults: each solver's recommended grid.
    [plain, { solver: "genie", steps: 4 }, "quadratic", 2, "genie, no defaults"],
    [plain, { solver: "heun", steps: 4 }, "edm", 7, "heun, no defaults"],
    [plain, { solver: "dpmpp-2m", steps: 4 }, "logsnr", undefined, "dpmpp-2m, no defaults"],
    // The model's default for the solver, then its default for every solver.
    [tuned, { solver: "genie", steps: 4 }, "edm", 5, "genie: defaults.solvers.genie"],
    [tuned, { solver: "genie", nfe: 4, genie_derivative: "jvp" }, "edm", 5, "genie jvp"],
    [tuned, { solver: "ddim", steps: 4 }, "power", 3, "ddim: defaults.grid"],
    [tuned, { solver: "heun", steps: 3 }, "power", 3, "heun: defaults.grid over the solver's edm"],
    // The request's own grid wins, with its ρ or the grid's default ρ (not the model's).
    [tuned, { solver: "genie", steps: 4, grid: "logsnr" }, "logsnr", undefined, "request grid"],
    [tuned, { solver: "genie", steps: 4, grid: "edm" }, "edm", 7, "request grid, its default ρ"],
    [tuned, { solver: "genie", steps: 4, grid: "power", rho: 1.5 }, "power", 1.5, "request grid and ρ"],
    // A request's ρ alone bends the default grid.
    [tuned, { solver: "genie", steps: 4, rho: 4 }, "edm", 4, "request ρ on the model's grid"],
    [tuned, { solver: "ddim", steps: 4, rho: 2.5 }, "power", 2.5, "request ρ on the model's grid"],
  ];
  for (const [models, fields, kind, rho, what] of cases) {
    assertGrid(planBatch(batch(fields), models), kind, rho, what);
  }
  // Encoding integrates the same default grid in reverse.
  const enc = planEncode({
    v: 1,
    id: "e",
    model: "gmm2d",
    solver: "genie",
    steps: 4,
    images: bytesOf([0, 0]),
  }, tuned);
  assertEquals([enc.grid, enc.rho], ["edm", 5]);
  const times = evaluatedTimes(enc);
  const grid = Array.from(reversedGrid(makeGrid(enc.model.info.schedule, { kind: "edm", steps: 4, rho: 5 })));
  assertEquals(times, grid.slice(0, -1));
});

Deno.test("grid defaults: a request's ρ on a default grid without one is a 422 naming rho (core/plan.ts)", () => {
  const models = served({ defaults: { solvers: { genie: { grid: "logsnr" } } } });
  const plan = planBatch(batch({ solver: "genie", steps: 4 }), models);
  assertEquals([plan.grid, plan.rho], ["logsnr", undefined]);
  for (
    const fields of [{ solver: "genie", steps: 4, rho: 3 }, {
      solver: "genie",
      steps: 4,
      grid: "uniform",
      rho: 3,
    }]
  ) {
    try {
      planBatch(batch(fields), models);
      throw new Error("expected a rejection");
    } catch (e) {
      const err = e as { field?: string; status?: number };
      assertEquals([err.field, err.status], ["rho", 422], JSON.stringify(fields));
    }
  }
  // A default quadratic grid is the power grid with ρ = 2: a ρ alone makes it the power grid with that ρ.
  const quad = served({ defaults: { grid: "quadratic" } });
  assertGrid(
    planBatch(batch({ solver: "ddim", steps: 4, rho: 3 }), quad),
    "power",
    3,
    "ρ on a default quadratic",
  );
});

Deno.test({
  name:
    "worker replies report nfe, calls and cost priced with the manifest's costs, on the model's default grid",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = mkdtempSync(join(tmpdir(), "genie-costs-"));
    try {
      mkdirSync(join(dir, "gmm2d"));
      const manifest = { ...GMM2D, defaults: DEFAULTS, costs: { eps: 1, head: 1.05, jvp: 2.5 } };
      writeFileSync(join(dir, "gmm2d", "model.json"), JSON.stringify(manifest));
      const app = await startApp({ modelsDir: dir, models: ["gmm2d"] });
      try {
        const ask = async (fields: Record<string, unknown>) => {
          const r = await post(app, "/v1/batch", {
            v: 1,
            id: "c",
            model: "gmm2d",
            seeds: [3, 4, 5],
            ...fields,
          });
          assertEquals(r.status, 200, JSON.stringify(r.body));
          return r.body;
        };
        const price = (
          b: Record<string, unknown>,
        ) => [b.nfe, b.calls, b.cost, b.cost_estimated, b.graph_calls];

        await t.step(
          "genie with the jvp derivative: one call per step (ε and its JVP), cost 2.5",
          async () => {
            const b = await ask({ solver: "genie", nfe: 6, genie_derivative: "jvp" });
            assertEquals(price(b), [6, 6, 15, false, { jvp: 6 }]);
            assertEquals([b.grid, b.rho], ["edm", 5]);
          },
        );

        await t.step("genie with the head: calls = nfe, cost = nfe × 1.05", async () => {
          const b = await ask({ solver: "genie", nfe: 6 });
          assertEquals(price(b), [6, 6, 6.3, false, { head: 6 }]);
        });

        await t.step("ddim: nfe = calls = cost", async () => {
          const b = await ask({ solver: "ddim", nfe: 5 });
          assertEquals(price(b), [5, 5, 5, false, { eps: 5 }]);
          assertEquals([b.grid, b.rho], ["power", 3]);
        });

        await t.step("the default grid is the one an explicit request for it gets", async () => {
          const byDefault = await ask({ solver: "genie", nfe: 6 });
          const explicit = await ask({ solver: "genie", nfe: 6, grid: "edm", rho: 5 });
          const quadratic = await ask({ solver: "genie", nfe: 6, grid: "quadratic" });
          assertEquals(maxAbsDiff(floats(byDefault.data), floats(explicit.data)), 0);
          assert(maxAbsDiff(floats(byDefault.data), floats(quadratic.data)) > 1e-4, "the grid matters");
          assertEquals([quadratic.grid, quadratic.rho], ["quadratic", 2]);
        });

        await t.step("GET /v1/models lists the default grids and the costs", async () => {
          const [m] = await (await app.request("/v1/models")).json();
          assertEquals(m.default_grids.genie, { grid: "edm", rho: 5, source: "model" });
          assertEquals(m.default_grids.ddim, { grid: "power", rho: 3, source: "model" });
          assertEquals(m.costs, { eps: 1, head: 1.05, jvp: 2.5 });
          assertEquals(m.estimated_costs, undefined);
        });
      } finally {
        await app.shutdown();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

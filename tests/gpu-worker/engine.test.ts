/** The in-process engine: ONNX models behind an async evaluator, as the CLI uses them. */
import { makeGrid } from "../../core/grid.ts";
import { gmmEvaluator } from "../../core/gmm.ts";
import { gaussianBatch } from "../../core/rng.ts";
import { runSolver, runSolverAsync } from "../../core/solvers/drive.ts";
import { getSolver } from "../../core/solvers/registry.ts";
import { mixtureFromSource } from "../../gpu-worker/analytic.ts";
import { openModel } from "../../gpu-worker/engine.ts";
import { defaultModelsDir } from "../../gpu-worker/models.ts";
import { assert, assertEquals, maxAbsDiff } from "../testing.ts";

Deno.test({
  name: "openModel samples gmm2d like the exact mixture, and splits large batches bit-identically",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const model = await openModel("gmm2d", defaultModelsDir(), { providers: ["cpu"], threads: 2 });
    const split = await openModel("gmm2d", defaultModelsDir(), {
      providers: ["cpu"],
      threads: 2,
      maxBatch: 2,
    });
    try {
      assertEquals(model.shape, [2]);
      assertEquals(model.provider, "cpu");
      assertEquals(model.classes, { count: 2, nullClass: 2 });
      assertEquals(model.derivatives, ["head", "jvp", "fd", "exact"]);
      const mix = { ...(await mixtureFromSource(model.manifest.analytic!)), schedule: model.schedule };
      const input = {
        schedule: model.schedule,
        grid: makeGrid(model.schedule, { kind: "quadratic", steps: 8 }),
        x: gaussianBatch([1, 2, 3, 4, 5], 2),
        batch: 5,
        dim: 2,
        derivative: "head" as const,
      };
      const genie = getSolver("genie").fn;
      const onnx = await runSolverAsync(genie(input), model.evaluate);
      const exact = runSolver(genie(input), gmmEvaluator(mix));
      assertEquals(onnx.stats, exact.stats);
      assert(maxAbsDiff(onnx.x, exact.x) < 1e-4, `max diff ${maxAbsDiff(onnx.x, exact.x)}`);
      const chunked = await runSolverAsync(genie(input), split.evaluate);
      assertEquals(chunked.x, onnx.x);
      assert(split.ortStats.calls === 3 * model.ortStats.calls, "5 samples in calls of 2");
      const jvp = await runSolverAsync(genie({ ...input, derivative: "jvp" }), model.evaluate);
      assert(maxAbsDiff(jvp.x, exact.x) < 1e-4, "jvp and head agree for an analytic model");
    } finally {
      await model.close();
      await split.close();
    }
  },
});

Deno.test({
  name: "openModel with defer: prepare loads only the graphs a run calls; another graph still works",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lazy = await openModel("gmm2d", defaultModelsDir(), {
      providers: ["cpu"],
      threads: 1,
      defer: true,
    });
    const eager = await openModel("gmm2d", defaultModelsDir(), { providers: ["cpu"], threads: 1 });
    try {
      assertEquals(lazy.provider, "not started");
      await lazy.prepare(["eps"], 5);
      assertEquals(lazy.provider, "cpu");
      const input = {
        schedule: lazy.schedule,
        grid: makeGrid(lazy.schedule, { kind: "quadratic", steps: 6 }),
        x: gaussianBatch([7, 8, 9, 10, 11], 2),
        batch: 5,
        dim: 2,
      };
      // a run on the prepared graph, then one that needs a graph prepare() did not load
      for (const solver of ["ddim", "genie"]) {
        const run = (m: typeof lazy) =>
          runSolverAsync(getSolver(solver).fn({ ...input, derivative: "head" }), m.evaluate);
        const [a, b] = [await run(lazy), await run(eager)];
        assertEquals(Array.from(a.x), Array.from(b.x), `${solver}: bit-identical to the eager engine`);
      }
    } finally {
      await lazy.close();
      await eager.close();
    }
  },
});

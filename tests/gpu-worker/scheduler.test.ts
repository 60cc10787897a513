/** The scheduler's order: priorities first, FIFO within a priority, large requests split across calls. */
import { setImmediate } from "node:timers";
import type { EvalRequest, SolverRun } from "../../core/solvers/types.ts";
import type { BatchOutputs, Inference, WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { BUILTIN_MANIFESTS } from "../../gpu-worker/models.ts";
import { validateManifest } from "../../gpu-worker/manifest.ts";
import { Scheduler, type ServedModel } from "../../gpu-worker/scheduler.ts";
import { assertEquals } from "../testing.ts";

/** A solver-like run of `steps` ε requests for `rows` samples whose x holds the tag, returning x. */
function* tagged(tag: number, rows: number, steps: number): SolverRun {
  for (let step = 0; step < steps; step++) {
    const req: EvalRequest = {
      x: new Float64Array(rows * 2).fill(tag),
      t: new Float64Array(rows).fill(0.5),
      want: "eps",
      step,
      steps,
    };
    yield req;
  }
  return new Float64Array([tag]);
}

/** Answers every call after the test releases it; records which tags each call carried. */
class ManualInference implements Inference {
  calls: number[][] = [];
  #release: (() => void)[] = [];
  run(_model: string, _graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs> {
    const x = new Float32Array(feeds.x.data);
    const tags: number[] = [];
    for (let i = 0; i < x.length; i += 2) tags.push(x[i]);
    this.calls.push(tags);
    return new Promise((resolve) => {
      this.#release.push(() => resolve({ outputs: { eps: new Float32Array(x.length) }, ms: 0 }));
    });
  }
  get waiting(): number {
    return this.#release.length;
  }
  releaseOne(): void {
    this.#release.shift()?.();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("priorities first, then FIFO; an evaluation larger than the batch is split", async () => {
  const info = validateManifest(structuredClone(BUILTIN_MANIFESTS[0]));
  info.graphPaths = { eps: "eps.onnx" };
  const model: ServedModel = { info, inputs: { eps: ["x", "t"] }, maxBatch: 4 };
  const inference = new ManualInference();
  const scheduler = new Scheduler(inference, { maxBatch: 4 });
  const done: number[] = [];
  const submit = (tag: number, rows: number, steps: number, priority = 0) =>
    scheduler.submit({ model, run: tagged(tag, rows, steps), priority }).then((r) => done.push(r.x[0]));
  const all = [submit(1, 1, 2)]; // starts at once, alone
  await tick();
  all.push(submit(2, 6, 1), submit(3, 1, 1), submit(4, 1, 1, 5)); // queued behind call 1
  while (done.length < 4) {
    await tick();
    inference.releaseOne();
  }
  await Promise.all(all);
  assertEquals(inference.calls, [
    [1], // the first request, alone
    [4, 1, 2, 2], // priority 5 first, then FIFO: 1's second step, then as much of 2 as fits
    [2, 2, 2, 2], // the rest of 2 (split across two calls)
    [3],
  ]);
  assertEquals(done, [4, 1, 2, 3]);
});

Deno.test("requests arriving in one turn of the event loop share their first call", async () => {
  const info = validateManifest(structuredClone(BUILTIN_MANIFESTS[0]));
  info.graphPaths = { eps: "eps.onnx" };
  const model: ServedModel = { info, inputs: { eps: ["x", "t"] }, maxBatch: 64 };
  const inference = new ManualInference();
  const scheduler = new Scheduler(inference);
  const results = Array.from({ length: 32 }, (_, i) => scheduler.submit({ model, run: tagged(i, 1, 3) }));
  assertEquals(inference.calls.length, 0, "nothing dispatched inside submit");
  await new Promise((r) => setImmediate(r));
  assertEquals(inference.calls.map((c) => c.length), [32], "one call with all 32 requests");
  while (inference.waiting) {
    inference.releaseOne();
    await tick();
  }
  assertEquals((await Promise.all(results)).map((r) => r.x[0]), Array.from({ length: 32 }, (_, i) => i));
  assertEquals(inference.calls.map((c) => c.length), [32, 32, 32], "three steps, three calls");
  // A lone request is not held back by a timer: it is dispatched within the same macrotask hop.
  const lone = scheduler.submit({ model, run: tagged(99, 1, 1) });
  await new Promise((r) => setImmediate(r));
  assertEquals(inference.calls.length, 4);
  inference.releaseOne();
  assertEquals((await lone).x[0], 99);
});

/**
 * The scheduler's order: priorities first, then a rotation (deficit round-robin) within a priority;
 * large requests are split across calls and share the inference with small ones.
 */
import { setImmediate } from "node:timers";
import type { EvalRequest, SolverRun } from "../../core/solvers/types.ts";
import type { BatchOutputs, Inference, WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { BUILTIN_MANIFESTS } from "../../gpu-worker/models.ts";
import { validateManifest } from "../../gpu-worker/manifest.ts";
import { Scheduler } from "../../gpu-worker/scheduler.ts";
import type { ServedModel } from "../../gpu-worker/served.ts";
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
  /** The inference time each call reports: ms per row, by model (0 when not listed). */
  constructor(readonly msPerRow: Record<string, number> = {}) {}
  run(model: string, _graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs> {
    const x = new Float32Array(feeds.x.data);
    const tags: number[] = [];
    for (let i = 0; i < x.length; i += 2) tags.push(x[i]);
    this.calls.push(tags);
    return new Promise((resolve) => {
      const ms = tags.length * (this.msPerRow[model] ?? 0);
      this.#release.push(() => resolve({ outputs: { eps: new Float32Array(x.length) }, ms }));
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

Deno.test("priorities first, then turns; an evaluation larger than the batch is split", async () => {
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
    [4, 1, 2, 2], // priority 5 first, then in turn: 1's second step, then as much of 2 as fits
    [3, 2, 2, 2], // 4, 1 and 2 were served, so 3 leads; the rest of 2 rides along
    [2], // the last of 2 (split across three calls)
  ]);
  assertEquals(done, [4, 1, 3, 2]);
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

Deno.test("a small request beside a huge one on another model waits about one quantum per step", async () => {
  const served = (name: string): ServedModel => {
    const info = validateManifest({ ...structuredClone(BUILTIN_MANIFESTS[0]), name });
    info.graphPaths = { eps: "eps.onnx" };
    return { info, inputs: { eps: ["x", "t"] }, maxBatch: 64 };
  };
  const big = served("big"), small = served("small");
  // the huge request costs 1 ms a row, the small one 0.01 ms: a 20 ms quantum buys 20 rows of the huge
  const inference = new ManualInference({ big: 1, small: 0.01 });
  const scheduler = new Scheduler(inference, { quantumMs: 20 });
  const order: number[] = [];
  const huge = scheduler.submit({ model: big, run: tagged(1, 64, 4) }).then((r) => order.push(r.x[0]));
  await new Promise((r) => setImmediate(r)); // the first call (64 rows) is running
  const little = scheduler.submit({ model: small, run: tagged(2, 1, 3) }).then((r) => order.push(r.x[0]));
  while (order.length < 2) {
    await tick();
    inference.releaseOne();
  }
  await Promise.all([huge, little]);
  const calls = inference.calls.map((c) => `${c[0]}×${c.length}`);
  assertEquals(calls, [
    "1×64", // alone: whole batches, and the cost per row is learnt
    "1×20", // the small request is waiting on another model: the call is cut to the leader's quantum
    "2×1",
    "1×20",
    "2×1",
    "1×20",
    "2×1", // the small request is done after 3 of its own calls and 3 slices of the huge one
    "1×4", // alone again: the rest of the step
    "1×64",
    "1×64",
  ]);
  assertEquals(order, [2, 1]);
});

Deno.test("a request alone fills whole batches whatever its cost", async () => {
  const info = validateManifest(structuredClone(BUILTIN_MANIFESTS[0]));
  info.graphPaths = { eps: "eps.onnx" };
  const model: ServedModel = { info, inputs: { eps: ["x", "t"] }, maxBatch: 8 };
  const inference = new ManualInference({ [info.manifest.name]: 100 });
  const scheduler = new Scheduler(inference, { quantumMs: 1 });
  const done = scheduler.submit({ model, run: tagged(5, 8, 3) });
  while (inference.calls.length < 3 || inference.waiting) {
    await tick();
    inference.releaseOne();
  }
  assertEquals((await done).x[0], 5);
  assertEquals(inference.calls.map((c) => c.length), [8, 8, 8]);
});

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
  /** Lets the event loop turn and answers one call at a time until `done()` holds. */
  async releaseUntil(done: () => boolean): Promise<void> {
    while (!done()) {
      await tick();
      this.releaseOne();
    }
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A model named `name` (default the first built-in's) with an eps graph and a batch limit. */
function served(name: string = BUILTIN_MANIFESTS[0].name, maxBatch = 64): ServedModel {
  const info = validateManifest({ ...structuredClone(BUILTIN_MANIFESTS[0]), name });
  info.graphPaths = { eps: "eps.onnx" };
  return { info, inputs: { eps: ["x", "t"] }, maxBatch };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("priorities first, then turns; an evaluation larger than the batch is split", async () => {
  const model = served(undefined, 4);
  const inference = new ManualInference();
  const scheduler = new Scheduler(inference, { maxBatch: 4 });
  const done: number[] = [];
  const submit = (tag: number, rows: number, steps: number, priority = 0) =>
    scheduler.submit({ model, run: tagged(tag, rows, steps), priority }).then((r) => done.push(r.x[0]));
  const all = [submit(1, 1, 2)]; // starts at once, alone
  await tick();
  all.push(submit(2, 6, 1), submit(3, 1, 1), submit(4, 1, 1, 5)); // queued behind call 1
  await inference.releaseUntil(() => done.length >= 4);
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
  const model = served(undefined, 64);
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

Deno.test("a small request beside a huge one on another model waits one slice of it per turn, not per step", async () => {
  const big = served("big"), small = served("small");
  // the huge request costs 1 ms a row, the small one 0.01 ms: a 20 ms quantum buys 20 rows of the huge
  const inference = new ManualInference({ big: 1, small: 0.01 });
  const scheduler = new Scheduler(inference, { quantumMs: 20 });
  const order: number[] = [];
  const huge = scheduler.submit({ model: big, run: tagged(1, 64, 4) }).then((r) => order.push(r.x[0]));
  await new Promise((r) => setImmediate(r)); // the first call (64 rows) is running
  const little = scheduler.submit({ model: small, run: tagged(2, 1, 3) }).then((r) => order.push(r.x[0]));
  await inference.releaseUntil(() => order.length >= 2);
  await Promise.all([huge, little]);
  const calls = inference.calls.map((c) => `${c[0]}×${c.length}`);
  assertEquals(calls, [
    "1×64", // alone: whole batches, and the cost per row is learnt
    "1×20", // the small request is waiting on another model: the call is cut to the leader's quantum
    "2×1", // the small request's cost is not known yet: one call, then the huge one's turn
    "1×19", // 20 ms less the 0.25 ms call overhead its previous turn overspent (gpu-worker/scheduler.ts)
    "2×1", // its turn: a quantum of 20 ms buys its next calls, made back to back as each returns
    "2×1", // the small request is done after 3 of its own calls and 2 slices of the huge one
    "1×25", // alone again: the rest of the step
    "1×64",
    "1×64",
  ]);
  assertEquals(order, [2, 1]);
});

Deno.test("a request alone: whole batches while its cost is unknown, then calls of at most 4 quanta", async () => {
  const model = served(undefined, 8);
  const { info } = model;
  // 1 ms a row and a 1 ms quantum: a lone call is cut to 4 rows once the cost is known
  const inference = new ManualInference({ [info.manifest.name]: 1 });
  const scheduler = new Scheduler(inference, { quantumMs: 1 });
  const done = scheduler.submit({ model, run: tagged(5, 8, 3) });
  await inference.releaseUntil(() => inference.calls.length >= 5 && !inference.waiting);
  assertEquals((await done).x[0], 5);
  assertEquals(inference.calls.map((c) => c.length), [8, 4, 4, 4, 4]);
  // cheap rows: the batch limit binds first
  const cheap = new ManualInference({ [info.manifest.name]: 0.01 });
  const fast = new Scheduler(cheap, { quantumMs: 1 });
  const quick = fast.submit({ model, run: tagged(6, 8, 3) });
  await cheap.releaseUntil(() => cheap.calls.length >= 3 && !cheap.waiting);
  assertEquals((await quick).x[0], 6);
  assertEquals(cheap.calls.map((c) => c.length), [8, 8, 8]);
});

Deno.test("two huge requests on different models take turns of one quantum each", async () => {
  const inference = new ManualInference({ a: 1, b: 1 });
  const scheduler = new Scheduler(inference, { quantumMs: 20 });
  const done: number[] = [];
  const first = scheduler.submit({ model: served("a"), run: tagged(1, 64, 3) }).then((r) =>
    done.push(r.x[0])
  );
  await new Promise((r) => setImmediate(r)); // a's first call (64 rows, alone) is running
  const second = scheduler.submit({ model: served("b"), run: tagged(2, 64, 3) }).then((r) =>
    done.push(r.x[0])
  );
  await inference.releaseUntil(() => done.length >= 2);
  await Promise.all([first, second]);
  const calls = inference.calls.map((c) => ({ tag: c[0], rows: c.length }));
  // from b's second call (its cost learnt) until one of them is done, turns alternate and each spends a
  // quantum: 20 rows, in one call or split where a step ends (its next step goes on in the same turn)
  const from = calls.findIndex((c) => c.tag === 2) + 1;
  const until = Math.min(calls.findLastIndex((c) => c.tag === 1), calls.findLastIndex((c) => c.tag === 2));
  const turns: { tag: number; rows: number }[] = [];
  for (const c of calls.slice(from, until + 1)) {
    if (turns.at(-1)?.tag === c.tag) turns.at(-1)!.rows += c.rows;
    else turns.push({ ...c });
  }
  assertEquals(turns.length > 6, true, JSON.stringify(calls));
  assertEquals(turns.every((t) => t.rows <= 20), true, JSON.stringify(calls));
  assertEquals(calls.filter((c) => c.tag === 1).reduce((n, c) => n + c.rows, 0), 3 * 64);
  assertEquals(calls.filter((c) => c.tag === 2).reduce((n, c) => n + c.rows, 0), 3 * 64);
});

Deno.test("a request of many cheap calls pays each call's overhead: its turn ends within the quantum", async () => {
  // the cheap request's calls report almost no inference time
  const inference = new ManualInference({ big: 1, cheap: 0.001 });
  const scheduler = new Scheduler(inference, { quantumMs: 5 });
  const done: number[] = [];
  const huge = scheduler.submit({ model: served("big"), run: tagged(1, 64, 4) }).then((r) =>
    done.push(r.x[0])
  );
  await new Promise((r) => setImmediate(r));
  const cheap = scheduler.submit({ model: served("cheap"), run: tagged(2, 1, 100) }).then((r) =>
    done.push(r.x[0])
  );
  await inference.releaseUntil(() => done.length >= 2);
  await Promise.all([huge, cheap]);
  // while both run, the cheap request's turns hold at most 5 / 0.25 = 20 calls
  const tags = inference.calls.map((c) => c[0]);
  const until = Math.min(tags.lastIndexOf(1), tags.lastIndexOf(2));
  let run = 0, longest = 0;
  for (const t of tags.slice(0, until + 1)) {
    run = t === 2 ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  assertEquals(longest > 1 && longest <= 20, true, `longest run of cheap calls: ${longest}`);
});

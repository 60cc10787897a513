/**
 * The self-restarting inference thread (gpu-worker/supervisor.ts): a crash rejects only the call in
 * flight, later calls wait for the new thread; repeated failures end in a permanent failure; close()
 * during a restart leaks nothing; /healthz and /metrics report the restart. The crashes are real: the
 * fixture thread (fixtures/crashing_thread.ts) throws an uncaught error on a batch of 13 rows.
 */
import { InferenceThread, type ThreadOptions, type WireTensor } from "../../gpu-worker/inference.ts";
import type { LoadedModel } from "../../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { type StartThread, SupervisedInference, type SupervisedThread } from "../../gpu-worker/supervisor.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../testing.ts";
import { errorOf, post, sleep, startApp, until } from "./helpers.ts";

const FIXTURE = new URL("./fixtures/crashing_thread.ts", import.meta.url);
/** The batch size that makes the fixture thread crash. */
const CRASH_ROWS = 13;
const OPTIONS: ThreadOptions = { providers: ["cpu"], intraOpThreads: 1, warmup: false };

let gmm2d: Promise<LoadedModel[]> | undefined;
/** The gmm2d model (built if needed). */
function models(): Promise<LoadedModel[]> {
  gmm2d ??= loadRegistry(defaultModelsDir(), { only: ["gmm2d"] }).then((r) => [...r.models.values()]);
  return gmm2d;
}

/** ε feeds of gmm2d for `rows` samples (null class). */
function feeds(rows: number): Record<string, WireTensor> {
  const x = Float32Array.from({ length: rows * 2 }, (_, i) => (i % 7) / 7 - 0.5);
  const t = new Float32Array(rows).fill(0.5);
  const cls = new BigInt64Array(rows).fill(2n);
  return {
    x: { type: "float32", data: x.buffer, dims: [rows, 2] },
    t: { type: "float32", data: t.buffer, dims: [rows] },
    class: { type: "int64", data: cls.buffer, dims: [rows] },
  };
}

/** A thread without ORT whose crash the test triggers; it may also be dead on arrival. */
class FakeThread implements SupervisedThread {
  readonly models = new Map();
  failure: Error | undefined;
  closed = false;
  #listeners: ((err: Error) => void)[] = [];
  constructor(deadOnArrival?: string) {
    if (deadOnArrival) this.failure = new Error(deadOnArrival);
  }
  onFailure(fn: (err: Error) => void): void {
    if (this.failure) fn(this.failure);
    else this.#listeners.push(fn);
  }
  crash(message: string): void {
    this.failure = new Error(message);
    for (const fn of this.#listeners.splice(0)) fn(this.failure);
  }
  run() {
    return this.failure ? Promise.reject(this.failure) : Promise.resolve({ outputs: {}, ms: 0 });
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

Deno.test("supervisor: a crash rejects the call in flight; the next call runs on a restarted thread", async () => {
  const lines: string[] = [];
  const inference = await SupervisedInference.start(await models(), OPTIONS, {
    url: FIXTURE,
    log: (line) => lines.push(line),
  });
  try {
    const before = await inference.run("gmm2d", "eps", feeds(4));
    assertEquals(before.outputs.eps.length, 8);
    assertEquals([inference.restarts, inference.restarting, inference.lastCrash], [0, false, undefined]);

    await assertRejects(inference.run("gmm2d", "eps", feeds(CRASH_ROWS)), /injected crash on a batch of 13/);
    assert(inference.restarting, "restarting right after the crash");
    assertEquals(inference.failure, undefined);
    await until(() => !inference.restarting, 30_000, "the restart");

    const after = await inference.run("gmm2d", "eps", feeds(4));
    assertEquals(after.outputs.eps, before.outputs.eps, "the same results on the new thread");
    assertEquals(inference.restarts, 1);
    assertEquals(inference.failure, undefined);
    assertMatch(inference.lastCrash!, /injected crash/);
    assert(lines.some((l) => /^inference thread crashed: .*injected crash/.test(l)), lines.join("\n"));
    assert(lines.some((l) => /^inference thread restarted \(restart 1,/.test(l)), lines.join("\n"));
  } finally {
    await inference.close();
  }
});

Deno.test("supervisor: calls made during the restart wait for the new thread", async () => {
  const inference = await SupervisedInference.start(await models(), OPTIONS, { url: FIXTURE });
  try {
    const expected = await inference.run("gmm2d", "eps", feeds(5));
    await assertRejects(inference.run("gmm2d", "eps", feeds(CRASH_ROWS)), /injected crash/);
    assert(inference.restarting);
    const waiting = [1, 2, 3].map(() => inference.run("gmm2d", "eps", feeds(5)));
    for (const r of await Promise.all(waiting)) assertEquals(r.outputs.eps, expected.outputs.eps);
    assertEquals(inference.restarts, 1);
    assertEquals(inference.restarting, false);
  } finally {
    await inference.close();
  }
});

Deno.test("supervisor: restarts that keep failing end in a permanent failure", async () => {
  let starts = 0;
  const lines: string[] = [];
  const startThread: StartThread = (m, o, u) =>
    ++starts === 1 ? InferenceThread.start(m, o, u) : Promise.reject(new Error("no device left"));
  const inference = await SupervisedInference.start(await models(), OPTIONS, {
    url: FIXTURE,
    startThread,
    backoffMs: 5,
    maxBackoffMs: 20,
    maxRestartAttempts: 3,
    log: (line) => lines.push(line),
  });
  try {
    await assertRejects(inference.run("gmm2d", "eps", feeds(CRASH_ROWS)), /injected crash/);
    const waiting = inference.run("gmm2d", "eps", feeds(2));
    const gaveUp = /the inference thread could not be restarted \(3 attempts; last: no device left\)/;
    await assertRejects(waiting, gaveUp);
    assertMatch(inference.failure!.message, gaveUp);
    assertEquals([starts, inference.restarts, inference.restarting], [4, 0, false]);
    await assertRejects(inference.run("gmm2d", "eps", feeds(2)), gaveUp);
    assertEquals(lines.filter((l) => /restart attempt \d of 3 failed: no device left/.test(l)).length, 3);
    assert(lines.some((l) => /failed for good/.test(l)), lines.join("\n"));
  } finally {
    await inference.close();
  }
});

Deno.test("supervisor: a crash loop (too many crashes within the window) ends in a permanent failure", async () => {
  // The first thread crashes when told; every replacement is dead on arrival.
  const threads: FakeThread[] = [];
  const startThread: StartThread = () => {
    threads.push(new FakeThread(threads.length ? "crashed while starting" : undefined));
    return Promise.resolve(threads.at(-1)!);
  };
  const inference = await SupervisedInference.start([], OPTIONS, {
    startThread,
    backoffMs: 1,
    maxCrashes: 2,
    crashWindowMs: 60_000,
  });
  try {
    await inference.run("m", "eps", {});
    threads[0].crash("first crash");
    const waiting = inference.run("m", "eps", {});
    const loop = /the inference thread crashed 3 times within 60 s \(last: crashed while starting\)/;
    await assertRejects(waiting, loop);
    assertMatch(inference.failure!.message, loop);
    assertEquals(threads.length, 3);
    assertEquals(inference.restarting, false);
    assert(threads.every((t) => t.closed), "every dead thread is closed");
  } finally {
    await inference.close();
  }
});

Deno.test("supervisor: close() during the backoff rejects waiting calls and stops the timer", async () => {
  const threads: FakeThread[] = [];
  const startThread: StartThread = () => {
    threads.push(new FakeThread());
    return Promise.resolve(threads.at(-1)!);
  };
  const inference = await SupervisedInference.start([], OPTIONS, { startThread, backoffMs: 60_000 });
  threads[0].crash("crash");
  const waiting = inference.run("m", "eps", {});
  await inference.close();
  await assertRejects(waiting, /the inference thread is closed/);
  await assertRejects(inference.run("m", "eps", {}), /the inference thread is closed/);
  assertEquals(threads.length, 1, "no thread started after close()");
  assert(threads[0].closed);
  assertEquals(inference.restarting, false);
});

Deno.test("supervisor: close() while the new thread starts closes it when it arrives", async () => {
  const gate = Promise.withResolvers<void>();
  const restarting = Promise.withResolvers<void>();
  const threads: InferenceThread[] = [];
  const startThread: StartThread = async (m, o, u) => {
    if (threads.length > 0) {
      restarting.resolve();
      await gate.promise;
    }
    const thread = await InferenceThread.start(m, o, u);
    threads.push(thread);
    return thread;
  };
  const inference = await SupervisedInference.start(await models(), OPTIONS, {
    url: FIXTURE,
    startThread,
    backoffMs: 1,
  });
  await assertRejects(inference.run("gmm2d", "eps", feeds(CRASH_ROWS)), /injected crash/);
  const waiting = inference.run("gmm2d", "eps", feeds(2));
  await restarting.promise;
  const closing = inference.close();
  await assertRejects(waiting, /the inference thread is closed/);
  gate.resolve();
  await closing;
  assertEquals(threads.length, 2, "the restart's thread did arrive");
  await assertRejects(threads[1].run("gmm2d", "eps", feeds(2)), /the inference thread is closed/);
  assertEquals([inference.restarts, inference.restarting], [0, false]);
});

Deno.test("worker app: /healthz says restarting, then ok; /metrics counts the restart", async () => {
  // A backoff long enough to see the restart from /healthz.
  const app = await startApp({
    models: ["gmm2d"],
    threadUrl: FIXTURE,
    warmup: false,
    restart: { backoffMs: 500 },
  });
  const health = async () => {
    const res = await app.request("/healthz");
    return { status: res.status, headers: res.headers, body: await res.json() };
  };
  try {
    let h = await health();
    assertEquals([h.status, h.body.status, h.body.inference_restarts], [200, "ok", 0]);

    const seeds = Array.from({ length: CRASH_ROWS }, (_, i) => i);
    const crashed = await post(app, "/v1/batch", {
      v: 1,
      id: "c",
      model: "gmm2d",
      solver: "ddim",
      steps: 3,
      seeds,
    });
    assertEquals(crashed.status, 500, JSON.stringify(crashed.body));
    assertEquals(errorOf(crashed).code, "internal");
    assertMatch(errorOf(crashed).message, /injected crash/);

    h = await health();
    assertEquals([h.status, h.body.status, h.headers.get("retry-after")], [503, "restarting", "1"]);
    assertMatch(h.body.error, /^inference thread crashed: .*injected crash.*; restarting$/);
    assertEquals(h.body.models, ["gmm2d"]);

    const t0 = Date.now();
    while (h.body.status === "restarting" && Date.now() - t0 < 30_000) {
      await sleep(20);
      h = await health();
    }
    assertEquals([h.status, h.body.status, h.body.inference_restarts], [200, "ok", 1]);
    assertMatch(h.body.last_crash, /injected crash/);

    const ok = await post(app, "/v1/batch", {
      v: 1,
      id: "ok",
      model: "gmm2d",
      solver: "ddim",
      steps: 3,
      seeds: [1, 2],
    });
    assertEquals(ok.status, 200, JSON.stringify(ok.body));

    const text = await (await app.request("/metrics")).text();
    assert(text.includes("# TYPE genie_worker_inference_restarts_total counter\n"), text);
    assert(text.includes("\ngenie_worker_inference_restarts_total 1\n"), text);
  } finally {
    await app.shutdown();
  }
});

Deno.test("a thread that fails to load its models is not left running", async () => {
  const [info] = await models();
  const broken: LoadedModel = { ...info, graphPaths: { ...info.graphPaths, eps: "/nonexistent/eps.onnx" } };
  const channel = new BroadcastChannel("genie-test-heartbeat");
  let beats = 0;
  channel.onmessage = () => beats++;
  try {
    const heartbeat = new URL("./fixtures/heartbeat_thread.ts", import.meta.url);
    // the heartbeat is heard from a thread that started well, and stops when it is closed
    const live = await InferenceThread.start([info], OPTIONS, heartbeat);
    await until(() => beats > 0, 10_000, "a heartbeat from a live thread");
    await live.close();
    await sleep(100);
    const closed = beats;
    await sleep(300);
    assertEquals(beats, closed, "a closed thread no longer beats");
    await assertRejects(() => InferenceThread.start([broken], OPTIONS, heartbeat), Error, "eps.onnx");
    await sleep(100);
    const after = beats;
    await sleep(300);
    assertEquals(beats, after, "the thread still beats after start() failed");
  } finally {
    channel.close();
  }
});

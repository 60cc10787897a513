/**
 * Step-level continuous batching: a request's result does not depend on what it was batched with;
 * deadlines and cancellation stop work between steps; a full queue answers 429; shutdown drains.
 */
import { InferenceThread, type WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { assert, assertEquals } from "../testing.ts";
import { errorOf, post, type Reply, sleep, startApp, until } from "./helpers.ts";

interface CallLog {
  at: number;
  rows: number;
  times: Set<number>;
}

Deno.test({
  name: "continuous batching on mnist-mix",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const registry = await loadRegistry(defaultModelsDir(), { only: ["mnist-mix"] });
    const thread = await InferenceThread.start([...registry.models.values()], {
      providers: ["cpu"],
      intraOpThreads: 2,
    });
    const calls: CallLog[] = [];
    // The real inference thread, with a log of every call's batch size and times.
    const inference = {
      run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
        const times = new Set(new Float32Array(feeds.t.data));
        calls.push({ at: performance.now(), rows: feeds.t.dims[0], times });
        return thread.run(model, graph, feeds);
      },
      close: () => thread.close(),
    };
    const app = await startApp({ models: ["mnist-mix"], inference });
    const probe = {
      v: 1,
      id: "probe",
      model: "mnist-mix",
      solver: "genie",
      nfe: 5,
      seeds: [4242],
      class: 3,
      guidance: 1,
    };
    try {
      await t.step(
        "a request's result is bit-identical alone and merged with 31 others at other steps",
        async () => {
          const alone = await post(app, "/v1/batch", probe);
          assertEquals(alone.status, 200, JSON.stringify(alone.body));
          const others = (i: number) => ({
            v: 1,
            id: `other-${i}`,
            model: "mnist-mix",
            solver: i % 3 === 0 ? "ddim" : "genie",
            nfe: 6 + (i % 7),
            seeds: [1000 + i],
            ...(i % 2 ? { class: i % 10 } : {}),
          });
          const replies: Promise<Reply>[] = [];
          for (let i = 0; i < 16; i++) replies.push(post(app, "/v1/batch", others(i)));
          const before = calls.length;
          await until(() => calls.length >= before + 3, 10_000, "the first requests to take a few steps");
          const t0 = performance.now();
          const merged = post(app, "/v1/batch", probe);
          for (let i = 16; i < 31; i++) replies.push(post(app, "/v1/batch", others(i)));
          const m = await merged;
          const t1 = performance.now();
          assertEquals(m.status, 200, JSON.stringify(m.body));
          for (const r of await Promise.all(replies)) assertEquals(r.status, 200, JSON.stringify(r.body));
          assertEquals(m.body.data, alone.body.data, "bit-identical samples");
          assertEquals(m.body.nfe, alone.body.nfe);
          const during = calls.filter((c) => c.at >= t0 && c.at <= t1);
          assert(
            during.some((c) => c.rows > 2 && c.times.size > 1),
            `the probe shared calls with requests at other steps: ${
              JSON.stringify(during.map((c) => [c.rows, c.times.size]))
            }`,
          );
        },
      );

      await t.step("a deadline stops the work between steps (504)", async () => {
        const t0 = performance.now();
        const r = await post(app, "/v1/batch", {
          ...probe,
          id: "late",
          nfe: undefined,
          steps: 1000,
          deadline_ms: 40,
        });
        assertEquals(r.status, 504, JSON.stringify(r.body));
        assertEquals(errorOf(r).code, "deadline_exceeded");
        assertEquals(r.body.id, "late");
        assert(performance.now() - t0 < 2000, "answered at the deadline, not after 1000 steps");
        await until(() => app.scheduler.inFlight === 0, 2000, "the request to leave the scheduler");
        const n = calls.length;
        await sleep(50);
        assert(calls.length <= n + 1, "no more calls for the expired request");
      });

      await t.step("cancellation (client gone) stops the work between steps", async () => {
        const ac = new AbortController();
        const n0 = calls.length;
        const pending = post(app, "/v1/batch", { ...probe, id: "gone", nfe: undefined, steps: 1000 }, {
          signal: ac.signal,
        });
        await until(() => calls.length >= n0 + 3, 5000, "the request to start");
        ac.abort();
        const r = await pending;
        assertEquals(errorOf(r).code, "canceled");
        await until(() => app.scheduler.inFlight === 0, 2000, "the request to leave the scheduler");
        const n1 = calls.length;
        await sleep(50);
        assert(calls.length <= n1 + 1, "no more calls for the canceled request");
        assert(n1 - n0 < 200, `stopped early (${n1 - n0} calls of 1000)`);
        assertEquals(app.scheduler.counters.canceled, 1);
      });
    } finally {
      await app.shutdown();
    }
  },
});

Deno.test({
  name: "a full queue answers 429 with Retry-After; shutdown drains the requests in flight",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["gmm2d"], maxQueue: 2, retryAfterS: 3 });
    try {
      const long = (id: string) => ({ v: 1, id, model: "gmm2d", solver: "genie", steps: 1000, seeds: [1] });
      const a = post(app, "/v1/batch", long("a")), b = post(app, "/v1/batch", long("b"));
      await until(() => app.scheduler.inFlight === 2, 2000, "two requests in flight");
      const refused = await post(app, "/v1/batch", long("c"));
      assertEquals(refused.status, 429);
      assertEquals(errorOf(refused).code, "queue_full");
      assertEquals(refused.headers.get("retry-after"), "3");
      assertEquals(refused.body.id, "c");
      // Shutdown: new work is refused with 503, the two in flight finish normally.
      const closing = app.shutdown();
      const late = await post(app, "/v1/batch", long("d"));
      assertEquals(late.status, 503);
      assertEquals(late.headers.get("retry-after"), "3");
      assertEquals((await app.request("/healthz")).status, 503);
      const [ra, rb] = await Promise.all([a, b]);
      assertEquals([ra.status, rb.status], [200, 200]);
      assertEquals(ra.body.steps, 1000);
      await closing;
    } finally {
      await app.shutdown();
    }
  },
});

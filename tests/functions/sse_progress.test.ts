/**
 * Request-wide step progress and live previews of `POST /v1/samples` as server-sent events
 * (docs/contracts.md §2): a request split into several worker calls (chunks) reports `steps_done` of
 * `steps_total` summed over all of them, from the first step on, reaching the total once; with
 * `preview`, events carry x̂₀ of the first sample (a PNG data URL for image models, values otherwise).
 * Closing the stream cancels the worker calls.
 */
import { decode as decodePng } from "fast-png";
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { parseSse, post, quiet, withFake } from "./helpers.ts";

interface ProgressData {
  step: number;
  steps: number;
  done: number;
  n: number;
  phase: string;
  steps_done: number;
  steps_total: number;
  preview?: string | number[];
  preview_step?: number;
}

const MNIST = { model: "mnist-mix", solver: "ddim", seed: 0 };

function progressOf(text: string): { progress: ProgressData[]; last: { event: string; data: unknown } } {
  const events = parseSse(text);
  return {
    progress: events.filter((e) => e.event === "progress").map((e) => e.data as ProgressData),
    last: events.at(-1)!,
  };
}

Deno.test("SSE: steps_done/steps_total over every chunk: monotone, from the first step, the total once", async () => {
  await withFake(
    async (app, worker) => {
      // 20 samples with max_batch 8: three worker calls (8 + 8 + 4) of 10 steps each.
      const res = await post(app, "/v1/samples", { ...MNIST, n: 20, steps: 10 }, {
        accept: "text/event-stream",
      });
      assertStrictEquals(res.status, 200);
      const { progress, last } = progressOf(await res.text());
      assertStrictEquals(last.event, "completed");
      assertStrictEquals(worker.batches.length, 3);
      assert(progress.every((p) => p.steps_total === 30), JSON.stringify(progress.map((p) => p.steps_total)));
      const done = progress.map((p) => p.steps_done);
      assertEquals(done, [...done].sort((a, b) => a - b), "steps_done never goes back");
      assertStrictEquals(done[0], 0);
      assertStrictEquals(done.filter((d) => d === 30).length, 1, "the total is reached once");
      assertStrictEquals(done.at(-1), 30);
      assertStrictEquals(progress.at(-1)!.phase, "done");
      // It moves before any chunk has finished: step by step, not by whole chunks.
      const early = progress.filter((p) => p.done === 0 && p.steps_done > 0).map((p) => p.steps_done);
      assert(early.length >= 5, `steps_done before the first chunk finished: ${early}`);
      assert(early[0] <= 3, `the first step shows at once: ${early}`);
      // Compatible fields: step is the step every chunk has started, in order, never past steps.
      const steps = progress.map((p) => p.step);
      assertEquals(steps, [...steps].sort((a, b) => a - b));
      assert(progress.every((p) => p.steps === 10 && p.n === 20));
    },
    {},
    { stream: true, stepMs: 5 },
  );
});

Deno.test("SSE: one chunk: steps_done follows the steps", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST, n: 2, steps: 4 }, {
        accept: "text/event-stream",
      });
      const { progress } = progressOf(await res.text());
      assertEquals(progress.map((p) => [p.phase, p.step, p.steps_done, p.steps_total]), [
        ["queued", 0, 0, 4],
        ["running", 0, 0, 4],
        ["running", 1, 1, 4],
        ["running", 2, 2, 4],
        ["running", 3, 3, 4],
        ["done", 4, 4, 4],
      ]);
    },
    {},
    { stream: true },
  );
});

Deno.test("SSE: a worker that does not stream: steps_done by whole chunks", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 20, steps: 5 }, {
      accept: "text/event-stream",
    });
    const { progress } = progressOf(await res.text());
    const done = progress.map((p) => p.steps_done);
    assertEquals(done.slice(0, 1), [0]);
    assertEquals(done.slice(1).sort((a, b) => a - b), [5, 10, 15]);
    assertStrictEquals(progress.at(-1)!.steps_total, 15);
  });
});

Deno.test("SSE previews: x̂₀ of the first sample as a PNG data URL, asked of its chunk only", async () => {
  await withFake(
    async (app, worker) => {
      for (
        const [path, body] of [
          ["/v1/samples", { ...MNIST, n: 12, steps: 8, preview: true }],
          ["/v1/samples?preview=1", { ...MNIST, n: 12, steps: 8 }],
        ] as const
      ) {
        const before = worker.batches.length;
        const res = await post(app, path, body, { accept: "text/event-stream" });
        const { progress, last } = progressOf(await res.text());
        assertStrictEquals(last.event, "completed");
        const shown = progress.filter((p) => p.preview !== undefined);
        assert(shown.length >= 4, `${shown.length} previews`);
        const steps = shown.map((p) => p.preview_step!);
        assertEquals(steps, [...steps].sort((a, b) => a - b));
        for (const p of shown) {
          const url = p.preview as string;
          assert(url.startsWith("data:image/png;base64,"), url.slice(0, 40));
          const png = decodePng(Uint8Array.from(atob(url.slice(22)), (c) => c.charCodeAt(0)));
          assertEquals([png.width, png.height, png.channels], [28, 28, 1]);
        }
        const sent = worker.batches.slice(before);
        assertEquals(sent.map((b) => b.preview), [true, undefined], "only the first sample's chunk");
      }
      // Without asking, no previews.
      const res = await post(app, "/v1/samples", { ...MNIST, n: 2, steps: 4 }, {
        accept: "text/event-stream",
      });
      assert(progressOf(await res.text()).progress.every((p) => p.preview === undefined));
      assertStrictEquals(worker.batches.at(-1)!.preview, undefined);
    },
    {},
    { stream: true },
  );
});

Deno.test("SSE previews of a model that is not an image: the sample's values", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", {
        model: "gmm-2d",
        solver: "ddim",
        n: 3,
        steps: 4,
        preview: true,
      }, {
        accept: "text/event-stream",
      });
      const { progress } = progressOf(await res.text());
      const shown = progress.filter((p) => p.preview !== undefined);
      assert(shown.length > 0);
      for (const p of shown) {
        assert(Array.isArray(p.preview) && p.preview.length === 2 && p.preview.every(Number.isFinite));
      }
    },
    {},
    { stream: true },
  );
});

Deno.test({
  name: "SSE: closing the stream ends the request and cancels the worker calls",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const worker = await startFakeWorker({ stream: true, stepMs: 50 });
    const edge = await serveEdge({ workerUrls: [worker.url], log: quiet }, { host: "127.0.0.1", port: 0 });
    try {
      const ctl = new AbortController();
      const res = await fetch(edge.url + "/v1/samples", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify({ ...MNIST, n: 16, steps: 200 }),
        signal: ctl.signal,
      });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes('"phase":"running"')) text += (await reader.read()).value ?? "";
      assertStrictEquals(worker.active, 2, "both chunks are running");
      ctl.abort();
      await reader.cancel().catch(() => {});
      const end = Date.now() + 5000;
      while (worker.aborted < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assertStrictEquals(worker.aborted, 2, "the worker saw both calls aborted");
      assertStrictEquals(worker.active, 0);
    } finally {
      await edge.shutdown(100);
      await worker.close();
    }
  },
});

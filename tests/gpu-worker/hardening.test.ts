/**
 * The worker against values that would overflow float32 (refused naming the field), results that are
 * not finite (an error instead of the data, plain and streamed) and deadlines beyond what a timer holds.
 */
import { decode, encode } from "@msgpack/msgpack";
import type { BatchOutputs, Inference, WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { planBatch } from "../../gpu-worker/requests.ts";
import { assert, assertEquals, assertMatch } from "../testing.ts";
import { bytesOf, errorOf, floats, MSGPACK, post, startApp } from "./helpers.ts";

const ok = { v: 1, model: "gmm2d", solver: "ddim", steps: 4, seeds: [1] };

Deno.test({
  name: "worker: huge finite inputs are 422 naming the field; huge deadlines are refused, not a 504",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["gmm2d"] });
    try {
      const big = await post(app, "/v1/batch", { ...ok, id: "big", latents: bytesOf([3e38, -3e38]) });
      assertEquals(big.status, 422, JSON.stringify(big.body));
      assertEquals(errorOf(big).field, "latents");
      assertMatch(errorOf(big).message, /value 0 is .*\|x\| ≤ 10000/);
      const enc = await post(app, "/v1/encode", { ...ok, id: "enc", images: bytesOf([3e38, -3e38]) });
      assertEquals(enc.status, 422, JSON.stringify(enc.body));
      assertEquals(errorOf(enc).field, "images");
      // at the bound the result is finite
      const edge = await post(app, "/v1/batch", { ...ok, id: "edge", latents: bytesOf([1e4, -1e4]) });
      assertEquals(edge.status, 200, JSON.stringify(edge.body));
      assert(floats(edge.body.data).every(Number.isFinite));
      // a deadline past 2³¹ ms (here 2³²) used to overflow the timer and fire at once (504)
      const t0 = Date.now();
      const far = await post(app, "/v1/batch", { ...ok, id: "far", deadline_ms: 2 ** 32 });
      assertEquals(far.status, 422, JSON.stringify(far.body));
      assertEquals(errorOf(far).field, "deadline_ms");
      const hour = await post(app, "/v1/batch", { ...ok, id: "hour", deadline_ms: 3_600_000 });
      assertEquals(hour.status, 200, JSON.stringify(hour.body));
      // the scheduler itself re-arms deadlines beyond a timer's range instead of firing at once
      // (200 steps: long enough that a timer firing at once would stop it)
      const plan = planBatch({ ...ok, id: "direct", steps: 200, seeds: [1, 2, 3, 4] }, app.models);
      const result = await app.scheduler.submit({
        model: plan.model,
        run: plan.run,
        deadline: Date.now() + 2 ** 32,
      });
      assertEquals(result.x.length, 8);
      assert(Date.now() - t0 < 30_000);
    } finally {
      await app.shutdown();
    }
  },
});

/** An inference backend whose ε is NaN for every row. */
class NaNInference implements Inference {
  run(_model: string, _graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs> {
    return Promise.resolve({
      outputs: { eps: new Float32Array(feeds.x.data.byteLength / 4).fill(NaN) },
      ms: 0,
    });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test({
  name: "worker: a result with NaN or ±∞ is an error, never data (plain and streamed)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["gmm2d"], inference: new NaNInference() });
    try {
      const r = await post(app, "/v1/batch", { ...ok, id: "nan" });
      assertEquals(r.status, 500, JSON.stringify(r.body));
      assertEquals(errorOf(r).code, "non_finite_result");
      assertMatch(errorOf(r).message, /non-finite value \(NaN\) in sample 0/);
      assertEquals(r.body.data, undefined);
      const res = await app.request("/v1/batch", {
        method: "POST",
        headers: { "content-type": MSGPACK },
        body: encode({ ...ok, id: "nan-stream", stream: true }) as BodyInit,
      });
      assertEquals(res.status, 200);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const frames: Record<string, unknown>[] = [];
      for (let at = 0; at < bytes.byteLength;) {
        const len = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(0);
        frames.push(decode(bytes.subarray(at + 4, at + 4 + len)) as Record<string, unknown>);
        at += 4 + len;
      }
      const last = frames.at(-1)!;
      assertEquals((last.error as { code: string }).code, "non_finite_result");
      assertEquals(last.status, 500);
      assert(frames.every((f) => f.data === undefined));
    } finally {
      await app.shutdown();
    }
  },
});

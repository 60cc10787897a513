/**
 * Live previews on the worker (`stream: true` with `preview: true`, core/api/worker.ts ProgressFrame):
 * progress frames carry x̂₀ of the first sample every max(1, ⌊steps/8⌋) steps, computed from the
 * evaluation the solver received (core/preview.ts); the result is the same as without previews; encoding
 * streams too, and takes a class.
 */
import { decode, encode } from "@msgpack/msgpack";
import { assert, assertEquals, maxAbsDiff } from "../testing.ts";
import { floats, MSGPACK, post, startApp } from "./helpers.ts";

function frames(bytes: Uint8Array): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at < bytes.byteLength;) {
    const len = view.getUint32(at);
    out.push(decode(bytes.subarray(at + 4, at + 4 + len)) as Record<string, unknown>);
    at += 4 + len;
  }
  return out;
}

interface Frame {
  progress?: { step: number; steps: number; preview?: { step: number; shape: number[]; data: Uint8Array } };
  data?: Uint8Array;
}

Deno.test({
  name: "worker: preview frames carry x̂₀ of the first sample, approaching the result",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["gmm2d"] });
    const streamed = async (path: string, message: Record<string, unknown>) => {
      const res = await app.request(path, {
        method: "POST",
        body: encode({ ...message, stream: true }) as BodyInit,
        headers: { "content-type": MSGPACK },
      });
      assertEquals(res.headers.get("content-type"), "application/x-msgpack-stream");
      return frames(new Uint8Array(await res.arrayBuffer())) as Frame[];
    };
    try {
      const message = {
        v: 1,
        id: "p",
        model: "gmm2d",
        seeds: [3, 4],
        solver: "genie",
        steps: 16,
        class: 1,
        guidance: 1,
      };
      const got = await streamed("/v1/batch", { ...message, preview: true });
      const result = got.at(-1)!;
      const x = floats(result.data);
      const previews = got.flatMap((f) => f.progress?.preview ? [f.progress.preview] : []);
      // every 2 steps (16 / 8), from step 0; each rides on the next step's frame
      assertEquals(previews.map((p) => p.step), [0, 2, 4, 6, 8, 10, 12, 14]);
      for (const f of got) {
        if (f.progress?.preview) assert(f.progress.preview.step < f.progress.step);
      }
      assert(previews.every((p) => p.shape.length === 1 && p.shape[0] === 2));
      // x̂₀ approaches the first sample's result as the solve goes on
      const errs = previews.map((p) => maxAbsDiff(floats(p.data), x.subarray(0, 2)));
      assert(errs.at(-1)! < 0.05 && errs.at(-1)! < errs[0], errs.join(", "));
      // the same result as a plain answer, and no previews unless asked
      const plain = await post(app, "/v1/batch", message);
      assertEquals(Array.from(floats(plain.body.data)), Array.from(x));
      const without = await streamed("/v1/batch", message);
      assert(without.every((f) => f.progress?.preview === undefined));
      // encoding streams its steps too, and takes a class
      const enc = await streamed("/v1/encode", {
        v: 1,
        id: "e",
        model: "gmm2d",
        solver: "ddim",
        steps: 5,
        class: 0,
        images: result.data,
      });
      assertEquals(enc.slice(0, -1).map((f) => f.progress?.step), [0, 1, 2, 3, 4]);
      assertEquals(floats(enc.at(-1)!.data).length, 4);
    } finally {
      await app.shutdown();
    }
  },
});

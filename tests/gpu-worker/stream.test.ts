/**
 * Streamed `POST /v1/batch` (`stream: true`, core/api/worker.ts MSGPACK_STREAM): length-prefixed
 * msgpack frames read with an independent msgpack library — one progress frame per solver step, in
 * order, then the same result as the plain answer; refusals before streaming keep their status; a
 * client that goes away cancels the request.
 */
import { decode, encode } from "@msgpack/msgpack";
import { assert, assertEquals } from "../testing.ts";
import { errorOf, MSGPACK, post, sleep, startApp, until } from "./helpers.ts";

const base = { v: 1, model: "gmm2d", seeds: [3, 4, 5] };

/** Splits a whole stream body into its frames by hand (4-byte big-endian length + msgpack). */
function frames(bytes: Uint8Array): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at < bytes.byteLength) {
    const len = view.getUint32(at);
    out.push(decode(bytes.subarray(at + 4, at + 4 + len)) as Record<string, unknown>);
    at += 4 + len;
  }
  assertEquals(at, bytes.byteLength, "the stream ends on a frame boundary");
  return out;
}

Deno.test({
  name: "worker: stream: true gives per-step progress frames, then the plain response",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const app = await startApp({ models: ["gmm2d"] });
    const streamed = async (message: Record<string, unknown>) => {
      const res = await app.request("/v1/batch", {
        method: "POST",
        body: encode({ ...message, stream: true }) as BodyInit,
        headers: { "content-type": MSGPACK },
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      // A refusal before the first step is one plain msgpack message, not a stream of frames.
      const isStream = res.headers.get("content-type") === "application/x-msgpack-stream";
      return { res, frames: isStream ? frames(bytes) : [decode(bytes) as Record<string, unknown>] };
    };
    try {
      for (
        const extra of [
          { solver: "ddim", steps: 7 },
          { solver: "genie", nfe: 8 },
          { solver: "heun", steps: 4, denoise: true },
          { solver: "genie", nfe: 6, afs: true, genie_derivative: "jvp" },
          { solver: "dpmpp-2m", steps: 5, class: 1, guidance: 1.5 },
        ]
      ) {
        await t.step(JSON.stringify(extra), async () => {
          const id = `s-${extra.solver}`;
          const plain = await post(app, "/v1/batch", { ...base, ...extra, id });
          assertEquals(plain.status, 200, JSON.stringify(plain.body));
          const steps = plain.body.steps as number;
          const { res, frames: got } = await streamed({ ...base, ...extra, id });
          assertEquals(res.status, 200);
          assertEquals(res.headers.get("content-type"), "application/x-msgpack-stream");
          const progress = got.slice(0, -1);
          assertEquals(
            progress,
            Array.from({ length: steps }, (_, step) => ({ v: 1, id, progress: { step, steps } })),
          );
          const last = got.at(-1)!;
          assertEquals(last.data, plain.body.data, "same bytes as the plain answer");
          for (const k of ["v", "id", "shape", "nfe", "steps", "solver", "deriv_evals"]) {
            assertEquals(last[k], plain.body[k], k);
          }
        });
      }

      await t.step("invalid requests keep their HTTP status and plain error body", async () => {
        const r = await post(app, "/v1/batch", {
          ...base,
          id: "bad",
          solver: "nope",
          steps: 3,
          stream: true,
        });
        assertEquals(r.status, 422);
        assertEquals(r.headers.get("content-type"), MSGPACK);
        assertEquals(errorOf(r).field, "solver");
        const s = await post(app, "/v1/batch", {
          ...base,
          id: "bad",
          solver: "ddim",
          steps: 3,
          stream: "yes",
        });
        assertEquals(s.status, 422);
        assertEquals(errorOf(s).field, "stream");
      });

      await t.step("a deadline that passes mid-stream ends with an error frame", async () => {
        const { res, frames: got } = await streamed({
          ...base,
          seeds: Array.from({ length: 64 }, (_, i) => i),
          id: "late",
          solver: "genie",
          steps: 200,
          deadline_ms: 30,
        });
        // Either refused before the first step (504 plain) or streamed, then an error frame.
        const last = got.at(-1)!;
        if (res.status === 200) {
          assertEquals((last.error as { code: string }).code, "deadline_exceeded");
          assertEquals(last.status, 504);
        } else {
          assertEquals(res.status, 504);
          assertEquals((last.error as { code: string }).code, "deadline_exceeded");
        }
        // counted in /metrics with the status it ended with, streamed or not
        const counted = async () => {
          const text = await (await app.request("/metrics")).text();
          return text.split("\n").some((l) =>
            l.startsWith("genie_worker_http_requests_total{") && l.includes('route="/v1/batch"') &&
            l.includes('code="504"')
          );
        };
        let seen = await counted();
        for (let i = 0; i < 50 && !seen; i++) {
          await sleep(10);
          seen = await counted();
        }
        assert(seen, "the request is counted with code 504");
      });

      await t.step("a client that goes away cancels the request", async () => {
        const canceled = app.scheduler.counters.canceled;
        const res = await app.request("/v1/batch", {
          method: "POST",
          body: encode({
            ...base,
            seeds: Array.from({ length: 64 }, (_, i) => i),
            id: "gone",
            solver: "genie",
            steps: 200,
            stream: true,
          }) as BodyInit,
          headers: { "content-type": MSGPACK },
        });
        assertEquals(res.status, 200);
        const reader = res.body!.getReader();
        const first = await reader.read();
        assert(!first.done && first.value.byteLength > 4);
        // closing the body alone cancels the request (the request's own signal stays untouched)
        await reader.cancel();
        await until(() => app.scheduler.inFlight === 0, 10_000, "the canceled request to leave");
        assertEquals(app.scheduler.inFlight, 0);
        assertEquals(app.scheduler.counters.canceled, canceled + 1);
      });
    } finally {
      await app.shutdown();
    }
  },
});

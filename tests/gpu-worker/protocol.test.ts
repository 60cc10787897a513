/**
 * The worker protocol (docs/contracts.md §3) through the exported fetch handler, spoken with an independent
 * msgpack implementation: results, raw float32 bytes, errors with the right status and field, size
 * limits, signatures — and the worker keeps serving after every bad request.
 */
import { decode, encode } from "@msgpack/msgpack";
import { makeGrid } from "../../core/grid.ts";
import { gmmEvaluator } from "../../core/gmm.ts";
import { guidedSolveInput, withConditioning } from "../../core/guidance.ts";
import { gaussianBatch } from "../../core/rng.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { getSolver, stepsForNfe } from "../../core/solvers/registry.ts";
import { mixtureFromSource } from "../../gpu-worker/analytic.ts";
import { SignatureVerifier } from "../../gpu-worker/protocol.ts";
import { signRequest } from "../../core/api/worker.ts";
import { assert, assertEquals, assertMatch, maxAbsDiff } from "../testing.ts";
import { bytesOf, errorOf, floats, MSGPACK, post, type Reply, startApp } from "./helpers.ts";

const ok = { v: 1, model: "gmm2d", solver: "genie", nfe: 6, seeds: [11, 12, 13] };

Deno.test({
  name: "worker protocol over the fetch handler",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const app = await startApp({ models: ["gmm2d"], maxBodyBytes: 64 * 1024 });
    const info = app.models.get("gmm2d")!.info;
    const mix = { ...(await mixtureFromSource(info.manifest.analytic!)), schedule: info.schedule };
    try {
      await t.step("a batch round trip matches the exact in-process solve", async () => {
        for (const extra of [{}, { class: 1, guidance: 1.5 }, { genie_derivative: "jvp", afs: true }]) {
          const r = await post(app, "/v1/batch", { ...ok, id: "req-1", ...extra });
          assertEquals(r.status, 200, JSON.stringify(r.body));
          assertEquals(r.headers.get("content-type"), MSGPACK);
          assertEquals(r.body.v, 1);
          assertEquals(r.body.id, "req-1");
          assertEquals(r.body.shape, [3, 2]);
          assertEquals(r.body.nfe, 6);
          assert(r.body.data instanceof Uint8Array, "data is a plain msgpack bin");
          const timings = r.body.timings as Record<string, number>;
          assert(timings.queue_ms >= 0 && timings.compute_ms >= 0, JSON.stringify(timings));
          // Reference: the same solve in float64 against core's exact mixture.
          const e = extra as { class?: number; guidance?: number; genie_derivative?: "jvp"; afs?: boolean };
          const derivative = e.genie_derivative ?? "head";
          const steps = stepsForNfe("genie", 6, { afs: e.afs, derivative });
          assertEquals(r.body.steps, steps);
          const input = guidedSolveInput({
            schedule: info.schedule,
            grid: makeGrid(info.schedule, { kind: "quadratic", steps }),
            x: gaussianBatch(ok.seeds, 2),
            batch: 3,
            dim: 2,
            afs: e.afs,
            derivative,
          }, e.guidance ?? 0);
          const run = withConditioning(getSolver("genie").fn(input), {
            classes: e.class === undefined ? undefined : new Int32Array(3).fill(e.class),
            nullClass: 2,
            scale: e.guidance ?? 0,
          });
          const ref = runSolver(run, gmmEvaluator(mix));
          const diff = maxAbsDiff(floats(r.body.data), ref.x);
          assert(diff < 1e-4, `worker vs exact solve (${JSON.stringify(extra)}): max diff ${diff}`);
        }
      });

      await t.step("encode returns latents of the images' shape", async () => {
        const images = bytesOf([0.5, -0.3, -1, 0.9]);
        const r = await post(app, "/v1/encode", {
          v: 1,
          id: "enc",
          model: "gmm2d",
          solver: "ddim",
          steps: 5,
          images,
        });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        assertEquals(r.body.shape, [2, 2]);
        assertEquals(floats(r.body.data).length, 4);
        assertEquals(r.body.nfe, 5);
      });

      await t.step("GET /v1/models, /healthz and /metrics", async () => {
        const models = await (await app.request("/v1/models")).json();
        assertEquals(models[0].name, "gmm2d");
        assertEquals(models[0].shape, [2]);
        assert(models[0].derivatives.includes("head") && models[0].derivatives.includes("exact"));
        assertEquals(models[0].provider, "cpu");
        const packed = await app.request("/v1/models", { headers: { accept: MSGPACK } });
        assertEquals(
          (decode(new Uint8Array(await packed.arrayBuffer())) as { name: string }[])[0].name,
          "gmm2d",
        );
        const health = await (await app.request("/healthz")).json();
        assertEquals(health.status, "ok");
        assertEquals(health.auth, "open");
        const text = await (await app.request("/metrics")).text();
        for (
          const metric of [
            "genie_worker_queue_depth",
            "genie_worker_batch_size_bucket",
            "genie_worker_evaluations_per_second",
            "genie_worker_request_duration_seconds_bucket",
            "process_resident_memory_bytes",
          ]
        ) assert(text.includes(metric), `metrics has ${metric}`);
      });

      await t.step("bad requests get clear errors and the worker keeps serving", async () => {
        const cases: [string, Record<string, unknown> | Uint8Array, number, string, string?][] = [
          ["malformed msgpack", new Uint8Array([0xc1, 0x00, 0x13]), 400, "bad_request"],
          ["truncated msgpack", encode(ok).slice(0, 10), 400, "bad_request"],
          ["not a map", encode([1, 2, 3]), 400, "bad_request"],
          ["unknown model", { ...ok, id: "x", model: "nope" }, 404, "not_found"],
          ["unknown solver", { ...ok, id: "x", solver: "rk99" }, 422, "invalid_request", "solver"],
          ["negative seed", { ...ok, id: "x", seeds: [1, -2] }, 422, "invalid_request", "seeds.1"],
          ["seed above u32", { ...ok, id: "x", seeds: [2 ** 32] }, 422, "invalid_request", "seeds.0"],
          ["fractional seed", { ...ok, id: "x", seeds: [1.5] }, 422, "invalid_request", "seeds.0"],
          ["no seeds", { ...ok, id: "x", seeds: [] }, 422, "invalid_request", "seeds"],
          [
            "latents of the wrong shape",
            { ...ok, id: "x", latents: bytesOf([1, 2, 3]) },
            422,
            "invalid_request",
            "latents",
          ],
          [
            "non-finite latents",
            { ...ok, id: "x", seeds: [1], latents: bytesOf([NaN, 0]) },
            422,
            "invalid_request",
            "latents",
          ],
          ["class out of range", { ...ok, id: "x", class: 7 }, 422, "invalid_request", "class"],
          ["guidance without class", { ...ok, id: "x", guidance: 2 }, 422, "invalid_request", "guidance"],
          ["steps and nfe", { ...ok, id: "x", steps: 3 }, 422, "invalid_request", "nfe"],
          ["unknown grid", { ...ok, id: "x", grid: "zigzag" }, 422, "invalid_request", "grid"],
          ["wrong version", { ...ok, id: "x", v: 2 }, 422, "invalid_request", "v"],
          [
            "unsupported derivative",
            { ...ok, id: "x", genie_derivative: "magic" },
            422,
            "invalid_request",
            "genie_derivative",
          ],
          ["bad priority", { ...ok, id: "x", priority: 99 }, 422, "invalid_request", "priority"],
          [
            "image bytes not whole samples",
            { v: 1, id: "x", model: "gmm2d", solver: "ddim", steps: 2, images: new Uint8Array(12) },
            422,
            "invalid_request",
            "images",
          ],
        ];
        for (const [what, body, status, code, field] of cases) {
          const path = "images" in body ? "/v1/encode" : "/v1/batch";
          const r = await post(app, path, undefined, {
            raw: body instanceof Uint8Array ? body : encode(body),
          });
          assertEquals(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
          assertEquals(r.body.v, 1, what);
          const err = errorOf(r);
          assertEquals(err.code, code, `${what}: ${err.message}`);
          if (field) {
            assertEquals(err.field, field, `${what}: ${err.message}`);
            assert(
              err.message.startsWith(`${field}: `),
              `${what}: the message names the field: ${err.message}`,
            );
          }
          if (!(body instanceof Uint8Array) && body.id) {
            assertEquals(r.body.id, body.id, `${what}: id echoed`);
          }
        }
        const big = await post(app, "/v1/batch", undefined, { raw: new Uint8Array(65 * 1024) });
        assertEquals(big.status, 413);
        assertEquals(errorOf(big).code, "payload_too_large");
        // a body that breaks off while being read is the client's fault: 400, not 500
        const broken = new ReadableStream<Uint8Array>({
          pull(c) {
            c.error(new Error("connection reset"));
          },
        });
        const cut = await app.request("/v1/batch", {
          method: "POST",
          body: broken,
          headers: { "content-type": MSGPACK },
        });
        assertEquals(cut.status, 400);
        assertEquals((decode(new Uint8Array(await cut.arrayBuffer())) as Reply["body"]).error, {
          code: "bad_request",
          message: "the request body could not be read: connection reset",
        });
        const json = await app.request("/v1/batch", {
          method: "POST",
          body: "{}",
          headers: { "content-type": "application/json" },
        });
        assertEquals(json.status, 415);
        assertEquals((await app.request("/nowhere")).status, 404);
        assertEquals((await app.request("/v1/batch")).status, 405);
        const again = await post(app, "/v1/batch", { ...ok, id: "after" });
        assertEquals(again.status, 200, "still serving after the bad requests");
      });
    } finally {
      await app.shutdown();
    }
  },
});

Deno.test({
  name: "with a secret, unsigned, wrongly signed, stale, replayed or misdirected requests are refused",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const secret = "s3cr3t";
    const app = await startApp({ models: ["gmm2d"], secret });
    try {
      const body = encode({ ...ok, id: "signed" });
      const send = (headers: Record<string, string>, path = "/v1/batch") =>
        post(app, path, undefined, { raw: body, headers });
      const signed = (extra: { path?: string; timestamp?: number; key?: string; method?: string } = {}) =>
        signRequest(extra.key ?? secret, {
          method: extra.method ?? "POST",
          path: extra.path ?? "/v1/batch",
          body,
          timestamp: extra.timestamp,
        });
      const unsigned = await send({});
      assertEquals(unsigned.status, 401);
      assertEquals(errorOf(unsigned).code, "unauthorized");
      const good = await signed();
      assertEquals((await send({ ...good, "x-genie-signature": "sha256=" + "0".repeat(64) })).status, 401);
      assertEquals((await send({ ...good, "x-genie-signature": "md5=abc" })).status, 401);
      assertEquals((await send(await signed({ key: "other" }))).status, 401);
      // the signature covers timestamp and nonce: changing either breaks it
      assertEquals((await send({ ...good, "x-genie-nonce": "another-nonce" })).status, 401);
      assertEquals(
        (await send({ ...good, "x-genie-timestamp": String(Number(good["x-genie-timestamp"]) + 1) })).status,
        401,
      );
      // ... and the path: a batch signature is no good for /v1/encode
      const elsewhere = await send(good, "/v1/encode");
      assertEquals(elsewhere.status, 401);
      assertMatch(errorOf(elsewhere).message, /does not match/);
      const accepted = await send(good);
      assertEquals(accepted.status, 200, JSON.stringify(accepted.body));
      // the same signed request again: a replay
      const replay = await send(good);
      assertEquals(replay.status, 401);
      assertMatch(errorOf(replay).message, /already received/);
      // a correctly signed request from two minutes ago (the window is ±60 s)
      const stale = await send(await signed({ timestamp: Date.now() - 120_000 }));
      assertEquals(stale.status, 401);
      assertMatch(errorOf(stale).message, /x-genie-timestamp is 120\.\d s from the worker's clock/);
      assertEquals((await send(await signed({ timestamp: Date.now() + 120_000 }))).status, 401);
      const missing = await send({ "x-genie-signature": good["x-genie-signature"] });
      assertMatch(errorOf(missing).message, /missing x-genie-timestamp/);
      // GETs: a signature is bound to its path (and query), and is accepted once
      assertEquals((await app.request("/v1/models")).status, 401);
      const forHealth = await signRequest(secret, { method: "GET", path: "/healthz" });
      assertEquals((await app.request("/v1/models", { headers: forHealth })).status, 401);
      const withQuery = await signRequest(secret, { method: "GET", path: "/v1/models?x=1" });
      assertEquals((await app.request("/v1/models", { headers: withQuery })).status, 401);
      const forModels = await signRequest(secret, { method: "GET", path: "/v1/models" });
      assertEquals((await app.request("/v1/models", { headers: forModels })).status, 200);
      assertEquals((await app.request("/v1/models", { headers: forModels })).status, 401);
      assertEquals((await app.request("/healthz")).status, 200);
      assertEquals((await (await app.request("/healthz")).json()).auth, "signed");
      const fresh = await send(await signed());
      assertEquals(fresh.status, 200, "a freshly signed request still works");
    } finally {
      await app.shutdown();
    }
  },
});

Deno.test("signature memory: configurable window, entries expire, bounded size", async () => {
  let now = 1_000_000;
  const verifier = new SignatureVerifier("k", { windowS: 5, now: () => now, maxRemembered: 3 });
  const request = async (timestamp: number) => {
    const headers = await signRequest("k", { method: "GET", path: "/v1/models", timestamp });
    return new Request("http://worker/v1/models", { headers });
  };
  const outcome = (req: Request) =>
    verifier.verify(req, new Uint8Array(0)).then(() => "ok", (e) => `${e.status} ${e.message}`);
  const a = await request(now);
  assertEquals(await outcome(a), "ok");
  assertMatch(await outcome(a), /^401 .*already received/);
  assertMatch(await outcome(await request(now - 6000)), /^401 .*within ±5 s/);
  assertEquals(await outcome(await request(now - 4000)), "ok");
  assertEquals(await outcome(await request(now + 4000)), "ok");
  assertEquals(verifier.remembered, 3);
  // full, every entry still inside the window: refused (503), never forgotten early
  assertMatch(await outcome(await request(now)), /^503 /);
  // once timestamps leave the window their entries go, and the replay is refused by its timestamp
  now += 5500;
  assertEquals(await outcome(await request(now)), "ok");
  assertEquals(verifier.remembered, 2);
  assertMatch(await outcome(a), /^401 .*s from the worker's clock/);
});

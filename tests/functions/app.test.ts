/**
 * The edge app through `app.request()` in front of an in-process fake worker: every route, every
 * output format and every error status of docs/contracts.md §2.
 */
import { decode as decodePng, encode as encodePng } from "fast-png";
import { encode as packMsg } from "@msgpack/msgpack";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { createApp } from "../../functions/app.ts";
import { base64ToBytes, bytesToBase64, float32FromBytes } from "../../core/api/tensor.ts";
import { toByte } from "../../core/image.ts";
import { fakeValue } from "./fake_worker.ts";
import { errorOf, freePort, msgpackOf, parseSse, post, quiet, withFake } from "./helpers.ts";

const MNIST = { model: "mnist-mix" };
const PIXELS = 28 * 28;

Deno.test("GET /healthz says the server is open when no keys are configured", async () => {
  const app = createApp({ log: quiet });
  const res = await app.request("/healthz");
  assertStrictEquals(res.status, 200);
  const body = await res.json();
  assertEquals([body.status, body.auth], ["ok", "open"]);
  assertMatch(body.warning, /open/);
  const keyed = createApp({ apiKeys: ["k1"], log: quiet });
  const b2 = await (await keyed.request("/healthz")).json();
  assertEquals([b2.auth, b2.warning], ["api-keys", undefined]);
});

Deno.test("GET /readyz: 200 with a worker, 503 + Retry-After without", async () => {
  await withFake(async (app) => {
    const res = await app.request("/readyz");
    assertStrictEquals(res.status, 200);
    const body = await res.json();
    assertEquals(body.ready, true);
    assert(body.models.includes("mnist-mix"));
  });
  const app = createApp({ workerUrls: [`http://127.0.0.1:${freePort()}`], log: quiet });
  const res = await app.request("/readyz");
  assertStrictEquals(res.status, 503);
  assertMatch(res.headers.get("retry-after") ?? "", /^\d+$/);
  await res.body?.cancel();
  await app.close();
});

Deno.test("GET /v1/models lists models with shape, classes, solvers, derivatives and limits", async () => {
  await withFake(async (app) => {
    const res = await app.request("/v1/models");
    assertStrictEquals(res.status, 200);
    const models = await res.json();
    const m = models.find((x: { name: string }) => x.name === "mnist-mix");
    assertEquals(m.shape, [1, 28, 28]);
    assertEquals(m.classes, { count: 10, null_class: 10 });
    assert(m.solvers.includes("genie") && m.derivatives.includes("jvp"));
    assertEquals(m.limits, {
      max_batch: 8,
      max_n: 64,
      max_steps: 200,
      max_nfe: 400,
      guidance: { min: 0, max: 10 },
    });
    assert(typeof m.schedule === "object");
  });
});

Deno.test("POST /v1/samples JSON: one base64 PNG per seed with the worker's pixels", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 3, seed: 7, nfe: 6 });
    assertStrictEquals(res.status, 200);
    const body = await res.json();
    assertEquals([body.model, body.solver, body.nfe, body.steps], ["mnist-mix", "genie", 6, 6]);
    assertEquals([body.calls, body.cost, body.cost_estimated, body.grid, body.rho], [
      6,
      6,
      false,
      "quadratic",
      2,
    ]);
    assertEquals(body.seeds, [7, 8, 9]);
    assertEquals(body.shape, [3, 1, 28, 28]);
    assertStrictEquals(body.images.length, 3);
    body.images.forEach((im: { seed: number; png: string }, k: number) => {
      assertStrictEquals(im.seed, 7 + k);
      const png = decodePng(base64ToBytes(im.png));
      assertEquals([png.width, png.height, png.channels], [28, 28, 1]);
      for (const i of [0, 100, 783]) {
        assertStrictEquals(png.data[i], toByte(Math.fround(fakeValue(7 + k, i))));
      }
    });
    assert(body.timings.total_ms >= 0 && body.timings.queue_ms === 1);
    const sent = worker.batches[0];
    assertEquals([sent.v, sent.model, sent.solver, sent.nfe, sent.steps], [
      1,
      "mnist-mix",
      "genie",
      6,
      undefined,
    ]);
    assert(typeof sent.deadline_ms === "number" && (sent.deadline_ms as number) > 0);
  });
});

Deno.test("POST /v1/samples: nfe, calls and cost as the workers report them, in JSON, msgpack and headers", async () => {
  await withFake(async (app) => {
    // 20 samples in chunks of 8: every chunk reports the same per-trajectory counts.
    const req = { ...MNIST, n: 20, seed: 1, nfe: 5, genie_derivative: "jvp", grid: "edm", output: "tensor" };
    const body = await (await post(app, "/v1/samples", req)).json();
    assertEquals(
      [body.nfe, body.calls, body.cost, body.cost_estimated, body.grid, body.rho],
      [5, 10, 17.5, true, "edm", undefined],
    );
    const m = await msgpackOf(await post(app, "/v1/samples", req, { accept: "application/msgpack" }));
    assertEquals([m.nfe, m.calls, m.cost, m.cost_estimated], [5, 10, 17.5, true]);
    const png = await post(app, "/v1/samples", { ...req, output: undefined, n: 2 }, { accept: "image/png" });
    assertEquals([png.headers.get("x-genie-nfe"), png.headers.get("x-genie-calls")], ["5", "10"]);
    assertStrictEquals(png.headers.get("x-genie-cost"), "17.5");
    await png.body?.cancel();
  });
});

Deno.test("POST /v1/samples: defaults n=1, solver genie, nfe 10; output tensor is base64 float32", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { ...MNIST, seed: 3, output: "tensor" });
    assertStrictEquals(res.status, 200);
    const body = await res.json();
    assertEquals([body.solver, body.nfe, body.seeds], ["genie", 10, [3]]);
    assertEquals([body.tensor.shape, body.tensor.dtype], [[1, 1, 28, 28], "float32"]);
    const values = float32FromBytes(base64ToBytes(body.tensor.data));
    assertStrictEquals(values.length, PIXELS);
    assertStrictEquals(values[5], Math.fround(fakeValue(3, 5)));
    assertStrictEquals(body.images, undefined);
    assertStrictEquals(worker.batches[0].nfe, 10);
  });
});

Deno.test("POST /v1/samples: a random seed is reported when none is given", async () => {
  await withFake(async (app) => {
    const body = await (await post(app, "/v1/samples", { ...MNIST, n: 2 })).json();
    assertStrictEquals(body.seeds.length, 2);
    assertStrictEquals(body.seeds[1], (body.seeds[0] + 1) >>> 0);
  });
});

Deno.test("POST /v1/samples: Accept application/msgpack returns raw bytes", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 2, seed: 1, output: "tensor" }, {
      accept: "application/msgpack",
    });
    assertStrictEquals(res.status, 200);
    assertMatch(res.headers.get("content-type") ?? "", /application\/msgpack/);
    const body = await msgpackOf(res);
    const tensor = body.tensor as { shape: number[]; data: Uint8Array };
    assert(tensor.data instanceof Uint8Array);
    assertStrictEquals(tensor.data.byteLength, 2 * PIXELS * 4);
    assertStrictEquals(float32FromBytes(tensor.data)[PIXELS], Math.fround(fakeValue(2, 0)));
    const res2 = await post(app, "/v1/samples", { ...MNIST, n: 1, seed: 1 }, {
      accept: "application/msgpack",
    });
    const images = (await msgpackOf(res2)).images as { png: Uint8Array }[];
    assertStrictEquals(decodePng(images[0].png).width, 28);
  });
});

Deno.test("POST /v1/samples: msgpack request bodies with raw latents bytes", async () => {
  await withFake(async (app, worker) => {
    const lat = new Float32Array(2 * PIXELS).fill(0.5);
    const body = packMsg({
      ...MNIST,
      steps: 4,
      output: "tensor",
      latents: { shape: [2, 1, 28, 28], dtype: "float32", data: new Uint8Array(lat.buffer) },
    });
    const res = await post(app, "/v1/samples", body, { "content-type": "application/msgpack" });
    assertStrictEquals(res.status, 200);
    const out = await res.json();
    assertEquals(out.shape, [2, 1, 28, 28]);
    assertStrictEquals(float32FromBytes(base64ToBytes(out.tensor.data))[0], 0.25);
    assert(worker.batches[0].latents instanceof Uint8Array);
  });
});

Deno.test("POST /v1/samples: Accept image/png returns one grid of all samples", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 4, seed: 0 }, { accept: "image/png" });
    assertStrictEquals(res.status, 200);
    assertStrictEquals(res.headers.get("content-type"), "image/png");
    assertStrictEquals(res.headers.get("x-genie-nfe"), "10");
    assertStrictEquals(res.headers.get("x-genie-seeds"), "0,1,2,3");
    const png = decodePng(new Uint8Array(await res.arrayBuffer()));
    // 2 × 2 tiles of 28 px with 2 px padding: 2·30 + 2
    assertEquals([png.width, png.height], [62, 62]);
  });
});

Deno.test("POST /v1/samples: SSE progress per chunk, then completed with the JSON result", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 20, seed: 0, steps: 5 }, {
      accept: "text/event-stream",
    });
    assertStrictEquals(res.status, 200);
    assertMatch(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const events = parseSse(await res.text());
    const progress = events.filter((e) => e.event === "progress").map((e) =>
      e.data as { done: number; steps: number }
    );
    assertEquals(progress.map((p) => p.done), [0, ...progress.slice(1).map((p) => p.done)]);
    assertEquals(progress.at(-1), {
      step: 5,
      steps: 5,
      done: 20,
      n: 20,
      phase: "done",
      steps_done: 15,
      steps_total: 15,
    });
    assertStrictEquals(progress.length, 1 + 3); // queued + 3 chunks (8 + 8 + 4)
    const last = events.at(-1)!;
    assertStrictEquals(last.event, "completed");
    assertStrictEquals((last.data as { images: unknown[] }).images.length, 20);
    assertStrictEquals(worker.batches.length, 3);
  });
});

Deno.test("POST /v1/samples: SSE with a streaming worker: one running event per step, in order", async () => {
  for (const n of [3, 20]) { // one chunk; three chunks (8 + 8 + 4) aggregated
    await withFake(
      async (app, worker) => {
        const res = await post(app, "/v1/samples", { ...MNIST, n, seed: 0, steps: 5 }, {
          accept: "text/event-stream",
        });
        assertStrictEquals(res.status, 200);
        const events = parseSse(await res.text());
        assertEquals(events.map((e) => e.event).at(-1), "completed");
        assert(events.slice(0, -1).every((e) => e.event === "progress"));
        const progress = events.slice(0, -1).map((e) =>
          e.data as { step: number; steps: number; done: number; phase: string }
        );
        assertEquals(progress[0].phase, "queued");
        assert(progress.every((p) => p.steps === 5));
        // Per-step events: step 0, 1, …, 4 each reached in order (every chunk has started it); chunk
        // completions (done grows) and other chunks' steps keep the current step, so step never goes back.
        const running = progress.filter((p) => p.phase === "running").map((p) => p.step);
        assertEquals([...new Set(running)], [0, 1, 2, 3, 4]);
        const seen = progress.map((p) => p.step);
        assertEquals(seen, [...seen].sort((a, b) => a - b));
        if (n === 3) assertStrictEquals(progress.length, 1 + 5 + 1); // queued, 5 steps, done
        const total = 5 * Math.ceil(n / 8);
        assertEquals(progress.at(-1), {
          step: 5,
          steps: 5,
          done: n,
          n,
          phase: "done",
          steps_done: total,
          steps_total: total,
        });
        assert(worker.batches.every((b) => b.stream === true));
        assertStrictEquals((events.at(-1)!.data as { images: unknown[] }).images.length, n);
      },
      {},
      { stream: true },
    );
  }
});

Deno.test("POST /v1/samples: SSE progress stays within the request's steps whatever the worker claims", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST, n: 3, seed: 0, steps: 5 }, {
        accept: "text/event-stream",
      });
      assertStrictEquals(res.status, 200);
      const events = parseSse(await res.text());
      assertEquals(events.at(-1)!.event, "completed");
      const progress = events.slice(0, -1).map((e) => e.data as { step: number; steps: number });
      assert(progress.every((p) => p.steps === 5 && p.step <= 5), JSON.stringify(progress));
      assert(progress.length <= 1 + 5 + 1, `${progress.length} progress events`);
    },
    {},
    { stream: true, claimSteps: 1e9 },
  );
});

Deno.test("POST /v1/samples: JSON requests are not streamed", async () => {
  await withFake(
    async (app, worker) => {
      const res = await post(app, "/v1/samples", { ...MNIST, n: 2, seed: 0, steps: 5 });
      assertStrictEquals(res.status, 200);
      await res.body?.cancel();
      assert(worker.batches.length > 0, "the request reached the worker");
      assert(worker.batches.every((b) => b.stream === undefined));
    },
    {},
    { stream: true },
  );
});

Deno.test("POST /v1/samples: SSE failures arrive as a failed event", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST, steps: 3 }, { accept: "text/event-stream" });
      const events = parseSse(await res.text());
      const failed = events.at(-1)!;
      assertStrictEquals(failed.event, "failed");
      assertEquals((failed.data as { status: number; error: { code: string } }).status, 502);
    },
    {},
    { fail: { status: 500, code: "boom", message: "device lost" } },
  );
});

Deno.test("POST /v1/samples: requests above max_batch are split into chunks with the right seeds", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 19, seed: 100, output: "tensor" });
    assertStrictEquals(res.status, 200);
    const body = await res.json();
    assertEquals(worker.batches.map((b) => (b.seeds as number[]).length), [8, 8, 3]);
    assertEquals(worker.batches.flatMap((b) => b.seeds as number[]), body.seeds);
    const values = float32FromBytes(base64ToBytes(body.tensor.data));
    for (const k of [0, 8, 18]) {
      assertStrictEquals(values[k * PIXELS + 9], Math.fround(fakeValue(100 + k, 9)));
    }
  });
});

Deno.test("POST /v1/samples: seeds wrap modulo 2^32", async () => {
  await withFake(async (app) => {
    const body = await (await post(app, "/v1/samples", { ...MNIST, n: 2, seed: 4294967295 })).json();
    assertEquals(body.seeds, [4294967295, 0]);
  });
});

Deno.test("POST /v1/samples: vector models answer tensors; image outputs are refused", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", { model: "gmm-2d", n: 3, seed: 1 });
    assertStrictEquals(res.status, 200);
    assertEquals((await res.json()).tensor.shape, [3, 2]);
    const png = await post(app, "/v1/samples", { model: "gmm-2d" }, { accept: "image/png" });
    assertStrictEquals(png.status, 406);
    assertStrictEquals((await errorOf(png)).code, "not_acceptable");
    const out = await post(app, "/v1/samples", { model: "gmm-2d", output: "png" });
    assertStrictEquals(out.status, 422);
    assertEquals((await errorOf(out)).details![0].path, ["output"]);
  });
});

Deno.test("POST /v1/encode: PNG images and tensors to latents", async () => {
  await withFake(async (app, worker) => {
    const grey = new Uint8Array(PIXELS).fill(255);
    const png = encodePng({ width: 28, height: 28, data: grey, channels: 1, depth: 8 });
    const res = await post(app, "/v1/encode", {
      ...MNIST,
      solver: "ddim",
      steps: 4,
      images: [bytesToBase64(png)],
    });
    assertStrictEquals(res.status, 200);
    const body = await res.json();
    assertEquals([body.steps, body.latents.shape, body.latents.dtype], [4, [1, 1, 28, 28], "float32"]);
    assertStrictEquals(float32FromBytes(base64ToBytes(body.latents.data))[0], 2); // white = 1, fake doubles
    assertEquals(worker.batches[0].shape, [1, 1, 28, 28]);
    const t = new Float32Array(2 * PIXELS).fill(-0.25);
    const res2 = await post(app, "/v1/encode", {
      ...MNIST,
      tensor: { shape: [2, 1, 28, 28], data: bytesToBase64(new Uint8Array(t.buffer)) },
    }, { accept: "application/msgpack" });
    assertStrictEquals(res2.status, 200);
    const latents = (await msgpackOf(res2)).latents as { data: Uint8Array; shape: number[] };
    assertEquals(latents.shape, [2, 1, 28, 28]);
    assertStrictEquals(float32FromBytes(latents.data)[PIXELS], -0.5);
  });
});

Deno.test("POST /v1/encode: bad images are 422 with the image's index", async () => {
  await withFake(async (app) => {
    const small = encodePng({ width: 4, height: 4, data: new Uint8Array(16), channels: 1, depth: 8 });
    const res = await post(app, "/v1/encode", {
      ...MNIST,
      images: [bytesToBase64(small), bytesToBase64(new Uint8Array(30))],
    });
    assertStrictEquals(res.status, 422);
    const err = await errorOf(res);
    assertEquals(err.details!.map((d) => d.path), [["images", 0], ["images", 1]]);
    const both = await post(app, "/v1/encode", { ...MNIST });
    assertStrictEquals(both.status, 422);
    assertEquals((await errorOf(both)).details![0].path, ["images"]);
  });
});

Deno.test("GET /openapi.json is generated from the validating schemas", async () => {
  const app = createApp({ log: quiet });
  const doc = await (await app.request("/openapi.json")).json();
  assertStrictEquals(doc.openapi, "3.1.0");
  for (const p of ["/v1/models", "/v1/samples", "/v1/encode", "/healthz", "/readyz", "/metrics"]) {
    assert(doc.paths[p], p);
  }
  const req = doc.components.schemas.SamplesRequest;
  assertEquals(req.required, ["model"]);
  assertEquals(req.properties.grid.enum, ["uniform", "quadratic", "power", "logsnr", "edm"]);
  assertStrictEquals(req.additionalProperties, false);
  assertStrictEquals(req.properties.seed.maximum, 4294967295);
  assert(
    doc.components.schemas.Error && doc.components.schemas.EncodeRequest && doc.components.schemas.ModelList,
  );
  assertEquals(doc.paths["/v1/samples"].post.requestBody.content["application/json"].schema, {
    $ref: "#/components/schemas/SamplesRequest",
  });
});

Deno.test("GET /, /docs and /static assets are served locally with a strict CSP", async () => {
  const app = createApp({ log: quiet });
  for (
    const [path, type] of [
      ["/", "text/html"],
      ["/docs", "text/html"],
      ["/static/playground.js", "text/javascript"],
      ["/static/playground_api.js", "text/javascript"],
      ["/static/playground_results.js", "text/javascript"],
      ["/static/docs.js", "text/javascript"],
      ["/static/style.css", "text/css"],
    ]
  ) {
    const res = await app.request(path);
    assertStrictEquals(res.status, 200, path);
    assertMatch(res.headers.get("content-type") ?? "", new RegExp(type));
    const text = await res.text();
    assert(
      !/https?:\/\//.test(text.replace(/http:\/\/www\.w3\.org[^"]*/g, "")),
      `${path} references an external URL`,
    );
  }
  const res = await app.request("/");
  assertMatch(res.headers.get("content-security-policy") ?? "", /script-src 'self'/);
  assertStrictEquals(res.headers.get("x-content-type-options"), "nosniff");
  assertStrictEquals(res.headers.get("x-frame-options"), "SAMEORIGIN");
  for (const bad of ["/static/../app.ts", "/static/app.ts", "/static/%2e%2e%2fapp.ts"]) {
    const r = await app.request(bad);
    assertStrictEquals(r.status, 404, bad);
    await r.body?.cancel();
  }
});

Deno.test("GET /metrics is Prometheus text with request counters and worker gauges", async () => {
  await withFake(async (app) => {
    await (await post(app, "/v1/samples", { ...MNIST, seed: 1 })).body?.cancel();
    await (await post(app, "/v1/samples", { ...MNIST, n: 0 })).body?.cancel();
    const res = await app.request("/metrics");
    assertMatch(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assertMatch(text, /# TYPE genie_edge_requests_total counter/);
    assertMatch(text, /genie_edge_requests_total\{method="POST",route="\/v1\/samples",status="200"\} 1/);
    assertMatch(text, /genie_edge_requests_total\{method="POST",route="\/v1\/samples",status="422"\} 1/);
    assertMatch(text, /genie_edge_worker_up\{worker="0"\} 1/);
    assertMatch(
      text,
      /# TYPE genie_edge_worker_calls_total counter\ngenie_edge_worker_calls_total\{worker="0"\} 1\n/,
    );
    assertMatch(text, /# TYPE genie_edge_inflight gauge\ngenie_edge_inflight 0\n/);
    assertMatch(text, /genie_edge_samples_total\{model="mnist-mix",solver="genie"\} 1/);
    assertMatch(text, /genie_edge_request_duration_seconds_bucket\{le="\+Inf",route="\/v1\/samples"\} 2/);
  });
});

Deno.test("400: malformed JSON, malformed msgpack, empty and non-UTF-8 bodies", async () => {
  await withFake(async (app) => {
    for (
      const [body, type] of [
        ["{", "application/json"],
        ["", "application/json"],
        [new Uint8Array([0xc1]), "application/msgpack"],
        [new Uint8Array([0xff, 0xfe, 0x7b]), "application/json"],
      ] as const
    ) {
      const res = await post(app, "/v1/samples", body, { "content-type": type });
      assertStrictEquals(res.status, 400, `${type} ${String(body)}`);
      assertStrictEquals((await errorOf(res)).code, "bad_request");
    }
  });
});

Deno.test("415: unsupported content types", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", "<x/>", { "content-type": "application/xml" });
    assertStrictEquals(res.status, 415);
    assertStrictEquals((await errorOf(res)).code, "unsupported_media_type");
  });
});

Deno.test("422: schema and per-model violations name the field by path", async () => {
  await withFake(async (app) => {
    const cases: [unknown, (string | number)[]][] = [
      [[1, 2], []],
      [{ n: 1 }, ["model"]],
      [{ ...MNIST, n: 0 }, ["n"]],
      [{ ...MNIST, n: 1.5 }, ["n"]],
      [{ ...MNIST, n: 65 }, ["n"]],
      [{ ...MNIST, steps: 3, nfe: 4 }, ["nfe"]],
      [{ ...MNIST, steps: 201 }, ["steps"]],
      [{ ...MNIST, nfe: 401 }, ["nfe"]],
      [{ ...MNIST, grid: "zigzag" }, ["grid"]],
      [{ ...MNIST, rho: -1 }, ["rho"]],
      [{ ...MNIST, seed: -2 }, ["seed"]],
      [{ ...MNIST, class: 3, guidance: 1, guidance_scale: 2 }, ["guidance_scale"]],
      [{ ...MNIST, class: 3, guidance_scale: 12 }, ["guidance_scale"]],
      [{ ...MNIST, guidance_scale: 2 }, ["class"]],
      [{ ...MNIST, scale: 0 }, ["scale"]],
      [{ ...MNIST, scale: 9 }, ["scale"]],
      [{ ...MNIST, solver: "heun", nfe: 3 }, ["nfe"]],
      [{ ...MNIST, seed: 2 ** 32 }, ["seed"]],
      [{ ...MNIST, class: 11 }, ["class"]],
      [{ ...MNIST, class: 3, guidance: 11 }, ["guidance"]],
      [{ ...MNIST, guidance: 2 }, ["class"]],
      [{ ...MNIST, solver: "magic" }, ["solver"]],
      [{ ...MNIST, solver: "ddim", genie_derivative: "jvp" }, ["genie_derivative"]],
      [{ ...MNIST, genie_derivative: "head" }, ["genie_derivative"]],
      [{ model: "nope" }, ["model"]],
      [{ model: "gmm-2d", class: 1 }, ["class"]],
      [{ ...MNIST, typo: 1 }, []],
      [{ ...MNIST, latents: { shape: [1, 1, 28, 27], data: "" } }, ["latents", "shape"]],
      [{ ...MNIST, latents: { shape: [1, 1, 28, 28], data: "AAAA" } }, ["latents", "data"]],
      [{
        ...MNIST,
        n: 2,
        latents: { shape: [1, 1, 28, 28], data: bytesToBase64(new Uint8Array(PIXELS * 4)) },
      }, ["n"]],
      [{ ...MNIST, latents: { shape: [1, 1, 28, 28], data: "!!!!" } }, ["latents", "data"]],
      [{
        ...MNIST,
        latents: {
          shape: [1, 1, 28, 28],
          data: bytesToBase64(new Uint8Array(new Float32Array(PIXELS).fill(NaN).buffer)),
        },
      }, ["latents", "data"]],
      [{ ...MNIST, deadline_ms: 0 }, ["deadline_ms"]],
      [{ ...MNIST, output: "jpeg" }, ["output"]],
    ];
    for (const [body, path] of cases) {
      const res = await post(app, "/v1/samples", body);
      assertStrictEquals(res.status, 422, JSON.stringify(body).slice(0, 120));
      const err = await errorOf(res);
      assertStrictEquals(err.code, "invalid_request");
      assert(err.details && err.details.length > 0, "details");
      assert(
        err.details.some((d) => JSON.stringify(d.path) === JSON.stringify(path)),
        `${JSON.stringify(body).slice(0, 80)}: paths ${JSON.stringify(err.details.map((d) => d.path))}`,
      );
    }
  });
});

Deno.test("422: the worker's own validation errors pass through with the field", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST, steps: 3 });
      assertStrictEquals(res.status, 422);
      const err = await errorOf(res);
      assertMatch(err.message, /cannot use/);
      assertEquals(err.details![0].path, ["nfe"]);
    },
    {},
    { fail: { status: 422, code: "invalid", message: "nfe: genie cannot use exactly 3 evaluations" } },
  );
});

Deno.test("404 for unknown routes, 405 for wrong methods, 406 for unacceptable Accept", async () => {
  await withFake(async (app) => {
    const nf = await app.request("/v2/nothing");
    assertStrictEquals(nf.status, 404);
    assertStrictEquals((await errorOf(nf)).code, "not_found");
    const m = await app.request("/v1/samples");
    assertStrictEquals(m.status, 405);
    assertStrictEquals((await errorOf(m)).code, "method_not_allowed");
    const na = await post(app, "/v1/samples", { ...MNIST }, { accept: "text/html" });
    assertStrictEquals(na.status, 406);
    await na.body?.cancel();
    const q = await post(app, "/v1/samples", { ...MNIST }, {
      accept: "image/png;q=0.1, application/msgpack;q=0.9",
    });
    assertMatch(q.headers.get("content-type") ?? "", /msgpack/);
    await q.body?.cancel();
  });
});

Deno.test("413: bodies over the limit, by Content-Length or by streaming", async () => {
  await withFake(async (app) => {
    const big = JSON.stringify({ ...MNIST, pad: "x".repeat(5000) });
    const res = await post(app, "/v1/samples", big);
    assertStrictEquals(res.status, 413);
    assertStrictEquals((await errorOf(res)).code, "payload_too_large");
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 10; i++) c.enqueue(new TextEncoder().encode("x".repeat(1000)));
        c.close();
      },
    });
    const res2 = await app.request("/v1/samples", {
      method: "POST",
      body: stream,
      headers: { "content-type": "application/json" },
    });
    assertStrictEquals(res2.status, 413);
    await res2.body?.cancel();
  }, { maxBodyBytes: 4096 });
});

Deno.test("503 + Retry-After when no worker is reachable", async () => {
  const app = createApp({
    workerUrls: [`http://127.0.0.1:${freePort()}`],
    log: quiet,
    healthIntervalMs: 3000,
  });
  const res = await post(app, "/v1/samples", { ...MNIST });
  assertStrictEquals(res.status, 503);
  assertStrictEquals(res.headers.get("retry-after"), "3");
  assertStrictEquals((await errorOf(res)).code, "no_worker");
  const models = await app.request("/v1/models");
  assertStrictEquals(models.status, 503);
  await models.body?.cancel();
  await app.close();
});

Deno.test("503 + Retry-After when every worker refuses (busy); 429 when their queues are full", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST });
      assertStrictEquals(res.status, 503);
      assert(res.headers.get("retry-after"));
      await res.body?.cancel();
    },
    {},
    { fail: { status: 503, code: "unavailable", message: "draining" } },
  );
  await withFake(
    async (app, worker) => {
      const res = await post(app, "/v1/samples", { ...MNIST });
      assertStrictEquals(res.status, 429);
      assert(res.headers.get("retry-after"));
      assertStrictEquals((await errorOf(res)).code, "queue_full");
      assertStrictEquals(worker.batches.length, 1);
    },
    {},
    { fail: { status: 429, code: "queue_full", message: "queue full" } },
  );
});

Deno.test("504 when the deadline passes; the forwarded call is aborted", async () => {
  await withFake(
    async (app, worker) => {
      const res = await post(app, "/v1/samples", { ...MNIST, deadline_ms: 50 });
      assertStrictEquals(res.status, 504);
      assertStrictEquals((await errorOf(res)).code, "deadline_exceeded");
      for (let i = 0; i < 50 && worker.aborted === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assertStrictEquals(worker.aborted, 1);
    },
    {},
    { delayMs: 2000 },
  );
});

Deno.test("502 when the worker fails or rejects the edge's signature", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST });
      assertStrictEquals(res.status, 502);
      assertMatch((await errorOf(res)).message, /signature/);
    },
    { workerSecret: "wrong" },
    { secret: "right" },
  );
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...MNIST });
      assertStrictEquals(res.status, 200);
      await res.body?.cancel();
    },
    { workerSecret: "right" },
    { secret: "right" },
  );
});

Deno.test("CORS: off by default, configurable origins with preflight", async () => {
  const closed = createApp({ log: quiet });
  const r0 = await closed.request("/healthz", { headers: { origin: "https://a.example" } });
  assertStrictEquals(r0.headers.get("access-control-allow-origin"), null);
  await r0.body?.cancel();
  const app = createApp({ log: quiet, corsOrigins: ["https://a.example"], apiKeys: ["k"] });
  const pre = await app.request("/v1/samples", {
    method: "OPTIONS",
    headers: {
      origin: "https://a.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type",
    },
  });
  assertStrictEquals(pre.status, 204);
  assertStrictEquals(pre.headers.get("access-control-allow-origin"), "https://a.example");
  assertMatch(pre.headers.get("access-control-allow-headers") ?? "", /authorization/);
  const other = await app.request("/healthz", { headers: { origin: "https://evil.example" } });
  assert(other.headers.get("access-control-allow-origin") !== "https://evil.example");
  await other.body?.cancel();
});

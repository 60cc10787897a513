/**
 * core/api (the schemas shared by edge and worker) and the edge's small helpers: base64, model
 * descriptions, per-model checks, seeds, signatures, Accept negotiation, msgpack bounds, metrics text.
 */
import { assert, assertEquals, assertStrictEquals, assertThrows } from "../testing.ts";
import {
  base64ToBytes,
  bytesToBase64,
  checkSamplesForModel,
  CONTRACT_SOLVERS,
  float32FromBytes,
  float32ToBytes,
  normalizeModelInfo,
  normalizeModelList,
  SamplesRequest,
  seedsFrom,
  signedPayload,
  signRequest,
} from "../../core/api/mod.ts";
import { negotiate } from "../../functions/negotiate.ts";
import { packMsg, unpackMsg } from "../../core/api/msgpack.ts";
import { Counter, Gauge, Histogram, MetricsRegistry } from "../../core/metrics.ts";
import { configFromEnv } from "../../functions/config.ts";
import { FAKE_MODEL } from "./fake_worker.ts";

Deno.test("base64 round trips against btoa, and rejects junk", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 97 + n * 13) & 255);
    const text = bytesToBase64(bytes);
    assertStrictEquals(text, btoa(String.fromCharCode(...bytes)));
    assertEquals(Array.from(base64ToBytes(text)), Array.from(bytes));
  }
  assertEquals(Array.from(base64ToBytes("-_-_")), [251, 255, 191]); // base64url
  for (const bad of ["a", "ab=c", "a===", "é123", "ab cd"]) {
    assertThrows(() => base64ToBytes(bad), TypeError, "invalid base64");
  }
});

Deno.test("float32 bytes are little-endian", () => {
  const v = new Float32Array([1, -2.5, 1e-30]);
  const bytes = float32ToBytes(v);
  assertEquals(Array.from(bytes.subarray(0, 4)), [0, 0, 128, 63]);
  assertEquals(Array.from(float32FromBytes(bytes)), Array.from(v));
  assertThrows(() => float32FromBytes(new Uint8Array(3)), TypeError);
});

Deno.test("normalizeModelInfo fills limits and accepts the worker's variants", () => {
  const m = normalizeModelInfo({
    name: "a",
    shape: [2],
    classes: 3,
    limits: { max_batch: 500, guidance: [0, 4] },
  })!;
  assertEquals(m.classes, { count: 3 });
  assertEquals(m.limits, {
    max_batch: 500,
    max_n: 500,
    max_steps: 1000,
    max_nfe: 2000,
    guidance: { min: 0, max: 4 },
  });
  assertEquals(m.solvers, [...CONTRACT_SOLVERS]);
  assertEquals(
    normalizeModelInfo({ name: "b", shape: [1, 2, 2], derivatives: ["jvp", "magic"] })!.derivatives,
    ["jvp"],
  );
  assertStrictEquals(normalizeModelInfo({ name: "", shape: [2] }), null);
  assertStrictEquals(normalizeModelInfo({ name: "c" }), null);
  assertStrictEquals(normalizeModelInfo("x"), null);
  assertEquals(normalizeModelList({ models: [FAKE_MODEL, { bad: 1 }] }).map((x) => x.name), ["mnist-mix"]);
  assertEquals(normalizeModelList([FAKE_MODEL]).length, 1);
  assertEquals(normalizeModelList(7), []);
});

Deno.test("normalizeModelInfo keeps default_grids and costs; malformed ones are dropped, not the model", () => {
  const grids = {
    genie: { grid: "edm", rho: 7, source: "model" },
    ddim: { grid: "quadratic", rho: 2, source: "solver" },
  };
  const m = normalizeModelInfo({
    name: "a",
    shape: [2],
    default_grids: grids,
    costs: { eps: 1, head: 1.1, jvp: 3 },
    estimated_costs: ["jvp"],
  })!;
  assertEquals([m.default_grids, m.costs, m.estimated_costs], [grids, { eps: 1, head: 1.1, jvp: 3 }, [
    "jvp",
  ]]);
  const bad = normalizeModelInfo({
    name: "b",
    shape: [2],
    default_grids: { genie: { grid: "spiral" } },
    costs: { eps: -1 },
  })!;
  assertEquals([bad.name, bad.default_grids, bad.costs], ["b", undefined, undefined]);
});

Deno.test("checkSamplesForModel: solver, limits, classes, guidance, derivatives, latents", () => {
  const model = normalizeModelInfo(FAKE_MODEL)!;
  const paths = (body: unknown) => {
    const req = SamplesRequest.parse(body);
    return checkSamplesForModel(req, model).map((i) => i.path.join("."));
  };
  assertEquals(paths({ model: "mnist-mix", n: 64, class: 10, guidance: 3, nfe: 200 }), []); // null class allowed
  // nfe 400 is within max_nfe but needs 400 GENIE steps, beyond max_steps (core/plan.ts, as the worker says).
  assertEquals(paths({ model: "mnist-mix", nfe: 400 }), ["steps"]);
  assertEquals(paths({ model: "mnist-mix", solver: "x", n: 65, steps: 201 }), ["solver", "steps", "n"]);
  assertEquals(paths({ model: "mnist-mix", guidance: -1 }), ["guidance", "class"]);
  assertEquals(paths({ model: "mnist-mix", latents: { shape: [2, 1, 28, 28], data: "" } }), ["latents.data"]);
  assertEquals(paths({ model: "mnist-mix", latents: { shape: [2, 784], data: "" } }), ["latents.shape"]);
});

Deno.test("SamplesRequest rejects unknown keys and both steps and nfe", () => {
  const r = SamplesRequest.safeParse({ model: "m", steps: 1, nfe: 2, extra: true });
  assert(!r.success);
  assertEquals(r.error.issues.map((i) => i.path.join(".")).sort(), ["", "nfe"]);
  assert(SamplesRequest.safeParse({ model: "m", nfe: 2, seed: 4294967295 }).success);
});

Deno.test("seeds: consecutive, modulo 2^32", () => {
  assertEquals(seedsFrom(4294967294, 4), [4294967294, 4294967295, 0, 1]);
});

Deno.test("signRequest is HMAC-SHA-256 of method, path, timestamp, nonce and body", async () => {
  const body = new TextEncoder().encode("what do ya want for nothing?");
  const payload = signedPayload("post", "/v1/batch?a=1", "1700000000000", "n0nce-123", body);
  assertStrictEquals(
    new TextDecoder().decode(payload),
    "POST\n/v1/batch?a=1\n1700000000000\nn0nce-123\nwhat do ya want for nothing?",
  );
  // RFC 4231 test case 2 (key "Jefe"), with the message prefixed as above
  const headers = await signRequest("Jefe", {
    method: "POST",
    path: "/v1/batch?a=1",
    body,
    timestamp: 1700000000000,
    nonce: "n0nce-123",
  });
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode("Jefe"),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, payload as BufferSource));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  assertEquals(headers, {
    "x-genie-timestamp": "1700000000000",
    "x-genie-nonce": "n0nce-123",
    "x-genie-signature": `sha256=${hex}`,
  });
  const fresh = await signRequest("Jefe", { method: "GET", path: "/v1/models" });
  assert(Math.abs(Number(fresh["x-genie-timestamp"]) - Date.now()) < 5000);
  assert(/^[0-9a-f]{32}$/.test(fresh["x-genie-nonce"]));
});

Deno.test("negotiate: q-values, wildcards, specificity, nothing acceptable", () => {
  const all = ["json", "msgpack", "png", "sse"] as const;
  assertStrictEquals(negotiate(undefined, all), "json");
  assertStrictEquals(negotiate("*/*", all), "json");
  assertStrictEquals(negotiate("image/*", all), "png");
  assertStrictEquals(negotiate("application/x-msgpack", all), "msgpack");
  assertStrictEquals(negotiate("text/event-stream", all), "sse");
  assertStrictEquals(negotiate("application/json;q=0.5, image/png", all), "png");
  assertStrictEquals(negotiate("*/*;q=0.1, application/msgpack;q=0.2", all), "msgpack");
  assertStrictEquals(negotiate("text/html", all), null);
  assertStrictEquals(negotiate("image/png;q=0", all), null);
  assertStrictEquals(negotiate("image/png", ["json", "msgpack"]), null);
});

Deno.test("msgpack: raw bytes round trip; bounded decoding of hostile input", () => {
  const data = new Uint8Array([1, 2, 3]);
  const back = unpackMsg(packMsg({ a: data, skip: undefined })) as Record<string, unknown>;
  assertEquals(Object.keys(back), ["a"]);
  assertEquals(Array.from(back.a as Uint8Array), [1, 2, 3]);
  // A bin header claiming 4 GiB in a 6-byte body.
  assertThrows(() => unpackMsg(new Uint8Array([0xc6, 0xff, 0xff, 0xff, 0xff, 0])));
  assertThrows(() => unpackMsg(new Uint8Array([0x91]))); // truncated array
  assertThrows(() => unpackMsg(new Uint8Array([0xc0, 0xc0]))); // trailing bytes
});

Deno.test("metrics: Prometheus text exposition", () => {
  const r = new MetricsRegistry();
  const c = r.add("x_total", new Counter("things"));
  c.inc({ a: 'q"\\\n' });
  c.inc({ a: 'q"\\\n' }, 2);
  r.add("g", new Gauge("gauge", () => [[{}, 5]]));
  r.add("h", new Histogram("hist", [1, 2])).observe({ r: "x" }, 1.5);
  assertEquals(r.render().split("\n"), [
    "# HELP x_total things",
    "# TYPE x_total counter",
    'x_total{a="q\\"\\\\\\n"} 3',
    "# HELP g gauge",
    "# TYPE g gauge",
    "g 5",
    "# HELP h hist",
    "# TYPE h histogram",
    'h_bucket{le="1",r="x"} 0',
    'h_bucket{le="2",r="x"} 1',
    'h_bucket{le="+Inf",r="x"} 1',
    'h_sum{r="x"} 1.5',
    'h_count{r="x"} 1',
    "",
  ]);
});

Deno.test("configFromEnv reads the GENIE_* variables and names a bad one", () => {
  const env: Record<string, string> = {
    GENIE_WORKER_URLS: "http://a:1/, http://b:2",
    GENIE_API_KEYS: "k1,k2",
    GENIE_EDGE_CORS_ORIGINS: "*",
    GENIE_EDGE_RATE_PER_MIN: "0",
  };
  const c = configFromEnv((n) => env[n]);
  assertEquals([c.workerUrls, c.apiKeys, c.corsOrigins, c.rateLimit.perMinute], [
    ["http://a:1", "http://b:2"],
    ["k1", "k2"],
    ["*"],
    0,
  ]);
  assertStrictEquals(c.workerSecret, undefined);
  assertThrows(
    () => configFromEnv((n) => (n === "GENIE_EDGE_CONCURRENCY" ? "many" : undefined)),
    /GENIE_EDGE_CONCURRENCY/,
  );
});

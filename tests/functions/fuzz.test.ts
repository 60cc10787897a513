/**
 * Seeded fuzzing of the edge over a loopback socket: 1200 malformed or hostile requests (random
 * bytes, mutated JSON, random msgpack, deep nesting, wrong types, oversized bodies, junk headers,
 * random routes). Every answer must be a 4xx JSON error, nothing may reach the worker, and the server
 * must keep serving valid requests afterwards.
 */
import { encode as packMsg } from "@msgpack/msgpack";
import { assert, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { quiet } from "./helpers.ts";
import { uniform } from "../../training/init.ts";

const CASES = 1200;
const SEED = 0x5eed1234;
const KEY = "fuzz-key";
const MAX_BODY = 64 * 1024;

/** mulberry32: a small seeded PRNG. */
function rng(seed: number) {
  const next = uniform(seed);
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

type R = ReturnType<typeof rng>;

const HOSTILE_VALUES: unknown[] = [
  null,
  true,
  -1,
  0,
  1.5,
  1e308,
  -1e308,
  2 ** 53,
  "",
  "mnist-mix\u0000",
  "💥".repeat(50),
  "x".repeat(5000),
  "<script>alert(1)</script>",
  "../../etc/passwd",
  "1",
  [],
  [1, 2, 3],
  {},
  JSON.parse('{"__proto__": {"polluted": true}}'),
  { constructor: { prototype: { x: 1 } } },
  { $ref: "#" },
];

/** For each field, values that are always invalid there. */
const INVALID: Record<string, unknown[]> = {
  model: [null, 1, "", "no such model", "a b", "x".repeat(200), [], {}],
  n: [0, -1, 1.5, 65, 5000, "2", null, [], 1e308],
  solver: ["", "magic", 7, null, "x".repeat(100)],
  steps: [0, -3, 2.5, 201, "10", null],
  nfe: [0, -1, 401, 1e9, "ten", 3.3],
  grid: ["zigzag", 1, "", null],
  rho: [0, -2, 1e9, "2"],
  afs: ["yes", 1, null],
  denoise: ["no", 0, []],
  seed: [-1, 2 ** 32, 0.5, "7", null],
  class: [-1, 11, 99, 2.5, "3"],
  guidance: [50, -1, "2", null],
  latents: [
    "x",
    1,
    { shape: [1, 1, 28, 28], data: "not base64!" },
    { shape: [1, 1, 28, 28], data: "AAAA" },
    { shape: [], data: "" },
    { shape: [1, 1, 28, 28], dtype: "float64", data: "" },
    { shape: [0, 1, 28, 28], data: "" },
    { shape: [1, 1, 28, 28] },
  ],
  genie_derivative: ["magic", 1, "head"],
  deadline_ms: [0, -5, 1e12, "1000"],
  output: ["jpeg", 1, null],
};

const VALID = { model: "mnist-mix", n: 2, solver: "genie", nfe: 10, seed: 3, class: 1 };

function randomString(r: R, max = 40): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789_-{}[]:,"\\ \u00e9\u4e2d\u0000\u202e';
  return Array.from({ length: r.int(max) }, () => chars[r.int(chars.length)]).join("");
}

function randomValue(r: R, depth = 0): unknown {
  const k = r.int(depth > 3 ? 5 : 8);
  switch (k) {
    case 0:
      return r.pick(HOSTILE_VALUES);
    case 1:
      return r.next() * 10 ** r.int(20) * (r.next() < 0.5 ? -1 : 1);
    case 2:
      return randomString(r);
    case 3:
      return r.int(2) === 0;
    case 4:
      return new Uint8Array(r.int(64)).map(() => r.int(256));
    case 5:
      return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) o[randomString(r, 12)] = randomValue(r, depth + 1);
      return o;
    }
  }
}

/** A body that is always invalid: VALID with one field set to an invalid value, or an unknown key. */
function mutatedJson(r: R): Record<string, unknown> {
  const body: Record<string, unknown> = { ...VALID };
  for (let i = r.int(3); i > 0; i--) {
    const f = r.pick(Object.keys(INVALID));
    body[f] = r.pick(HOSTILE_VALUES); // may or may not be valid there…
  }
  if (r.next() < 0.4) body[r.pick(["typo", "__proto__", "constructor", "Model", "n "])] = randomValue(r);
  else {
    const f = r.pick(Object.keys(INVALID));
    body[f] = r.pick(INVALID[f]); // …this makes sure the body is invalid
  }
  if (r.next() < 0.2) delete body.model;
  return body;
}

interface Case {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: BodyInit;
}

function junkHeader(r: R): string {
  return Array.from({ length: r.int(300) }, () => String.fromCharCode(0x20 + r.int(0x5f))).join("");
}

function makeCase(r: R): Case {
  const headers: Record<string, string> = { authorization: `Bearer ${KEY}` };
  const kind = r.int(10);
  const path = r.pick(["/v1/samples", "/v1/samples", "/v1/encode"]);
  if (r.next() < 0.15) {
    headers.accept = r.pick([
      junkHeader(r),
      "text/event-stream",
      "image/png",
      "application/msgpack",
      "*/*;q=0",
      "image/*, text/*;q=0.5",
    ]);
  }
  if (r.next() < 0.05) {
    headers.authorization = r.pick(["", "Bearer", "Bearer " + junkHeader(r), "Basic Zm9vOmJhcg=="]);
  }
  if (r.next() < 0.05) headers["x-forwarded-for"] = junkHeader(r);
  switch (kind) {
    case 0: // random bytes
      return {
        method: "POST",
        path,
        headers: {
          ...headers,
          "content-type": r.pick(["application/json", "application/msgpack", "text/plain", ""]),
        },
        body: new Uint8Array(r.int(2000)).map(() => r.int(256)),
      };
    case 1: { // truncated or corrupted JSON
      const text = JSON.stringify(mutatedJson(r));
      const cut = text.slice(0, r.int(text.length));
      return {
        method: "POST",
        path,
        headers: { ...headers, "content-type": "application/json" },
        body: cut || "{",
      };
    }
    case 2: { // random msgpack
      const v = r.next() < 0.5 ? randomValue(r) : mutatedJson(r);
      return {
        method: "POST",
        path,
        headers: { ...headers, "content-type": "application/msgpack" },
        body: packMsg(v),
      };
    }
    case 3: { // deep nesting
      const depth = 1000 + r.int(20_000);
      const open = r.pick(["[", '{"a":']);
      const close = open === "[" ? "]" : "}";
      const body = open.repeat(depth) + (r.next() < 0.5 ? close.repeat(depth) : "");
      return { method: "POST", path, headers: { ...headers, "content-type": "application/json" }, body };
    }
    case 4: // oversized
      return {
        method: "POST",
        path,
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify({ ...VALID, pad: "x".repeat(MAX_BODY + r.int(10_000)) }),
      };
    case 5: // random routes and methods
      return {
        method: r.pick(["GET", "PUT", "DELETE", "PATCH", "POST"]),
        path: r.pick([
          "/v1/",
          "/v1/samples/",
          "/v1/models/x",
          "/v2/samples",
          "/static/",
          "/static/x.js",
          "/static/%2e%2e/",
          "/v1/jobs",
        ]) +
          "x" + encodeURIComponent(randomString(r, 10)),
        headers,
        body: undefined,
      };
    case 6: // wrong content types
      return {
        method: "POST",
        path,
        headers: {
          ...headers,
          "content-type": r.pick(["application/xml", "multipart/form-data", "image/png", junkHeader(r)]),
        },
        body: JSON.stringify(VALID),
      };
    default: // mutated but well-formed JSON
      return {
        method: "POST",
        path,
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify(mutatedJson(r)),
      };
  }
}

Deno.test("fuzz: 1200 hostile requests get 4xx JSON errors and the edge keeps serving", async () => {
  const worker = await startFakeWorker();
  const edge = await serveEdge({
    workerUrls: [worker.url],
    apiKeys: [KEY],
    log: quiet,
    maxBodyBytes: MAX_BODY,
    concurrencyPerKey: 64,
    rateLimit: { perMinute: 1_000_000, burst: 100_000 },
  }, { host: "127.0.0.1", port: 0 });
  const r = rng(SEED);
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  try {
    const cases = Array.from({ length: CASES }, () => makeCase(r));
    let next = 0;
    const run = async () => {
      while (next < cases.length) {
        const i = next++;
        const c = cases[i];
        let res: Response;
        try {
          res = await fetch(edge.url + c.path, { method: c.method, headers: c.headers, body: c.body });
        } catch (e) {
          failures.push(`#${i} ${c.method} ${c.path}: fetch failed: ${e}`);
          continue;
        }
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status < 400 || res.status >= 500) {
          failures.push(`#${i} ${c.method} ${c.path} → ${res.status} ${text.slice(0, 200)}`);
          continue;
        }
        try {
          const body = JSON.parse(text);
          if (typeof body.error?.code !== "string") throw new Error("no error.code");
        } catch (e) {
          failures.push(`#${i} → ${res.status} with a body that is not an error: ${e} ${text.slice(0, 100)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 4 }, run));
    assertStrictEquals(failures.length, 0, failures.slice(0, 10).join("\n"));
    assertStrictEquals(worker.batches.length, 0, "a hostile request reached the worker");
    // Every main error status was exercised.
    for (const s of [400, 401, 404, 413, 415, 422]) {
      assert((statuses.get(s) ?? 0) > 0, `no ${s} in ${[...statuses]}`);
    }
    // Still serving.
    const ok = await fetch(`${edge.url}/v1/samples`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify(VALID),
    });
    assertStrictEquals(ok.status, 200);
    assertStrictEquals((await ok.json()).images.length, 2);
  } finally {
    await edge.shutdown();
    await worker.close();
  }
});

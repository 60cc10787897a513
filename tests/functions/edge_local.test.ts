/**
 * Edge-local inference (functions/local.ts, docs/backends.md): models marked `edge` are solved in the edge
 * on WebAssembly and answer what the worker (here: in-process, on onnxruntime-node's `cpu`) answers for
 * the same request, within float32 tolerance; a model not marked, one too large, one whose engine does not
 * open or whose evaluation fails, and an edge with the switch off all go to the worker.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { base64ToBytes, float32FromBytes } from "../../core/api/tensor.ts";
import { createApp, type EdgeApp } from "../../functions/app.ts";
import { configFromEnv, type EdgeConfigInput } from "../../functions/config.ts";
import { EdgeLocal, type EngineAccess } from "../../functions/local.ts";
import type { WorkerPool } from "../../functions/pool.ts";
import type { WorkerApp } from "../../gpu-worker/app.ts";
import { startApp } from "../gpu-worker/helpers.ts";
import { assert, assertEquals, assertStrictEquals, assertThrows, maxAbsDiff } from "../testing.ts";
import { msgpackOf, parseSse, post } from "./helpers.ts";

const MODELS_DIR = new URL("../../models/", import.meta.url).pathname;

/**
 * Between the edge's `wasm` and the worker's `cpu`, relative to the samples' scale (max |x|, at least 1):
 * the same float32 graphs on two kernel builds round a few sums differently (tests/gpu-worker/
 * backends.test.ts measures at most 1 ulp on these solves); a wrong plan, seed or feed differs by O(1).
 */
const REL_TOL = 1e-5;

const REQUESTS = [
  { model: "gmm2d", n: 8, seed: 5, solver: "genie", nfe: 6, class: 1, guidance: 1, output: "tensor" },
  { model: "gmm2d", n: 3, seed: 9, solver: "dpmpp-2m", nfe: 5, output: "tensor" },
  { model: "mnist-mix", n: 2, seed: 3, solver: "genie", nfe: 4, class: 7, guidance: 1, output: "tensor" },
  { model: "mnist-mix", n: 2, seed: 1, solver: "ddim", nfe: 4, output: "tensor" },
];

/** An edge in front of `worker` that counts the worker calls it makes (health checks excluded). */
function edgeFor(worker: WorkerApp, config: EdgeConfigInput = {}): EdgeApp & { workerCalls: () => number } {
  let calls = 0;
  const app = createApp({
    workerUrls: ["http://worker.test"],
    fetch: (input, init) => {
      const req = new Request(input, init);
      if (req.method === "POST") calls++;
      return worker.fetch(req);
    },
    rateLimit: { perMinute: 0, burst: 0 },
    log: () => {},
    ...config,
  });
  return Object.assign(app, { workerCalls: () => calls });
}

function tensorOf(body: { tensor: { data: string } }): Float32Array {
  return float32FromBytes(base64ToBytes(body.tensor.data));
}

function scaleOf(x: Float32Array): number {
  return Math.max(1, ...Array.from(x, Math.abs));
}

/** A models folder with copies of the built-in gmm2d and mnist-mix folders, their manifests changed. */
function modelsCopy(
  change: Record<string, (manifest: Record<string, unknown>, dir: string) => void>,
): string {
  const root = mkdtempSync(join(tmpdir(), "genie-edge-local-"));
  for (const name of ["gmm2d", "mnist-mix"]) {
    const from = join(MODELS_DIR, name), to = join(root, name);
    mkdirSync(to);
    for (const file of ["built.json", "eps.onnx", "head.onnx", "jvp.onnx"]) {
      copyFileSync(join(from, file), join(to, file));
    }
    const manifest = JSON.parse(readFileSync(join(from, "model.json"), "utf8"));
    change[name]?.(manifest, to);
    writeFileSync(join(to, "model.json"), JSON.stringify(manifest, null, 2));
  }
  return root;
}

Deno.test({
  name: "edge-local: gmm2d and mnist-mix on the edge's wasm engine answer as the worker does",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const worker = await startApp({ models: ["gmm2d", "mnist-mix"] });
    // mnist-mix (3.1 MiB) is above the default size bound: raised here
    const local = edgeFor(worker, { edgeLocal: { mode: "auto", maxEpsBytes: 8 * 1024 * 1024 } });
    const remote = edgeFor(worker, { edgeLocal: { mode: "off" } });
    try {
      await t.step(
        "JSON: the same samples within float32 tolerance, the same counts, no worker call",
        async () => {
          for (const req of REQUESTS) {
            const before = local.workerCalls();
            const a = await post(local, "/v1/samples", req);
            const b = await post(remote, "/v1/samples", req);
            assertEquals([a.status, b.status], [200, 200], JSON.stringify(req));
            assertStrictEquals(a.headers.get("x-genie-backend"), "edge-wasm");
            assertStrictEquals(b.headers.get("x-genie-backend"), "worker");
            assertStrictEquals(local.workerCalls(), before, "the edge-local request made no worker call");
            const [ja, jb] = [await a.json(), await b.json()];
            const [xa, xb] = [tensorOf(ja), tensorOf(jb)];
            assert(
              maxAbsDiff(xa, xb) <= REL_TOL * scaleOf(xb),
              `${req.model}: max |Δ| ${maxAbsDiff(xa, xb)} over scale ${scaleOf(xb)}`,
            );
            const facts = (
              j: Record<string, unknown>,
            ) => [
              j.model,
              j.solver,
              j.steps,
              j.nfe,
              j.calls,
              j.cost,
              j.cost_estimated,
              j.grid,
              j.rho,
              j.seeds,
              j.shape,
            ];
            assertEquals(facts(ja), facts(jb), req.model);
          }
        },
      );

      await t.step("msgpack: raw float32 bytes, as the JSON answer's", async () => {
        const req = REQUESTS[0];
        const res = await post(local, "/v1/samples", req, { accept: "application/msgpack" });
        assertStrictEquals(res.status, 200);
        assertStrictEquals(res.headers.get("x-genie-backend"), "edge-wasm");
        const body = await msgpackOf(res) as { tensor: { data: Uint8Array; shape: number[] } };
        const json = await (await post(local, "/v1/samples", req)).json();
        assertEquals(body.tensor.shape, [8, 2]);
        assertEquals(body.tensor.data, base64ToBytes(json.tensor.data));
      });

      await t.step("PNG grid and SSE progress run on the edge too", async () => {
        const png = await post(local, "/v1/samples", { model: "mnist-mix", n: 4, seed: 2, nfe: 4 }, {
          accept: "image/png",
        });
        assertEquals([png.status, png.headers.get("x-genie-backend")], [200, "edge-wasm"]);
        assertStrictEquals(png.headers.get("content-type"), "image/png");
        await png.body?.cancel();
        const sse = await post(local, "/v1/samples", {
          model: "gmm2d",
          n: 2,
          seed: 1,
          solver: "ddim",
          nfe: 5,
        }, {
          accept: "text/event-stream",
        });
        assertStrictEquals(sse.headers.get("x-genie-backend"), "edge-wasm");
        const events = parseSse(await sse.text());
        const progress = events.slice(0, -1).map((e) => e.data as { step: number; phase: string });
        assertEquals(
          progress.map((p) => [p.phase, p.step]),
          [["queued", 0], ...[0, 1, 2, 3, 4].map((s) => ["running", s]), ["done", 5]],
        );
        assertStrictEquals(events.at(-1)!.event, "completed");
      });

      await t.step("the edge plans and refuses as the worker does (422 naming the field)", async () => {
        const bad = { model: "gmm2d", solver: "genie", genie_derivative: "fd", nfe: 3 };
        const [a, b] = [await post(local, "/v1/samples", bad), await post(remote, "/v1/samples", bad)];
        assertEquals([a.status, b.status], [422, 422]);
        assertEquals((await a.json()).error.details[0].path, (await b.json()).error.details[0].path);
      });

      await t.step("encode runs on the edge and matches the worker", async () => {
        const s = await (await post(remote, "/v1/samples", REQUESTS[3])).json();
        const req = { model: "mnist-mix", solver: "ddim", steps: 4, tensor: s.tensor };
        const [a, b] = [await post(local, "/v1/encode", req), await post(remote, "/v1/encode", req)];
        assertEquals([a.headers.get("x-genie-backend"), b.headers.get("x-genie-backend")], [
          "edge-wasm",
          "worker",
        ]);
        const [la, lb] = [await a.json(), await b.json()];
        const [xa, xb] = [
          float32FromBytes(base64ToBytes(la.latents.data)),
          float32FromBytes(base64ToBytes(lb.latents.data)),
        ];
        assert(maxAbsDiff(xa, xb) <= REL_TOL * scaleOf(xb), `encode: max |Δ| ${maxAbsDiff(xa, xb)}`);
      });

      await t.step("the switch off: no local engine, every request to the worker", async () => {
        assertStrictEquals(remote.local, undefined);
        const before = remote.workerCalls();
        const res = await post(remote, "/v1/samples", REQUESTS[1]);
        assertEquals([res.status, res.headers.get("x-genie-backend")], [200, "worker"]);
        await res.body?.cancel();
        assertStrictEquals(remote.workerCalls(), before + 1);
      });
    } finally {
      await local.close();
      await remote.close();
      await worker.shutdown();
    }
  },
});

Deno.test({
  name: "edge-local: not marked, too large, or failing to open: the worker answers, with one log line",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const worker = await startApp({ models: ["gmm2d", "mnist-mix"] });
    // gmm2d not marked `edge`; mnist-mix marked, with an eps graph ONNX Runtime cannot read.
    const dir = modelsCopy({
      gmm2d: (m) => delete m.edge,
      "mnist-mix": (_m, folder) => writeFileSync(join(folder, "eps.onnx"), "not an onnx graph"),
    });
    const logs: string[] = [];
    const edge = edgeFor(worker, { edgeLocal: { mode: "auto", modelsDir: dir }, log: (m) => logs.push(m) });
    const small: string[] = [];
    const bounded = edgeFor(worker, {
      edgeLocal: { mode: "auto", maxEpsBytes: 1000 },
      log: (m) => small.push(m),
    });
    const sample = async (app: EdgeApp, model: string) => {
      const res = await post(app, "/v1/samples", { model, n: 2, seed: 4, nfe: 4, output: "tensor" });
      assertStrictEquals(res.status, 200);
      await res.body?.cancel();
      return res.headers.get("x-genie-backend");
    };
    try {
      await t.step("a model not marked edge goes to the worker, silently", async () => {
        const before = edge.workerCalls();
        assertStrictEquals(await sample(edge, "gmm2d"), "worker");
        assertStrictEquals(edge.workerCalls(), before + 1);
        assertEquals(logs.filter((l) => l.startsWith("edge-local: gmm2d")), []);
      });

      await t.step("an engine that does not open: the worker answers; logged once", async () => {
        assertStrictEquals(await sample(edge, "mnist-mix"), "worker");
        assertStrictEquals(await sample(edge, "mnist-mix"), "worker");
        const lines = logs.filter((l) => l.startsWith("edge-local: mnist-mix: could not open on wasm"));
        assertStrictEquals(lines.length, 1, logs.join("\n"));
        assert(lines[0].endsWith("its requests go to the workers"), lines[0]);
      });

      await t.step(
        "eps.onnx above the size bound: the worker answers, silently (a setting, not a fault)",
        async () => {
          assertStrictEquals(await sample(bounded, "gmm2d"), "worker");
          assertStrictEquals(await sample(bounded, "gmm2d"), "worker");
          assertEquals(small.filter((l) => l.startsWith("edge-local: gmm2d")), []);
        },
      );
    } finally {
      await edge.close();
      await bounded.close();
      await worker.shutdown();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

Deno.test("edge-local: a failed local evaluation goes to the workers and leaves the model to them", async () => {
  const logs: string[] = [];
  let answered = 0, closed = 0;
  const access: EngineAccess = {
    inspect: () => Promise.resolve({ edge: true, epsBytes: 100 }),
    open: () =>
      Promise.resolve({
        answer: () => {
          answered++;
          return Promise.resolve({
            status: 500,
            body: { v: 1, error: { code: "internal", message: "boom" } },
          });
        },
        close: () => {
          closed++;
          return Promise.resolve();
        },
      }),
  };
  const local = new EdgeLocal({ mode: "auto", maxEpsBytes: 4096, maxModels: 4 }, (m) => logs.push(m), access);
  const pool = {
    call: () => Promise.resolve({ worker: 0, body: { from: "worker" } }),
  } as unknown as WorkerPool;
  const model = { name: "tiny" } as Parameters<EdgeLocal["route"]>[0];
  const route = await local.route(model, pool);
  const r = await route.caller.call("/v1/batch", "tiny", {}, new AbortController().signal);
  assertEquals([r.body, route.backend(), answered], [{ from: "worker" }, "worker", 1]);
  assertEquals(logs, ["edge-local: tiny: its evaluation failed (boom); its requests go to the workers"]);
  assertStrictEquals((await local.route(model, pool)).backend(), "worker");
  await local.close();
  assertStrictEquals(closed, 1);
});

Deno.test("edge-local: GENIE_EDGE_LOCAL is auto or off (default off, auto for deno task start)", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertStrictEquals(configFromEnv(env({})).edgeLocal.mode, "off");
  assertStrictEquals(configFromEnv(env({}), { edgeLocal: "auto" }).edgeLocal.mode, "auto");
  assertStrictEquals(
    configFromEnv(env({ GENIE_EDGE_LOCAL: "off" }), { edgeLocal: "auto" }).edgeLocal.mode,
    "off",
  );
  const c = configFromEnv(
    env({ GENIE_EDGE_LOCAL: "AUTO", GENIE_EDGE_LOCAL_MAX_BYTES: "1024", GENIE_EDGE_LOCAL_MODELS: "2" }),
  );
  assertEquals([c.edgeLocal.mode, c.edgeLocal.maxEpsBytes, c.edgeLocal.maxModels], ["auto", 1024, 2]);
  assertEquals(c.edgeLocal.maxEpsBytes, 1024);
  assertThrows(
    () => configFromEnv(env({ GENIE_EDGE_LOCAL: "on" })),
    Error,
    "GENIE_EDGE_LOCAL: expected auto or off",
  );
  assertThrows(
    () => configFromEnv(env({ GENIE_EDGE_LOCAL_MAX_BYTES: "-1" })),
    Error,
    "GENIE_EDGE_LOCAL_MAX_BYTES",
  );
});

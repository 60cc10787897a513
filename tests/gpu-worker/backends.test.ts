/**
 * The two inference runtimes behind onnx/ort.ts (docs/backends.md): the worker serves the same solves on
 * onnxruntime-node's `cpu` provider and on onnxruntime-web's `wasm` provider — eps, head and JVP graphs
 * through the same batching scheduler — and reports the provider of each model in `/healthz` and
 * `/v1/models`. A provider that cannot load a model, first in the list, falls back to the next one
 * with one log line per model. The provider settings (`GENIE_PROVIDERS`, `--providers`) are checked
 * by name.
 */
import { serveOptions } from "../../gpu-worker/main.ts";
import { parseProviders } from "../../onnx/ort.ts";
import type { WorkerApp } from "../../gpu-worker/app.ts";
import { assert, assertEquals, assertThrows, maxAbsDiff } from "../testing.ts";
import { floats, post, startApp } from "./helpers.ts";

/** Few seeds and steps: every solve below is a handful of small inference calls. */
const SOLVES = [
  { model: "gmm2d", seeds: [1, 2, 3, 4, 5, 6, 7, 8], settings: { solver: "ddim", nfe: 4 } },
  {
    model: "gmm2d",
    seeds: [1, 2, 3, 4, 5, 6, 7, 8],
    settings: { solver: "genie", nfe: 4, genie_derivative: "head" },
  },
  {
    model: "gmm2d",
    seeds: [1, 2, 3, 4, 5, 6, 7, 8],
    settings: { solver: "genie", nfe: 4, genie_derivative: "jvp" },
  },
  { model: "mnist-mix", seeds: [1, 2], settings: { solver: "ddim", nfe: 4, class: 3 } },
  {
    model: "mnist-mix",
    seeds: [1, 2],
    settings: { solver: "genie", nfe: 4, class: 3, guidance: 1, genie_derivative: "head" },
  },
  { model: "mnist-mix", seeds: [1, 2], settings: { solver: "genie", nfe: 4, genie_derivative: "jvp" } },
];

/**
 * The tolerance between providers, relative to the samples' scale (max |x|, at least 1). Both runtimes
 * evaluate the same float32 graphs with different kernels (native MLAS vs. its WebAssembly build, other
 * SIMD widths), so sums and fused operations may round differently: a few ulp (~1e-7 relative) per
 * call. A 4-step solve composes a few such calls, each error scaled by the step's Lipschitz factor
 * (order 1 here), so it stays far below 1e-5 (measured: at most 1 ulp, 1.2e-7); a wrong graph, feed
 * or output mapping would differ by O(1).
 */
const REL_TOL = 1e-5;

async function solveAll(app: WorkerApp): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const { model, seeds, settings } of SOLVES) {
    const r = await post(app, "/v1/batch", { v: 1, id: `${model}-${out.length}`, model, seeds, ...settings });
    assertEquals(r.status, 200, `${model} ${JSON.stringify(settings)}: ${JSON.stringify(r.body)}`);
    out.push(floats(r.body.data));
  }
  return out;
}

async function reported(app: WorkerApp): Promise<{ models: Record<string, string>; health: unknown }> {
  const models = await (await app.request("/v1/models")).json() as { name: string; provider: string }[];
  const health = (await (await app.request("/healthz")).json() as { providers: unknown }).providers;
  return { models: Object.fromEntries(models.map((m) => [m.name, m.provider])), health };
}

Deno.test({
  name: "backends: the same solves on cpu (onnxruntime-node) and wasm (onnxruntime-web) agree",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const results: Record<string, Float32Array[]> = {};
    for (const provider of ["cpu", "wasm"] as const) {
      const app = await startApp({ models: ["gmm2d", "mnist-mix"], providers: [provider] });
      try {
        const { models, health } = await reported(app);
        const expected = { "gmm2d": provider, "mnist-mix": provider };
        assertEquals(models, expected, "/v1/models provider");
        assertEquals(health, expected, "/healthz providers");
        results[provider] = await solveAll(app);
      } finally {
        await app.shutdown();
      }
    }
    SOLVES.forEach(({ model, settings }, i) => {
      const a = results.cpu[i], b = results.wasm[i];
      assertEquals(a.length, b.length);
      assert(a.every(Number.isFinite), `${model}: finite samples`);
      const scale = Math.max(1, ...Array.from(a, Math.abs));
      const diff = maxAbsDiff(a, b);
      assert(
        diff <= REL_TOL * scale,
        `${model} ${JSON.stringify(settings)}: cpu and wasm differ by ${diff} (scale ${scale})`,
      );
    });
  },
});

/** Whether navigator.gpu gives a hardware adapter (then webgpu may load, and is no fallback case). */
async function hardwareWebGpu(): Promise<boolean> {
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<unknown> } } }).navigator?.gpu;
  const adapter = await gpu?.requestAdapter() as { info?: { isFallbackAdapter?: boolean } } | null;
  return !!adapter && !adapter.info?.isFallbackAdapter;
}

Deno.test({
  name: "backends: an unavailable provider first in the list falls back, with one log line per model",
  ignore: await hardwareWebGpu(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lines: string[] = [];
    const app = await startApp({
      models: ["gmm2d"],
      providers: ["webgpu", "wasm"],
      log: (l) => lines.push(l),
    });
    try {
      const { models, health } = await reported(app);
      assertEquals(models, { gmm2d: "wasm" });
      assertEquals(health, { gmm2d: "wasm" });
      const mentions = lines.filter((l) => l.includes("webgpu"));
      assertEquals(mentions.length, 1, lines.join("\n"));
      assert(/^model gmm2d: wasm; webgpu unavailable \(.+\)/.test(mentions[0]), mentions[0]);
      const r = await post(app, "/v1/batch", {
        v: 1,
        id: "f",
        model: "gmm2d",
        seeds: [1],
        solver: "ddim",
        nfe: 2,
      });
      assertEquals(r.status, 200);
    } finally {
      await app.shutdown();
    }
  },
});

Deno.test("backends: provider settings are parsed by name, and a bad name names the setting", () => {
  assertEquals(parseProviders("GENIE_PROVIDERS", undefined), undefined);
  assertEquals(parseProviders("GENIE_PROVIDERS", "webgpu, cuda,cpu,wasm"), ["webgpu", "cuda", "cpu", "wasm"]);
  assertThrows(
    () => parseProviders("GENIE_PROVIDERS", "cpu,gpu"),
    /^Error: GENIE_PROVIDERS: unknown .*"gpu"/,
  );
  assertThrows(() => parseProviders("GENIE_PROVIDERS", "cpu,cpu"), /GENIE_PROVIDERS: cpu is listed twice/);
  // The worker: --providers, else GENIE_WORKER_PROVIDERS, else GENIE_PROVIDERS; unset: the default.
  assertEquals(serveOptions([], {}).providers, undefined);
  assertEquals(serveOptions([], { GENIE_PROVIDERS: "wasm" }).providers, ["wasm"]);
  assertEquals(serveOptions([], { GENIE_PROVIDERS: "wasm", GENIE_WORKER_PROVIDERS: "cpu" }).providers, [
    "cpu",
  ]);
  assertEquals(serveOptions(["--providers", "webgpu,cpu"], { GENIE_PROVIDERS: "wasm" }).providers, [
    "webgpu",
    "cpu",
  ]);
  assertThrows(
    () => serveOptions(["--providers", "tpu"], {}),
    /--providers: unknown execution provider "tpu"/,
  );
  assertThrows(() => serveOptions([], { GENIE_PROVIDERS: "tpu" }), /GENIE_PROVIDERS: unknown/);
});

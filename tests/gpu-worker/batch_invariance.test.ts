/**
 * Batch invariance (docs/contracts.md §2): a sample's numbers do not depend on the batch size or on its
 * position in the batch — graph by graph (one ORT call with the row alone against the same row inside
 * batches of 2, 3, 7 and 32) and through the worker (`/v1/batch` with 1, 2, 3, 7 and 32 seeds).
 * ORT's float64 Softmax, Exp and Log kernels are not batch-invariant by themselves; gpu-worker/graphs.ts
 * explains how the analytic graphs avoid them.
 */
import process from "node:process";
import { readFileSync } from "node:fs";
import { rngStream } from "../../core/rng.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { JVP_INPUTS } from "../../gpu-worker/graphs.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { assertEquals } from "../testing.ts";
import { floats, post, startApp } from "./helpers.ts";

const SIZES = [2, 3, 7, 32];
/** Rows per model: the cheap 2-D model gets many, so that rare last-bit differences show. */
const ROWS: Record<string, number> = { "gmm2d": 256, "mnist-mix": 32 };
const modelsDir = () => process.env.GENIE_MODELS_DIR || defaultModelsDir();

/** The bytes of float32 numbers, for bit-for-bit comparisons. */
const bits = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

for (const name of ["gmm2d", "mnist-mix"]) {
  Deno.test(`${name}: every graph gives a row the same bits alone and at any position of a batch`, async () => {
    const registry = await loadRegistry(modelsDir(), { only: [name] });
    const info = registry.models.get(name)!;
    const d = info.dim, shape = info.manifest.shape, classes = info.manifest.classes!.count + 1;
    const rows = ROWS[name];
    // Different samples: x around the origin at per-row t, class, tangent.
    const rng = rngStream(11);
    const x = Float32Array.from({ length: rows * d }, () => rng.normal());
    const t = Float32Array.from({ length: rows }, () => Math.fround(1e-3 + 0.999 * rng.uniform() ** 2));
    const dx = Float32Array.from({ length: rows * d }, () => rng.normal());
    const dt = Float32Array.from({ length: rows }, () => rng.normal());
    /** Rows from, from + 1, … (mod rows) as one batch. */
    const feeds = (from: number, count: number, jvp: boolean): Record<string, TensorInit> => {
      const at = Array.from({ length: count }, (_, i) => (from + i) % rows);
      const pick = (a: Float32Array, w: number) => {
        const out = new Float32Array(count * w);
        at.forEach((r, i) => out.set(a.subarray(r * w, (r + 1) * w), i * w));
        return out;
      };
      const f: Record<string, TensorInit> = {
        x: { type: "float32", data: pick(x, d), dims: [count, ...shape] },
        t: { type: "float32", data: pick(t, 1), dims: [count] },
        class: { type: "int64", data: BigInt64Array.from(at, (r) => BigInt(r % classes)), dims: [count] },
      };
      if (jvp) {
        f[JVP_INPUTS.x] = { type: "float32", data: pick(dx, d), dims: [count, ...shape] };
        f[JVP_INPUTS.t] = { type: "float32", data: pick(dt, 1), dims: [count] };
      }
      return f;
    };
    for (const graph of ["eps", "head", "jvp"] as const) {
      const { session } = await createSession(readFileSync(info.graphPaths[graph]!), {
        providers: ["cpu"],
        threads: 2,
      });
      try {
        const alone: Record<string, Float32Array>[] = [];
        for (let r = 0; r < rows; r++) {
          const out = await runSession(session, feeds(r, 1, graph === "jvp"));
          alone.push(Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array])));
        }
        // Every row in a batch of every size (consecutive batches, the last one wrapping around).
        for (const size of SIZES) {
          for (let from = 0; from < rows; from += size) {
            const out = await runSession(session, feeds(from, size, graph === "jvp"));
            for (const [key, tensor] of Object.entries(out)) {
              const data = tensor.data as Float32Array;
              for (let i = 0; i < size; i++) {
                const r = (from + i) % rows;
                assertEquals(
                  bits(data.subarray(i * d, (i + 1) * d)),
                  bits(alone[r][key]),
                  `${name}/${graph}: output ${key} of row ${r} at position ${i} of a batch of ${size}`,
                );
              }
            }
          }
        }
      } finally {
        await session.release();
      }
    }
  });
}

Deno.test({
  name: "worker: a seed's sample is bit-identical in requests of 1, 2, 3, 7 and 32 seeds, at any position",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["mnist-mix"] });
    try {
      const dim = 784;
      /** Requests of n seeds starting at seed `from` (n, from): each seed at other positions and sizes. */
      const all: [number, number][] = [[1, 331], [2, 328], [3, 328], [7, 322], [32, 300]];
      const cases = [
        // head graph, conditional and guided rows (64 rows in the call of 32 seeds): every size
        { settings: { solver: "genie", nfe: 4, class: 4, guidance: 1 }, requests: all },
        // jvp graph, unconditional; eps graph only: fewer sizes
        { settings: { solver: "genie", nfe: 4, genie_derivative: "jvp" }, requests: [[3, 20], [7, 18]] },
        { settings: { solver: "dpmpp-2m", nfe: 4, class: 9 }, requests: [[2, 41], [7, 37]] },
      ];
      for (const { settings, requests } of cases) {
        const what = JSON.stringify(settings);
        const sample = async (seeds: number[]) => {
          const r = await post(app, "/v1/batch", {
            v: 1,
            id: `s${seeds[0]}`,
            model: "mnist-mix",
            seeds,
            ...settings,
          });
          assertEquals(r.status, 200, JSON.stringify(r.body));
          return floats(r.body.data);
        };
        // One request per seed, one after the other: every inference call has batch 1.
        const alone = new Map<number, Uint8Array>();
        for (const [n, from] of requests) {
          for (let seed = from; seed < from + n; seed++) {
            if (!alone.has(seed)) alone.set(seed, bits(await sample([seed])));
          }
        }
        for (const [n, from] of requests) {
          const seeds = Array.from({ length: n }, (_, i) => from + i);
          const data = await sample(seeds);
          seeds.forEach((seed, i) => {
            assertEquals(
              bits(data.subarray(i * dim, (i + 1) * dim)),
              alone.get(seed),
              `${what}: seed ${seed} at position ${i} of ${n}`,
            );
          });
        }
      }
    } finally {
      await app.shutdown();
    }
  },
});

/** The spin policy of the inference thread's sessions (GENIE_WORKER_SPIN, spinPolicy, onnx/ort.ts). */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { InferenceThread, spinPolicy } from "../../gpu-worker/inference.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { createSession, runSession, spinConfig, type SpinPolicy } from "../../onnx/ort.ts";
import { assertEquals, test } from "../testing.ts";

test("spinPolicy: on and off override; auto spins between calls only for a lone session", () => {
  assertEquals(spinPolicy(true, 1), "on");
  assertEquals(spinPolicy(true, 5), "on");
  assertEquals(spinPolicy(false, 1), "off");
  assertEquals(spinPolicy(false, 5), "off");
  assertEquals(spinPolicy(undefined, 1), "on");
  assertEquals(spinPolicy(undefined, 2), "run");
  assertEquals(spinPolicy(undefined, 6), "run");
  assertEquals(spinPolicy("run", 6), "run");
  assertEquals(spinPolicy("brief", 1), "brief");
});

test("spinConfig: the session config entries of each policy", () => {
  assertEquals(spinConfig("on"), {});
  assertEquals(spinConfig(undefined), {});
  assertEquals(spinConfig("run"), { session: { force_spinning_stop: "1" } });
  assertEquals(spinConfig("brief"), { session: { intra_op: { spin_duration_us: "500" } } });
  assertEquals(spinConfig("off"), {
    session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } },
  });
});

Deno.test({
  name: "ONNX Runtime accepts every spin policy, and the results do not depend on it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await loadRegistry(defaultModelsDir(), { only: ["gmm2d"] });
    const bytes = readFileSync(join(defaultModelsDir(), "gmm2d", "eps.onnx"));
    const feeds = {
      x: { type: "float32" as const, data: Float32Array.of(0.3, -1.2, 2, 0.5), dims: [2, 2] },
      t: { type: "float32" as const, data: Float32Array.of(0.4, 0.8), dims: [2] },
      class: { type: "int64" as const, data: BigInt64Array.of(0n, 2n), dims: [2] },
    };
    const results: Float32Array[] = [];
    for (const spin of ["on", "brief", "run", "off"] as SpinPolicy[]) {
      const { session } = await createSession(bytes, { providers: ["cpu"], threads: 2, spin });
      try {
        for (let i = 0; i < 3; i++) {
          const out = await runSession(session, feeds);
          if (i === 2) results.push(out.eps.data as Float32Array);
        }
      } finally {
        await session.release();
      }
    }
    assertEquals(results[1], results[0]);
    assertEquals(results[2], results[0]);
    assertEquals(results[3], results[0]);
  },
});

Deno.test({
  name: "the inference thread reports the spin policy it chose for each model",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const registry = await loadRegistry(defaultModelsDir(), { only: ["gmm2d"] });
    const info = registry.models.get("gmm2d")!;
    const options = { providers: ["cpu" as const], intraOpThreads: 2, warmup: false };
    const spinOf = async (graphs: typeof info.graphPaths, spinning?: boolean) => {
      const thread = await InferenceThread.start([{ ...info, graphPaths: graphs }], { ...options, spinning });
      try {
        return thread.models.get("gmm2d")!.spin;
      } finally {
        await thread.close();
      }
    };
    // eps, head and jvp: calls may alternate between sessions
    assertEquals(await spinOf(info.graphPaths), "run");
    // the eps graph alone: one session, called back to back
    assertEquals(await spinOf({ eps: info.graphPaths.eps }), "on");
    assertEquals(await spinOf(info.graphPaths, true), "on");
    assertEquals(await spinOf({ eps: info.graphPaths.eps }, false), "off");
  },
});

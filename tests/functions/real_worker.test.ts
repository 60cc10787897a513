/**
 * The edge in front of the real GPU worker (gpu-worker/, on the CPU here) over sockets, with signed
 * calls: models, every output format, per-seed determinism across batch sizes, the worker's own
 * validation, encoding, and a worker killed mid-request then restarted.
 */
import { decode as decodePng } from "fast-png";
import { decode as unpack } from "@msgpack/msgpack";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { base64ToBytes, float32FromBytes } from "../../core/api/tensor.ts";
import { freePort, parseSse, quiet } from "./helpers.ts";
import { eventually, exists, sleep, spawnListening, taskArgs } from "./processes.ts";

const SECRET = "integration-secret";
const available = await exists("gpu-worker/main.ts");

async function startWorker(port: number) {
  return await spawnListening([...await taskArgs("worker"), "--port", String(port)], {
    env: { GENIE_WORKER_SECRET: SECRET, GENIE_WORKER_PROVIDERS: "cpu" },
    timeoutMs: 120_000,
  });
}

Deno.test({
  name: "edge → real worker: mnist-mix end to end",
  ignore: !available,
  fn: async (t) => {
    const port = freePort();
    let worker = await startWorker(port);
    const edge = await serveEdge(
      { workerUrls: [worker.url], workerSecret: SECRET, log: quiet, healthIntervalMs: 500 },
      { host: "127.0.0.1", port: 0 },
    );
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${edge.url}/v1/samples`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
    try {
      await t.step("GET /v1/models describes mnist-mix", async () => {
        const models = await (await fetch(`${edge.url}/v1/models`)).json();
        const m = models.find((x: { name: string }) => x.name === "mnist-mix");
        assertEquals(m.shape, [1, 28, 28]);
        assertStrictEquals(m.classes.count, 10);
        assert(m.solvers.includes("genie") && m.limits.max_batch >= 1);
        assertEquals(m.default_grids.genie, { grid: "quadratic", rho: 2, source: "solver" });
        assertEquals([m.costs, m.estimated_costs], [{ eps: 1, head: 1, jvp: 3 }, ["head", "jvp"]]);
      });

      await t.step("JSON PNGs, NFE and timings", async () => {
        const res = await post({ model: "mnist-mix", n: 4, seed: 11, nfe: 10, class: 3 });
        assertStrictEquals(res.status, 200);
        const body = await res.json();
        assertEquals([body.nfe, body.seeds], [10, [11, 12, 13, 14]]);
        // GENIE with the head: one call per step; mnist-mix records no cost ratios, so the head is priced
        // at the fallback 1 and the cost is marked estimated.
        assertEquals([body.calls, body.cost, body.cost_estimated, body.grid, body.rho], [
          10,
          10,
          true,
          "quadratic",
          2,
        ]);
        for (const im of body.images) {
          const png = decodePng(base64ToBytes(im.png));
          assertEquals([png.width, png.height, png.channels], [28, 28, 1]);
        }
        assert(body.timings.compute_ms > 0);
      });

      // docs/contracts.md §2: the same seed gives the same sample, bit for bit, whatever the batch.
      await t.step("the same seed gives the same sample whatever the batch (bit-identical)", async () => {
        const many = await (await post({ model: "mnist-mix", n: 3, seed: 20, steps: 6, output: "tensor" }))
          .json();
        const one = await (await post({ model: "mnist-mix", n: 1, seed: 21, steps: 6, output: "tensor" }))
          .json();
        const a = base64ToBytes(many.tensor.data).slice(784 * 4, 2 * 784 * 4);
        const b = base64ToBytes(one.tensor.data);
        assertStrictEquals(a.length, 784 * 4);
        assertEquals(a, b);
        assert(float32FromBytes(b).some((v) => v !== 0));
      });

      await t.step("msgpack, PNG grid and SSE", async () => {
        const mp = await post({ model: "mnist-mix", n: 2, seed: 1, output: "tensor" }, {
          accept: "application/msgpack",
        });
        const body = unpack(new Uint8Array(await mp.arrayBuffer())) as { tensor: { data: Uint8Array } };
        assertStrictEquals(body.tensor.data.byteLength, 2 * 784 * 4);
        const grid = await post({ model: "mnist-mix", n: 9, seed: 1 }, { accept: "image/png" });
        const png = decodePng(new Uint8Array(await grid.arrayBuffer()));
        assertEquals([png.width, png.height], [3 * 30 + 2, 3 * 30 + 2]);
        const sse = await post({ model: "mnist-mix", n: 2, seed: 1, solver: "ddim", nfe: 5 }, {
          accept: "text/event-stream",
        });
        const events = parseSse(await sse.text());
        // queued, one event per solver step (the worker streams them), done, completed
        assertEquals(events.map((e) => e.event), [...Array(7).fill("progress"), "completed"]);
        const progress = events.slice(0, -1).map((e) =>
          e.data as { step: number; steps: number; phase: string }
        );
        assertEquals(
          progress.map((p) => [p.phase, p.step, p.steps]),
          [["queued", 0, 5], ...[0, 1, 2, 3, 4].map((s) => ["running", s, 5]), ["done", 5, 5]],
        );
        assertStrictEquals((events.at(-1)!.data as { nfe: number }).nfe, 5);
      });

      await t.step("the worker's own checks come back as 422 naming the field", async () => {
        const res = await post({ model: "mnist-mix", solver: "genie", genie_derivative: "fd", nfe: 3 });
        assertStrictEquals(res.status, 422);
        const err = (await res.json()).error;
        assertEquals(err.details[0].path, ["nfe"]);
      });

      await t.step("encode returns latents of the images' shape", async () => {
        const s = await (await post({ model: "mnist-mix", n: 2, seed: 5, output: "tensor" })).json();
        const res = await fetch(`${edge.url}/v1/encode`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "mnist-mix", solver: "ddim", steps: 8, tensor: s.tensor }),
        });
        assertStrictEquals(res.status, 200);
        const body = await res.json();
        assertEquals(body.latents.shape, [2, 1, 28, 28]);
        assert(float32FromBytes(base64ToBytes(body.latents.data)).every(Number.isFinite));
      });

      await t.step("killed mid-request: 503 + Retry-After; restarted: served again", async () => {
        const pending = post({
          model: "mnist-mix",
          n: 256,
          seed: 1,
          solver: "genie",
          nfe: 400,
          output: "tensor",
        });
        await sleep(400);
        await worker.stop("SIGKILL");
        const res = await pending;
        assertStrictEquals(res.status, 503);
        assertMatch(res.headers.get("retry-after") ?? "", /^\d+$/);
        await res.body?.cancel();
        worker = await startWorker(port);
        await eventually(
          async () => {
            const r = await post({ model: "mnist-mix", seed: 1 });
            await r.body?.cancel();
            return r.status === 200;
          },
          20_000,
          200,
        );
      });
    } finally {
      await worker.stop("SIGTERM");
      await edge.shutdown();
    }
  },
});

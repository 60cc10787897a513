/**
 * Crash recovery with real processes: the edge (functions/main.ts, as `deno task serve` runs it) is
 * SIGKILLed mid-job and restarted on the same KV file; the GPU worker is SIGKILLed mid-job and
 * restarted. Either way the job completes with exactly `count` results, each chunk once, bit-identical
 * to an uninterrupted run with the same seeds.
 */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { decodeNpy } from "../../core/npy.ts";
import { createApp } from "../../functions/app.ts";
import { startFakeWorker } from "../functions/fake_worker.ts";
import { freePort } from "../functions/helpers.ts";
import { type Listening, spawnListening, taskArgs } from "../functions/processes.ts";
import {
  allResults,
  checkComplete,
  chunkData,
  getJob,
  quiet,
  sameBytes,
  submitJob,
  testJobsConfig,
  waitJob,
} from "./helpers.ts";

async function spawnEdge(env: Record<string, string>): Promise<Listening> {
  return await spawnListening([...await taskArgs("serve"), "--port", "0"], { env, timeoutMs: 60_000 });
}

/** Every .npy under `dir` decodes completely (no half-written result files). */
async function allNpyWhole(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) n += await allNpyWhole(path);
    else if (e.name.endsWith(".npy")) {
      decodeNpy(await Deno.readFile(path));
      n++;
    }
  }
  return n;
}

Deno.test("kill -9 of the edge mid-job: after a restart on the same KV the job completes exactly once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-crash-" });
  const worker = await startFakeWorker({ delayMs: 60 });
  const env = {
    GENIE_WORKER_URLS: worker.url,
    GENIE_KV_PATH: `${dir}/jobs.kv`,
    GENIE_RESULTS_DIR: `${dir}/results`,
    GENIE_JOBS_LEASE_MS: "800",
    GENIE_JOBS_SWEEP_MS: "100",
    GENIE_EDGE_RATE_PER_MIN: "0",
  };
  let edge: Listening | undefined;
  try {
    edge = await spawnEdge(env);
    const job = await submitJob(edge.url, {
      request: { model: "mnist-mix", seed: 5000 },
      count: 64,
      chunk: 4,
    });
    const before = await waitJob(edge.url, job.id, (j) => j.done >= 12);
    assert(before.status === "running" && before.done < 64, `killed mid-job (${before.done}/64)`);
    await edge.stop("SIGKILL");
    const sentBeforeKill = worker.batches.filter((b) => String(b.id).startsWith(job.id)).length;

    edge = await spawnEdge(env);
    const done = await waitJob(edge.url, job.id);
    assertStrictEquals(done.status, "succeeded");
    assertEquals([done.done, done.total, done.failed, done.chunks.done], [64, 64, 0, 16]);
    const items = await checkComplete(edge.url, done, 5000);
    const sent = worker.batches.filter((b) => String(b.id).startsWith(job.id)).length;
    assert(
      sent >= 16 && sentBeforeKill < 16,
      `worker calls: ${sentBeforeKill} before the kill, ${sent} in all`,
    );

    // An uninterrupted run of the same request gives the same bytes, chunk by chunk.
    const again = await submitJob(edge.url, {
      request: { model: "mnist-mix", seed: 5000 },
      count: 64,
      chunk: 4,
    });
    const clean = await waitJob(edge.url, again.id);
    assertStrictEquals(clean.status, "succeeded");
    const cleanItems = await allResults(edge.url, again.id);
    for (let i = 0; i < items.length; i++) {
      assert(
        sameBytes(await chunkData(edge.url, items[i]), await chunkData(edge.url, cleanItems[i])),
        `chunk ${i}`,
      );
    }
    assertStrictEquals(await allNpyWhole(`${dir}/results`), 32);
    assertStrictEquals((await edge.stop("SIGTERM")).code, 0);
    edge = undefined;
  } finally {
    await edge?.stop("SIGKILL");
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill -9 of the worker mid-job: chunks are retried with backoff and the job completes exactly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-crash-" });
  const port = freePort();
  const workerArgs = [
    "run",
    "-A",
    "tests/functions/fake_worker.ts",
    "--port",
    String(port),
    "--delay-ms",
    "60",
  ];
  let worker: Listening | undefined = await spawnListening(workerArgs);
  const app = createApp({
    workerUrls: [worker.url],
    log: quiet,
    healthIntervalMs: 100,
    rateLimit: { perMinute: 0, burst: 1 },
    jobs: testJobsConfig(dir, { backoffMs: 50, maxBackoffMs: 400, maxAttempts: 30 }),
  });
  try {
    await app.jobs!.start();
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 9000 }, count: 64, chunk: 4 });
    await waitJob(app, job.id, (j) => j.done >= 12);
    await worker.stop("SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    const stalled = await getJob(app, job.id);
    assert(
      stalled.status === "running" && stalled.done < 64,
      `the job waits for the worker (${stalled.done}/64)`,
    );
    worker = await spawnListening(workerArgs);
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "succeeded");
    assertEquals([done.done, done.failed], [64, 0]);
    const items = await checkComplete(app, done, 9000);
    assert(items.some((i) => i.attempts > 1), "some chunk needed a retry");
  } finally {
    await app.close();
    await worker?.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

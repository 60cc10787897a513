/**
 * Exactly-once results despite at-least-once delivery: a chunk attempted twice (stale lease holder
 * versus the process that took the chunk over), messages delivered again after completion, and
 * duplicate queue messages all leave every chunk counted once.
 */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { normalizeModelList } from "../../core/api/models.ts";
import { JobRequest } from "../../core/api/jobs.ts";
import { WorkerPool } from "../../functions/pool.ts";
import { JobSystem } from "../../functions/jobs/system.ts";
import { type ChunkRecord, K, pumpMessage } from "../../functions/jobs/keys.ts";
import { FAKE_MODEL, startFakeWorker } from "../functions/fake_worker.ts";
import { eventually } from "../functions/processes.ts";
import {
  checkComplete,
  expectedBytes,
  quiet,
  sameBytes,
  SAMPLE,
  submitJob,
  testJobsConfig,
  waitJob,
  withJobs,
} from "./helpers.ts";

const MODEL = normalizeModelList({ models: [FAKE_MODEL] })[0];

Deno.test("a chunk run twice (lease expired, taken over) is committed once: the stale holder's commit is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-once-" });
  const worker = await startFakeWorker({ delayMs: 150 });
  const pool = new WorkerPool([worker.url], { log: quiet });
  const clock = { t: Date.UTC(2030, 0, 1) };
  const config = testJobsConfig(dir, { driver: "poll", leaseMs: 60_000 });
  const kvs = [await Deno.openKv(config.kvPath), await Deno.openKv(config.kvPath)];
  const [a, b] = kvs.map((kv, i) =>
    new JobSystem({ pool, config, kv, owner: `p${i}`, now: () => clock.t, log: quiet })
  );
  try {
    const job = await a.submit(
      JobRequest.parse({ request: { model: "mnist-mix", seed: 5 }, count: 3 }),
      MODEL,
      "t",
    );
    assertStrictEquals(job.chunks, 1);
    const first = a.pump(job.id); // claims chunk 0 and calls the worker
    await eventually(() => worker.active === 1);
    clock.t += 60_001; // A's lease expires while it is still working
    const second = b.pump(job.id); // B takes the chunk over
    await eventually(() => worker.batches.length === 2);
    assertEquals(await Promise.all([first, second]), ["ran", "ran"]);

    const chunk = (await a.kv.get<ChunkRecord>(K.chunk(job.id, 0))).value!;
    assertEquals([chunk.state, chunk.attempts], ["done", 2]);
    assertEquals(worker.batches.map((m) => m.id), [`${job.id}.0.1`, `${job.id}.0.2`]);
    assertEquals(await a.counts(job.id), { samples: 3, chunks: 1, failed_chunks: 0, failed_samples: 0 });
    assertStrictEquals((await a.job(job.id))!.status, "succeeded");
    const npy = (await a.store.get(`${job.id}/chunk-000000.npy`))!;
    assert(sameBytes(npy.subarray(npy.byteLength - 3 * SAMPLE * 4), expectedBytes([5, 6, 7])));

    // The message delivered again after completion: nothing to do, nothing counted.
    assertStrictEquals(await a.pump(job.id), "gone");
    assertStrictEquals(await b.pump(job.id), "gone");
    assertEquals(await a.counts(job.id), { samples: 3, chunks: 1, failed_chunks: 0, failed_samples: 0 });
    assertStrictEquals(worker.batches.length, 2);
  } finally {
    await a.close();
    await b.close();
    for (const kv of kvs) kv.close();
    await pool.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("duplicate queue messages do not duplicate work or results", async () => {
  await withJobs(async ({ app, worker }) => {
    assertStrictEquals(app.jobs!.driver, "queue");
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 300 }, count: 30, chunk: 3 });
    // Redeliver the job's message many times over (at-least-once delivery at its worst).
    for (let i = 0; i < 12; i++) await app.jobs!.kv.enqueue(pumpMessage(job.id));
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "succeeded");
    await checkComplete(app, done, 300);
    assertEquals([done.done, done.chunks.done], [30, 10]);
    const ids = worker.batches.map((m) => String(m.id)).filter((id) => id.startsWith(job.id));
    assertStrictEquals(new Set(ids).size, ids.length);
    assertStrictEquals(ids.length, 10, "each chunk was sent to the worker once");
    // More redeliveries after the end change nothing.
    for (let i = 0; i < 3; i++) await app.jobs!.kv.enqueue(pumpMessage(job.id));
    await new Promise((r) => setTimeout(r, 200));
    assertEquals(await app.jobs!.counts(job.id), {
      samples: 30,
      chunks: 10,
      failed_chunks: 0,
      failed_samples: 0,
    });
  }, { worker: { delayMs: 10 }, jobs: { parallel: 3 } });
});

Deno.test("the polling driver (no KV queue) runs jobs to the same exact results", async () => {
  await withJobs(async ({ app }) => {
    assertStrictEquals(app.jobs!.driver, "poll");
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 77 }, count: 21, chunk: 4 });
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "succeeded");
    await checkComplete(app, done, 77);
  }, { jobs: { driver: "poll" } });
});

/**
 * A results store that cannot be written fails the job, with the storage error in its status, instead
 * of leaving it `running` forever with every chunk failed and no error. A recurring job's runs each
 * fail the same way (the schedule goes on, so a repaired store is used by the next run).
 *
 * The results folder is made unwritable in a way that holds even for root (where chmod 0o555 does not
 * stop writes): its parent is a regular file, so creating anything below it fails (ENOTDIR). When the
 * tests do not run as root, a second case uses a read-only folder (chmod 0o555).
 */
import { JobRequest } from "../../core/api/jobs.ts";
import { normalizeModelList } from "../../core/api/models.ts";
import { WorkerPool } from "../../functions/pool.ts";
import { JobSystem } from "../../functions/jobs/system.ts";
import type { ResultStore } from "../../functions/jobs/store.ts";
import { FAKE_MODEL, startFakeWorker } from "../functions/fake_worker.ts";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { quiet, submitJob, testJobsConfig, waitJob, withJobs } from "./helpers.ts";

const MODEL = normalizeModelList({ models: [FAKE_MODEL] })[0];

async function unwritableResults(dir: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/not-a-folder`, "x");
  return `${dir}/not-a-folder/results`;
}

Deno.test("an unwritable results folder fails the job with a storage_error naming the failure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-store-" });
  try {
    const resultsDir = await unwritableResults(dir);
    await withJobs(async ({ app, worker }) => {
      const job = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 40, chunk: 2 });
      const done = await waitJob(app, job.id, undefined, 10_000);
      assertStrictEquals(done.status, "failed", JSON.stringify(done));
      assertStrictEquals(done.error?.code, "storage_error", JSON.stringify(done));
      assertMatch(done.error!.message, /writing the results failed/);
      assertMatch(done.error!.message, /not-a-folder/);
      // failed at once: not every chunk was computed into a store that cannot take it
      assert(worker.batches.length < 20, `stopped early (${worker.batches.length} worker calls)`);
    }, { jobs: { resultsDir, maxAttempts: 3 } });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a read-only results folder (chmod 0o555) fails the job with a storage_error",
  ignore: Deno.uid?.() === 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "genie-store-" });
    const resultsDir = `${dir}/results`;
    await Deno.mkdir(resultsDir);
    await Deno.chmod(resultsDir, 0o555);
    try {
      await withJobs(async ({ app }) => {
        const job = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 4, chunk: 2 });
        const done = await waitJob(app, job.id, undefined, 10_000);
        assertStrictEquals(done.status, "failed", JSON.stringify(done));
        assertStrictEquals(done.error?.code, "storage_error");
      }, { jobs: { resultsDir } });
    } finally {
      await Deno.chmod(resultsDir, 0o755);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A store whose writes fail (a full disk, a lost mount); reads work. */
class FailingStore implements ResultStore {
  puts = 0;
  constructor(private readonly fails: (key: string) => boolean = () => true) {}
  put(key: string): Promise<void> {
    this.puts++;
    if (!this.fails(key)) return Promise.resolve();
    return Promise.reject(new Error(`No space left on device (os error 28): ${key}`));
  }
  get(): Promise<Uint8Array | null> {
    return Promise.resolve(null);
  }
  list() {
    return Promise.resolve({ items: [], cursor: null });
  }
  delete(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("each run of a recurring job fails with the storage error; the schedule goes on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-store-" });
  const worker = await startFakeWorker();
  const pool = new WorkerPool([worker.url], { log: quiet });
  const clock = { t: Date.parse("2030-01-01T00:02:30Z") };
  const store = new FailingStore();
  const jobs = new JobSystem({
    pool,
    config: testJobsConfig(dir, { driver: "poll" }),
    store,
    now: () => clock.t,
    log: quiet,
  });
  try {
    await jobs.start();
    const req = JobRequest.parse({
      request: { model: "mnist-mix", seed: 7 },
      count: 4,
      chunk: 2,
      schedule: "*/5 * * * *",
    });
    const parent = await jobs.submit(req, MODEL, "test");
    for (const [i, at] of [[1, "00:05:00"], [2, "00:10:00"]] as const) {
      clock.t = Date.parse(`2030-01-01T${at}Z`);
      assertEquals(await jobs.tick(), [`${parent.id}-${i}`]);
      const end = Date.now() + 10_000;
      let run = (await jobs.job(`${parent.id}-${i}`))!;
      while (run.status !== "failed" && run.status !== "succeeded" && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 20));
        run = (await jobs.job(`${parent.id}-${i}`))!;
      }
      assertStrictEquals(run.status, "failed", JSON.stringify(run));
      assertStrictEquals(run.error?.code, "storage_error");
      assertMatch(run.error!.message, /No space left on device/);
      // the recurring job shows its latest run's error
      const info = await jobs.info((await jobs.job(parent.id))!);
      assertStrictEquals(info.error?.code, "storage_error", JSON.stringify(info));
      assertStrictEquals(info.runs, i);
    }
  } finally {
    await jobs.close();
    await pool.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job whose chunk files were stored but whose index cannot be written fails, saying so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-store-" });
  const worker = await startFakeWorker();
  const pool = new WorkerPool([worker.url], { log: quiet });
  const jobs = new JobSystem({
    pool,
    config: testJobsConfig(dir, { driver: "poll" }),
    store: new FailingStore((key) => key.endsWith("/index.json")),
    log: quiet,
  });
  try {
    await jobs.start();
    const req = JobRequest.parse({ request: { model: "mnist-mix", seed: 7 }, count: 4, chunk: 2 });
    const job = await jobs.submit(req, MODEL, "test");
    const end = Date.now() + 10_000;
    let rec = (await jobs.job(job.id))!;
    while (rec.status !== "failed" && rec.status !== "succeeded" && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
      rec = (await jobs.job(job.id))!;
    }
    assertStrictEquals(rec.status, "failed", JSON.stringify(rec));
    assertStrictEquals(rec.error?.code, "storage_error");
    assertMatch(rec.error!.message, /index\.json/);
  } finally {
    await jobs.close();
    await pool.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

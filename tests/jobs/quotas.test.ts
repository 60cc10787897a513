/**
 * Per-key quotas of batch jobs (functions/jobs/quotas.ts): active jobs, samples per job and in total,
 * stored bytes; the usage report of `GET /v1/jobs`; `DELETE /v1/jobs/:id`; a recurring job's run over
 * the byte limit; the configuration variables.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "../testing.ts";
import { normalizeModelList } from "../../core/api/models.ts";
import { JobRequest } from "../../core/api/jobs.ts";
import { createApp } from "../../functions/app.ts";
import { jobsConfigFromEnv } from "../../functions/jobs/config.ts";
import { expectedBytes } from "../../functions/jobs/quotas.ts";
import { JobSystem } from "../../functions/jobs/system.ts";
import { WorkerPool } from "../../functions/pool.ts";
import { errorOf } from "../functions/helpers.ts";
import { FAKE_MODEL, startFakeWorker } from "../functions/fake_worker.ts";
import { call, post, quiet, SAMPLE, submitJob, testJobsConfig, waitJob, withJobs } from "./helpers.ts";

const A = { authorization: "Bearer key-a" }, B = { authorization: "Bearer key-b" };
const YEARLY = "0 0 1 1 *"; // a recurring job that stays active (queued) without running during a test

async function usage(app: Parameters<typeof call>[0], headers: Record<string, string>) {
  const res = await call(app, "/v1/jobs", { headers });
  assertStrictEquals(res.status, 200);
  return await res.json();
}

/** Bytes of a job's result files on disk (index.json is not counted). */
async function filesOnDisk(dir: string, id: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(`${dir}/results/${id}`)) {
    if (e.name !== "index.json") total += (await Deno.stat(`${dir}/results/${id}/${e.name}`)).size;
  }
  return total;
}

Deno.test("quotas: samples per job (413), active jobs and active samples (429), per key, naming the limit and the field", async () => {
  await withJobs(async ({ app, worker }) => {
    const big = await post(app, "/v1/jobs", { request: { model: "mnist-mix", n: 3 }, count: 17 }, A);
    assertStrictEquals(big.status, 413);
    const e413 = await errorOf(big);
    assertStrictEquals(e413.code, "quota_exceeded");
    assertMatch(e413.message, /^max_job_samples: count × n = 51 samples; at most 50 per job/);
    assertEquals(e413.details!.map((d) => d.path), [["count"]]);

    const one = await submitJob(app, { request: { model: "mnist-mix" }, count: 30, schedule: YEARLY }, A);
    await submitJob(app, { request: { model: "mnist-mix" }, count: 30, schedule: YEARLY }, A);
    const third = await post(app, "/v1/jobs", { request: { model: "mnist-mix" }, count: 1 }, A);
    assertStrictEquals(third.status, 429);
    const e429 = await errorOf(third);
    assertStrictEquals(e429.code, "quota_exceeded");
    assertMatch(e429.message, /^max_active_jobs: this key has 2 jobs queued or running/);
    // Another key has its own quota.
    await submitJob(app, { request: { model: "mnist-mix" }, count: 40, schedule: YEARLY }, B);

    // Canceling frees a place; the samples of active jobs together are limited too.
    assertStrictEquals((await post(app, `/v1/jobs/${one.id}/cancel`, {}, A)).status, 200);
    const over = await post(app, "/v1/jobs", { request: { model: "mnist-mix" }, count: 31 }, A);
    assertStrictEquals(over.status, 429);
    const eSamples = await errorOf(over);
    assertMatch(eSamples.message, /^max_active_samples: this key's active jobs hold 30 samples; 31 more/);
    assertEquals(eSamples.details!.map((d) => d.path), [["count"]]);
    const last = await submitJob(app, { request: { model: "mnist-mix" }, count: 30, schedule: YEARLY }, A);

    const report = await usage(app, A);
    assertEquals(report.limits, {
      max_active_jobs: 2,
      max_job_samples: 50,
      max_active_samples: 60,
      max_stored_bytes: null,
      retention_ms: 7 * 24 * 3600 * 1000,
    });
    assertEquals([report.usage.active_jobs, report.usage.active_samples, report.usage.stored_bytes], [
      2,
      60,
      0,
    ]);
    assert(report.active.includes(last.id) && !report.active.includes(one.id));
    assertEquals((await usage(app, B)).usage.active_samples, 40);
    assertStrictEquals(worker.batches.length, 0, "nothing reached the worker");
  }, {
    edge: { apiKeys: ["key-a", "key-b"] },
    jobs: { maxActiveJobs: 2, maxJobSamples: 50, maxActiveSamples: 60, maxStoredBytes: 0 },
  });
});

Deno.test("quotas: concurrent submissions of one key never pass max_active_jobs", async () => {
  await withJobs(async ({ app }) => {
    const body = { request: { model: "mnist-mix" }, count: 1, schedule: YEARLY };
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(app, "/v1/jobs", body)));
    const statuses = answers.map((r) => r.status).sort();
    await Promise.all(answers.map((r) => r.body?.cancel()));
    assertEquals(statuses, [202, 202, 202, 429, 429, 429, 429, 429]);
    assertStrictEquals((await usage(app, {})).usage.active_jobs, 3);
  }, { jobs: { maxActiveJobs: 3 } });
});

Deno.test("quotas: stored bytes are counted exactly as written; over the limit → 429, alone → 413; DELETE gives them back", async () => {
  await withJobs(async ({ app, dir }) => {
    const est = expectedBytes({ total: 4, chunk: 2, chunks: 2, shape: FAKE_MODEL.shape });
    assertStrictEquals(est, 4 * SAMPLE * 4 + 2 * 128);
    // A job whose own files pass the limit can never fit.
    const huge = await post(app, "/v1/jobs", { request: { model: "mnist-mix" }, count: 10, chunk: 2 });
    assertStrictEquals(huge.status, 413);
    assertMatch((await errorOf(huge)).message, /^max_stored_bytes: the results would take 32000 bytes/);

    const first = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 4, chunk: 2 });
    // While it runs, its expected bytes are reserved.
    const during = await usage(app, {});
    assertStrictEquals(during.usage.stored_bytes + during.usage.reserved_bytes >= est, true);
    await waitJob(app, first.id);
    const s1 = await filesOnDisk(dir, first.id);
    let report = await usage(app, {});
    assertEquals([report.usage.stored_bytes, report.usage.reserved_bytes, report.usage.active_jobs], [
      s1,
      0,
      0,
    ]);
    assertStrictEquals(report.limits.max_stored_bytes, 30_000);

    const second = await submitJob(app, { request: { model: "mnist-mix", seed: 9 }, count: 4, chunk: 2 });
    await waitJob(app, second.id);
    const s2 = await filesOnDisk(dir, second.id);
    assertStrictEquals((await usage(app, {})).usage.stored_bytes, s1 + s2);
    const third = await post(app, "/v1/jobs", { request: { model: "mnist-mix" }, count: 4, chunk: 2 });
    assertStrictEquals(third.status, 429);
    const err = await errorOf(third);
    assertStrictEquals(err.code, "quota_exceeded");
    assertMatch(err.message, new RegExp(`^max_stored_bytes: this key stores ${s1 + s2} bytes`));
    assertMatch(err.message, /DELETE \/v1\/jobs\/:id/);

    // DELETE: 204, the files go, the bytes come back, the id answers 410.
    const del = await call(app, `/v1/jobs/${first.id}`, { method: "DELETE" });
    assertStrictEquals(del.status, 204);
    await Deno.stat(`${dir}/results/${first.id}`).then(
      () => assert(false, "the job's folder is gone"),
      (e) => assert(e instanceof Deno.errors.NotFound),
    );
    report = await usage(app, {});
    assertStrictEquals(report.usage.stored_bytes, s2);
    const gone = await call(app, `/v1/jobs/${first.id}`);
    assertStrictEquals(gone.status, 410);
    const g = await errorOf(gone);
    assertStrictEquals(g.code, "job_expired");
    assertMatch(g.message, /was deleted at/);
    assertStrictEquals((await call(app, `/v1/jobs/${first.id}`, { method: "DELETE" })).status, 410);
    await submitJob(app, { request: { model: "mnist-mix" }, count: 4, chunk: 2 });
  }, { jobs: { maxStoredBytes: 30_000 } });
});

Deno.test("DELETE of a running job cancels it first; other keys get 404", async () => {
  await withJobs(async ({ app, worker }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 5 }, count: 400, chunk: 4 }, A);
    await waitJob(app, job.id, (j) => j.done >= 8, 20_000, A);
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`, { method: "DELETE", headers: B })).status, 404);
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`, { method: "DELETE", headers: A })).status, 204);
    const calls = worker.batches.length;
    const res = await call(app, `/v1/jobs/${job.id}/results`, { headers: A });
    assertStrictEquals(res.status, 410);
    await res.body?.cancel();
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`, { headers: B })).status, 404);
    const report = await usage(app, A);
    assertEquals([report.usage.active_jobs, report.usage.stored_bytes], [0, 0]);
    await new Promise((r) => setTimeout(r, 150));
    assert(worker.batches.length <= calls + 1, "no new chunks after the delete");
  }, { edge: { apiKeys: ["key-a", "key-b"] }, worker: { delayMs: 20 } });
});

Deno.test("a recurring job's run that would pass max_stored_bytes is created failed with quota_exceeded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-quota-" });
  const worker = await startFakeWorker();
  const pool = new WorkerPool([worker.url], { log: quiet });
  const clock = { t: Date.parse("2030-01-01T00:02:30Z") };
  const config = testJobsConfig(dir, { driver: "poll", maxStoredBytes: 20_000 });
  // Not started: the runs are driven by hand, tick by tick.
  const kv = await Deno.openKv(config.kvPath);
  const jobs = new JobSystem({ pool, config, kv, now: () => clock.t, log: quiet });
  try {
    const model = normalizeModelList({ models: [FAKE_MODEL] })[0];
    const req = JobRequest.parse({
      request: { model: "mnist-mix", seed: 3 },
      count: 4,
      chunk: 2,
      schedule: "*/5 * * * *",
    });
    const parent = await jobs.submit(req, model, "k");
    clock.t = Date.parse("2030-01-01T00:05:00Z");
    assertEquals(await jobs.tick(), [`${parent.id}-1`]);
    while ((await jobs.pump(`${parent.id}-1`)) === "ran");
    const run1 = (await jobs.job(`${parent.id}-1`))!;
    assertStrictEquals(run1.status, "succeeded");
    const stored = (await jobs.usage("k")).usage.stored_bytes;
    assert(stored > 12_800, `run 1 stored its .npy and PNG files (${stored} bytes)`);
    // Run 1's files and run 2's expected .npy bytes pass 20,000 bytes.
    clock.t = Date.parse("2030-01-01T00:10:00Z");
    assertEquals(await jobs.tick(), [`${parent.id}-2`]);
    const run2 = (await jobs.job(`${parent.id}-2`))!;
    assertEquals([run2.status, run2.error?.code], ["failed", "quota_exceeded"]);
    assertMatch(run2.error!.message, /^max_stored_bytes: .*the run was not started/);
    assert(run2.expires_at! > clock.t);
    const info = await jobs.info((await jobs.job(parent.id))!);
    assertEquals([info.status, info.runs, info.error?.code], ["queued", 2, "quota_exceeded"]);
    assertStrictEquals(worker.batches.length, 2, "run 2 never reached the worker");
  } finally {
    await jobs.close();
    kv.close();
    await pool.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quota and retention settings come from GENIE_JOBS_* variables; 0 turns a quota off", () => {
  const env = (vars: Record<string, string>) => jobsConfigFromEnv((name) => vars[name]);
  const d = env({});
  assertEquals(
    [d.maxActiveJobs, d.maxJobSamples, d.maxActiveSamples, d.maxStoredBytes, d.retentionMs],
    [10, 100_000, 1_000_000, 10 * 2 ** 30, 7 * 24 * 3600 * 1000],
  );
  const c = env({
    GENIE_JOBS_MAX_ACTIVE: "0",
    GENIE_JOBS_MAX_JOB_SAMPLES: "5",
    GENIE_JOBS_MAX_ACTIVE_SAMPLES: "6",
    GENIE_JOBS_MAX_STORED_BYTES: "7",
    GENIE_JOBS_RETENTION_MS: "8",
  });
  assertEquals([c.maxActiveJobs, c.maxJobSamples, c.maxActiveSamples, c.maxStoredBytes, c.retentionMs], [
    0,
    5,
    6,
    7,
    8,
  ]);
  assertThrows(() => env({ GENIE_JOBS_MAX_ACTIVE: "-1" }), /GENIE_JOBS_MAX_ACTIVE: expected an integer ≥ 0/);
  assertThrows(
    () => env({ GENIE_JOBS_RETENTION_MS: "0" }),
    /GENIE_JOBS_RETENTION_MS: expected an integer ≥ 1/,
  );
});

Deno.test("GET /v1/jobs without jobs configured answers 503 jobs_unavailable", async () => {
  const app = createApp({ workerUrls: [], log: quiet });
  try {
    const res = await call(app, "/v1/jobs");
    assertStrictEquals(res.status, 503);
    assertStrictEquals((await errorOf(res)).code, "jobs_unavailable");
  } finally {
    await app.close();
  }
});

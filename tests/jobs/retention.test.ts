/**
 * Retention (functions/jobs/retention.ts) with an injected clock: a job that ended expires after
 * GENIE_JOBS_RETENTION_MS — its files and KV state are deleted, its bytes leave the key's usage, its id
 * answers 410 `job_expired` to its key (404 to others) for one more retention period, then 404.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { errorOf } from "../functions/helpers.ts";
import { call, getJob, post, submitJob, waitJob, withJobs } from "./helpers.ts";

const A = { authorization: "Bearer key-a" }, B = { authorization: "Bearer key-b" };
const RETENTION = 60_000;

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Every KV key that mentions `id`. */
async function keysOf(kv: Deno.Kv, id: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of kv.list({ prefix: ["jobs"] })) {
    if (e.key.some((p) => p === id)) out.push(String(e.key[1]));
  }
  return out.sort();
}

Deno.test("a finished job expires after the retention: files and state deleted, 410 to its key, then 404", async () => {
  const clock = { t: Date.parse("2030-01-01T00:00:00Z") };
  await withJobs(async ({ app, dir }) => {
    const jobs = app.jobs!;
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 4 }, count: 4, chunk: 2 }, A);
    const done = await waitJob(app, job.id, undefined, 20_000, A);
    assertStrictEquals(done.status, "succeeded");
    const finished = Date.parse(String(done.finished_at));
    assertStrictEquals(done.expires_at, new Date(finished + RETENTION).toISOString());
    assert(await exists(`${dir}/results/${job.id}/chunk-000001.npy`));
    const stored = (await (await call(app, "/v1/jobs", { headers: A })).json()).usage.stored_bytes;
    assert(stored > 0);

    // Not yet: one millisecond before.
    clock.t = finished + RETENTION - 1;
    await jobs.expire();
    assertStrictEquals((await getJob(app, job.id, A)).status, "succeeded");
    assert(await exists(`${dir}/results/${job.id}`));

    // Due: the files and the job's state go; a tombstone answers 410 to its key.
    clock.t = finished + RETENTION;
    assertStrictEquals(await jobs.expire(), 1);
    assert(!(await exists(`${dir}/results/${job.id}`)), "the job's folder is deleted");
    assertEquals(await keysOf(jobs.kv, job.id), ["expire", "gone"]);
    for (const path of ["", "/results", "/archive", "/files/chunk-000000.npy"]) {
      const res = await call(app, `/v1/jobs/${job.id}${path}`, { headers: A });
      assertStrictEquals(res.status, 410, path);
      const err = await errorOf(res);
      assertStrictEquals(err.code, "job_expired");
      assertMatch(err.message, /expired at .*: jobs are kept for 1 minute after they end/);
    }
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`, { headers: B })).status, 404);
    assertStrictEquals((await (await call(app, "/v1/jobs", { headers: A })).json()).usage.stored_bytes, 0);

    // One retention later the tombstone goes too: 404, and nothing of the job is left.
    clock.t += RETENTION;
    await jobs.expire();
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`, { headers: A })).status, 404);
    assertEquals(await keysOf(jobs.kv, job.id), []);
  }, {
    edge: { apiKeys: ["key-a", "key-b"], now: () => clock.t },
    jobs: { retentionMs: RETENTION },
  });
});

Deno.test("a canceled job loses its files at once and expires like any other; the sweeper expires on its own", async () => {
  const clock = { t: Date.parse("2030-01-01T00:00:00Z") };
  await withJobs(async ({ app, dir }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 4 }, count: 200, chunk: 2 });
    await waitJob(app, job.id, (j) => j.done >= 4);
    const canceled = await (await post(app, `/v1/jobs/${job.id}/cancel`, {})).json();
    assertEquals([canceled.status, canceled.files_deleted], ["canceled", true]);
    assert(!(await exists(`${dir}/results/${job.id}`)), "canceling deleted the files");
    assertStrictEquals((await (await call(app, "/v1/jobs")).json()).usage.stored_bytes, 0);
    assertStrictEquals(canceled.expires_at, new Date(clock.t + RETENTION).toISOString());
    // The sweeper (every sweepMs, on the job system's clock) expires it once the clock passes.
    clock.t += RETENTION;
    const end = Date.now() + 5000;
    let res = await call(app, `/v1/jobs/${job.id}`);
    while (res.status === 200 && Date.now() < end) {
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 20));
      res = await call(app, `/v1/jobs/${job.id}`);
    }
    assertStrictEquals(res.status, 410);
    assertStrictEquals((await errorOf(res)).code, "job_expired");
  }, { edge: { now: () => clock.t }, jobs: { retentionMs: RETENTION }, worker: { delayMs: 10 } });
});

/**
 * `/readyz` is ready only when a worker serves a model AND batch jobs (when enabled) have started:
 * before, `POST /v1/jobs` answers 503 "batch jobs are starting", so readiness must not claim otherwise.
 */
import { createApp } from "../../functions/app.ts";
import { testJobsConfig } from "../jobs/helpers.ts";
import { assertEquals, assertStrictEquals } from "../testing.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { quiet } from "./helpers.ts";

Deno.test("/readyz waits for batch jobs: 503 jobs_starting until they run, then 200", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-ready-" });
  const worker = await startFakeWorker();
  const app = createApp({ workerUrls: [worker.url], log: quiet, jobs: testJobsConfig(dir) });
  try {
    // the worker pool is up, the jobs are not started yet
    const early = await app.request("/readyz");
    const earlyBody = await early.json();
    assertStrictEquals(early.status, 503, JSON.stringify(earlyBody));
    assertEquals([earlyBody.ready, earlyBody.error.code], [false, "jobs_starting"]);
    const submit = await app.request("/v1/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ request: { model: "mnist-mix" }, count: 1 }),
    });
    assertStrictEquals(submit.status, 503);
    await submit.body?.cancel();

    await app.jobs!.start();
    const ready = await app.request("/readyz");
    const body = await ready.json();
    assertStrictEquals(ready.status, 200, JSON.stringify(body));
    assertEquals([body.ready, body.jobs], [true, "ready"]);
    // ready means a job is accepted
    const ok = await app.request("/v1/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ request: { model: "mnist-mix" }, count: 1 }),
    });
    assertStrictEquals(ok.status, 202);
    await ok.body?.cancel();
  } finally {
    await app.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/readyz reports jobs that failed to start as not ready, naming the failure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-ready-" });
  await Deno.writeTextFile(`${dir}/file`, "x");
  const worker = await startFakeWorker();
  // the database's folder is a file: opening it fails
  const app = createApp({
    workerUrls: [worker.url],
    log: quiet,
    jobs: testJobsConfig(dir, { kvPath: `${dir}/file/jobs.kv` }),
  });
  try {
    await app.jobs!.start().catch(() => {});
    const res = await app.request("/readyz");
    const body = await res.json();
    assertStrictEquals(res.status, 503, JSON.stringify(body));
    assertStrictEquals(body.error.code, "jobs_unavailable");
  } finally {
    await app.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/readyz without batch jobs (GENIE_JOBS=off) needs only the workers", async () => {
  const worker = await startFakeWorker();
  const app = createApp({ workerUrls: [worker.url], log: quiet });
  try {
    const res = await app.request("/readyz");
    const body = await res.json();
    assertStrictEquals(res.status, 200, JSON.stringify(body));
  } finally {
    await app.close();
    await worker.close();
  }
});

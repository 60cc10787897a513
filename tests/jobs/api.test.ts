/** `/v1/jobs` over an in-process app and fake worker: results, paging, archive, validation, cancel, retries, auth. */
import { assert, assertEquals, assertMatch, assertRejects, assertStrictEquals } from "../testing.ts";
import { untar } from "../../functions/jobs/tar.ts";
import { createApp } from "../../functions/app.ts";
import { decodeNpy } from "../../core/npy.ts";
import { bytesToBase64 } from "../../core/api/tensor.ts";
import { errorOf } from "../functions/helpers.ts";
import {
  allResults,
  call,
  checkComplete,
  expectedBytes,
  getJob,
  post,
  quiet,
  sameBytes,
  SAMPLE,
  sleep,
  submitJob,
  waitJob,
  withJobs,
} from "./helpers.ts";

Deno.test("a job runs count × n samples in chunks, with seeds base + i, bit-identical to /v1/samples", async () => {
  await withJobs(async ({ app, worker }) => {
    const job = await submitJob(app, {
      request: { model: "mnist-mix", seed: 100, n: 2, nfe: 10 },
      count: 11,
      chunk: 5,
    });
    assertEquals([job.status, job.total, job.chunks.total, job.done], ["queued", 22, 5, 0]);
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "succeeded");
    assertEquals([done.done, done.failed, done.chunks.done, done.chunks.running], [22, 0, 5, 0]);
    const items = await checkComplete(app, done, 100);
    assertEquals(items.map((i) => i.count), [5, 5, 5, 5, 2]);
    // Each chunk reports its run's price per sample as the worker did.
    assert(items.every((i) => i.nfe === 10 && i.calls === 10 && i.cost === 10 && i.cost_estimated === false));
    // The same seeds through the synchronous API give the same bytes.
    const direct = await post(app, "/v1/samples", {
      model: "mnist-mix",
      seed: 100,
      n: 22,
      nfe: 10,
      output: "tensor",
    });
    const tensor = (await direct.json()).tensor;
    const all = new Uint8Array(22 * SAMPLE * 4);
    let off = 0;
    for (const item of items) {
      const res = await call(app, item.files!.npy);
      const npy = decodeNpy(new Uint8Array(await res.arrayBuffer()));
      assertEquals(npy.shape, [item.count, 1, 28, 28]);
      all.set(new Uint8Array(npy.data.buffer, npy.data.byteOffset, npy.data.byteLength), off);
      off += npy.data.byteLength;
    }
    assertStrictEquals(bytesToBase64(all), tensor.data);
    // A PNG grid per chunk for image models.
    const png = await call(app, items[0].files!.png!);
    assertStrictEquals(png.headers.get("content-type"), "image/png");
    assertEquals([...new Uint8Array(await png.arrayBuffer()).subarray(1, 4)], [80, 78, 71]);
    // Worker messages carried the chunk seeds and the request's settings.
    const batches = worker.batches.filter((b) => String(b.id).startsWith(job.id));
    assertStrictEquals(batches.length, 5);
    assert(batches.every((b) => b.nfe === 10 && b.solver === "genie" && b.model === "mnist-mix"));
  });
});

Deno.test("results page by cursor; a running job's page stops at the first unfinished chunk", async () => {
  await withJobs(async ({ app }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 7 }, count: 9, chunk: 2 });
    await waitJob(app, job.id);
    const one = await allResults(app, job.id, 1);
    const many = await allResults(app, job.id, 100);
    assertEquals(one, many);
    assertEquals(many.map((i) => i.chunk), [0, 1, 2, 3, 4]);
    const page = await (await call(app, `/v1/jobs/${job.id}/results?limit=2`)).json();
    assertEquals([page.items.length, page.next_cursor], [2, "2"]);
    const bad = await call(app, `/v1/jobs/${job.id}/results?cursor=abc`);
    assertStrictEquals(bad.status, 400);
    assertMatch((await errorOf(bad)).message, /cursor/);
  });
  await withJobs(async ({ app }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 12, chunk: 2 }, {});
    const seen: number[] = [];
    let cursor = "0";
    for (let i = 0; i < 400 && seen.length < 6; i++) {
      const page = await (await call(app, `/v1/jobs/${job.id}/results?cursor=${cursor}`)).json();
      for (const item of page.items) seen.push(item.chunk);
      if (page.next_cursor === null) break;
      cursor = page.next_cursor;
      await sleep(10);
    }
    assertEquals(seen, [0, 1, 2, 3, 4, 5]);
  }, { worker: { delayMs: 40 } });
});

Deno.test("GET /v1/jobs/:id/archive streams a ustar archive of every chunk and an index", async () => {
  await withJobs(async ({ app, dir }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 3 }, count: 6, chunk: 4 });
    await waitJob(app, job.id);
    const res = await call(app, `/v1/jobs/${job.id}/archive`);
    assertStrictEquals(res.headers.get("content-type"), "application/x-tar");
    const bytes = new Uint8Array(await res.arrayBuffer());
    assertStrictEquals(bytes.byteLength % 512, 0);
    const files = untar(bytes);
    assertEquals(files.map((f) => f.name), [
      `${job.id}/chunk-000000.npy`,
      `${job.id}/chunk-000000.png`,
      `${job.id}/chunk-000001.npy`,
      `${job.id}/chunk-000001.png`,
      `${job.id}/index.json`,
    ]);
    const npy = decodeNpy(files[2].data);
    assertEquals(npy.shape, [2, 1, 28, 28]);
    assert(
      sameBytes(
        new Uint8Array(npy.data.buffer, npy.data.byteOffset, npy.data.byteLength),
        expectedBytes([7, 8]),
      ),
    );
    const index = JSON.parse(new TextDecoder().decode(files[4].data));
    assertEquals([index.job.id, index.chunks.length, index.chunks[1].seeds], [job.id, 2, [7, 8]]);
    // The system tar agrees, where there is one.
    try {
      await Deno.writeFile(`${dir}/a.tar`, bytes);
      const out = await new Deno.Command("tar", {
        args: ["-tf", `${dir}/a.tar`],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      if (out.success) {
        assertEquals(new TextDecoder().decode(out.stdout).trim().split("\n"), files.map((f) => f.name));
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    // The store holds the same files plus index.json written at the end.
    const indexFile = await call(app, `/v1/jobs/${job.id}/files/index.json`);
    assertStrictEquals((await indexFile.json()).status, "succeeded");
  });
});

Deno.test("invalid jobs → 422 naming the field", async () => {
  await withJobs(async ({ app, worker }) => {
    const cases: [unknown, string][] = [
      [{ request: { model: "mnist-mix" }, count: 0 }, "count"],
      [{ request: { model: "mnist-mix" }, count: 1.5 }, "count"],
      [{ request: { model: "mnist-mix" }, count: 10 ** 7 }, "count"],
      [{ request: { model: "mnist-mix", n: 64 }, count: 100_000 }, "count"],
      [{ request: { model: "mnist-mix" } }, "count"],
      [{ request: { model: "mnist-mix" }, count: 4, schedule: "61 * * * *" }, "schedule"],
      [{ request: { model: "mnist-mix" }, count: 4, schedule: "* * *" }, "schedule"],
      [{ request: { model: "mnist-mix" }, count: 4, schedule: "0 0 30 2 *" }, "schedule"],
      [{ request: { model: "mnist-mix" }, count: 4, schedule: 5 }, "schedule"],
      [{ request: { model: "mnist-mix" }, count: 4, chunk: 0 }, "chunk"],
      [{ request: { model: "mnist-mix" }, count: 4, chunk: 65 }, "chunk"],
      [{ request: { model: "mnist-mix", n: 0 }, count: 4 }, "request.n"],
      [{ request: { model: "nope" }, count: 4 }, "request.model"],
      [
        { request: { model: "mnist-mix", solver: "ddim", nfe: 5, genie_derivative: "jvp" }, count: 1 },
        "request.genie_derivative",
      ],
      [{ request: { model: "mnist-mix", solver: "heun", nfe: 3 }, count: 1 }, "request.nfe"],
      [{ request: { model: "mnist-mix", class: 99 }, count: 1 }, "request.class"],
      [{
        request: {
          model: "mnist-mix",
          latents: { shape: [1, 1, 28, 28], data: bytesToBase64(new Uint8Array(3136)) },
        },
        count: 1,
      }, "request.latents"],
      [{ count: 4 }, "request"],
      [{ request: { model: "mnist-mix" }, count: 4, extra: true }, ""],
    ];
    for (const [body, field] of cases) {
      const res = await post(app, "/v1/jobs", body);
      const err = await errorOf(res);
      assertStrictEquals(res.status, 422, `${JSON.stringify(body)} → ${res.status} ${JSON.stringify(err)}`);
      assertStrictEquals(err.code, "invalid_request");
      const paths = (err.details ?? []).map((d) => d.path.join("."));
      assert(paths.includes(field), `${JSON.stringify(body)}: ${JSON.stringify(paths)} should name ${field}`);
    }
    assertStrictEquals((await post(app, "/v1/jobs", "{not json")).status, 400);
    assertStrictEquals(worker.batches.length, 0, "nothing reached the worker");
  });
});

Deno.test("cancel stops a running job and deletes its files; finished chunks stay listed; idempotent", async () => {
  await withJobs(async ({ app, worker, dir }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 50 }, count: 200, chunk: 4 });
    await waitJob(app, job.id, (j) => j.done >= 8);
    const res = await post(app, `/v1/jobs/${job.id}/cancel`, {});
    assertStrictEquals(res.status, 200);
    assertStrictEquals((await res.json()).status, "canceled");
    const calls = worker.batches.length;
    await sleep(250);
    assert(worker.batches.length <= calls + 1, "no new chunks after cancel");
    const after = await getJob(app, job.id);
    assertStrictEquals(after.status, "canceled");
    assert(after.done < after.total && after.done >= 8);
    assertStrictEquals(after.files_deleted, true);
    assert(after.expires_at, "a canceled job expires like any other");
    // The chunks that finished stay listed, without files: canceling deleted them.
    const items = await allResults(app, job.id);
    assertStrictEquals(items.reduce((a, i) => a + i.count, 0), after.done);
    assert(items.every((i) => i.status === "done" && i.files === undefined));
    const file = await call(app, `/v1/jobs/${job.id}/files/chunk-000000.npy`);
    assertStrictEquals(file.status, 404);
    assertMatch((await errorOf(file)).message, /canceling the job deleted its files/);
    await assertRejects(() => Deno.stat(`${dir}/results/${job.id}`), Deno.errors.NotFound);
    const again = await post(app, `/v1/jobs/${job.id}/cancel`, {});
    assertStrictEquals((await again.json()).status, "canceled");
    assertStrictEquals((await post(app, `/v1/jobs/0123456789abcdef/cancel`, {})).status, 404);
  }, { worker: { delayMs: 30 } });
});

Deno.test("transient worker failures are retried with backoff; the job still completes exactly", async () => {
  let failures = 0;
  const flaky: typeof fetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (url.endsWith("/v1/batch") && failures < 3) {
      failures++;
      return Promise.resolve(
        new Response(null, { status: 500 }),
      );
    }
    return fetch(input, init);
  };
  await withJobs(async ({ app }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 9 }, count: 8, chunk: 4 });
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "succeeded");
    const items = await checkComplete(app, done, 9);
    assertStrictEquals(items.reduce((a, i) => a + i.attempts, 0), 2 + 3);
  }, { edge: { fetch: flaky }, jobs: { parallel: 1 } });
});

Deno.test("a chunk that keeps failing fails with its error; a worker 422 fails the job at once", async () => {
  await withJobs(async ({ app }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 4, chunk: 2 });
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "failed");
    assertEquals([done.done, done.failed, done.chunks.failed], [0, 4, 2]);
    assertMatch(done.error!.message, /2 of 2 chunks failed; chunk 0: worker 0: boom/);
    const items = await allResults(app, job.id);
    assertEquals(items.map((i) => [i.status, i.attempts, i.error?.code]), [
      ["failed", 3, "worker_error"],
      ["failed", 3, "worker_error"],
    ]);
  }, { worker: { fail: { status: 500, code: "internal", message: "boom" } }, jobs: { maxAttempts: 3 } });
  await withJobs(async ({ app, worker }) => {
    const job = await submitJob(app, { request: { model: "mnist-mix", seed: 1 }, count: 40, chunk: 2 });
    const done = await waitJob(app, job.id);
    assertStrictEquals(done.status, "failed");
    assertStrictEquals(done.error!.code, "invalid_request");
    assert(worker.batches.length <= 3, `stopped early (${worker.batches.length} calls)`);
  }, { worker: { fail: { status: 422, code: "invalid", message: "nfe: no" } } });
});

Deno.test("jobs belong to the key that submitted them; 404 for others and for unknown ids", async () => {
  await withJobs(async ({ app }) => {
    const a = { authorization: "Bearer key-a" }, b = { authorization: "Bearer key-b" };
    const job = await submitJob(app, { request: { model: "mnist-mix" }, count: 1 }, a);
    assertStrictEquals((await getJob(app, job.id, a)).id, job.id);
    for (const path of ["", "/results", "/archive", "/files/index.json"]) {
      const res = await call(app, `/v1/jobs/${job.id}${path}`, { headers: b });
      assertStrictEquals(res.status, 404, path);
      await res.body?.cancel();
    }
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}`)).status, 401);
    assertStrictEquals((await call(app, `/v1/jobs/nothing`, { headers: a })).status, 404);
    assertStrictEquals(
      (await call(app, `/v1/jobs/${job.id}/files/..%2Fjobs.kv`, { headers: a })).status,
      404,
    );
  }, { edge: { apiKeys: ["key-a", "key-b"] } });
});

Deno.test("without jobs configured, /v1/jobs answers 503 jobs_unavailable", async () => {
  const app = createApp({ workerUrls: [], log: quiet });
  try {
    const res = await post(app, "/v1/jobs", { request: { model: "m" }, count: 1 });
    assertStrictEquals(res.status, 503);
    assertStrictEquals((await errorOf(res)).code, "jobs_unavailable");
  } finally {
    await app.close();
  }
});

Deno.test("the OpenAPI document describes the jobs routes and schemas", async () => {
  const app = createApp({ workerUrls: [], log: quiet });
  try {
    const doc = await (await app.request("/openapi.json")).json();
    for (
      const p of [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/results",
        "/v1/jobs/{id}/archive",
        "/v1/jobs/{id}/cancel",
      ]
    ) {
      assert(doc.paths[p], p);
    }
    for (const s of ["JobRequest", "Job", "JobResultsPage"]) assert(doc.components.schemas[s], s);
  } finally {
    await app.close();
  }
});

Deno.test("a recurring job through the API: 202 with its schedule, no runs before its first tick, cancel", async () => {
  await withJobs(async ({ app }) => {
    const job = await submitJob(app, {
      request: { model: "mnist-mix", seed: 1 },
      count: 2,
      schedule: "0 0 1 1 *",
    });
    assertEquals([job.status, job.schedule, job.runs, job.done, job.total], ["queued", "0 0 1 1 *", 0, 0, 2]);
    assertMatch(String(job.next_run_at), /^\d{4}-01-01T00:00:00\.000Z$/);
    const page = await (await call(app, `/v1/jobs/${job.id}/results`)).json();
    assertEquals([page.items, page.next_cursor], [[], null]);
    assertStrictEquals((await call(app, `/v1/jobs/${job.id}/archive`)).status, 404);
    const canceled = await (await post(app, `/v1/jobs/${job.id}/cancel`, {})).json();
    assertEquals([canceled.status, canceled.next_run_at], ["canceled", undefined]);
    assertEquals(await app.jobs!.tick(Date.parse(String(job.next_run_at)) + 1000), []);
  });
});

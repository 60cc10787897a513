/**
 * Recurring jobs with an injected clock: the due-schedule logic (functions/jobs/runner.ts `tick`) is
 * driven tick by tick, deterministically — no timers, no Deno.cron.
 */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { normalizeModelList } from "../../core/api/models.ts";
import { JobRequest } from "../../core/api/jobs.ts";
import { WorkerPool } from "../../functions/pool.ts";
import { JobSystem } from "../../functions/jobs/system.ts";
import { attachToCron, cronTick } from "../../functions/jobs/cron.ts";
import { K } from "../../functions/jobs/keys.ts";
import { FAKE_MODEL, startFakeWorker } from "../functions/fake_worker.ts";
import { expectedBytes, quiet, sameBytes, SAMPLE, testJobsConfig } from "./helpers.ts";

const MODEL = normalizeModelList({ models: [FAKE_MODEL] })[0];
const T = (hhmmss: string, day = "2030-01-01") => Date.parse(`${day}T${hhmmss}Z`);

async function fixture(
  fn: (f: {
    a: JobSystem;
    b: JobSystem;
    clock: { t: number };
    kvs: Deno.Kv[];
  }) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "genie-sched-" });
  const worker = await startFakeWorker();
  const pool = new WorkerPool([worker.url], { log: quiet });
  const clock = { t: T("00:02:30") };
  const config = testJobsConfig(dir, { driver: "poll" });
  const kvs = [await Deno.openKv(config.kvPath), await Deno.openKv(config.kvPath)];
  const make = (kv: Deno.Kv, owner: string) =>
    new JobSystem({ pool, config, kv, owner, now: () => clock.t, log: quiet });
  const a = make(kvs[0], "a"), b = make(kvs[1], "b");
  try {
    await fn({ a, b, clock, kvs });
  } finally {
    await a.close();
    await b.close();
    for (const kv of kvs) kv.close();
    await pool.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a recurring job starts one run per due tick, with its own seeds; missed ticks coalesce", async () => {
  await fixture(async ({ a, b, clock }) => {
    const req = JobRequest.parse({
      request: { model: "mnist-mix", seed: 1000 },
      count: 4,
      chunk: 2,
      schedule: "*/5 * * * *",
    });
    const parent = await a.submit(req, MODEL, "test");
    assertStrictEquals(parent.kind, "recurring");
    assertStrictEquals(parent.next_run_at, T("00:05:00"));
    let info = await a.info(parent);
    assertEquals([info.status, info.runs, info.next_run_at, info.done], [
      "queued",
      0,
      "2030-01-01T00:05:00.000Z",
      0,
    ]);

    // Not due yet.
    assertEquals(await a.tick(T("00:04:59")), []);
    // Due: exactly one run, even when two processes tick at once.
    clock.t = T("00:05:00");
    const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
    assertEquals([...ra, ...rb], [`${parent.id}-1`]);
    assertEquals(await a.tick(T("00:05:40")), []);
    const run1 = (await a.job(`${parent.id}-1`))!;
    assertEquals([run1.kind, run1.status, run1.parent, run1.run, run1.base_seed], [
      "batch",
      "queued",
      parent.id,
      1,
      1000,
    ]);
    info = await a.info((await a.job(parent.id))!);
    assertEquals([info.status, info.runs, info.last_run, info.next_run_at], [
      "running",
      1,
      `${parent.id}-1`,
      "2030-01-01T00:10:00.000Z",
    ]);

    // The previous run is still going at the next tick: skipped (once, with two processes ticking).
    clock.t = T("00:10:00");
    assertEquals([...await a.tick(), ...await b.tick()], []);
    info = await a.info((await a.job(parent.id))!);
    assertEquals([info.skipped, info.runs, info.next_run_at], [1, 1, "2030-01-01T00:15:00.000Z"]);

    // Run 1 completes (driven by hand), then the next tick starts run 2 with the next seeds.
    while ((await a.pump(`${parent.id}-1`)) === "ran");
    assertStrictEquals((await a.job(`${parent.id}-1`))!.status, "succeeded");
    clock.t = T("00:15:00");
    assertEquals(await a.tick(), [`${parent.id}-2`]);
    assertStrictEquals((await a.job(`${parent.id}-2`))!.base_seed, 1004);
    while ((await b.pump(`${parent.id}-2`)) === "ran");
    const run2 = (await a.job(`${parent.id}-2`))!;
    assertStrictEquals(run2.status, "succeeded");
    const page = await a.results(run2, 0, 10);
    assertEquals(page.items.flatMap((i) => i.seeds), [1004, 1005, 1006, 1007]);
    const npy = await a.store.get(`${run2.id}/chunk-000001.npy`);
    assert(sameBytes(npy!.subarray(npy!.byteLength - 2 * SAMPLE * 4), expectedBytes([1006, 1007])));

    // The server was down for an hour: one catch-up run, and the schedule resumes from now.
    clock.t = T("01:07:13");
    assertEquals(await a.tick(), [`${parent.id}-3`]);
    info = await a.info((await a.job(parent.id))!);
    assertEquals([info.runs, info.next_run_at], [3, "2030-01-01T01:10:00.000Z"]);
    assertStrictEquals((await a.job(`${parent.id}-3`))!.base_seed, 1008);

    // Cancel: the running run is canceled too, and nothing is scheduled any more.
    await a.cancel(parent.id);
    assertStrictEquals((await a.job(`${parent.id}-3`))!.status, "canceled");
    clock.t = T("01:10:00");
    assertEquals(await a.tick(), []);
    assertEquals(await Array.fromAsync(a.kv.list({ prefix: K.dues() })), []);
    info = await a.info((await a.job(parent.id))!);
    assertEquals([info.status, info.next_run_at, info.runs], ["canceled", undefined, 3]);
  });
});

Deno.test("the cron tick sweeps every attached job system", async () => {
  await fixture(async ({ a, clock }) => {
    const req = JobRequest.parse({
      request: { model: "mnist-mix", seed: 1 },
      count: 1,
      schedule: "0 3 * * *",
    });
    const parent = await a.submit(req, MODEL, "test");
    assertStrictEquals(parent.next_run_at, T("03:00:00"));
    const detach = attachToCron(a);
    try {
      clock.t = T("02:59:59");
      await cronTick(quiet);
      assertStrictEquals((await a.job(parent.id))!.runs, 0);
      clock.t = T("03:00:01");
      await cronTick(quiet);
      const p = (await a.job(parent.id))!;
      assertEquals([p.runs, p.next_run_at], [1, T("03:00:00", "2030-01-02")]);
    } finally {
      detach();
    }
  });
});

Deno.test("Deno.cron registration: registered with --unstable-cron, skipped without", async () => {
  const probe = new URL("./cron_probe.ts", import.meta.url).pathname;
  const run = async (flags: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, "--allow-env", probe],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    return new TextDecoder().decode(out.stdout).trim() + new TextDecoder().decode(out.stderr).trim();
  };
  assertEquals(await run(["--unstable-cron"]), "registered: true");
  assertEquals(await run([]), "registered: false");
});

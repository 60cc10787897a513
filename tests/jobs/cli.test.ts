/**
 * `deno task job`: flags (exit 2 naming the flag), submit/wait/status/fetch/cancel/usage/delete against a
 * served app; the usage lines.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { decodeNpy } from "../../core/npy.ts";
import { parseJobArgs, UsageError } from "../../cli/job/args.ts";
import { usageLines } from "../../cli/job/commands.ts";
import { ProgressBar } from "../../cli/job/progress.ts";
import { untar } from "../../functions/jobs/tar.ts";
import { taskArgs } from "../functions/processes.ts";
import { expectedBytes, type JobsHarness, withJobs } from "./helpers.ts";

async function cli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs("job"), ...args],
    env: { NO_COLOR: "1", GENIE_URL: "", GENIE_API_KEY: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function served(fn: (url: string, h: JobsHarness) => Promise<void>, apiKeys: string[] = []) {
  await withJobs(async (h) => {
    const listening = Promise.withResolvers<number>();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => listening.resolve(port) },
      (req, info) => h.app.fetch(req, info),
    );
    try {
      await fn(`http://127.0.0.1:${await listening.promise}`, h);
    } finally {
      await server.shutdown();
    }
  }, { edge: { apiKeys }, worker: { delayMs: 5 } });
}

Deno.test("bad flags: a one-line error naming the flag (exit 2 in the process)", async () => {
  const cases: [string[], RegExp][] = [
    [["submit", "--model", "m"], /^--count: required/],
    [["submit", "--model", "m", "--count", "x"], /^--count: expected an integer/],
    [["submit", "--model", "m", "--count", "0"], /^--count: must be ≥ 1/],
    [["submit", "--count", "3"], /^--model: required/],
    [["submit", "--model", "m", "--count", "3", "--chunk", "-1"], /^--chunk/],
    [["submit", "--model", "m", "--count", "3", "--steps", "4", "--nfe", "5"], /^--nfe/],
    [["submit", "--model", "m", "--count", "3", "--guidance", "abc"], /^--guidance/],
    [["submit", "--model", "m", "--count", "3", "--cout", "4"], /^--cout/],
    [["status"], /^status: missing the job id/],
    [["status", "nope"], /^status: "nope" is not a job id/],
    [["fetch", "0123456789abcdef"], /^--out: required/],
    [["wait", "0123456789abcdef", "--timeout", "0"], /^--timeout/],
    [["status", "0123456789abcdef", "--out", "x"], /^--out: not a flag of status/],
    [["status", "0123456789abcdef", "--url", "ftp://x"], /^--url/],
    [["usage", "0123456789abcdef"], /^usage: unexpected argument/],
    [["delete"], /^delete: missing the job id/],
    [["launch"], /^command: unknown "launch"/],
    [[], /^command: missing/],
  ];
  for (const [argv, re] of cases) {
    let err: unknown;
    try {
      parseJobArgs(argv);
    } catch (e) {
      err = e;
    }
    assert(err instanceof UsageError, `${argv.join(" ")}: expected a usage error`);
    assertMatch((err as Error).message, re, argv.join(" "));
  }
  const r = await cli(["submit", "--model", "m", "--count", "3", "--bogus"]);
  assertStrictEquals(r.code, 2);
  assertMatch(r.stderr.trim(), /^--bogus: /);
  assertStrictEquals(r.stderr.trim().split("\n").length, 1);
  assertStrictEquals((await cli(["--help"])).code, 0);
});

Deno.test("submit --wait, status, fetch (.npy, .tar, folder) and cancel against a server", async () => {
  await served(async (url, { dir }) => {
    const common = ["--url", url, "--key", "k1"];
    const sub = await cli([
      "submit",
      ...common,
      "--model",
      "mnist-mix",
      "--nfe",
      "10",
      "--seed",
      "40",
      "--count",
      "10",
      "--chunk",
      "4",
      "--wait",
      "--json",
    ]);
    assertStrictEquals(sub.code, 0, sub.stderr);
    const job = JSON.parse(sub.stdout);
    assertEquals([job.status, job.done, job.total], ["succeeded", 10, 10]);
    assertMatch(sub.stderr, /\[#+\] 10\/10 100% succeeded/);

    const st = await cli(["status", job.id, ...common]);
    assertStrictEquals(st.code, 0);
    assertMatch(st.stdout, new RegExp(`^${job.id}: succeeded, 10/10 samples`));

    const npyPath = `${dir}/all.npy`;
    const f = await cli(["fetch", job.id, ...common, "--out", npyPath, "--quiet"]);
    assertStrictEquals(f.code, 0, f.stderr);
    const npy = decodeNpy(await Deno.readFile(npyPath));
    assertEquals(npy.shape, [10, 1, 28, 28]);
    const seeds = Array.from({ length: 10 }, (_, i) => 40 + i);
    assertEquals(
      new Uint8Array(npy.data.buffer, npy.data.byteOffset, npy.data.byteLength),
      expectedBytes(seeds),
    );

    const tarPath = `${dir}/all.tar`;
    assertStrictEquals((await cli(["fetch", job.id, ...common, "--out", tarPath])).code, 0);
    assertStrictEquals(untar(await Deno.readFile(tarPath)).length, 3 * 2 + 1);

    const folder = `${dir}/out`;
    assertStrictEquals((await cli(["fetch", job.id, ...common, "--out", folder, "--quiet"])).code, 0);
    const names = [];
    for await (const e of Deno.readDir(folder)) names.push(e.name);
    assertEquals(names.sort(), [
      "chunk-000000.npy",
      "chunk-000000.png",
      "chunk-000001.npy",
      "chunk-000001.png",
      "chunk-000002.npy",
      "chunk-000002.png",
      "index.json",
    ]);

    // A second key cannot see it; no key at all is a 401; both exit 1 with the server's message.
    const other = await cli(["status", job.id, "--url", url, "--key", "k2"]);
    assertEquals([other.code, /HTTP 404 not_found/.test(other.stderr)], [1, true]);
    const anon = await cli(["status", job.id, "--url", url]);
    assertEquals([anon.code, /HTTP 401/.test(anon.stderr)], [1, true]);

    // Submit without waiting prints the id; cancel; wait then exits 1 for a canceled job.
    const big = await cli(["submit", ...common, "--model", "mnist-mix", "--count", "2000", "--chunk", "2"]);
    const id = big.stdout.trim();
    assertMatch(id, /^[0-9a-f]{16}$/);
    const c = await cli(["cancel", id, ...common, "--json"]);
    assertEquals([c.code, JSON.parse(c.stdout).status], [0, "canceled"]);
    const w = await cli(["wait", id, ...common, "--quiet"]);
    assertStrictEquals(w.code, 1);
    assertMatch(w.stdout, /canceled/);

    // usage: the key's quotas; delete: the job and its files go, its id answers 410.
    const u = await cli(["usage", ...common, "--json"]);
    assertStrictEquals(u.code, 0, u.stderr);
    const usage = JSON.parse(u.stdout);
    assertEquals([usage.usage.active_jobs, usage.limits.max_active_jobs], [0, 10]);
    assert(usage.usage.stored_bytes > 0);
    assertEquals((await cli(["delete", job.id, ...common])).stdout.trim(), `${job.id}: deleted`);
    const after = await cli(["status", job.id, ...common]);
    assertEquals([after.code, /HTTP 410 job_expired: job \w+ was deleted/.test(after.stderr)], [1, true]);

    // A server-side validation error: exit 1, message names the field.
    const bad = await cli([
      "submit",
      ...common,
      "--model",
      "mnist-mix",
      "--count",
      "1",
      "--schedule",
      "99 * * * *",
    ]);
    assertStrictEquals(bad.code, 1);
    assertMatch(bad.stderr, /HTTP 422 invalid_request: schedule: invalid cron spec/);
  }, ["k1", "k2"]);
});

Deno.test("the progress line shows counts, percentage, rate and ETA", () => {
  let t = 0;
  const bar = new ProgressBar(true, () => t);
  assertEquals(bar.line(0, 100, "running"), `[${".".repeat(30)}] 0/100 0% running`);
  t = 2000;
  assertEquals(
    bar.line(50, 100, "running"),
    `[${"#".repeat(15)}${".".repeat(15)}] 50/100 50% running 25.0/s ETA 2s`,
  );
  t = 4000;
  assertMatch(bar.line(100, 100, "succeeded"), /100\/100 100% succeeded 25\.0\/s ETA 0s$/);
});

Deno.test("job usage in words: used / limit per quota, no limit where there is none", () => {
  const lines = usageLines({
    limits: {
      max_active_jobs: 10,
      max_job_samples: 100_000,
      max_active_samples: null,
      max_stored_bytes: 1000,
      retention_ms: 7 * 86_400_000,
    },
    usage: { active_jobs: 2, active_samples: 40, stored_bytes: 600, reserved_bytes: 300 },
    active: ["a", "b"],
  });
  assertEquals(lines, [
    "active jobs:     2 / 10",
    "active samples:  40 / no limit",
    "samples per job: at most 100000",
    "stored bytes:    600 / 1000 (+300 reserved by active jobs)",
    "jobs are kept:   7 days after they end",
  ]);
});

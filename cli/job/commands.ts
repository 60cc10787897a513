/**
 * What the commands of `deno task job` (cli/job.ts) do besides a single call: wait for a job with
 * progress, report it, describe the key's usage, build the request of `submit`, and fetch the results.
 */
import { npyHeader } from "../../core/npy.ts";
import type { JobsUsage } from "../../core/api/jobs.ts";
import { type JobArgs, REQUEST_FLAGS, UsageError } from "./args.ts";
import { type Client, Failure, type Job } from "./client.ts";
import { ProgressBar } from "./progress.ts";

const FINAL = ["succeeded", "failed", "canceled"];

/** Polls job `id` until it ends (or `--timeout` passes), with a progress bar. */
export async function waitFor(client: Client, args: JobArgs, id: string): Promise<Job> {
  const bar = new ProgressBar(args.quiet);
  const timeoutS = (args.flags.timeout as number | undefined) ?? Infinity;
  const deadline = performance.now() + timeoutS * 1000;
  let delay = 200;
  try {
    for (;;) {
      const job = await client.json<Job>("GET", `/v1/jobs/${id}`);
      bar.update(job.done, job.total, job.status);
      if (FINAL.includes(job.status)) return job;
      if (performance.now() > deadline) {
        throw new Failure(`timed out after ${timeoutS} s (job ${id} is ${job.status})`);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(2000, Math.round(delay * 1.3));
    }
  } finally {
    bar.end();
  }
}

/** Prints a job: its JSON with `--json`, else one line of status and counts. */
export function report(job: Job, json: boolean): void {
  if (json) console.log(JSON.stringify(job));
  else {
    console.log(
      `${job.id}: ${job.status}, ${job.done}/${job.total} samples` +
        (job.failed ? `, ${job.failed} failed` : "") +
        (job.error ? ` (${job.error.code}: ${job.error.message})` : ""),
    );
  }
}

/** `job usage` in words: one line per quota, "used / limit". */
export function usageLines(u: JobsUsage): string[] {
  const of = (used: number, limit: number | null) => `${used} / ${limit ?? "no limit"}`;
  const days = u.limits.retention_ms / 86_400_000;
  return [
    `active jobs:     ${of(u.usage.active_jobs, u.limits.max_active_jobs)}`,
    `active samples:  ${of(u.usage.active_samples, u.limits.max_active_samples)}`,
    `samples per job: at most ${u.limits.max_job_samples ?? "no limit"}`,
    `stored bytes:    ${of(u.usage.stored_bytes, u.limits.max_stored_bytes)}` +
    (u.usage.reserved_bytes > 0 ? ` (+${u.usage.reserved_bytes} reserved by active jobs)` : ""),
    `jobs are kept:   ${
      Number.isInteger(days) ? `${days} days` : `${u.limits.retention_ms} ms`
    } after they end`,
  ];
}

// ------------------------------------------------------------------ commands

/** The request of `submit`: the `--request` file's object, with the request flags set over it. */
export async function buildRequest(args: JobArgs): Promise<Record<string, unknown>> {
  let request: Record<string, unknown> = {};
  const file = args.flags.request as string | undefined;
  if (file !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new UsageError("--request", `cannot read ${file}: ${e instanceof Error ? e.message : e}`);
    }
    try {
      request = JSON.parse(text);
    } catch {
      throw new UsageError("--request", `${file} is not JSON`);
    }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      throw new UsageError("--request", `${file} must hold a JSON object`);
    }
  }
  for (const spec of REQUEST_FLAGS) {
    const v = args.flags[spec.key!];
    if (v !== undefined) request[spec.key!] = v;
  }
  return request;
}

/** `fetch`: the job's results as a tar archive, one .npy of every sample, or a folder of chunk files. */
export async function fetchResults(client: Client, args: JobArgs, id: string): Promise<void> {
  const out = args.flags.out as string;
  if (out.endsWith(".tar")) {
    const res = await client.call("GET", `/v1/jobs/${id}/archive`);
    const file = await Deno.open(out, { write: true, create: true, truncate: true });
    await res.body!.pipeTo(file.writable);
    console.error(`wrote ${out}`);
    return;
  }
  const job = await client.json<Job>("GET", `/v1/jobs/${id}`);
  if (job.files_deleted) throw new Failure(`job ${id} is ${job.status}: its files were deleted`);
  type Item = {
    chunk: number;
    status: string;
    count: number;
    files?: { npy: string; png?: string };
    error?: Job["error"];
  };
  const items: Item[] = [];
  let cursor: string | null = "0";
  while (cursor !== null) {
    const page: { items: Item[]; next_cursor: string | null } = await client.json(
      "GET",
      `/v1/jobs/${id}/results?cursor=${cursor}&limit=1000`,
    );
    items.push(...page.items);
    if (page.next_cursor === cursor) break;
    cursor = page.next_cursor;
    if (cursor !== null && !FINAL.includes(job.status) && page.items.length === 0) break;
  }
  const bar = new ProgressBar(args.quiet);
  if (out.endsWith(".npy")) {
    const failed = items.find((i) => i.status !== "done");
    if (failed) {
      throw new Failure(
        `chunk ${failed.chunk} failed (${failed.error?.message}); fetch --out DIR for the rest`,
      );
    }
    const samples = items.reduce((a, i) => a + i.count, 0);
    const per = job.shape.reduce((a, b) => a * b, 1) * 4;
    const header = npyHeader([samples, ...job.shape]);
    const file = await Deno.open(out, { write: true, create: true, truncate: true });
    try {
      await file.write(header);
      let done = 0;
      for (const item of items) {
        const bytes = new Uint8Array(await (await client.call("GET", item.files!.npy)).arrayBuffer());
        const body = bytes.subarray(bytes.byteLength - item.count * per);
        let off = 0;
        while (off < body.byteLength) off += await file.write(body.subarray(off));
        done += item.count;
        bar.update(done, samples, "downloading");
      }
    } finally {
      file.close();
      bar.end();
    }
    console.error(
      `wrote ${out}: ${samples} samples of shape [${job.shape.join(", ")}]` +
        (samples < job.total ? ` (${job.total - samples} not finished)` : ""),
    );
    return;
  }
  await Deno.mkdir(out, { recursive: true });
  let done = 0;
  for (const item of items) {
    for (const url of [item.files?.npy, item.files?.png]) {
      if (!url) continue;
      const bytes = new Uint8Array(await (await client.call("GET", url)).arrayBuffer());
      await Deno.writeFile(`${out}/${url.slice(url.lastIndexOf("/") + 1)}`, bytes);
    }
    done += item.count;
    bar.update(done, job.total, "downloading");
  }
  bar.end();
  await Deno.writeTextFile(`${out}/index.json`, JSON.stringify({ job, chunks: items }, null, 1));
  console.error(`wrote ${items.length} chunk(s) to ${out}/`);
}

/**
 * `deno task job`: batch jobs over the HTTP API (docs/contracts.md §2, `/v1/jobs`; docs/jobs.md).
 *
 *     deno task job submit --model mnist-mix --nfe 10 --count 256 [--chunk 16] [--seed 7] [--wait]
 *     deno task job submit --request body.json --count 256 --schedule "0 3 * * *"
 *     deno task job status ID [--json]
 *     deno task job wait ID [--timeout SECONDS]
 *     deno task job fetch ID --out DIR | FILE.tar | FILE.npy
 *     deno task job cancel ID
 *     deno task job delete ID
 *     deno task job usage [--json]
 *
 * Every command takes `--url` (GENIE_URL, default http://127.0.0.1:8000) and `--key` (GENIE_API_KEY).
 * Progress and ETA go to stderr; results and `--json` summaries to stdout. Exit status: 0 success,
 * 1 failure (HTTP error, job failed or canceled, timeout), 2 bad flags (the message names the flag).
 */
import { parseArgs } from "node:util";
import { npyHeader } from "../core/npy.ts";
import type { JobInfo, JobsUsage } from "../core/api/jobs.ts";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

class Failure extends Error {}

const HELP = `usage: deno task job <command> [flags]

commands:
  submit   --count C [--chunk K] [--schedule CRON] [--wait] [--json]
           and the request: --request FILE.json (a POST /v1/samples body) and/or
           --model M [--solver S] [--steps N | --nfe N] [--grid G] [--rho R] [--afs] [--denoise]
           [--genie-derivative D] [--order K] [--variant V] [--n N] [--seed S] [--class C]
           [--guidance W] [--output png|tensor]
  status   ID [--json]
  wait     ID [--timeout SECONDS] [--json]
  fetch    ID --out DIR | FILE.tar | FILE.npy
  cancel   ID [--json]
  delete   ID                  (the job and its files, now)
  usage    [--json]            this key's quotas and what it uses of them

common flags: --url URL (GENIE_URL, default http://127.0.0.1:8000), --key KEY (GENIE_API_KEY),
              --quiet (no progress on stderr), --help`;

const REQUEST_FLAGS = {
  model: "string",
  solver: "string",
  steps: "int",
  nfe: "int",
  grid: "string",
  rho: "number",
  afs: "bool",
  denoise: "bool",
  "genie-derivative": "string",
  order: "int",
  variant: "string",
  n: "int",
  seed: "int",
  class: "int",
  guidance: "number",
  output: "string",
} as const;

const COMMANDS = ["submit", "status", "wait", "fetch", "cancel", "delete", "usage"] as const;
type Command = typeof COMMANDS[number];

/** Flags each command accepts (besides the common ones). */
const ALLOWED: Record<Command, string[]> = {
  submit: ["count", "chunk", "schedule", "wait", "json", "request", "timeout", ...Object.keys(REQUEST_FLAGS)],
  status: ["json"],
  wait: ["timeout", "json"],
  fetch: ["out"],
  cancel: ["json"],
  delete: [],
  usage: ["json"],
};

export interface JobArgs {
  command: Command;
  id?: string;
  url: string;
  key?: string;
  quiet: boolean;
  json: boolean;
  flags: Record<string, string | boolean | undefined>;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Parses the command line; throws {@link UsageError} naming the flag; null for --help. */
export function parseJobArgs(argv: readonly string[]): JobArgs | null {
  const options: Record<string, { type: "string" | "boolean" }> = {
    url: { type: "string" },
    key: { type: "string" },
    quiet: { type: "boolean" },
    help: { type: "boolean" },
    count: { type: "string" },
    chunk: { type: "string" },
    schedule: { type: "string" },
    wait: { type: "boolean" },
    json: { type: "boolean" },
    request: { type: "string" },
    timeout: { type: "string" },
    out: { type: "string" },
  };
  for (const [name, kind] of Object.entries(REQUEST_FLAGS)) {
    options[name] = { type: kind === "bool" ? "boolean" : "string" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const flag = /'(-[^' ]+)/.exec(msg)?.[1];
    throw new UsageError(flag ? `${flag}: ${msg.split(". ")[0]}` : msg);
  }
  const { values, positionals } = parsed;
  if (values.help) return null;
  const [command, id, ...extra] = positionals;
  if (!command) throw new UsageError(`command: missing (one of ${COMMANDS.join(", ")})`);
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(`command: unknown ${JSON.stringify(command)} (one of ${COMMANDS.join(", ")})`);
  }
  const cmd = command as Command;
  const common = new Set(["url", "key", "quiet", "help"]);
  for (const name of Object.keys(values)) {
    if (!common.has(name) && !ALLOWED[cmd].includes(name)) {
      throw new UsageError(`--${name}: not a flag of ${cmd}`);
    }
  }
  if (cmd === "submit" || cmd === "usage") {
    if (id !== undefined) throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(id)}`);
  } else {
    if (!id) throw new UsageError(`${cmd}: missing the job id`);
    if (!/^[0-9a-f]{16}(-\d+)?$/.test(id)) {
      throw new UsageError(`${cmd}: ${JSON.stringify(id)} is not a job id`);
    }
  }
  if (extra.length > 0) throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(extra[0])}`);
  const url = (values.url as string | undefined) ?? env("GENIE_URL") ?? "http://127.0.0.1:8000";
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url: not an http(s) URL: ${JSON.stringify(url)}`);
  }
  const flags = values as Record<string, string | boolean | undefined>;
  if (cmd === "submit") {
    if (flags.count === undefined) throw new UsageError("--count: required");
    intFlag("count", flags.count, 1);
    if (flags.chunk !== undefined) intFlag("chunk", flags.chunk, 1);
    if (flags.model === undefined && flags.request === undefined) {
      throw new UsageError("--model: required (or give --request FILE.json)");
    }
    for (const [name, kind] of Object.entries(REQUEST_FLAGS)) {
      const v = flags[name];
      if (v === undefined || kind === "bool" || kind === "string") continue;
      if (kind === "int") intFlag(name, v, 0);
      else if (!Number.isFinite(Number(v)) || String(v).trim() === "") {
        throw new UsageError(`--${name}: expected a number, got ${JSON.stringify(v)}`);
      }
    }
    if (flags.steps !== undefined && flags.nfe !== undefined) {
      throw new UsageError("--nfe: give --steps or --nfe, not both");
    }
  }
  if (flags.timeout !== undefined) {
    const t = Number(flags.timeout);
    if (!(t > 0)) {
      throw new UsageError(`--timeout: expected seconds > 0, got ${JSON.stringify(flags.timeout)}`);
    }
  }
  if (cmd === "fetch" && !flags.out) throw new UsageError("--out: required (DIR, FILE.tar or FILE.npy)");
  return {
    command: cmd,
    id,
    url: url.replace(/\/+$/, ""),
    key: (values.key as string | undefined) ?? env("GENIE_API_KEY"),
    quiet: Boolean(values.quiet),
    json: Boolean(values.json),
    flags,
  };
}

function intFlag(name: string, v: string | boolean | undefined, min: number): number {
  const n = Number(v);
  if (typeof v !== "string" || !/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

// ------------------------------------------------------------------ HTTP

/** A job as `GET /v1/jobs/{id}` describes it. */
type Job = JobInfo;

class Client {
  constructor(private readonly args: JobArgs) {}

  async call(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.args.key) headers.authorization = `Bearer ${this.args.key}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(this.args.url + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new Failure(`cannot reach ${this.args.url}: ${e instanceof Error ? e.message : e}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let detail = text.slice(0, 500);
      try {
        const err = JSON.parse(text).error;
        detail = `${err.code}: ${err.message}`;
      } catch { /* not JSON */ }
      throw new Failure(`${method} ${path}: HTTP ${res.status} ${detail}`);
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return await (await this.call(method, path, body)).json() as T;
  }
}

// ------------------------------------------------------------------ progress

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
    ? `${m}m${String(sec).padStart(2, "0")}s`
    : `${sec}s`;
}

/** A progress bar with rate and ETA on stderr (redrawn in place on a terminal, else one line per 10 %). */
export class ProgressBar {
  private first?: { t: number; done: number };
  private lastDecile = -1;
  private readonly tty: boolean;
  private readonly enc = new TextEncoder();
  constructor(private readonly quiet: boolean, private readonly now = () => performance.now()) {
    let tty = false;
    try {
      tty = Deno.stderr.isTerminal();
    } catch { /* no stderr */ }
    this.tty = tty;
  }

  /** The line for `done` of `total` (exported for tests). */
  line(done: number, total: number, status: string): string {
    const t = this.now();
    this.first ??= { t, done };
    const frac = total > 0 ? done / total : 0;
    const width = 30;
    const filled = Math.round(frac * width);
    const bar = "#".repeat(filled) + ".".repeat(width - filled);
    const dt = (t - this.first.t) / 1000;
    const rate = dt > 0 ? (done - this.first.done) / dt : 0;
    const eta = rate > 0 ? fmtDuration((total - done) / rate) : "?";
    return `[${bar}] ${done}/${total} ${(frac * 100).toFixed(0)}% ${status}` +
      (rate > 0 ? ` ${rate.toFixed(1)}/s ETA ${eta}` : "");
  }

  update(done: number, total: number, status: string): void {
    if (this.quiet) return;
    const text = this.line(done, total, status);
    if (this.tty) {
      Deno.stderr.writeSync(this.enc.encode(`\r${text}\x1b[K`));
    } else {
      const decile = Math.floor((total > 0 ? done / total : 0) * 10);
      if (decile !== this.lastDecile) {
        this.lastDecile = decile;
        Deno.stderr.writeSync(this.enc.encode(text + "\n"));
      }
    }
  }

  end(): void {
    if (!this.quiet && this.tty) Deno.stderr.writeSync(this.enc.encode("\n"));
  }
}

const FINAL = ["succeeded", "failed", "canceled"];

async function waitFor(client: Client, args: JobArgs, id: string): Promise<Job> {
  const bar = new ProgressBar(args.quiet);
  const timeoutS = args.flags.timeout === undefined ? Infinity : Number(args.flags.timeout);
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

function report(job: Job, json: boolean): void {
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

async function buildRequest(args: JobArgs): Promise<Record<string, unknown>> {
  let request: Record<string, unknown> = {};
  const file = args.flags.request as string | undefined;
  if (file !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new UsageError(`--request: cannot read ${file}: ${e instanceof Error ? e.message : e}`);
    }
    try {
      request = JSON.parse(text);
    } catch {
      throw new UsageError(`--request: ${file} is not JSON`);
    }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      throw new UsageError(`--request: ${file} must hold a JSON object`);
    }
  }
  for (const [name, kind] of Object.entries(REQUEST_FLAGS)) {
    const v = args.flags[name];
    if (v === undefined) continue;
    const field = name.replace(/-/g, "_");
    request[field] = kind === "bool" ? true : kind === "string" ? v : Number(v);
  }
  return request;
}

async function fetchResults(client: Client, args: JobArgs, id: string): Promise<void> {
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

/** Runs the command line; returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let args: JobArgs | null;
  try {
    args = parseJobArgs(argv);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    return 2;
  }
  if (!args) {
    console.log(HELP);
    return 0;
  }
  const client = new Client(args);
  try {
    switch (args.command) {
      case "submit": {
        const body: Record<string, unknown> = {
          request: await buildRequest(args),
          count: Number(args.flags.count),
        };
        if (args.flags.chunk !== undefined) body.chunk = Number(args.flags.chunk);
        if (args.flags.schedule !== undefined) body.schedule = args.flags.schedule;
        const job = await client.json<Job>("POST", "/v1/jobs", body);
        if (!args.flags.wait) {
          if (args.json) console.log(JSON.stringify(job));
          else console.log(job.id);
          return 0;
        }
        console.error(`submitted ${job.id}`);
        const final = await waitFor(client, args, job.id);
        report(final, args.json);
        return final.status === "succeeded" ? 0 : 1;
      }
      case "status": {
        report(await client.json<Job>("GET", `/v1/jobs/${args.id}`), args.json);
        return 0;
      }
      case "wait": {
        const final = await waitFor(client, args, args.id!);
        report(final, args.json);
        return final.status === "succeeded" ? 0 : 1;
      }
      case "cancel": {
        report(await client.json<Job>("POST", `/v1/jobs/${args.id}/cancel`), args.json);
        return 0;
      }
      case "fetch": {
        await fetchResults(client, args, args.id!);
        return 0;
      }
      case "delete": {
        await (await client.call("DELETE", `/v1/jobs/${args.id}`)).body?.cancel();
        console.log(`${args.id}: deleted`);
        return 0;
      }
      case "usage": {
        const u = await client.json<JobsUsage>("GET", "/v1/jobs");
        if (args.json) console.log(JSON.stringify(u));
        else console.log(usageLines(u).join("\n"));
        return 0;
      }
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));

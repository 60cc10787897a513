/** Shared helpers of the batch-job tests: an app with jobs over a fake worker, polling, reference data. */
import { createApp, type EdgeApp } from "../../functions/app.ts";
import type { EdgeConfig } from "../../functions/config.ts";
import { type JobsConfig, makeJobsConfig } from "../../functions/jobs/config.ts";
import {
  FAKE_MODEL,
  fakeValue,
  type FakeWorker,
  type FakeWorkerOptions,
  startFakeWorker,
} from "../functions/fake_worker.ts";
import { post, quiet } from "../functions/helpers.ts";
import { sleep } from "../functions/processes.ts";

export { post, quiet, sleep };

export const SAMPLE = FAKE_MODEL.shape.reduce((a, b) => a * b, 1);

/** Jobs settings for tests: a temporary KV file and results folder, short leases and backoff. */
export function testJobsConfig(dir: string, overrides: Partial<JobsConfig> = {}): JobsConfig {
  return makeJobsConfig({
    kvPath: `${dir}/jobs.kv`,
    resultsDir: `${dir}/results`,
    leaseMs: 2_000,
    backoffMs: 20,
    maxBackoffMs: 200,
    sweepMs: 100,
    pollMs: 20,
    fsync: false,
    ...overrides,
  });
}

export interface JobsHarness {
  app: EdgeApp;
  worker: FakeWorker;
  dir: string;
}

/** An app with jobs (started) in front of a fresh in-process fake worker; everything is removed after `fn`. */
export async function withJobs(
  fn: (h: JobsHarness) => Promise<void>,
  opts: { jobs?: Partial<JobsConfig>; edge?: Partial<EdgeConfig>; worker?: FakeWorkerOptions } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "genie-jobs-" });
  const worker = await startFakeWorker(opts.worker);
  const app = createApp({
    workerUrls: [worker.url],
    log: quiet,
    rateLimit: { perMinute: 0, burst: 1 },
    jobs: testJobsConfig(dir, opts.jobs),
    ...opts.edge,
  });
  try {
    await app.jobs!.start();
    await fn({ app, worker, dir });
  } finally {
    await app.close();
    await worker.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

export type JobBody = Record<string, unknown> & {
  id: string;
  status: string;
  done: number;
  total: number;
  failed: number;
  chunks: { total: number; done: number; failed: number; running: number };
  error?: { code: string; message: string };
};

/** Something that answers HTTP requests: an in-process app or a server URL. */
export type Target = EdgeApp | string;

export async function call(
  target: Target,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  return typeof target === "string"
    ? await fetch(target + path, init)
    : await Promise.resolve(target.request(path, init));
}

export async function submitJob(
  target: Target,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<JobBody> {
  const res = await call(target, "/v1/jobs", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

export async function getJob(
  target: Target,
  id: string,
  headers: Record<string, string> = {},
): Promise<JobBody> {
  const res = await call(target, `/v1/jobs/${id}`, { headers });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`status answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/** Polls until the job is final (or `pred` holds). */
export async function waitJob(
  target: Target,
  id: string,
  pred: (j: JobBody) => boolean = (j) => ["succeeded", "failed", "canceled"].includes(j.status),
  timeoutMs = 20_000,
  headers: Record<string, string> = {},
): Promise<JobBody> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = await getJob(target, id, headers);
    if (pred(j)) return j;
    if (Date.now() > end) throw new Error(`job ${id} not there in ${timeoutMs} ms: ${JSON.stringify(j)}`);
    await sleep(15);
  }
}

export interface ResultItem {
  chunk: number;
  status: string;
  start: number;
  count: number;
  seeds: number[];
  attempts: number;
  nfe?: number;
  calls?: number;
  cost?: number;
  cost_estimated?: boolean;
  files?: { npy: string; png?: string };
  error?: { code: string; message: string };
}

/** Every result item, following cursors (`limit` per page). */
export async function allResults(target: Target, id: string, limit = 100): Promise<ResultItem[]> {
  const out: ResultItem[] = [];
  let cursor: string | null = "0";
  for (let pages = 0; cursor !== null; pages++) {
    if (pages > 10_000) throw new Error("too many pages");
    const res = await call(target, `/v1/jobs/${id}/results?cursor=${cursor}&limit=${limit}`);
    const page = await res.json();
    if (res.status !== 200) throw new Error(`results answered ${res.status}: ${JSON.stringify(page)}`);
    out.push(...page.items);
    cursor = page.next_cursor;
  }
  return out;
}

/** The float32 bytes of a chunk's samples as stored in its .npy (header stripped). */
export async function chunkData(target: Target, item: ResultItem): Promise<Uint8Array> {
  const res = await call(target, item.files!.npy);
  if (res.status !== 200) throw new Error(`${item.files!.npy}: ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  return bytes.subarray(bytes.byteLength - item.count * SAMPLE * 4);
}

/** What the fake worker computes for `seeds`: the reference for bit-identity. */
export function expectedBytes(seeds: readonly number[]): Uint8Array {
  const v = new Float32Array(seeds.length * SAMPLE);
  seeds.forEach((s, k) => {
    for (let i = 0; i < SAMPLE; i++) v[k * SAMPLE + i] = fakeValue(s, i);
  });
  return new Uint8Array(v.buffer);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Checks the exactly-once invariants of a finished job: `total` samples in chunks listed once each,
 * seeds base…base+total−1 once each, every chunk's bytes equal to the reference.
 */
export async function checkComplete(target: Target, job: JobBody, baseSeed: number): Promise<ResultItem[]> {
  const items = await allResults(target, job.id);
  const chunks = items.map((i) => i.chunk);
  if (new Set(chunks).size !== chunks.length) throw new Error(`duplicate chunks: ${chunks}`);
  if (items.length !== job.chunks.total) {
    throw new Error(`${items.length} items for ${job.chunks.total} chunks`);
  }
  const seeds = items.flatMap((i) => i.seeds);
  if (seeds.length !== job.total) throw new Error(`${seeds.length} seeds for ${job.total} samples`);
  if (new Set(seeds).size !== seeds.length) throw new Error("duplicate seeds");
  seeds.forEach((s, i) => {
    if (s !== baseSeed + i) throw new Error(`seed ${i} is ${s}, expected ${baseSeed + i}`);
  });
  for (const item of items) {
    if (item.status !== "done") throw new Error(`chunk ${item.chunk} is ${item.status}`);
    if (!sameBytes(await chunkData(target, item), expectedBytes(item.seeds))) {
      throw new Error(`chunk ${item.chunk} differs from the reference`);
    }
  }
  return items;
}

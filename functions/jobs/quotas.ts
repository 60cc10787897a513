/**
 * Per-key quotas of batch jobs (docs/jobs.md, "Quotas and retention"): how many jobs a key (the API
 * key's id, or the client address on an open server) may have queued or running, how many samples one
 * job and all of them together may hold, and how many bytes of result files the key may keep stored.
 *
 * - Active jobs are listed under `["jobs","live",principal]` (set at submission, deleted when the job
 *   ends: functions/jobs/retention.ts `endJobOps`), so counting them reads a handful of entries.
 * - Stored bytes are counted when a chunk commits (functions/jobs/leases.ts `commitDone`, exactly once)
 *   and given back when the files are deleted (functions/jobs/retention.ts), per job and per key.
 * - A submission checks `["jobs","quota",principal]` and bumps it in the operation that records the job,
 *   so two submissions of one key at once cannot both take the last place: one of them checks again.
 *
 * A job that exceeds a limit on its own is refused with 413 (it can never fit); one that exceeds a
 * limit only together with the key's other jobs with 429 (it fits once they end, are deleted or expire).
 * Both are `quota_exceeded`, with a message that names the limit.
 */
import type { JobsUsage } from "../../core/api/jobs.ts";
import { shapeSize } from "../../core/api/tensor.ts";
import { npyHeader } from "../../core/npy.ts";
import { ApiError } from "../errors.ts";
import type { JobsConfig } from "./config.ts";
import type { JobsContext } from "./context.ts";
import { type JobRecord, K, type LiveJob } from "./keys.ts";

/** A KvU64 counter as a number; a counter driven below zero (it wraps around) reads as 0. */
function u64(v: Deno.KvU64 | null | undefined): number {
  const n = v?.value ?? 0n;
  return n >= 1n << 63n ? 0 : Number(n);
}

/** `-n` for a KvU64 `sum` (which wraps around at 2⁶⁴): subtracts n. */
export function minus(n: bigint): bigint {
  return ((1n << 64n) - n) % (1n << 64n);
}

/** Expected bytes of a job's .npy files (of each run, for a recurring job); PNG grids come on top. */
export function expectedBytes(job: Pick<JobRecord, "total" | "chunk" | "chunks" | "shape">): number {
  return job.total * shapeSize(job.shape) * 4 + job.chunks * npyHeader([job.chunk, ...job.shape]).byteLength;
}

/** What a key holds now. */
export interface Usage {
  /** Its active jobs (queued or running; recurring jobs until canceled). */
  active: { id: string; live: LiveJob }[];
  activeSamples: number;
  /** Bytes of result files stored. */
  storedBytes: number;
  /** Expected .npy bytes that the active jobs have not written yet. */
  reservedBytes: number;
  /** The entry a submission checks and bumps. */
  seq: Deno.KvEntryMaybe<number>;
}

/** The key's usage, read in the order that makes a submission's check strict (the sequence first). */
export async function readUsage(ctx: JobsContext, principal: string): Promise<Usage> {
  const kv = ctx.kv;
  const [seq, stored] = await kv.getMany<[number, Deno.KvU64]>([K.quota(principal), K.usage(principal)]);
  const live = await Array.fromAsync(kv.list<LiveJob>({ prefix: K.lives(principal) }));
  const active = live.map((e) => ({ id: e.key[3] as string, live: e.value }));
  let reservedBytes = 0;
  for (let i = 0; i < active.length; i += 10) {
    const part = active.slice(i, i + 10);
    const written = await kv.getMany<Deno.KvU64[]>(part.map((a) => K.bytes(a.id)));
    part.forEach((a, k) => (reservedBytes += Math.max(0, a.live.bytes - u64(written[k].value))));
  }
  return {
    active,
    activeSamples: active.reduce((s, a) => s + a.live.total, 0),
    storedBytes: u64(stored.value),
    reservedBytes,
    seq,
  };
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(b < 2 ** 30 ? 3 : 1)} GiB`;

function refuse(status: 413 | 429, message: string, field?: string[]): ApiError {
  const details = field ? [{ path: field, message, code: "quota_exceeded" }] : undefined;
  return new ApiError(status, "quota_exceeded", message, details);
}

/**
 * Throws 413/429 `quota_exceeded` when `job` (not yet recorded) does not fit the key's quotas; checks
 * the job on its own first, then together with the key's usage.
 */
export function checkQuota(config: JobsConfig, usage: Usage, job: JobRecord): void {
  const per = job.kind === "recurring" ? " per run" : "";
  const bytes = expectedBytes(job);
  const { maxActiveJobs, maxJobSamples, maxActiveSamples, maxStoredBytes } = config;
  if (maxJobSamples > 0 && job.total > maxJobSamples) {
    throw refuse(
      413,
      `max_job_samples: count × n = ${job.total} samples${per}; at most ${maxJobSamples} per job for ` +
        "this key",
      ["count"],
    );
  }
  if (maxActiveSamples > 0 && job.total > maxActiveSamples) {
    throw refuse(
      413,
      `max_active_samples: count × n = ${job.total} samples${per}; at most ${maxActiveSamples} in active ` +
        `jobs for this key`,
      ["count"],
    );
  }
  if (maxStoredBytes > 0 && bytes > maxStoredBytes) {
    throw refuse(
      413,
      `max_stored_bytes: the results would take ${bytes} bytes (${gib(bytes)})${per}; this key may store ` +
        `${maxStoredBytes} bytes (${gib(maxStoredBytes)})`,
      ["count"],
    );
  }
  if (maxActiveJobs > 0 && usage.active.length >= maxActiveJobs) {
    throw refuse(
      429,
      `max_active_jobs: this key has ${usage.active.length} jobs queued or running, the most it may have ` +
        `(${maxActiveJobs}); submit again when one has finished, or cancel one`,
    );
  }
  if (maxActiveSamples > 0 && usage.activeSamples + job.total > maxActiveSamples) {
    throw refuse(
      429,
      `max_active_samples: this key's active jobs hold ${usage.activeSamples} samples; ${job.total} more ` +
        `would pass its limit of ${maxActiveSamples}`,
      ["count"],
    );
  }
  const held = usage.storedBytes + usage.reservedBytes;
  if (maxStoredBytes > 0 && held + bytes > maxStoredBytes) {
    throw refuse(
      429,
      `max_stored_bytes: this key stores ${usage.storedBytes} bytes and its active jobs will write about ` +
        `${usage.reservedBytes} more; ${bytes} more would pass its limit of ${maxStoredBytes} bytes ` +
        `(${gib(maxStoredBytes)}); delete finished jobs (DELETE /v1/jobs/:id) or wait for them to expire`,
      ["count"],
    );
  }
}

/**
 * Why a recurring job's next run may not start (its key is over max_stored_bytes), or null. The
 * recurring job's own reservation stands for the run.
 */
export async function runRefusal(ctx: JobsContext, parent: JobRecord): Promise<string | null> {
  const max = ctx.config.maxStoredBytes;
  if (max <= 0) return null;
  const usage = await readUsage(ctx, parent.principal);
  const own = usage.active.some((a) => a.id === parent.id) ? 0 : expectedBytes(parent);
  const held = usage.storedBytes + usage.reservedBytes + own;
  if (held <= max) return null;
  return `max_stored_bytes: this key stores ${usage.storedBytes} bytes and its active jobs will write ` +
    `about ${usage.reservedBytes + own} more, past its limit of ${max} bytes; the run was not started`;
}

const limit = (n: number) => (n > 0 ? n : null);

/** `GET /v1/jobs`: the key's limits and usage (docs/contracts.md §2). */
export function usageReport(config: JobsConfig, usage: Usage): JobsUsage {
  return {
    limits: {
      max_active_jobs: limit(config.maxActiveJobs),
      max_job_samples: limit(config.maxJobSamples),
      max_active_samples: limit(config.maxActiveSamples),
      max_stored_bytes: limit(config.maxStoredBytes),
      retention_ms: config.retentionMs,
    },
    usage: {
      active_jobs: usage.active.length,
      active_samples: usage.activeSamples,
      stored_bytes: usage.storedBytes,
      reserved_bytes: usage.reservedBytes,
    },
    active: usage.active.map((a) => a.id),
  };
}

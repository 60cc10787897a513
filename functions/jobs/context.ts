/**
 * What the parts of the job system share (functions/jobs/system.ts composes them): the process's view
 * of the database, the store, the clock and the chunks it has in flight, and the error types and small
 * helpers that the leases (functions/jobs/leases.ts), the drivers (functions/jobs/drivers.ts), the
 * runner (functions/jobs/runner.ts) and the job reports (functions/jobs/results.ts) all use.
 */
import { FINAL_STATUSES } from "../../core/api/jobs.ts";
import type { Counter } from "../../core/metrics.ts";
import { ApiError } from "../errors.ts";
import type { WorkerPool } from "../pool.ts";
import type { JobsConfig } from "./config.ts";
import type { ErrorInfo, JobRecord } from "./keys.ts";
import type { ResultStore } from "./store.ts";

/** The state of one job system that its parts read; built by {@link JobSystem}'s constructor. */
export interface JobsContext {
  readonly config: JobsConfig;
  /** Name of this process in leases. */
  readonly owner: string;
  /** The database; throws 503 `jobs_unavailable` until it is open. */
  readonly kv: Deno.Kv;
  readonly store: ResultStore;
  readonly pool: WorkerPool;
  readonly now: () => number;
  readonly log: (message: string) => void;
  readonly random: () => number;
  /** Set once the system is closing: loops end, nothing new starts. */
  readonly closed: boolean;
  /** Per-chunk worker deadline when the request has no deadline_ms (ms). */
  readonly deadlineMs?: number;
  /** Abort controllers of this process's running chunks, per job. */
  readonly inflight: Map<string, Set<AbortController>>;
  /** `genie_jobs_chunks_total{outcome}`, when metrics are kept. */
  readonly chunkCounter?: Counter;
}

/**
 * The results store could not take a chunk's files (or the job's index): a read-only or missing
 * folder, a full disk. It fails the whole job at once (retrying into a store that refuses writes only
 * burns worker time); a recurring job's next run tries the store again.
 */
export class StorageError extends Error {
  constructor(readonly what: string, cause: unknown) {
    super(`writing the results failed (${what}): ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "StorageError";
  }
}

/** Thrown into a running chunk whose lease was taken over or whose job ended. */
export class Stop extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Stop";
  }
}

/** Aborts this process's running chunks of job `id`. */
export function stopChunks(ctx: JobsContext, id: string, why: string): void {
  for (const c of ctx.inflight.get(id) ?? []) c.abort(new Stop(why));
}

export const isFinal = (s: string) => (FINAL_STATUSES as readonly string[]).includes(s);

export const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/** Samples in chunk `index` of `job` (the last chunk may be short). */
export function chunkSize(job: JobRecord, index: number): number {
  return Math.min(job.chunk, job.total - index * job.chunk);
}

export function errorInfo(e: unknown): ErrorInfo {
  if (e instanceof ApiError) return { code: e.code, message: e.message };
  if (e instanceof StorageError) return { code: "storage_error", message: e.message };
  if (e instanceof DOMException && e.name === "TimeoutError") {
    return { code: "deadline_exceeded", message: "the worker did not answer in time" };
  }
  return { code: "internal", message: e instanceof Error ? e.message : String(e) };
}

/**
 * Errors that fail the whole job at once: the worker judged the request itself invalid, or the results
 * store refuses writes.
 */
export function permanent(e: unknown): boolean {
  return e instanceof StorageError || e instanceof ApiError && [400, 404, 413, 422].includes(e.status);
}

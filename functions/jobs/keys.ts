/**
 * The Deno KV layout of batch jobs and the records stored under it (docs/jobs.md, "State in KV").
 * Every value is small (well under KV's 64 KiB limit): samples live in the {@link ResultStore}.
 *
 *     ["jobs","job",id]                 JobRecord        the job; status changes only here
 *     ["jobs","cursor",id]              number           next chunk never claimed
 *     ["jobs","chunk",id,index]         ChunkRecord      exists once the chunk was first claimed
 *     ["jobs","open",id,index]          OpenChunk        chunks leased or waiting to retry (small set)
 *     ["jobs","count",id,name]          Deno.KvU64       samples, chunks, failed_chunks, failed_samples
 *     ["jobs","active",id]              number           jobs with work left (sweeper, poller)
 *     ["jobs","beat",id]                number           last progress (stall detection)
 *     ["jobs","due",at,id]              string           next run of a recurring job (cron tick)
 *     ["jobs","runs",id,run]            string           runs of a recurring job
 *     ["jobs","bytes",id]               Deno.KvU64       bytes of the job's result files in the store
 *     ["jobs","live",principal,id]      LiveJob          a key's jobs that are queued or running
 *     ["jobs","quota",principal]        number           bumped by each submission of the key (checked)
 *     ["jobs","usage",principal]        Deno.KvU64       bytes of result files the key has stored
 *     ["jobs","expire",at,id]           "job"|"gone"     when a final job (or its tombstone) expires
 *     ["jobs","gone",id]                GoneRecord       an expired or deleted job (410 until it expires)
 *
 * Quotas and retention (functions/jobs/quotas.ts, functions/jobs/retention.ts) use the last six.
 */
import type { JobStatus } from "../../core/api/jobs.ts";
import type { SamplesRequest } from "../../core/api/samples.ts";

export const K = {
  job: (id: string): Deno.KvKey => ["jobs", "job", id],
  cursor: (id: string): Deno.KvKey => ["jobs", "cursor", id],
  chunk: (id: string, index: number): Deno.KvKey => ["jobs", "chunk", id, index],
  chunks: (id: string): Deno.KvKey => ["jobs", "chunk", id],
  open: (id: string, index: number): Deno.KvKey => ["jobs", "open", id, index],
  opens: (id: string): Deno.KvKey => ["jobs", "open", id],
  count: (id: string, name: CounterName): Deno.KvKey => ["jobs", "count", id, name],
  counts: (id: string): Deno.KvKey => ["jobs", "count", id],
  active: (id: string): Deno.KvKey => ["jobs", "active", id],
  actives: (): Deno.KvKey => ["jobs", "active"],
  beat: (id: string): Deno.KvKey => ["jobs", "beat", id],
  due: (at: number, id: string): Deno.KvKey => ["jobs", "due", at, id],
  dues: (): Deno.KvKey => ["jobs", "due"],
  run: (id: string, run: number): Deno.KvKey => ["jobs", "runs", id, run],
  runs: (id: string): Deno.KvKey => ["jobs", "runs", id],
  bytes: (id: string): Deno.KvKey => ["jobs", "bytes", id],
  live: (principal: string, id: string): Deno.KvKey => ["jobs", "live", principal, id],
  lives: (principal: string): Deno.KvKey => ["jobs", "live", principal],
  quota: (principal: string): Deno.KvKey => ["jobs", "quota", principal],
  usage: (principal: string): Deno.KvKey => ["jobs", "usage", principal],
  expire: (at: number, id: string): Deno.KvKey => ["jobs", "expire", at, id],
  expires: (): Deno.KvKey => ["jobs", "expire"],
  gone: (id: string): Deno.KvKey => ["jobs", "gone", id],
} as const;

export const COUNTERS = ["samples", "chunks", "failed_chunks", "failed_samples"] as const;
export type CounterName = typeof COUNTERS[number];

export interface ErrorInfo {
  code: string;
  message: string;
}

export interface JobRecord {
  id: string;
  /** `batch`: runs once; `recurring`: a schedule that starts a batch run per cron tick. */
  kind: "batch" | "recurring";
  status: JobStatus;
  /** Who submitted it (the API key's id, or the client address on an open server). */
  principal: string;
  /** The samples request (validated; no latents). */
  request: SamplesRequest;
  model: string;
  solver: string;
  /** Shape of one sample. */
  shape: number[];
  /** Whether a PNG grid is written per chunk. */
  png: boolean;
  count: number;
  n: number;
  total: number;
  chunk: number;
  chunks: number;
  base_seed: number;
  created_at: number;
  started_at?: number;
  finished_at?: number;
  error?: ErrorInfo;
  // Recurring jobs:
  schedule?: string;
  next_run_at?: number;
  runs?: number;
  skipped?: number;
  last_run?: string;
  // Runs of a recurring job:
  parent?: string;
  run?: number;
  // Retention (functions/jobs/retention.ts):
  /** When a final job expires: its files and state are deleted and its id answers 410. */
  expires_at?: number;
  /** The job's result files were deleted (a canceled job). */
  files_deleted?: boolean;
}

/** A job that counts against its key's quotas while queued or running (a recurring job: until canceled). */
export interface LiveJob {
  /** Samples of the job (of each run, for a recurring job). */
  total: number;
  /** Expected size of its .npy files (of each run, for a recurring job). */
  bytes: number;
}

/** What is left of an expired or deleted job: enough to answer 410 to its key. */
export interface GoneRecord {
  id: string;
  principal: string;
  reason: "expired" | "deleted";
  at: number;
  /** When this record goes too (the id then answers 404). */
  expires_at: number;
}

export interface ChunkRecord {
  index: number;
  state: "leased" | "retry" | "done" | "failed";
  /** Claims so far (the current one included). */
  attempts: number;
  owner?: string;
  lease_until?: number;
  retry_at?: number;
  /** The latest failure. */
  error?: ErrorInfo;
  nfe?: number;
  /** Graph calls and their forward-pass equivalents per sample, as the worker reported them. */
  calls?: number;
  cost?: number;
  cost_estimated?: boolean;
  steps?: number;
  /** Result keys in the store. */
  files?: { npy: string; png?: string };
  finished_at?: number;
}

/** A chunk that is leased (until `at`) or waits to be retried (at `at`). */
export interface OpenChunk {
  kind: "lease" | "retry";
  at: number;
  owner?: string;
}

/** The queue message that drives a job: claim and run its next chunk. */
export interface PumpMessage {
  genie_job: 1;
  job: string;
}

export function pumpMessage(job: string): PumpMessage {
  return { genie_job: 1, job };
}

export function isPumpMessage(m: unknown): m is PumpMessage {
  return typeof m === "object" && m !== null && (m as PumpMessage).genie_job === 1 &&
    typeof (m as PumpMessage).job === "string";
}

/** Store key of a chunk's samples and of its PNG grid. */
export function chunkFile(job: string, index: number, ext: "npy" | "png"): string {
  return `${job}/chunk-${String(index).padStart(6, "0")}.${ext}`;
}

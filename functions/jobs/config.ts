/**
 * Configuration of batch jobs (docs/jobs.md), part of the edge's configuration (`EdgeConfig.jobs`).
 *
 * Environment variables:
 * - GENIE_JOBS — `off` disables jobs (the routes answer 503)
 * - GENIE_KV_PATH — the Deno KV database: a file path locally (default `.genie/jobs.kv`), a URL for a
 *   remote KV; on Deno Deploy (DENO_DEPLOYMENT_ID set) the default is the platform's KV
 * - GENIE_RESULTS_DIR — where result files go (default `.genie/results`)
 * - GENIE_JOBS_DRIVER — `auto` (default: the KV queue when the database has one), `queue` or `poll`
 * - GENIE_JOBS_PARALLEL (2) — chunks of one job in flight at once
 * - GENIE_JOBS_CONCURRENCY (8) — chunks in flight from this process, all jobs together
 * - GENIE_JOBS_LEASE_MS (15000) — a chunk's lease; a crashed holder's chunk is retaken after it
 * - GENIE_JOBS_MAX_ATTEMPTS (5) — attempts per chunk before it fails for good
 * - GENIE_JOBS_BACKOFF_MS (500), GENIE_JOBS_MAX_BACKOFF_MS (30000) — retry delay: base × 2^(attempt−1),
 *   capped, ±20 % jitter
 * - GENIE_JOBS_SWEEP_MS (1000) — how often stalled jobs and due schedules are checked
 * - GENIE_JOBS_POLL_MS (200) — idle wait of the polling driver
 * - GENIE_JOBS_CHAIN_MS (20000) — how long one queue message (or polling turn) keeps running chunks of
 *   a job back to back before handing over to a new message
 * - GENIE_JOBS_CRON ("* * * * *") — the Deno.cron tick spec registered at start-up (functions/jobs/cron.ts)
 * - GENIE_JOBS_FSYNC — `off` skips fsync before rename (faster; a kill -9 still never leaves half files)
 *
 * Quotas per API key (per client address on an open server; functions/jobs/quotas.ts), 0 for no limit:
 * - GENIE_JOBS_MAX_ACTIVE (10) — jobs queued or running at once (a recurring job counts until canceled)
 * - GENIE_JOBS_MAX_JOB_SAMPLES (100000) — samples in one job (count × n; of each run when recurring)
 * - GENIE_JOBS_MAX_ACTIVE_SAMPLES (1000000) — samples of the key's active jobs together
 * - GENIE_JOBS_MAX_STORED_BYTES (10737418240, 10 GiB) — result files the key keeps in the store
 *
 * Retention (functions/jobs/retention.ts):
 * - GENIE_JOBS_RETENTION_MS (604800000, 7 days) — how long a finished, failed or canceled job is kept;
 *   then its files and state are deleted and its id answers 410 `job_expired` for as long again
 */
import { parseOnOff } from "../../core/api/switch.ts";

export type DriverKind = "auto" | "queue" | "poll";

export interface JobsConfig {
  enabled: boolean;
  /** Deno.openKv's argument; undefined opens the default database (Deno Deploy's KV). */
  kvPath?: string;
  resultsDir: string;
  driver: DriverKind;
  parallel: number;
  concurrency: number;
  leaseMs: number;
  maxAttempts: number;
  backoffMs: number;
  maxBackoffMs: number;
  sweepMs: number;
  pollMs: number;
  chainMs: number;
  cronSpec: string;
  fsync: boolean;
  /** Results per page by default and at most. */
  pageSize: number;
  maxPageSize: number;
  /** Per-key quotas (0: no limit). */
  maxActiveJobs: number;
  maxJobSamples: number;
  maxActiveSamples: number;
  maxStoredBytes: number;
  /** How long a final job is kept (ms). */
  retentionMs: number;
}

export const DEFAULT_JOBS_CONFIG: JobsConfig = {
  enabled: true,
  kvPath: ".genie/jobs.kv",
  resultsDir: ".genie/results",
  driver: "auto",
  parallel: 2,
  concurrency: 8,
  leaseMs: 15_000,
  maxAttempts: 5,
  backoffMs: 500,
  maxBackoffMs: 30_000,
  sweepMs: 1_000,
  pollMs: 200,
  chainMs: 20_000,
  cronSpec: "* * * * *",
  fsync: true,
  pageSize: 100,
  maxPageSize: 1000,
  maxActiveJobs: 10,
  maxJobSamples: 100_000,
  maxActiveSamples: 1_000_000,
  maxStoredBytes: 10 * 2 ** 30,
  retentionMs: 7 * 24 * 3600 * 1000,
};

export function makeJobsConfig(partial: Partial<JobsConfig> = {}): JobsConfig {
  return { ...DEFAULT_JOBS_CONFIG, ...partial };
}

function int(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined || value.trim() === "") return fallback;
  const v = Number(value);
  if (!Number.isSafeInteger(v) || v < min) {
    throw new Error(`${name}: expected an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  }
  return v;
}

function flag(name: string, value: string | undefined, fallback: boolean): boolean {
  return parseOnOff(name, value) ?? fallback;
}

/** Jobs configuration from GENIE_* variables (see the module comment). */
export function jobsConfigFromEnv(get: (name: string) => string | undefined): JobsConfig {
  const driver = (get("GENIE_JOBS_DRIVER") || "auto").trim();
  if (driver !== "auto" && driver !== "queue" && driver !== "poll") {
    throw new Error(`GENIE_JOBS_DRIVER: expected auto, queue or poll, got ${JSON.stringify(driver)}`);
  }
  const onDeploy = Boolean(get("DENO_DEPLOYMENT_ID"));
  const d = DEFAULT_JOBS_CONFIG;
  return makeJobsConfig({
    enabled: flag("GENIE_JOBS", get("GENIE_JOBS"), true),
    kvPath: get("GENIE_KV_PATH") || (onDeploy ? undefined : d.kvPath),
    resultsDir: get("GENIE_RESULTS_DIR") || d.resultsDir,
    driver,
    parallel: int("GENIE_JOBS_PARALLEL", get("GENIE_JOBS_PARALLEL"), d.parallel),
    concurrency: int("GENIE_JOBS_CONCURRENCY", get("GENIE_JOBS_CONCURRENCY"), d.concurrency),
    leaseMs: int("GENIE_JOBS_LEASE_MS", get("GENIE_JOBS_LEASE_MS"), d.leaseMs, 100),
    maxAttempts: int("GENIE_JOBS_MAX_ATTEMPTS", get("GENIE_JOBS_MAX_ATTEMPTS"), d.maxAttempts),
    backoffMs: int("GENIE_JOBS_BACKOFF_MS", get("GENIE_JOBS_BACKOFF_MS"), d.backoffMs, 0),
    maxBackoffMs: int("GENIE_JOBS_MAX_BACKOFF_MS", get("GENIE_JOBS_MAX_BACKOFF_MS"), d.maxBackoffMs, 0),
    sweepMs: int("GENIE_JOBS_SWEEP_MS", get("GENIE_JOBS_SWEEP_MS"), d.sweepMs, 10),
    pollMs: int("GENIE_JOBS_POLL_MS", get("GENIE_JOBS_POLL_MS"), d.pollMs, 1),
    chainMs: int("GENIE_JOBS_CHAIN_MS", get("GENIE_JOBS_CHAIN_MS"), d.chainMs, 0),
    cronSpec: get("GENIE_JOBS_CRON") || d.cronSpec,
    fsync: flag("GENIE_JOBS_FSYNC", get("GENIE_JOBS_FSYNC"), true),
    maxActiveJobs: int("GENIE_JOBS_MAX_ACTIVE", get("GENIE_JOBS_MAX_ACTIVE"), d.maxActiveJobs, 0),
    maxJobSamples: int("GENIE_JOBS_MAX_JOB_SAMPLES", get("GENIE_JOBS_MAX_JOB_SAMPLES"), d.maxJobSamples, 0),
    maxActiveSamples: int(
      "GENIE_JOBS_MAX_ACTIVE_SAMPLES",
      get("GENIE_JOBS_MAX_ACTIVE_SAMPLES"),
      d.maxActiveSamples,
      0,
    ),
    maxStoredBytes: int(
      "GENIE_JOBS_MAX_STORED_BYTES",
      get("GENIE_JOBS_MAX_STORED_BYTES"),
      d.maxStoredBytes,
      0,
    ),
    retentionMs: int("GENIE_JOBS_RETENTION_MS", get("GENIE_JOBS_RETENTION_MS"), d.retentionMs, 1),
  });
}

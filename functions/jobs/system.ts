/**
 * Batch jobs: durable state in Deno KV, chunks driven through the worker pool, exactly-once results.
 * docs/jobs.md describes the design; functions/jobs/keys.ts the KV layout.
 *
 * {@link JobSystem} owns the database and the result store, records submissions and cancellations,
 * and composes the parts that do the work:
 *
 * - functions/jobs/leases.ts — claiming, renewing and expiring chunk leases; the exactly-once commit
 *   of a finished (or failed) chunk.
 * - functions/jobs/drivers.ts — one chunk against the worker: the worker message, the call under a
 *   renewed lease, the files, the commit.
 * - functions/jobs/runner.ts — what picks work and drives it: the KV queue listener or the polling
 *   loops, chains of chunks, the sweeper and the recurring jobs' tick.
 * - functions/jobs/results.ts — what a job reports: status, pages of results, its index, its end.
 * - functions/jobs/quotas.ts and functions/jobs/retention.ts — per-key limits, checked at submission;
 *   expiry of old jobs and deletion of their files.
 * - functions/jobs/context.ts — what they share.
 */
import { nextCronTime, parseCron } from "../../core/api/cron.ts";
import type { JobInfo, JobRequest, JobResult, JobsUsage } from "../../core/api/jobs.ts";
import type { ModelInfo } from "../../core/api/models.ts";
import { DEFAULT_SOLVER, firstSeedOf, isImageModel } from "../../core/api/samples.ts";
import { randomHex } from "../../core/hex.ts";
import { Counter, type MetricsRegistry } from "../../core/metrics.ts";
import { ApiError } from "../errors.ts";
import type { WorkerPool } from "../pool.ts";
import type { JobsConfig } from "./config.ts";
import { isFinal, type JobsContext, Stop, stopChunks } from "./context.ts";
import type { ChunkRecord, GoneRecord, JobRecord, LiveJob } from "./keys.ts";
import { K } from "./keys.ts";
import { resilientKv } from "./kv.ts";
import { backoff } from "./leases.ts";
import { checkQuota, expectedBytes, readUsage, usageReport } from "./quotas.ts";
import * as results from "./results.ts";
import { deleteFiles, endJobOps, expireDue, expireJob, goneRecord } from "./retention.ts";
import { type PumpOutcome, Runner } from "./runner.ts";
import { FsResultStore, type ResultStore } from "./store.ts";

export interface JobsDeps {
  pool: WorkerPool;
  config: JobsConfig;
  now?: () => number;
  log?: (message: string) => void;
  random?: () => number;
  /** An open database; otherwise {@link JobSystem.start} opens `config.kvPath`. */
  kv?: Deno.Kv;
  store?: ResultStore;
  /** Name of this process in leases (default: random). */
  owner?: string;
  metrics?: MetricsRegistry;
  /** Per-chunk worker deadline when the request has no deadline_ms (ms). */
  deadlineMs?: number;
}

export class JobSystem {
  readonly config: JobsConfig;
  readonly owner: string;
  private kvHandle?: Deno.Kv;
  private storeHandle?: ResultStore;
  private readonly now: () => number;
  private readonly log: (m: string) => void;
  private readonly inflight = new Map<string, Set<AbortController>>();
  private readonly ownsKv: boolean;
  private started?: Promise<void>;
  private closed = false;
  private readonly submitted?: Counter;
  /** What the parts (leases, drivers, runner, results) see of this system. */
  private readonly ctx: JobsContext;
  private readonly runner: Runner;

  constructor(deps: JobsDeps) {
    this.config = deps.config;
    this.now = deps.now ?? Date.now;
    this.log = deps.log ?? ((m) => console.error(m));
    this.owner = deps.owner ?? crypto.randomUUID().slice(0, 8);
    this.kvHandle = deps.kv && resilientKv(deps.kv);
    this.ownsKv = !deps.kv;
    this.storeHandle = deps.store;
    let chunkCounter: Counter | undefined;
    if (deps.metrics) {
      chunkCounter = deps.metrics.add(
        "genie_jobs_chunks_total",
        new Counter("Job chunks finished by this edge, by outcome (done, retry, failed, stale)"),
      );
      this.submitted = deps.metrics.add("genie_jobs_submitted_total", new Counter("Jobs submitted"));
    }
    // deno-lint-ignore no-this-alias
    const self = this;
    this.ctx = {
      config: this.config,
      owner: this.owner,
      pool: deps.pool,
      now: this.now,
      log: this.log,
      random: deps.random ?? Math.random,
      deadlineMs: deps.deadlineMs,
      inflight: this.inflight,
      chunkCounter,
      get kv() {
        return self.kv;
      },
      get store() {
        return self.store;
      },
      get closed() {
        return self.closed;
      },
    };
    this.runner = new Runner(this.ctx);
  }

  /** Why {@link start} failed, if it did. */
  failure?: string;

  /** Set once {@link start} has finished: the database is open and the driver runs. */
  ready = false;

  /** "queue" or "poll" once started. */
  get driver(): "queue" | "poll" | undefined {
    return this.runner.driver;
  }

  get kv(): Deno.Kv {
    if (!this.kvHandle) {
      if (this.failure) {
        throw new ApiError(503, "jobs_unavailable", `batch jobs are unavailable: ${this.failure}`);
      }
      throw new ApiError(503, "jobs_unavailable", "batch jobs are starting; retry", undefined, {
        "retry-after": "1",
      });
    }
    return this.kvHandle;
  }

  get store(): ResultStore {
    return this.storeHandle ??= new FsResultStore(this.config.resultsDir, this.config.fsync);
  }

  /** Opens the database (if not given) and starts the driver and the sweeper. Idempotent. */
  start(): Promise<void> {
    return this.started ??= this.doStart().then(() => {
      this.ready = !this.closed;
    }, (e) => {
      this.failure = e instanceof Error ? e.message : String(e);
      throw e;
    });
  }

  private async doStart(): Promise<void> {
    if (!this.kvHandle) {
      if (typeof Deno.openKv !== "function") {
        throw new Error("batch jobs need Deno KV: run with --unstable-kv (or set GENIE_JOBS=off)");
      }
      const path = this.config.kvPath;
      if (path && !/^[a-z]+:\/\//i.test(path) && path !== ":memory:" && path.includes("/")) {
        await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      }
      this.kvHandle = resilientKv(await Deno.openKv(path));
    }
    await this.runner.start(this.kvHandle);
  }

  /** Stops the driver; running chunks are aborted and their leases released for another process. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.runner.stop();
    for (const set of this.inflight.values()) for (const c of set) c.abort(new Stop("shutting down"));
    await this.started?.catch(() => {});
    // Give aborted chunks a moment to release their leases.
    const deadline = Date.now() + 2000;
    while (this.inflight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (this.ownsKv && this.kvHandle) {
      try {
        this.kvHandle.close();
      } catch { /* closed */ }
    }
    await this.runner.stopped();
  }

  // ---------------------------------------------------------------- submission and cancellation

  /**
   * Records a validated job for `model` if it fits the key's quotas (else 413/429 `quota_exceeded`);
   * batch jobs start at once, recurring ones at their first tick.
   */
  async submit(req: JobRequest, model: ModelInfo, principal: string): Promise<JobRecord> {
    const now = this.now();
    const n = req.request.n ?? 1;
    const total = req.count * n;
    const chunk = req.chunk ?? model.limits.max_batch;
    const { latents: _, ...request } = req.request;
    const job: JobRecord = {
      id: newJobId(),
      kind: req.schedule ? "recurring" : "batch",
      status: "queued",
      principal,
      request,
      model: model.name,
      solver: req.request.solver ?? DEFAULT_SOLVER,
      shape: [...model.shape],
      png: isImageModel(model) && req.request.output !== "tensor",
      count: req.count,
      n,
      total,
      chunk,
      chunks: Math.ceil(total / chunk),
      base_seed: firstSeedOf(req.request.seed),
      created_at: now,
    };
    if (req.schedule) {
      const next = nextCronTime(parseCron(req.schedule), now);
      if (next === null) throw new Error("schedule never fires"); // excluded by validation
      Object.assign(job, { schedule: req.schedule, next_run_at: next, runs: 0, skipped: 0 });
    }
    const live: LiveJob = { total: job.total, bytes: expectedBytes(job) };
    // The key's quotas: checked against its usage, strictly (a concurrent submission of the same key
    // bumps the sequence this operation checks, and the loser checks again).
    for (let attempt = 0;; attempt++) {
      const usage = await readUsage(this.ctx, principal);
      checkQuota(this.config, usage, job);
      const op = this.kv.atomic().check({ key: K.job(job.id), versionstamp: null }, usage.seq)
        .set(K.quota(principal), (usage.seq.value ?? 0) + 1)
        .set(K.live(principal, job.id), live);
      if (job.kind === "recurring") op.set(K.job(job.id), job).set(K.due(job.next_run_at!, job.id), job.id);
      else this.runner.startOps(op, job, now);
      if ((await op.commit()).ok) break;
      if ((await this.kv.get(K.job(job.id))).versionstamp !== null) throw new Error("job id collision");
      if (attempt >= 50) {
        throw new ApiError(429, "too_many_concurrent", "too many submissions at once for this key; retry");
      }
    }
    this.submitted?.inc({ kind: job.kind });
    this.runner.kickLocally(job);
    return job;
  }

  /**
   * Cancels a job (a recurring one stops scheduling and cancels its running run) and deletes its result
   * files; finished chunks stay listed, without files. Idempotent.
   */
  async cancel(id: string): Promise<JobRecord | null> {
    for (;;) {
      const e = await this.kv.get<JobRecord>(K.job(id));
      const job = e.value;
      if (!job) return null;
      if (isFinal(job.status)) return job;
      const now = this.now();
      const op = this.kv.atomic().check(e);
      const canceled: JobRecord = { ...job, status: "canceled", finished_at: now };
      if (job.kind === "batch") canceled.files_deleted = true;
      const updated = endJobOps(this.ctx, op, canceled);
      op.set(K.job(id), updated).delete(K.active(id));
      if (job.kind === "recurring" && job.next_run_at !== undefined) op.delete(K.due(job.next_run_at, id));
      if (!(await op.commit()).ok) continue;
      stopChunks(this.ctx, id, "canceled");
      if (job.kind === "recurring" && job.last_run) await this.cancel(job.last_run);
      if (job.kind === "batch") {
        // Canceling deletes the files (functions/jobs/retention.ts). This process's chunks of the job
        // are let finish writing first; files that another process's chunk writes after this point
        // stay until the job expires, which deletes its folder again.
        const deadline = Date.now() + 2000;
        while (this.inflight.has(id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        await deleteFiles(this.ctx, updated).catch((err) => this.log(`jobs: deleting ${id}'s files: ${err}`));
      }
      return updated;
    }
  }

  /**
   * Deletes a job now, as its expiry would (functions/jobs/retention.ts): cancels it if it is still
   * going, deletes its files and state (a recurring job's runs too); its id then answers 410. Returns
   * false when there is no such job.
   */
  async delete(id: string): Promise<boolean> {
    const job = await this.job(id);
    if (!job) return false;
    if (!isFinal(job.status)) await this.cancel(id);
    if (job.kind === "recurring") {
      const runs = await Array.fromAsync(this.kv.list<string>({ prefix: K.runs(id) }));
      for (const { value: runId } of runs) {
        const run = await this.job(runId);
        if (run && !isFinal(run.status)) await this.cancel(runId);
        await expireJob(this.ctx, runId, "deleted");
      }
    }
    return await expireJob(this.ctx, id, "deleted");
  }

  // ---------------------------------------------------------------- quotas and retention

  /** The key's limits and usage (`GET /v1/jobs`). */
  async usage(principal: string): Promise<JobsUsage> {
    return usageReport(this.config, await readUsage(this.ctx, principal));
  }

  /** The tombstone of an expired or deleted job, if it has one. */
  gone(id: string): Promise<GoneRecord | null> {
    return goneRecord(this.ctx, id);
  }

  /** Expires the jobs due at `now` (the sweeper does this every sweep; `now` is injectable for tests). */
  expire(now = this.now()): Promise<number> {
    return expireDue(this.ctx, now);
  }

  // ---------------------------------------------------------------- queries (functions/jobs/results.ts)

  job(id: string): Promise<JobRecord | null> {
    return results.getJob(this.ctx, id);
  }

  counts(id: string): Promise<results.Counts> {
    return results.readCounts(this.ctx, id);
  }

  /** The job's public status (docs/contracts.md §2); a recurring job reports its latest run's progress. */
  info(job: JobRecord): Promise<JobInfo> {
    return results.info(this.ctx, job);
  }

  /** The job whose results a request about `job` lists: itself, or a recurring job's latest run. */
  resultsJob(job: JobRecord): Promise<JobRecord | null> {
    return results.resultsJob(this.ctx, job);
  }

  /** One result item per finished chunk. */
  resultItem(job: JobRecord, rec: ChunkRecord, base?: string): JobResult {
    return results.resultItem(job, rec, base);
  }

  /** A page of results from chunk `cursor` on (functions/jobs/results.ts `results`). */
  results(
    job: JobRecord,
    cursor: number,
    limit: number,
  ): Promise<{ items: JobResult[]; next: number | null }> {
    return results.results(this.ctx, job, cursor, limit);
  }

  /** Every finished chunk of a job, in order. */
  finishedChunks(job: JobRecord): AsyncGenerator<ChunkRecord> {
    return results.finishedChunks(this.ctx, job);
  }

  /** Ends a job whose chunks are all finished: writes its index, then the final status. Idempotent. */
  finalize(id: string): Promise<void> {
    return results.finalize(this.ctx, id);
  }

  /** `<job>/index.json` in the store: the job and one entry per finished chunk. */
  writeIndex(job: JobRecord): Promise<void> {
    return results.writeIndex(this.ctx, job);
  }

  // ---------------------------------------------------------------- driving (functions/jobs/runner.ts)

  /** Drives one job for a while: one queue message, or one turn of a polling slot. */
  pump(jobId: string): Promise<PumpOutcome> {
    return this.runner.pump(jobId);
  }

  /** Re-kicks stalled jobs, finalizes finished ones, starts due runs (every sweepMs, each cron tick). */
  sweep(opts: { kickAll?: boolean } = {}): Promise<void> {
    return this.runner.sweep(opts);
  }

  /** Starts a run of every recurring job due at `now`; returns the ids of the runs started. */
  tick(now = this.now()): Promise<string[]> {
    return this.runner.tick(now);
  }

  /** Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, ±20 % jitter. */
  backoff(attempts: number): number {
    return backoff(this.ctx, attempts);
  }
}

/** A job id: 16 random hex digits. */
function newJobId(): string {
  return randomHex(8);
}

/** Job ids as the API accepts them: a job, or run N of a recurring job (`<id>-N`). */
export const JOB_ID = /^[0-9a-f]{16}(?:-[1-9]\d{0,9})?$/;

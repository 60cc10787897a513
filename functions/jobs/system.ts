/**
 * Batch jobs: durable state in Deno KV, chunks driven through the worker pool, exactly-once results.
 * docs/jobs.md describes the design; functions/jobs/keys.ts the KV layout.
 *
 * - A job's chunks are claimed one at a time with an atomic check on the job, the claim cursor and the
 *   chunk; a claim is a lease (renewed while the chunk runs). A lease whose holder died expires and
 *   the chunk is claimed again.
 * - A finished chunk writes its files (idempotent, atomic renames), then commits in one atomic
 *   operation that checks the chunk is still held by this lease and the job is still live, marks the
 *   chunk done and adds its samples to the job's counters. A redelivered or stale attempt fails the
 *   check and changes nothing: every chunk is counted once.
 * - Drivers: with a KV queue, each message claims and runs one chunk and its commit enqueues the next
 *   message in the same atomic operation; without one, a polling loop over the active jobs does the
 *   same. Either way a sweeper re-kicks jobs that made no progress for a lease (lost messages, crashed
 *   processes) and starts the runs of due recurring jobs.
 */
import { nextCronTime, parseCron } from "../../core/api/cron.ts";
import { FINAL_STATUSES, type JobInfo, type JobRequest, type JobResult } from "../../core/api/jobs.ts";
import type { ModelInfo } from "../../core/api/models.ts";
import {
  DEFAULT_SOLVER,
  firstSeedOf,
  guidanceOf,
  HARD_LIMITS,
  isImageModel,
  seedsFrom,
} from "../../core/api/samples.ts";
import { float32FromBytes, shapeSize } from "../../core/api/tensor.ts";
import { BatchResponse, PROTOCOL_VERSION } from "../../core/api/worker.ts";
import { npyHeader } from "../../core/npy.ts";
import { ApiError } from "../errors.ts";
import { gridPng } from "../images.ts";
import { Counter, type Registry } from "../../core/metrics.ts";
import type { WorkerPool } from "../pool.ts";
import type { JobsConfig } from "./config.ts";
import {
  chunkFile,
  type ChunkRecord,
  type CounterName,
  COUNTERS,
  type ErrorInfo,
  isPumpMessage,
  type JobRecord,
  K,
  type OpenChunk,
  pumpMessage,
} from "./keys.ts";
import { resilientKv } from "./kv.ts";
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
  metrics?: Registry;
  /** Per-chunk worker deadline when the request has no deadline_ms (ms). */
  deadlineMs?: number;
}

export type Counts = Record<CounterName, number>;

type Claim =
  | { kind: "claimed"; job: JobRecord; jobVs: string; chunk: ChunkRecord; versionstamp: string }
  | { kind: "busy" | "gone" | "complete" }
  | { kind: "wait"; ms: number };

export type PumpOutcome = "ran" | "busy" | "gone" | "complete" | "wait" | "closed";

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
class Stop extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Stop";
  }
}

/** A counting semaphore for chunks in flight in this process. */
class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

export const isFinal = (s: string) => (FINAL_STATUSES as readonly string[]).includes(s);

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/** The price of a chunk's run per sample, as far as the worker reported it. */
type ChunkPrice = Pick<ChunkRecord, "calls" | "cost" | "cost_estimated">;

function priceOf(res: { calls?: number; cost?: number; cost_estimated?: boolean }): ChunkPrice {
  const out: ChunkPrice = {};
  if (res.calls !== undefined) out.calls = res.calls;
  if (res.cost !== undefined) out.cost = res.cost;
  if (res.cost_estimated !== undefined) out.cost_estimated = res.cost_estimated;
  return out;
}

function errorInfo(e: unknown): ErrorInfo {
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
function permanent(e: unknown): boolean {
  return e instanceof StorageError || e instanceof ApiError && [400, 404, 413, 422].includes(e.status);
}

export class JobSystem {
  readonly config: JobsConfig;
  readonly owner: string;
  private kvHandle?: Deno.Kv;
  private storeHandle?: ResultStore;
  private readonly now: () => number;
  private readonly log: (m: string) => void;
  private readonly random: () => number;
  private readonly slots: Slots;
  private readonly inflight = new Map<string, Set<AbortController>>();
  private readonly ownsKv: boolean;
  private started?: Promise<void>;
  private closed = false;
  private sweepTimer?: ReturnType<typeof setInterval>;
  private readonly loops: Promise<void>[] = [];
  private readonly wake = new Set<() => void>();
  /** "queue" or "poll" once started. */
  driver?: "queue" | "poll";
  private readonly chunkCounter?: Counter;
  private readonly submitted?: Counter;

  constructor(private readonly deps: JobsDeps) {
    this.config = deps.config;
    this.now = deps.now ?? Date.now;
    this.log = deps.log ?? ((m) => console.error(m));
    this.random = deps.random ?? Math.random;
    this.owner = deps.owner ?? crypto.randomUUID().slice(0, 8);
    this.slots = new Slots(this.config.concurrency);
    this.kvHandle = deps.kv && resilientKv(deps.kv);
    this.ownsKv = !deps.kv;
    this.storeHandle = deps.store;
    if (this.config.driver === "poll") this.driver = "poll";
    if (deps.metrics) {
      this.chunkCounter = deps.metrics.add(
        "genie_jobs_chunks_total",
        new Counter("Job chunks finished by this edge, by outcome (done, retry, failed, stale)"),
      );
      this.submitted = deps.metrics.add("genie_jobs_submitted_total", new Counter("Jobs submitted"));
    }
  }

  /** Why {@link start} failed, if it did. */
  failure?: string;

  /** Set once {@link start} has finished: the database is open and the driver runs. */
  ready = false;

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
    const kv = this.kvHandle;
    const wantQueue = this.config.driver !== "poll";
    const hasQueue = typeof kv.listenQueue === "function" && typeof kv.enqueue === "function";
    if (this.config.driver === "queue" && !hasQueue) throw new Error("this KV database has no queue");
    this.driver = wantQueue && hasQueue ? "queue" : "poll";
    if (this.driver === "queue") {
      // Not awaited on close: the listener ends when the database is closed (by whoever owns it).
      void (
        kv.listenQueue(async (msg: unknown) => {
          if (!isPumpMessage(msg) || this.closed) return;
          try {
            await this.pump(msg.job);
          } catch (e) {
            if (!this.closed) {
              this.log(`jobs: pump of ${msg.job} failed: ${e instanceof Error ? e.stack : e}`);
            }
          }
        }).catch((e) => {
          if (!this.closed) this.log(`jobs: queue listener stopped: ${e}`);
        })
      );
    } else {
      for (let i = 0; i < this.config.concurrency; i++) this.loops.push(this.pollLoop(i));
    }
    // Re-kick every active job: queue messages in flight when a process died are not redelivered.
    await this.sweep({ kickAll: true }).catch((e) => this.log(`jobs: first sweep failed: ${e}`));
    this.sweepTimer = setInterval(() => {
      if (!this.closed) this.sweep().catch((e) => this.log(`jobs: sweep failed: ${e}`));
    }, this.config.sweepMs);
  }

  /** Stops the driver; running chunks are aborted and their leases released for another process. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    clearInterval(this.sweepTimer);
    for (const w of this.wake) w();
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
    await Promise.allSettled(this.loops);
  }

  // ---------------------------------------------------------------- submission and queries

  /** Records a validated job for `model`; batch jobs start at once, recurring ones at their first tick. */
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
    const op = this.kv.atomic().check({ key: K.job(job.id), versionstamp: null });
    if (req.schedule) {
      const next = nextCronTime(parseCron(req.schedule), now);
      if (next === null) throw new Error("schedule never fires"); // excluded by validation
      Object.assign(job, { schedule: req.schedule, next_run_at: next, runs: 0, skipped: 0 });
      op.set(K.job(job.id), job).set(K.due(next, job.id), job.id);
    } else {
      this.startOps(op, job, now);
    }
    const r = await op.commit();
    if (!r.ok) throw new Error("job id collision");
    this.submitted?.inc({ kind: job.kind });
    this.kickLocally(job);
    return job;
  }

  /**
   * Starts a new batch job's chains in this process at once, without waiting for the queue's first
   * delivery; the queued messages then find the job busy and end. Polling slots are woken instead.
   */
  private kickLocally(job: JobRecord): void {
    if (job.kind !== "batch" || this.closed) return;
    if (this.driver === "queue") {
      for (let i = 0; i < this.config.parallel; i++) {
        this.pump(job.id).catch((e) => {
          if (!this.closed) this.log(`jobs: pump of ${job.id} failed: ${e}`);
        });
      }
    } else this.wakeUp();
  }

  /** Adds what makes a batch job runnable to `op`: the job, its cursor and counters, the kicks. */
  private startOps(op: Deno.AtomicOperation, job: JobRecord, now: number): void {
    op.set(K.job(job.id), job).set(K.cursor(job.id), 0).set(K.active(job.id), now).set(K.beat(job.id), now);
    if (this.driver !== "poll") {
      for (let i = 0; i < this.config.parallel; i++) op.enqueue(pumpMessage(job.id));
    }
  }

  async job(id: string): Promise<JobRecord | null> {
    return (await this.kv.get<JobRecord>(K.job(id))).value;
  }

  async counts(id: string): Promise<Counts> {
    const entries = await this.kv.getMany<Deno.KvU64[]>(COUNTERS.map((c) => K.count(id, c)));
    const out = {} as Counts;
    COUNTERS.forEach((c, i) => (out[c] = Number(entries[i].value?.value ?? 0n)));
    return out;
  }

  /** The job's public status (docs/contracts.md §2); a recurring job reports its latest run's progress. */
  async info(job: JobRecord): Promise<JobInfo> {
    let current: JobRecord | null = job;
    let status = job.status;
    if (job.kind === "recurring") {
      current = job.last_run ? await this.job(job.last_run) : null;
      if (job.status !== "canceled") status = current && !isFinal(current.status) ? "running" : "queued";
    }
    const counts = current ? await this.counts(current.id) : undefined;
    let running = 0;
    if (current && !isFinal(current.status)) {
      const t = this.now();
      for await (const e of this.kv.list<OpenChunk>({ prefix: K.opens(current.id) })) {
        if (e.value.kind === "lease" && e.value.at > t) running++;
      }
    }
    const base = `/v1/jobs/${job.id}`;
    const info: JobInfo = {
      id: job.id,
      status,
      done: counts?.samples ?? 0,
      total: job.total,
      failed: counts?.failed_samples ?? 0,
      chunks: {
        total: job.chunks,
        done: counts?.chunks ?? 0,
        failed: counts?.failed_chunks ?? 0,
        running,
      },
      model: job.model,
      solver: job.solver,
      count: job.count,
      chunk: job.chunk,
      base_seed: job.base_seed,
      shape: job.shape,
      created_at: iso(job.created_at)!,
      started_at: iso(job.started_at),
      finished_at: iso(job.finished_at),
      error: job.error,
      results: `${base}/results`,
      archive: `${base}/archive`,
    };
    if (job.kind === "recurring") {
      Object.assign(info, {
        schedule: job.schedule,
        next_run_at: job.status === "canceled" ? undefined : iso(job.next_run_at),
        runs: job.runs ?? 0,
        skipped: job.skipped ?? 0,
        last_run: job.last_run,
        started_at: iso(current?.started_at),
        finished_at: job.status === "canceled" ? iso(job.finished_at) : iso(current?.finished_at),
        error: current?.error,
      });
    }
    if (job.parent) Object.assign(info, { parent: job.parent, run: job.run });
    for (const k of Object.keys(info) as (keyof JobInfo)[]) if (info[k] === undefined) delete info[k];
    return info;
  }

  /** The job whose results a request about `job` lists: itself, or a recurring job's latest run. */
  async resultsJob(job: JobRecord): Promise<JobRecord | null> {
    if (job.kind !== "recurring") return job;
    return job.last_run ? await this.job(job.last_run) : null;
  }

  /** One result item per finished chunk. */
  resultItem(job: JobRecord, rec: ChunkRecord, base = `/v1/jobs/${job.id}/files/`): JobResult {
    const start = rec.index * job.chunk;
    const count = Math.min(job.chunk, job.total - start);
    const item: JobResult = {
      chunk: rec.index,
      status: rec.state === "done" ? "done" : "failed",
      start,
      count,
      seeds: seedsFrom((job.base_seed + start) >>> 0, count),
      shape: [count, ...job.shape],
      attempts: rec.attempts,
    };
    if (rec.state === "done") {
      item.nfe = rec.nfe;
      if (rec.calls !== undefined) item.calls = rec.calls;
      if (rec.cost !== undefined) item.cost = rec.cost;
      if (rec.cost_estimated !== undefined) item.cost_estimated = rec.cost_estimated;
      item.steps = rec.steps;
      if (rec.files) {
        const name = (key: string) => base + key.slice(job.id.length + 1);
        item.files = { npy: name(rec.files.npy) };
        if (rec.files.png) item.files.png = name(rec.files.png);
      }
    } else if (rec.error) item.error = rec.error;
    return item;
  }

  /**
   * A page of results from chunk `cursor` on. While the job runs, a page stops at the first chunk
   * that is not finished (its index is the next cursor), so a client that follows cursors sees every
   * result exactly once. Once the job is final, unfinished chunks (canceled) are skipped.
   */
  async results(
    job: JobRecord,
    cursor: number,
    limit: number,
  ): Promise<{ items: JobResult[]; next: number | null }> {
    const items: JobResult[] = [];
    const final = isFinal(job.status);
    let expected = cursor;
    const iter = this.kv.list<ChunkRecord>(
      { prefix: K.chunks(job.id), start: K.chunk(job.id, cursor) },
      { batchSize: Math.min(limit + 1, 500) },
    );
    for await (const e of iter) {
      const rec = e.value;
      const finished = rec.state === "done" || rec.state === "failed";
      if (!final && (rec.index !== expected || !finished)) break;
      if (items.length === limit) return { items, next: rec.index };
      expected = rec.index + 1;
      if (finished) items.push(this.resultItem(job, rec));
    }
    if (final || expected >= job.chunks) return { items, next: null };
    return { items, next: expected };
  }

  /** Every finished chunk of a job, in order. */
  async *finishedChunks(job: JobRecord): AsyncGenerator<ChunkRecord> {
    for await (const e of this.kv.list<ChunkRecord>({ prefix: K.chunks(job.id) })) {
      if (e.value.state === "done" || e.value.state === "failed") yield e.value;
    }
  }

  /** Cancels a job (a recurring one stops scheduling and cancels its running run). Idempotent. */
  async cancel(id: string): Promise<JobRecord | null> {
    for (;;) {
      const e = await this.kv.get<JobRecord>(K.job(id));
      const job = e.value;
      if (!job) return null;
      if (isFinal(job.status)) return job;
      const now = this.now();
      const updated: JobRecord = { ...job, status: "canceled", finished_at: now };
      const op = this.kv.atomic().check(e).set(K.job(id), updated).delete(K.active(id));
      if (job.kind === "recurring" && job.next_run_at !== undefined) op.delete(K.due(job.next_run_at, id));
      if (!(await op.commit()).ok) continue;
      for (const c of this.inflight.get(id) ?? []) c.abort(new Stop("canceled"));
      if (job.kind === "recurring" && job.last_run) await this.cancel(job.last_run);
      if (job.kind === "batch") await this.writeIndex(updated).catch(() => {});
      return updated;
    }
  }

  // ---------------------------------------------------------------- running chunks

  /**
   * Drives one job for a while (one queue message, or one turn of a polling slot): claims and runs its
   * chunks back to back — no queue hop between chunks — until none is claimable or `chainMs` has
   * passed. The chain is pipelined: as soon as a chunk's worker call returns, the next chunk is
   * claimed and sent while the finished one writes its files and commits, so the worker is not left
   * idle during the bookkeeping. With the queue driver the chain then goes on in a new message: at
   * once when the time ran out, after the wait when the next claimable chunk is a retry or an expiring
   * lease.
   */
  async pump(jobId: string): Promise<PumpOutcome> {
    if (this.closed) return "closed";
    const release = await this.slots.acquire();
    try {
      const t0 = performance.now();
      let ran = false;
      let last = { kind: "gone" } as Claim | "budget" | "closed";
      const tasks: Promise<void>[] = [];
      const step = async (exclude?: number, previous?: Promise<void>): Promise<void> => {
        if (this.closed) return void (last = "closed");
        if (ran && performance.now() - t0 >= this.config.chainMs) {
          await previous;
          return void (last = "budget");
        }
        let c = await this.claim(jobId, exclude);
        if (c.kind !== "claimed" && previous) {
          // Nothing else to start while our previous chunk commits: decide once it has.
          await previous;
          c = await this.claim(jobId);
        }
        // A running chain that finds the job busy is usually looking at another chain's short overlap
        // (its next chunk claimed while the last one commits): look again before giving up.
        for (let i = 1; ran && c.kind === "busy" && i <= 5 && !this.closed; i++) {
          await new Promise((r) => setTimeout(r, 10 * i));
          c = await this.claim(jobId);
        }
        if (c.kind !== "claimed") return void (last = c);
        ran = true;
        const self: { done?: Promise<void> } = {};
        let handedOn = false;
        self.done = this.run(c, () => {
          handedOn = true;
          tasks.push(step(c.chunk.index, self.done));
        });
        await self.done;
        if (!handedOn) tasks.push(step());
      };
      tasks.push(step());
      for (let i = 0; i < tasks.length; i++) await tasks[i];
      if (last === "closed") return ran ? "ran" : "closed";
      if (last === "budget") {
        if (this.driver === "queue") await this.kv.enqueue(pumpMessage(jobId));
        return "ran";
      }
      if (last.kind === "complete") await this.finalize(jobId);
      if (last.kind === "wait" && this.driver === "queue") {
        await this.kv.enqueue(pumpMessage(jobId), { delay: last.ms });
      }
      return ran ? "ran" : last.kind as PumpOutcome;
    } finally {
      release();
    }
  }

  /**
   * Leases the next chunk to run: an expired lease or a due retry first, then a fresh chunk. `exclude`
   * is a chunk of the caller's that is about to commit: it does not count against `parallel`.
   */
  private async claim(id: string, exclude?: number): Promise<Claim> {
    const kv = this.kv;
    for (let attempt = 0; attempt < 32; attempt++) {
      const [[jobE, cursorE], open] = await Promise.all([
        kv.getMany<[JobRecord, number]>([K.job(id), K.cursor(id)]),
        Array.fromAsync(kv.list<OpenChunk>({ prefix: K.opens(id) })),
      ]);
      const job = jobE.value;
      if (!job || job.kind !== "batch" || isFinal(job.status)) return { kind: "gone" };
      const now = this.now();
      const live = open.filter((e) =>
        e.value.kind === "lease" && e.value.at > now && e.key[3] !== exclude
      ).length;
      if (live >= this.config.parallel) return { kind: "busy" };
      const ready = open.filter((e) => e.value.at <= now).sort((a, b) => a.value.at - b.value.at);
      const cursor = cursorE.value ?? 0;
      let index: number;
      let openE: Deno.KvEntry<OpenChunk> | undefined;
      let chunkE: Deno.KvEntryMaybe<ChunkRecord> | { key: Deno.KvKey; value: null; versionstamp: null };
      if (ready.length > 0) {
        openE = ready[0];
        index = openE.key[3] as number;
        chunkE = await kv.get<ChunkRecord>(K.chunk(id, index));
      } else if (cursor < job.chunks) {
        index = cursor; // never claimed: no chunk record yet (checked below)
        chunkE = { key: K.chunk(id, index), value: null, versionstamp: null };
      } else if (open.length === 0) {
        return { kind: "complete" };
      } else {
        return { kind: "wait", ms: Math.max(1, Math.min(...open.map((e) => e.value.at)) - now) };
      }
      const prev = chunkE.value;
      if (prev && (prev.state === "done" || prev.state === "failed")) {
        // A leftover open entry (cannot normally happen): drop it.
        if (openE) await kv.atomic().check(openE).delete(openE.key).commit();
        continue;
      }
      const attempts = (prev?.attempts ?? 0) + 1;
      if (prev && attempts > this.config.maxAttempts) {
        // Every attempt so far died holding the lease: give up on this chunk.
        const error = prev.error ??
          { code: "abandoned", message: `lease expired ${prev.attempts} times (crashed holders)` };
        const failed: ChunkRecord = { ...prev, state: "failed", error, finished_at: now };
        delete failed.owner;
        delete failed.lease_until;
        delete failed.retry_at;
        const op = kv.atomic().check(jobE, chunkE).set(K.chunk(id, index), failed).delete(K.open(id, index))
          .sum(K.count(id, "failed_chunks"), 1n)
          .sum(K.count(id, "failed_samples"), BigInt(this.chunkSize(job, index)));
        if (openE) op.check(openE);
        if ((await op.commit()).ok) this.chunkCounter?.inc({ outcome: "failed" });
        continue;
      }
      const until = now + this.config.leaseMs;
      const chunk: ChunkRecord = { index, state: "leased", attempts, owner: this.owner, lease_until: until };
      if (prev?.error) chunk.error = prev.error;
      const op = kv.atomic().check(jobE, chunkE)
        .set(K.chunk(id, index), chunk)
        .set(K.open(id, index), { kind: "lease", at: until, owner: this.owner } satisfies OpenChunk)
        .set(K.beat(id), now);
      if (openE) op.check(openE);
      else op.check(cursorE).set(K.cursor(id), index + 1);
      let current = job;
      if (job.status === "queued") {
        current = { ...job, status: "running", started_at: now };
        op.set(K.job(id), current);
      }
      const r = await op.commit();
      if (r.ok) {
        const jobVs = current === job ? jobE.versionstamp! : r.versionstamp;
        return { kind: "claimed", job: current, jobVs, chunk, versionstamp: r.versionstamp };
      }
    }
    return { kind: "wait", ms: 20 };
  }

  private chunkSize(job: JobRecord, index: number): number {
    return Math.min(job.chunk, job.total - index * job.chunk);
  }

  /** Runs a claimed chunk: worker call under a renewed lease, files, then the exactly-once commit. */
  private async run(claim: Extract<Claim, { kind: "claimed" }>, onCalled?: () => void): Promise<void> {
    const { job, chunk, versionstamp } = claim;
    const ctl = new AbortController();
    let set = this.inflight.get(job.id);
    if (!set) this.inflight.set(job.id, set = new Set());
    set.add(ctl);
    const lease = { vs: versionstamp, chunk, renewing: Promise.resolve() };
    const timer = setInterval(() => {
      lease.renewing = lease.renewing.then(() => this.renew(job.id, lease, ctl));
    }, Math.max(50, Math.floor(this.config.leaseMs / 3)));
    const stopRenewing = async () => {
      clearInterval(timer);
      await lease.renewing;
    };
    try {
      let result;
      try {
        result = await this.callWorker(job, chunk, ctl.signal);
        ctl.signal.throwIfAborted();
        onCalled?.();
        const files = await this.writeFiles(job, chunk.index, result.data);
        await stopRenewing();
        ctl.signal.throwIfAborted();
        await this.commitDone(job, claim.jobVs, lease.vs, chunk, { ...result, files });
      } catch (e) {
        await stopRenewing();
        const reason = ctl.signal.aborted ? ctl.signal.reason : e;
        if (reason instanceof Stop) {
          if (reason.message === "shutting down") await this.releaseLease(job.id, lease.vs, chunk);
          this.chunkCounter?.inc({ outcome: "stale" });
          return;
        }
        await this.commitFailure(job, lease.vs, chunk, reason);
      }
    } finally {
      set.delete(ctl);
      if (set.size === 0) this.inflight.delete(job.id);
    }
  }

  /** Extends the lease; aborts the chunk when it was taken over or the job ended. */
  private async renew(
    id: string,
    lease: { vs: string; chunk: ChunkRecord },
    ctl: AbortController,
  ): Promise<void> {
    if (ctl.signal.aborted) return;
    try {
      const [jobE, chunkE] = await this.kv.getMany<[JobRecord, ChunkRecord]>([
        K.job(id),
        K.chunk(id, lease.chunk.index),
      ]);
      if (chunkE.versionstamp !== lease.vs) return ctl.abort(new Stop("lease lost"));
      if (!jobE.value || isFinal(jobE.value.status)) return ctl.abort(new Stop("job ended"));
      const now = this.now();
      const until = now + this.config.leaseMs;
      const chunk = { ...lease.chunk, lease_until: until };
      const r = await this.kv.atomic().check(chunkE)
        .set(K.chunk(id, chunk.index), chunk)
        .set(K.open(id, chunk.index), { kind: "lease", at: until, owner: this.owner } satisfies OpenChunk)
        .set(K.beat(id), now)
        .commit();
      if (r.ok) {
        lease.vs = r.versionstamp;
        lease.chunk = chunk;
      } else ctl.abort(new Stop("lease lost"));
    } catch (e) {
      if (!this.closed) this.log(`jobs: lease renewal of ${id}#${lease.chunk.index} failed: ${e}`);
    }
  }

  /** Hands a chunk back at once (shutdown): the next claim takes it without waiting for expiry. */
  private async releaseLease(id: string, vs: string, chunk: ChunkRecord): Promise<void> {
    try {
      const now = this.now();
      const back: ChunkRecord = { ...chunk, state: "retry", attempts: chunk.attempts - 1, retry_at: now };
      await this.kv.atomic().check({ key: K.chunk(id, chunk.index), versionstamp: vs })
        .set(K.chunk(id, chunk.index), back)
        .set(K.open(id, chunk.index), { kind: "retry", at: now } satisfies OpenChunk)
        .commit();
    } catch { /* the lease expires anyway */ }
  }

  private async callWorker(job: JobRecord, chunk: ChunkRecord, signal: AbortSignal) {
    const start = chunk.index * job.chunk;
    const count = this.chunkSize(job, chunk.index);
    const r = job.request;
    // capped like the edge's deadlines: the most a worker accepts, and what a timer can hold
    const deadlineMs = Math.min(r.deadline_ms ?? this.deps.deadlineMs ?? 120_000, HARD_LIMITS.deadline_ms);
    const message = {
      v: PROTOCOL_VERSION,
      id: `${job.id}.${chunk.index}.${chunk.attempts}`,
      model: job.model,
      solver: job.solver,
      steps: r.steps,
      nfe: r.steps === undefined ? r.nfe ?? 10 : undefined,
      grid: r.grid,
      rho: r.rho,
      order: r.order,
      variant: r.variant,
      afs: r.afs,
      denoise: r.denoise,
      class: r.class,
      guidance: guidanceOf(r),
      genie_derivative: r.genie_derivative,
      seeds: seedsFrom((job.base_seed + start) >>> 0, count),
      deadline_ms: deadlineMs,
    };
    const timeout = AbortSignal.timeout(deadlineMs + 5000);
    const { body, worker } = await this.deps.pool.call(
      "/v1/batch",
      job.model,
      message,
      AbortSignal.any([signal, timeout]),
      count,
    );
    const res = BatchResponse.safeParse(body);
    const bad = (why: string) =>
      new ApiError(502, "worker_error", `worker ${worker} sent a bad response: ${why}`);
    if (!res.success) throw bad(res.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
    const want = [count, ...job.shape];
    if (res.data.shape.length !== want.length || res.data.shape.some((d, i) => d !== want[i])) {
      throw bad(`shape [${res.data.shape.join(", ")}], expected [${want.join(", ")}]`);
    }
    if (res.data.data.byteLength !== count * shapeSize(job.shape) * 4) {
      throw bad(`${res.data.data.byteLength} data bytes`);
    }
    return { data: res.data.data, nfe: res.data.nfe, steps: res.data.steps, price: priceOf(res.data) };
  }

  /** The chunk's .npy (the worker's float32 bytes as they came) and PNG grid; names fixed by (job, chunk). */
  private async writeFiles(
    job: JobRecord,
    index: number,
    data: Uint8Array,
  ): Promise<{ npy: string; png?: string }> {
    const count = this.chunkSize(job, index);
    const header = npyHeader([count, ...job.shape]);
    const npy = new Uint8Array(header.byteLength + data.byteLength);
    npy.set(header, 0);
    npy.set(data, header.byteLength);
    const files: { npy: string; png?: string } = { npy: chunkFile(job.id, index, "npy") };
    const put = (key: string, bytes: Uint8Array) =>
      this.store.put(key, bytes).catch((e) => Promise.reject(new StorageError(key, e)));
    const writes = [put(files.npy, npy)];
    if (job.png) {
      files.png = chunkFile(job.id, index, "png");
      const png = gridPng(float32FromBytes(data), [count, ...job.shape], { scale: job.request.scale ?? 1 });
      writes.push(put(files.png, png));
    }
    await Promise.all(writes);
    return files;
  }

  /**
   * Marks the chunk done and counts its samples, once: the atomic operation checks that this lease
   * still holds (the chunk's versionstamp) and that the job did not change (canceled). The first try
   * uses the versionstamps known from the claim; a conflict re-reads both and tries again.
   */
  private async commitDone(
    job: JobRecord,
    jobVs: string,
    vs: string,
    chunk: ChunkRecord,
    out: { nfe: number; steps: number; price: ChunkPrice; files: { npy: string; png?: string } },
  ): Promise<void> {
    const id = job.id;
    let checks: { key: Deno.KvKey; versionstamp: string }[] = [
      { key: K.job(id), versionstamp: jobVs },
      { key: K.chunk(id, chunk.index), versionstamp: vs },
    ];
    for (;;) {
      const now = this.now();
      const done: ChunkRecord = {
        index: chunk.index,
        state: "done",
        attempts: chunk.attempts,
        nfe: out.nfe,
        ...out.price,
        steps: out.steps,
        files: out.files,
        finished_at: now,
      };
      const r = await this.kv.atomic().check(...checks)
        .set(K.chunk(id, chunk.index), done)
        .delete(K.open(id, chunk.index))
        .sum(K.count(id, "samples"), BigInt(this.chunkSize(job, chunk.index)))
        .sum(K.count(id, "chunks"), 1n)
        .set(K.beat(id), now)
        .commit();
      if (r.ok) break;
      const [jobE, chunkE] = await this.kv.getMany<[JobRecord, ChunkRecord]>([
        K.job(id),
        K.chunk(id, chunk.index),
      ]);
      if (chunkE.versionstamp !== vs || !jobE.value || isFinal(jobE.value.status)) {
        this.chunkCounter?.inc({ outcome: "stale" });
        return; // taken over, or the job ended: the other holder (or nobody) counts it
      }
      checks = [jobE as { key: Deno.KvKey; versionstamp: string }, { key: chunkE.key, versionstamp: vs }];
    }
    this.chunkCounter?.inc({ outcome: "done" });
  }

  /** A failed attempt: retry with exponential backoff, or fail the chunk (and, if permanent, the job). */
  private async commitFailure(job: JobRecord, vs: string, chunk: ChunkRecord, e: unknown): Promise<void> {
    const id = job.id;
    const error = errorInfo(e);
    const fatal = permanent(e);
    const giveUp = fatal || chunk.attempts >= this.config.maxAttempts;
    this.log(
      `jobs: ${id} chunk ${chunk.index} attempt ${chunk.attempts} failed: ${error.code}: ${error.message}` +
        (giveUp ? " (giving up)" : ""),
    );
    for (;;) {
      const [jobE, chunkE] = await this.kv.getMany<[JobRecord, ChunkRecord]>([
        K.job(id),
        K.chunk(id, chunk.index),
      ]);
      if (chunkE.versionstamp !== vs || !jobE.value || isFinal(jobE.value.status)) return;
      const now = this.now();
      const op = this.kv.atomic().check(jobE, chunkE).set(K.beat(id), now);
      if (giveUp) {
        const failed: ChunkRecord = {
          index: chunk.index,
          state: "failed",
          attempts: chunk.attempts,
          error,
          finished_at: now,
        };
        op.set(K.chunk(id, chunk.index), failed).delete(K.open(id, chunk.index))
          .sum(K.count(id, "failed_chunks"), 1n)
          .sum(K.count(id, "failed_samples"), BigInt(this.chunkSize(job, chunk.index)));
        if (fatal) {
          // The request itself is bad: stop the whole job now.
          op.set(K.job(id), {
            ...jobE.value,
            status: "failed",
            finished_at: now,
            error: { code: error.code, message: `chunk ${chunk.index}: ${error.message}` },
          }).delete(K.active(id));
        }
      } else {
        const delay = this.backoff(chunk.attempts);
        const retry: ChunkRecord = {
          index: chunk.index,
          state: "retry",
          attempts: chunk.attempts,
          error,
          retry_at: now + delay,
        };
        op.set(K.chunk(id, chunk.index), retry)
          .set(K.open(id, chunk.index), { kind: "retry", at: now + delay } satisfies OpenChunk);
      }
      if (!(await op.commit()).ok) continue;
      this.chunkCounter?.inc({ outcome: giveUp ? "failed" : "retry" });
      if (fatal) {
        for (const c of this.inflight.get(id) ?? []) c.abort(new Stop("job ended"));
        await this.writeIndex({ ...jobE.value, status: "failed" }).catch(() => {});
      }
      return;
    }
  }

  /** Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, ±20 % jitter. */
  backoff(attempts: number): number {
    const raw = Math.min(this.config.maxBackoffMs, this.config.backoffMs * 2 ** Math.max(0, attempts - 1));
    return Math.round(raw * (0.8 + 0.4 * this.random()));
  }

  /** Ends a job whose chunks are all finished: writes its index, then the final status. Idempotent. */
  async finalize(id: string): Promise<void> {
    for (;;) {
      const e = await this.kv.get<JobRecord>(K.job(id));
      const job = e.value;
      if (!job || job.kind !== "batch" || isFinal(job.status)) return;
      const counts = await this.counts(id);
      if (counts.chunks + counts.failed_chunks < job.chunks) return;
      const now = this.now();
      const failedChunk = counts.failed_chunks > 0 ? await this.firstFailure(job) : undefined;
      const final: JobRecord = {
        ...job,
        status: counts.failed_chunks > 0 ? "failed" : "succeeded",
        started_at: job.started_at ?? now,
        finished_at: now,
      };
      if (failedChunk) {
        final.error = {
          code: failedChunk.error?.code ?? "failed",
          message: `${counts.failed_chunks} of ${job.chunks} chunks failed; chunk ${failedChunk.index}: ${
            failedChunk.error?.message ?? "failed"
          }`,
        };
      }
      try {
        await this.writeIndex(final);
      } catch (e) {
        // The chunks are accounted for, but the index cannot be written: the job fails, saying why.
        const error = errorInfo(e);
        final.status = "failed";
        final.error = failedChunk
          ? { ...error, message: `${final.error!.message}; ${error.message}` }
          : { ...error, message: error.message };
        this.log(`jobs: ${id}: ${error.code}: ${error.message}`);
      }
      const r = await this.kv.atomic().check(e).set(K.job(id), final).delete(K.active(id)).commit();
      if (r.ok) return;
    }
  }

  private async firstFailure(job: JobRecord): Promise<ChunkRecord | undefined> {
    for await (const rec of this.finishedChunks(job)) if (rec.state === "failed") return rec;
    return undefined;
  }

  /** `<job>/index.json` in the store: the job and one entry per finished chunk. */
  async writeIndex(job: JobRecord): Promise<void> {
    const chunks = [];
    for await (const rec of this.finishedChunks(job)) chunks.push(this.resultItem(job, rec, ""));
    const index = {
      id: job.id,
      status: job.status,
      model: job.model,
      solver: job.solver,
      request: job.request,
      count: job.count,
      total: job.total,
      chunk: job.chunk,
      base_seed: job.base_seed,
      shape: job.shape,
      parent: job.parent,
      run: job.run,
      chunks,
    };
    const key = `${job.id}/index.json`;
    try {
      await this.store.put(key, new TextEncoder().encode(JSON.stringify(index, null, 1)));
    } catch (e) {
      throw new StorageError(key, e);
    }
  }

  // ---------------------------------------------------------------- drivers, sweeper, schedules

  private wakeUp(): void {
    this.activeCache.at = -Infinity;
    for (const w of this.wake) w();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.wake.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake.add(done);
    });
  }

  private activeCache: { at: number; ids: string[]; loading?: Promise<string[]> } = {
    at: -Infinity,
    ids: [],
  };

  /** Ids of jobs with work left, re-read at most once per poll interval. */
  private activeIds(): Promise<string[]> {
    const c = this.activeCache;
    if (performance.now() - c.at < this.config.pollMs) return Promise.resolve(c.ids);
    return c.loading ??= (async () => {
      try {
        const ids: string[] = [];
        for await (const e of this.kv.list({ prefix: K.actives() })) ids.push(e.key[2] as string);
        c.ids = ids;
        c.at = performance.now();
        return ids;
      } finally {
        c.loading = undefined;
      }
    })();
  }

  /** The driver without a queue: each slot pumps active jobs round-robin, idling for pollMs when none ran. */
  private async pollLoop(slot: number): Promise<void> {
    let turn = slot;
    while (!this.closed) {
      let ran = false;
      try {
        const ids = await this.activeIds();
        for (let k = 0; k < ids.length && !ran && !this.closed; k++) {
          const outcome = await this.pump(ids[turn++ % ids.length]);
          if (outcome === "ran") ran = true;
          else if (outcome === "complete" || outcome === "gone") this.activeCache.at = -Infinity;
        }
      } catch (e) {
        if (!this.closed) this.log(`jobs: poll loop: ${e instanceof Error ? e.message : e}`);
      }
      if (!ran && !this.closed) await this.sleep(this.config.pollMs);
    }
  }

  /**
   * Re-kicks active jobs that made no progress for a lease (or all of them at start-up), finalizes
   * finished ones and starts the runs of due recurring jobs. Runs every sweepMs and on each cron tick.
   */
  async sweep(opts: { kickAll?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    const now = this.now();
    const stallMs = this.config.leaseMs + this.config.sweepMs;
    for await (const e of this.kv.list<number>({ prefix: K.actives() })) {
      const id = e.key[2] as string;
      const beat = await this.kv.get<number>(K.beat(id));
      if (!opts.kickAll && now - (beat.value ?? 0) <= stallMs) continue;
      const op = this.kv.atomic().check(beat).set(K.beat(id), now);
      if (this.driver === "queue") {
        for (let i = 0; i < this.config.parallel; i++) op.enqueue(pumpMessage(id));
      }
      await op.commit();
      if (!opts.kickAll) await this.finalize(id);
    }
    await this.tick(now);
  }

  /**
   * Starts a run of every recurring job due at `now` (the cron tick; `now` is injectable for tests).
   * Missed ticks coalesce into one run; a tick that finds the previous run still going is skipped.
   * Returns the ids of the runs started.
   */
  async tick(now = this.now()): Promise<string[]> {
    const started: string[] = [];
    const due = await Array.fromAsync(
      this.kv.list<string>({ prefix: K.dues(), end: K.due(now + 1, "") }),
    );
    for (const dueE of due) {
      const id = dueE.value;
      for (let attempt = 0; attempt < 8; attempt++) {
        const parentE = await this.kv.get<JobRecord>(K.job(id));
        const parent = parentE.value;
        const fresh = await this.kv.get<string>(dueE.key);
        if (fresh.versionstamp === null) break; // another process handled this tick
        if (!parent || parent.kind !== "recurring" || parent.status === "canceled") {
          await this.kv.atomic().check(fresh).delete(dueE.key).commit();
          break;
        }
        const next = nextCronTime(parseCron(parent.schedule!), now);
        const op = this.kv.atomic().check(parentE, fresh).delete(dueE.key);
        if (next !== null) op.set(K.due(next, id), id);
        const last = parent.last_run ? await this.job(parent.last_run) : null;
        let updated: JobRecord;
        let runId: string | undefined;
        if (last && !isFinal(last.status)) {
          updated = { ...parent, next_run_at: next ?? undefined, skipped: (parent.skipped ?? 0) + 1 };
        } else {
          const r = parent.runs ?? 0;
          runId = `${id}-${r + 1}`;
          const run: JobRecord = {
            ...parent,
            id: runId,
            kind: "batch",
            status: "queued",
            base_seed: (parent.base_seed + r * parent.total) >>> 0,
            created_at: now,
            parent: id,
            run: r + 1,
          };
          for (
            const k of ["schedule", "next_run_at", "runs", "skipped", "last_run", "started_at", "finished_at"]
          ) {
            delete (run as unknown as Record<string, unknown>)[k];
          }
          op.check({ key: K.job(runId), versionstamp: null }).set(K.run(id, r + 1), runId);
          this.startOps(op, run, now);
          updated = { ...parent, runs: r + 1, last_run: runId, next_run_at: next ?? undefined };
        }
        op.set(K.job(id), updated);
        if ((await op.commit()).ok) {
          if (runId) started.push(runId);
          break;
        }
      }
    }
    if (started.length > 0) this.wakeUp();
    return started;
  }
}

/** A job id: 16 random hex digits. */
export function newJobId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/** Job ids as the API accepts them: a job, or run N of a recurring job (`<id>-N`). */
export const JOB_ID = /^[0-9a-f]{16}(?:-[1-9]\d{0,9})?$/;

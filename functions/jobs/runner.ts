/**
 * The runner: what picks work and drives it (docs/jobs.md, "Driving chunks: KV queue, or polling").
 *
 * - With a KV queue, each message runs one chain of a job ({@link Runner.pump}); a chain that used up
 *   its time, or that waits for a retry or an expiring lease, enqueues its successor. Without one,
 *   `concurrency` polling loops pick active jobs round-robin.
 * - Either way a sweeper ({@link Runner.sweep}) re-kicks jobs that made no progress for a lease (lost
 *   messages, crashed processes), finalizes finished ones, starts the runs of due recurring jobs
 *   ({@link Runner.tick}) and expires old jobs (functions/jobs/retention.ts).
 *
 * One chunk's run is functions/jobs/drivers.ts; its lease and commit functions/jobs/leases.ts.
 */
import { nextCronTime, parseCron } from "../../core/api/cron.ts";
import { isFinal, type JobsContext } from "./context.ts";
import { runChunk } from "./drivers.ts";
import { isPumpMessage, type JobRecord, K, pumpMessage } from "./keys.ts";
import { type Claim, claim } from "./leases.ts";
import { runRefusal } from "./quotas.ts";
import { finalize, getJob } from "./results.ts";
import { endJobOps, expireDue } from "./retention.ts";

export type PumpOutcome = "ran" | "busy" | "gone" | "complete" | "wait" | "closed";

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

export class Runner {
  /** "queue" or "poll" once started. */
  driver?: "queue" | "poll";
  private readonly slots: Slots;
  private sweepTimer?: ReturnType<typeof setInterval>;
  private readonly loops: Promise<void>[] = [];
  private readonly wake = new Set<() => void>();

  constructor(private readonly ctx: JobsContext) {
    this.slots = new Slots(ctx.config.concurrency);
    if (ctx.config.driver === "poll") this.driver = "poll";
  }

  /**
   * Starts the driver on the open database — the queue listener, or the polling loops — then kicks
   * every active job and starts the sweeper.
   */
  async start(kv: Deno.Kv): Promise<void> {
    const wantQueue = this.ctx.config.driver !== "poll";
    const hasQueue = typeof kv.listenQueue === "function" && typeof kv.enqueue === "function";
    if (this.ctx.config.driver === "queue" && !hasQueue) throw new Error("this KV database has no queue");
    this.driver = wantQueue && hasQueue ? "queue" : "poll";
    if (this.driver === "queue") {
      // Not awaited on close: the listener ends when the database is closed (by whoever owns it).
      void (
        kv.listenQueue(async (msg: unknown) => {
          if (!isPumpMessage(msg) || this.ctx.closed) return;
          try {
            await this.pump(msg.job);
          } catch (e) {
            if (!this.ctx.closed) {
              this.ctx.log(`jobs: pump of ${msg.job} failed: ${e instanceof Error ? e.stack : e}`);
            }
          }
        }).catch((e) => {
          if (!this.ctx.closed) this.ctx.log(`jobs: queue listener stopped: ${e}`);
        })
      );
    } else {
      for (let i = 0; i < this.ctx.config.concurrency; i++) this.loops.push(this.pollLoop(i));
    }
    // Re-kick every active job: queue messages in flight when a process died are not redelivered.
    await this.sweep({ kickAll: true }).catch((e) => this.ctx.log(`jobs: first sweep failed: ${e}`));
    this.sweepTimer = setInterval(() => {
      if (!this.ctx.closed) this.sweep().catch((e) => this.ctx.log(`jobs: sweep failed: ${e}`));
    }, this.ctx.config.sweepMs);
  }

  /** Stops the sweeper and wakes idle polling loops (which then see that the system is closed). */
  stop(): void {
    clearInterval(this.sweepTimer);
    for (const w of this.wake) w();
  }

  /** Settles once every polling loop has ended. */
  async stopped(): Promise<void> {
    await Promise.allSettled(this.loops);
  }

  /**
   * Starts a new batch job's chains in this process at once, without waiting for the queue's first
   * delivery; the queued messages then find the job busy and end. Polling slots are woken instead.
   */
  kickLocally(job: JobRecord): void {
    if (job.kind !== "batch" || this.ctx.closed) return;
    if (this.driver === "queue") {
      for (let i = 0; i < this.ctx.config.parallel; i++) {
        this.pump(job.id).catch((e) => {
          if (!this.ctx.closed) this.ctx.log(`jobs: pump of ${job.id} failed: ${e}`);
        });
      }
    } else this.wakeUp();
  }

  /** Adds what makes a batch job runnable to `op`: the job, its cursor and counters, the kicks. */
  startOps(op: Deno.AtomicOperation, job: JobRecord, now: number): void {
    op.set(K.job(job.id), job).set(K.cursor(job.id), 0).set(K.active(job.id), now).set(K.beat(job.id), now);
    if (this.driver !== "poll") {
      for (let i = 0; i < this.ctx.config.parallel; i++) op.enqueue(pumpMessage(job.id));
    }
  }

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
    if (this.ctx.closed) return "closed";
    const release = await this.slots.acquire();
    try {
      const t0 = performance.now();
      let ran = false;
      let last = { kind: "gone" } as Claim | "budget" | "closed";
      const tasks: Promise<void>[] = [];
      const step = async (exclude?: number, previous?: Promise<void>): Promise<void> => {
        if (this.ctx.closed) return void (last = "closed");
        if (ran && performance.now() - t0 >= this.ctx.config.chainMs) {
          await previous;
          return void (last = "budget");
        }
        let c = await claim(this.ctx, jobId, exclude);
        if (c.kind !== "claimed" && previous) {
          // Nothing else to start while our previous chunk commits: decide once it has.
          await previous;
          c = await claim(this.ctx, jobId);
        }
        // A running chain that finds the job busy is usually looking at another chain's short overlap
        // (its next chunk claimed while the last one commits): look again before giving up.
        for (let i = 1; ran && c.kind === "busy" && i <= 5 && !this.ctx.closed; i++) {
          await new Promise((r) => setTimeout(r, 10 * i));
          c = await claim(this.ctx, jobId);
        }
        if (c.kind !== "claimed") return void (last = c);
        ran = true;
        const self: { done?: Promise<void> } = {};
        let handedOn = false;
        self.done = runChunk(this.ctx, c, () => {
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
        if (this.driver === "queue") await this.ctx.kv.enqueue(pumpMessage(jobId));
        return "ran";
      }
      if (last.kind === "complete") await finalize(this.ctx, jobId);
      if (last.kind === "wait" && this.driver === "queue") {
        await this.ctx.kv.enqueue(pumpMessage(jobId), { delay: last.ms });
      }
      return ran ? "ran" : last.kind as PumpOutcome;
    } finally {
      release();
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
    if (performance.now() - c.at < this.ctx.config.pollMs) return Promise.resolve(c.ids);
    return c.loading ??= (async () => {
      try {
        const ids: string[] = [];
        for await (const e of this.ctx.kv.list({ prefix: K.actives() })) ids.push(e.key[2] as string);
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
    while (!this.ctx.closed) {
      let ran = false;
      try {
        const ids = await this.activeIds();
        for (let k = 0; k < ids.length && !ran && !this.ctx.closed; k++) {
          const outcome = await this.pump(ids[turn++ % ids.length]);
          if (outcome === "ran") ran = true;
          else if (outcome === "complete" || outcome === "gone") this.activeCache.at = -Infinity;
        }
      } catch (e) {
        if (!this.ctx.closed) this.ctx.log(`jobs: poll loop: ${e instanceof Error ? e.message : e}`);
      }
      if (!ran && !this.ctx.closed) await this.sleep(this.ctx.config.pollMs);
    }
  }

  /**
   * Re-kicks active jobs that made no progress for a lease (or all of them at start-up), finalizes
   * finished ones, starts the runs of due recurring jobs and expires old jobs. Runs every sweepMs and on
   * each cron tick.
   */
  async sweep(opts: { kickAll?: boolean } = {}): Promise<void> {
    if (this.ctx.closed) return;
    const now = this.ctx.now();
    const stallMs = this.ctx.config.leaseMs + this.ctx.config.sweepMs;
    for await (const e of this.ctx.kv.list<number>({ prefix: K.actives() })) {
      const id = e.key[2] as string;
      const beat = await this.ctx.kv.get<number>(K.beat(id));
      if (!opts.kickAll && now - (beat.value ?? 0) <= stallMs) continue;
      const op = this.ctx.kv.atomic().check(beat).set(K.beat(id), now);
      if (this.driver === "queue") {
        for (let i = 0; i < this.ctx.config.parallel; i++) op.enqueue(pumpMessage(id));
      }
      await op.commit();
      if (!opts.kickAll) await finalize(this.ctx, id);
    }
    await this.tick(now);
    await this.expire(now);
  }

  private expiring = false;

  /** Expires the jobs due at `now` (functions/jobs/retention.ts); one pass at a time per process. */
  private async expire(now: number): Promise<void> {
    if (this.expiring) return;
    this.expiring = true;
    try {
      await expireDue(this.ctx, now);
    } finally {
      this.expiring = false;
    }
  }

  /**
   * Starts a run of every recurring job due at `now` (the cron tick; `now` is injectable for tests).
   * Missed ticks coalesce into one run; a tick that finds the previous run still going is skipped. A
   * run that would take its key past max_stored_bytes is created failed (`quota_exceeded`).
   * Returns the ids of the runs created.
   */
  async tick(now = this.ctx.now()): Promise<string[]> {
    const started: string[] = [];
    const due = await Array.fromAsync(
      this.ctx.kv.list<string>({ prefix: K.dues(), end: K.due(now + 1, "") }),
    );
    for (const dueE of due) {
      const id = dueE.value;
      for (let attempt = 0; attempt < 8; attempt++) {
        const parentE = await this.ctx.kv.get<JobRecord>(K.job(id));
        const parent = parentE.value;
        const fresh = await this.ctx.kv.get<string>(dueE.key);
        if (fresh.versionstamp === null) break; // another process handled this tick
        if (!parent || parent.kind !== "recurring" || parent.status === "canceled") {
          await this.ctx.kv.atomic().check(fresh).delete(dueE.key).commit();
          break;
        }
        const next = nextCronTime(parseCron(parent.schedule!), now);
        const op = this.ctx.kv.atomic().check(parentE, fresh).delete(dueE.key);
        if (next !== null) op.set(K.due(next, id), id);
        const last = parent.last_run ? await getJob(this.ctx, parent.last_run) : null;
        const refusal = last && !isFinal(last.status) ? null : await runRefusal(this.ctx, parent);
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
          if (refusal) {
            const failed = { ...run, status: "failed" as const, finished_at: now };
            failed.error = { code: "quota_exceeded", message: refusal };
            op.set(K.job(runId), endJobOps(this.ctx, op, failed));
          } else this.startOps(op, run, now);
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

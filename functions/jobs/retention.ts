/**
 * Retention of batch jobs (docs/jobs.md, "Quotas and retention"): a job that ends (succeeded, failed,
 * canceled) gets `expires_at = finished_at + GENIE_JOBS_RETENTION_MS` and an entry
 * `["jobs","expire",at,id]`; the sweeper (functions/jobs/runner.ts) expires due jobs: their result
 * files and KV state are deleted, their bytes given back to the key's usage, and a small tombstone
 * (`["jobs","gone",id]`) answers 410 `job_expired` for one more retention period, after which the id
 * answers 404. `DELETE /v1/jobs/:id` does the same at once. Canceling a job deletes its files at once.
 *
 * Each step is idempotent, so a sweep interrupted anywhere (a crash, two processes at once) is simply
 * done again by the next one; the bytes are given back exactly once (a checked operation).
 */
import type { JobsContext } from "./context.ts";
import { isFinal } from "./context.ts";
import { type GoneRecord, type JobRecord, K } from "./keys.ts";
import { minus } from "./quotas.ts";

/**
 * Adds to `op` what ending `job` means for quotas and retention: the job leaves its key's active
 * jobs and is scheduled to expire. Returns the record to store (with `expires_at`).
 */
export function endJobOps(ctx: JobsContext, op: Deno.AtomicOperation, job: JobRecord): JobRecord {
  const at = (job.finished_at ?? ctx.now()) + ctx.config.retentionMs;
  op.set(K.expire(at, job.id), "job");
  if (!job.parent) op.delete(K.live(job.principal, job.id));
  return { ...job, expires_at: at };
}

/** Gives the bytes of the job's stored files back to its key's usage; exactly once. */
async function releaseBytes(ctx: JobsContext, job: Pick<JobRecord, "id" | "principal">): Promise<void> {
  for (;;) {
    const e = await ctx.kv.get<Deno.KvU64>(K.bytes(job.id));
    if (e.versionstamp === null) return;
    const op = ctx.kv.atomic().check(e).delete(K.bytes(job.id));
    if (e.value.value > 0n) op.sum(K.usage(job.principal), minus(e.value.value));
    if ((await op.commit()).ok) return;
  }
}

/**
 * Deletes the result files of a job that has ended and gives their bytes back. No chunk can add
 * bytes any more: a chunk's commit checks the job record, which ending the job changed.
 */
export async function deleteFiles(ctx: JobsContext, job: Pick<JobRecord, "id" | "principal">): Promise<void> {
  await ctx.store.delete(job.id);
  await releaseBytes(ctx, job);
}

/** Deletes every key under `prefix`, a hundred per operation. */
async function deletePrefix(kv: Deno.Kv, prefix: Deno.KvKey): Promise<void> {
  let keys: Deno.KvKey[] = [];
  const flush = async () => {
    const op = kv.atomic();
    for (const k of keys) op.delete(k);
    await op.commit();
    keys = [];
  };
  for await (const e of kv.list({ prefix }, { batchSize: 100 })) {
    keys.push(e.key);
    if (keys.length === 100) await flush();
  }
  if (keys.length > 0) await flush();
}

/**
 * Expires (or deletes) an ended job: its files, its state, its bytes; leaves a tombstone. Returns false
 * when there is no such job. Throws when the job has not ended (cancel it first).
 */
export async function expireJob(
  ctx: JobsContext,
  id: string,
  reason: GoneRecord["reason"],
): Promise<boolean> {
  const job = (await ctx.kv.get<JobRecord>(K.job(id))).value;
  if (!job) return false;
  if (!isFinal(job.status)) throw new Error(`job ${id} is ${job.status}; cancel it first`);
  await deleteFiles(ctx, job);
  for (const prefix of [K.chunks(id), K.opens(id), K.counts(id), K.runs(id)]) {
    await deletePrefix(ctx.kv, prefix);
  }
  const now = ctx.now();
  const gone: GoneRecord = {
    id,
    principal: job.principal,
    reason,
    at: now,
    expires_at: now + ctx.config.retentionMs,
  };
  for (;;) {
    const e = await ctx.kv.get<JobRecord>(K.job(id));
    if (!e.value) return true;
    const op = ctx.kv.atomic().check(e)
      .delete(K.job(id)).delete(K.cursor(id)).delete(K.beat(id)).delete(K.active(id))
      .delete(K.live(job.principal, id))
      .set(K.gone(id), gone).set(K.expire(gone.expires_at, id), "gone");
    if (e.value.expires_at !== undefined) op.delete(K.expire(e.value.expires_at, id));
    if ((await op.commit()).ok) return true;
  }
}

/** The tombstone of an expired or deleted job, if it has one. */
export async function goneRecord(ctx: JobsContext, id: string): Promise<GoneRecord | null> {
  return (await ctx.kv.get<GoneRecord>(K.gone(id))).value;
}

/**
 * Expires the jobs (and drops the tombstones) due at `now`, at most `max` of them; returns how many
 * entries it handled. Errors (a store that refuses to delete) are logged; the entry stays for the next
 * sweep.
 */
export async function expireDue(ctx: JobsContext, now: number, max = 100): Promise<number> {
  const due = ctx.kv.list<"job" | "gone">({ prefix: K.expires(), end: K.expire(now + 1, "") }, {
    limit: max,
  });
  let handled = 0;
  for await (const e of due) {
    if (ctx.closed) break;
    handled++;
    const id = e.key[3] as string;
    try {
      if (e.value === "gone") {
        const g = await ctx.kv.get<GoneRecord>(K.gone(id));
        const op = ctx.kv.atomic().check(e).delete(e.key);
        if (g.value && g.value.expires_at === e.key[2]) op.check(g).delete(K.gone(id));
        await op.commit();
        continue;
      }
      const job = (await ctx.kv.get<JobRecord>(K.job(id))).value;
      if (job && isFinal(job.status) && job.expires_at === e.key[2]) {
        await expireJob(ctx, id, "expired");
      } else {
        // The job is gone already, or this entry is stale: drop it.
        await ctx.kv.atomic().check(e).delete(e.key).commit();
      }
    } catch (err) {
      ctx.log(`jobs: expiring ${id} failed: ${err instanceof Error ? err.message : err}`);
    }
  }
  return handled;
}

/** A retention period in words: "7 days", "36 hours", "90 s". */
export function describeMs(ms: number): string {
  const units: [number, string][] = [[86_400_000, "day"], [3_600_000, "hour"], [60_000, "minute"]];
  for (const [size, name] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${name}${ms === size ? "" : "s"}`;
  }
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

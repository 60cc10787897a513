/**
 * Chunk leases and the exactly-once bookkeeping of a job's chunks (docs/jobs.md, "Exactly once under
 * at-least-once delivery"); the KV layout is in functions/jobs/keys.ts.
 *
 * - {@link claim} leases the next chunk with one atomic check on the job, the claim cursor (a fresh
 *   chunk) or the chunk's open entry (an expired lease, a due retry).
 * - {@link renew} extends a lease while the chunk runs; a lease whose holder died expires and the chunk
 *   is claimed again; {@link releaseLease} hands a chunk back at shutdown.
 * - {@link commitDone} marks a finished chunk done and counts its samples in one atomic operation that
 *   checks the lease still holds and the job is still live: a redelivered or stale attempt changes
 *   nothing, so every chunk is counted once. {@link commitFailure} schedules a retry with backoff or
 *   fails the chunk (and, for a permanent error, the job).
 */
import { chunkSize, errorInfo, isFinal, type JobsContext, permanent, Stop, stopChunks } from "./context.ts";
import { type ChunkRecord, type JobRecord, K, type OpenChunk } from "./keys.ts";
import { writeIndex } from "./results.ts";
import { endJobOps } from "./retention.ts";

export type Claim =
  | { kind: "claimed"; job: JobRecord; jobVs: string; chunk: ChunkRecord; versionstamp: string }
  | { kind: "busy" | "gone" | "complete" }
  | { kind: "wait"; ms: number };

/** The price of a chunk's run per sample, as far as the worker reported it. */
export type ChunkPrice = Pick<ChunkRecord, "calls" | "cost" | "cost_estimated">;

/**
 * Leases the next chunk to run: an expired lease or a due retry first, then a fresh chunk. `exclude`
 * is a chunk of the caller's that is about to commit: it does not count against `parallel`.
 */
export async function claim(ctx: JobsContext, id: string, exclude?: number): Promise<Claim> {
  const kv = ctx.kv;
  for (let attempt = 0; attempt < 32; attempt++) {
    const [[jobE, cursorE], open] = await Promise.all([
      kv.getMany<[JobRecord, number]>([K.job(id), K.cursor(id)]),
      Array.fromAsync(kv.list<OpenChunk>({ prefix: K.opens(id) })),
    ]);
    const job = jobE.value;
    if (!job || job.kind !== "batch" || isFinal(job.status)) return { kind: "gone" };
    const now = ctx.now();
    const live = open.filter((e) =>
      e.value.kind === "lease" && e.value.at > now && e.key[3] !== exclude
    ).length;
    if (live >= ctx.config.parallel) return { kind: "busy" };
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
    if (prev && attempts > ctx.config.maxAttempts) {
      // Every attempt so far died holding the lease: give up on this chunk.
      const error = prev.error ??
        { code: "abandoned", message: `lease expired ${prev.attempts} times (crashed holders)` };
      const failed: ChunkRecord = { ...prev, state: "failed", error, finished_at: now };
      delete failed.owner;
      delete failed.lease_until;
      delete failed.retry_at;
      const op = kv.atomic().check(jobE, chunkE).set(K.chunk(id, index), failed).delete(K.open(id, index))
        .sum(K.count(id, "failed_chunks"), 1n)
        .sum(K.count(id, "failed_samples"), BigInt(chunkSize(job, index)));
      if (openE) op.check(openE);
      if ((await op.commit()).ok) ctx.chunkCounter?.inc({ outcome: "failed" });
      continue;
    }
    const until = now + ctx.config.leaseMs;
    const chunk: ChunkRecord = { index, state: "leased", attempts, owner: ctx.owner, lease_until: until };
    if (prev?.error) chunk.error = prev.error;
    const op = kv.atomic().check(jobE, chunkE)
      .set(K.chunk(id, index), chunk)
      .set(K.open(id, index), { kind: "lease", at: until, owner: ctx.owner } satisfies OpenChunk)
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

/** Extends the lease; aborts the chunk when it was taken over or the job ended. */
export async function renew(
  ctx: JobsContext,
  id: string,
  lease: { vs: string; chunk: ChunkRecord },
  ctl: AbortController,
): Promise<void> {
  if (ctl.signal.aborted) return;
  try {
    const [jobE, chunkE] = await ctx.kv.getMany<[JobRecord, ChunkRecord]>([
      K.job(id),
      K.chunk(id, lease.chunk.index),
    ]);
    if (chunkE.versionstamp !== lease.vs) return ctl.abort(new Stop("lease lost"));
    if (!jobE.value || isFinal(jobE.value.status)) return ctl.abort(new Stop("job ended"));
    const now = ctx.now();
    const until = now + ctx.config.leaseMs;
    const chunk = { ...lease.chunk, lease_until: until };
    const r = await ctx.kv.atomic().check(chunkE)
      .set(K.chunk(id, chunk.index), chunk)
      .set(K.open(id, chunk.index), { kind: "lease", at: until, owner: ctx.owner } satisfies OpenChunk)
      .set(K.beat(id), now)
      .commit();
    if (r.ok) {
      lease.vs = r.versionstamp;
      lease.chunk = chunk;
    } else ctl.abort(new Stop("lease lost"));
  } catch (e) {
    if (!ctx.closed) ctx.log(`jobs: lease renewal of ${id}#${lease.chunk.index} failed: ${e}`);
  }
}

/** Hands a chunk back at once (shutdown): the next claim takes it without waiting for expiry. */
export async function releaseLease(
  ctx: JobsContext,
  id: string,
  vs: string,
  chunk: ChunkRecord,
): Promise<void> {
  try {
    const now = ctx.now();
    const back: ChunkRecord = { ...chunk, state: "retry", attempts: chunk.attempts - 1, retry_at: now };
    await ctx.kv.atomic().check({ key: K.chunk(id, chunk.index), versionstamp: vs })
      .set(K.chunk(id, chunk.index), back)
      .set(K.open(id, chunk.index), { kind: "retry", at: now } satisfies OpenChunk)
      .commit();
  } catch { /* the lease expires anyway */ }
}

/**
 * Marks the chunk done and counts its samples, once: the atomic operation checks that this lease
 * still holds (the chunk's versionstamp) and that the job did not change (canceled). The first try
 * uses the versionstamps known from the claim; a conflict re-reads both and tries again.
 */
export async function commitDone(
  ctx: JobsContext,
  job: JobRecord,
  jobVs: string,
  vs: string,
  chunk: ChunkRecord,
  out: { nfe: number; steps: number; price: ChunkPrice; files: { npy: string; png?: string }; bytes: number },
): Promise<void> {
  const id = job.id;
  let checks: { key: Deno.KvKey; versionstamp: string }[] = [
    { key: K.job(id), versionstamp: jobVs },
    { key: K.chunk(id, chunk.index), versionstamp: vs },
  ];
  for (;;) {
    const now = ctx.now();
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
    const r = await ctx.kv.atomic().check(...checks)
      .set(K.chunk(id, chunk.index), done)
      .delete(K.open(id, chunk.index))
      .sum(K.count(id, "samples"), BigInt(chunkSize(job, chunk.index)))
      .sum(K.count(id, "chunks"), 1n)
      // the files' bytes, for the job and its key's quota (functions/jobs/quotas.ts)
      .sum(K.bytes(id), BigInt(out.bytes))
      .sum(K.usage(job.principal), BigInt(out.bytes))
      .set(K.beat(id), now)
      .commit();
    if (r.ok) break;
    const [jobE, chunkE] = await ctx.kv.getMany<[JobRecord, ChunkRecord]>([
      K.job(id),
      K.chunk(id, chunk.index),
    ]);
    if (chunkE.versionstamp !== vs || !jobE.value || isFinal(jobE.value.status)) {
      ctx.chunkCounter?.inc({ outcome: "stale" });
      return; // taken over, or the job ended: the other holder (or nobody) counts it
    }
    checks = [jobE as { key: Deno.KvKey; versionstamp: string }, { key: chunkE.key, versionstamp: vs }];
  }
  ctx.chunkCounter?.inc({ outcome: "done" });
}

/** A failed attempt: retry with exponential backoff, or fail the chunk (and, if permanent, the job). */
export async function commitFailure(
  ctx: JobsContext,
  job: JobRecord,
  vs: string,
  chunk: ChunkRecord,
  e: unknown,
): Promise<void> {
  const id = job.id;
  const error = errorInfo(e);
  const fatal = permanent(e);
  const giveUp = fatal || chunk.attempts >= ctx.config.maxAttempts;
  ctx.log(
    `jobs: ${id} chunk ${chunk.index} attempt ${chunk.attempts} failed: ${error.code}: ${error.message}` +
      (giveUp ? " (giving up)" : ""),
  );
  for (;;) {
    const [jobE, chunkE] = await ctx.kv.getMany<[JobRecord, ChunkRecord]>([
      K.job(id),
      K.chunk(id, chunk.index),
    ]);
    if (chunkE.versionstamp !== vs || !jobE.value || isFinal(jobE.value.status)) return;
    const now = ctx.now();
    const op = ctx.kv.atomic().check(jobE, chunkE).set(K.beat(id), now);
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
        .sum(K.count(id, "failed_samples"), BigInt(chunkSize(job, chunk.index)));
      if (fatal) {
        // The request itself is bad: stop the whole job now.
        op.set(
          K.job(id),
          endJobOps(ctx, op, {
            ...jobE.value,
            status: "failed",
            finished_at: now,
            error: { code: error.code, message: `chunk ${chunk.index}: ${error.message}` },
          }),
        ).delete(K.active(id));
      }
    } else {
      const delay = backoff(ctx, chunk.attempts);
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
    ctx.chunkCounter?.inc({ outcome: giveUp ? "failed" : "retry" });
    if (fatal) {
      stopChunks(ctx, id, "job ended");
      await writeIndex(ctx, { ...jobE.value, status: "failed" }).catch(() => {});
    }
    return;
  }
}

/** Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, ±20 % jitter. */
export function backoff(ctx: JobsContext, attempts: number): number {
  const raw = Math.min(ctx.config.maxBackoffMs, ctx.config.backoffMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(raw * (0.8 + 0.4 * ctx.random()));
}

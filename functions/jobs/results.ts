/**
 * What a job reports (docs/contracts.md §2, docs/jobs.md "Results"): its record and counters, its
 * public status, pages of per-chunk results, and its `index.json`; and the end of a batch job whose
 * chunks are all finished (the index, then the final status).
 */
import type { JobInfo, JobResult } from "../../core/api/jobs.ts";
import { seedsFrom } from "../../core/api/samples.ts";
import { errorInfo, isFinal, iso, type JobsContext, StorageError } from "./context.ts";
import { endJobOps } from "./retention.ts";
import { type ChunkRecord, type CounterName, COUNTERS, type JobRecord, K, type OpenChunk } from "./keys.ts";

export type Counts = Record<CounterName, number>;

export async function getJob(ctx: JobsContext, id: string): Promise<JobRecord | null> {
  return (await ctx.kv.get<JobRecord>(K.job(id))).value;
}

export async function readCounts(ctx: JobsContext, id: string): Promise<Counts> {
  const entries = await ctx.kv.getMany<Deno.KvU64[]>(COUNTERS.map((c) => K.count(id, c)));
  const out = {} as Counts;
  COUNTERS.forEach((c, i) => (out[c] = Number(entries[i].value?.value ?? 0n)));
  return out;
}

/** The job's public status (docs/contracts.md §2); a recurring job reports its latest run's progress. */
export async function info(ctx: JobsContext, job: JobRecord): Promise<JobInfo> {
  let current: JobRecord | null = job;
  let status = job.status;
  if (job.kind === "recurring") {
    current = job.last_run ? await getJob(ctx, job.last_run) : null;
    if (job.status !== "canceled") status = current && !isFinal(current.status) ? "running" : "queued";
  }
  const counts = current ? await readCounts(ctx, current.id) : undefined;
  let running = 0;
  if (current && !isFinal(current.status)) {
    const t = ctx.now();
    for await (const e of ctx.kv.list<OpenChunk>({ prefix: K.opens(current.id) })) {
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
  if (job.expires_at !== undefined) info.expires_at = iso(job.expires_at);
  if (job.files_deleted) info.files_deleted = true;
  for (const k of Object.keys(info) as (keyof JobInfo)[]) if (info[k] === undefined) delete info[k];
  return info;
}

/** The job whose results a request about `job` lists: itself, or a recurring job's latest run. */
export async function resultsJob(ctx: JobsContext, job: JobRecord): Promise<JobRecord | null> {
  if (job.kind !== "recurring") return job;
  return job.last_run ? await getJob(ctx, job.last_run) : null;
}

/** One result item per finished chunk (without files once they were deleted). */
export function resultItem(job: JobRecord, rec: ChunkRecord, base = `/v1/jobs/${job.id}/files/`): JobResult {
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
    if (rec.files && !job.files_deleted) {
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
export async function results(
  ctx: JobsContext,
  job: JobRecord,
  cursor: number,
  limit: number,
): Promise<{ items: JobResult[]; next: number | null }> {
  const items: JobResult[] = [];
  const final = isFinal(job.status);
  let expected = cursor;
  const iter = ctx.kv.list<ChunkRecord>(
    { prefix: K.chunks(job.id), start: K.chunk(job.id, cursor) },
    { batchSize: Math.min(limit + 1, 500) },
  );
  for await (const e of iter) {
    const rec = e.value;
    const finished = rec.state === "done" || rec.state === "failed";
    if (!final && (rec.index !== expected || !finished)) break;
    if (items.length === limit) return { items, next: rec.index };
    expected = rec.index + 1;
    if (finished) items.push(resultItem(job, rec));
  }
  if (final || expected >= job.chunks) return { items, next: null };
  return { items, next: expected };
}

/** Every finished chunk of a job, in order. */
export async function* finishedChunks(ctx: JobsContext, job: JobRecord): AsyncGenerator<ChunkRecord> {
  for await (const e of ctx.kv.list<ChunkRecord>({ prefix: K.chunks(job.id) })) {
    if (e.value.state === "done" || e.value.state === "failed") yield e.value;
  }
}

/** Ends a job whose chunks are all finished: writes its index, then the final status. Idempotent. */
export async function finalize(ctx: JobsContext, id: string): Promise<void> {
  for (;;) {
    const e = await ctx.kv.get<JobRecord>(K.job(id));
    const job = e.value;
    if (!job || job.kind !== "batch" || isFinal(job.status)) return;
    const counts = await readCounts(ctx, id);
    if (counts.chunks + counts.failed_chunks < job.chunks) return;
    const now = ctx.now();
    const failedChunk = counts.failed_chunks > 0 ? await firstFailure(ctx, job) : undefined;
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
      await writeIndex(ctx, final);
    } catch (e) {
      // The chunks are accounted for, but the index cannot be written: the job fails, saying why.
      const error = errorInfo(e);
      final.status = "failed";
      final.error = failedChunk
        ? { ...error, message: `${final.error!.message}; ${error.message}` }
        : { ...error, message: error.message };
      ctx.log(`jobs: ${id}: ${error.code}: ${error.message}`);
    }
    const op = ctx.kv.atomic().check(e);
    const r = await op.set(K.job(id), endJobOps(ctx, op, final)).delete(K.active(id)).commit();
    if (r.ok) return;
  }
}

async function firstFailure(ctx: JobsContext, job: JobRecord): Promise<ChunkRecord | undefined> {
  for await (const rec of finishedChunks(ctx, job)) if (rec.state === "failed") return rec;
  return undefined;
}

/** `<job>/index.json` in the store: the job and one entry per finished chunk. */
export async function writeIndex(ctx: JobsContext, job: JobRecord): Promise<void> {
  const chunks = [];
  for await (const rec of finishedChunks(ctx, job)) chunks.push(resultItem(job, rec, ""));
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
    await ctx.store.put(key, new TextEncoder().encode(JSON.stringify(index, null, 1)));
  } catch (e) {
    throw new StorageError(key, e);
  }
}

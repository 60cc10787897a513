/**
 * Drivers of single chunks: one claimed chunk is run against the worker pool (docs/contracts.md §3,
 * `POST /v1/batch`) under a renewed lease, its files are written to the result store, and the outcome
 * is committed exactly once (functions/jobs/leases.ts).
 *
 * {@link workerCallFor} is the one place where a job's stored request becomes a worker message.
 */
import { HARD_LIMITS, seedsFrom } from "../../core/api/samples.ts";
import { float32FromBytes, shapeSize } from "../../core/api/tensor.ts";
import { BatchResponse, PROTOCOL_VERSION } from "../../core/api/worker.ts";
import { npyHeader } from "../../core/npy.ts";
import { ApiError } from "../errors.ts";
import { gridPng } from "../images.ts";
import { batchMessageFields } from "../sampling.ts";
import { chunkSize, type JobsContext, Stop, StorageError } from "./context.ts";
import { chunkFile, type ChunkRecord, type JobRecord } from "./keys.ts";
import { type ChunkPrice, type Claim, commitDone, commitFailure, releaseLease, renew } from "./leases.ts";

function priceOf(res: { calls?: number; cost?: number; cost_estimated?: boolean }): ChunkPrice {
  const out: ChunkPrice = {};
  if (res.calls !== undefined) out.calls = res.calls;
  if (res.cost !== undefined) out.cost = res.cost;
  if (res.cost_estimated !== undefined) out.cost_estimated = res.cost_estimated;
  return out;
}

/** Runs a claimed chunk: worker call under a renewed lease, files, then the exactly-once commit. */
export async function runChunk(
  ctx: JobsContext,
  claim: Extract<Claim, { kind: "claimed" }>,
  onCalled?: () => void,
): Promise<void> {
  const { job, chunk, versionstamp } = claim;
  const ctl = new AbortController();
  let set = ctx.inflight.get(job.id);
  if (!set) ctx.inflight.set(job.id, set = new Set());
  set.add(ctl);
  const lease = { vs: versionstamp, chunk, renewing: Promise.resolve() };
  const timer = setInterval(() => {
    lease.renewing = lease.renewing.then(() => renew(ctx, job.id, lease, ctl));
  }, Math.max(50, Math.floor(ctx.config.leaseMs / 3)));
  const stopRenewing = async () => {
    clearInterval(timer);
    await lease.renewing;
  };
  try {
    let result;
    try {
      result = await callWorker(ctx, job, chunk, ctl.signal);
      ctl.signal.throwIfAborted();
      onCalled?.();
      const written = await writeFiles(ctx, job, chunk.index, result.data);
      await stopRenewing();
      ctl.signal.throwIfAborted();
      await commitDone(ctx, job, claim.jobVs, lease.vs, chunk, { ...result, ...written });
    } catch (e) {
      await stopRenewing();
      const reason = ctl.signal.aborted ? ctl.signal.reason : e;
      if (reason instanceof Stop) {
        if (reason.message === "shutting down") await releaseLease(ctx, job.id, lease.vs, chunk);
        ctx.chunkCounter?.inc({ outcome: "stale" });
        return;
      }
      await commitFailure(ctx, job, lease.vs, chunk, reason);
    }
  } finally {
    set.delete(ctl);
    if (set.size === 0) ctx.inflight.delete(job.id);
  }
}

/**
 * The worker message (`POST /v1/batch`, docs/contracts.md §3) of one attempt at a chunk: the job's
 * solve settings, the chunk's seeds and the attempt's id. The one place where a job's stored request
 * becomes a worker call.
 */
export function workerCallFor(job: JobRecord, chunk: ChunkRecord, deadlineMs: number) {
  const start = chunk.index * job.chunk;
  const count = chunkSize(job, chunk.index);
  return {
    v: PROTOCOL_VERSION,
    id: `${job.id}.${chunk.index}.${chunk.attempts}`,
    model: job.model,
    // the samples path's own fields: solve settings as core/plan.ts reads them, class and guidance
    ...batchMessageFields(job.request),
    seeds: seedsFrom((job.base_seed + start) >>> 0, count),
    deadline_ms: deadlineMs,
  };
}

/** One worker call for a chunk, its answer checked against the chunk's shape. */
async function callWorker(ctx: JobsContext, job: JobRecord, chunk: ChunkRecord, signal: AbortSignal) {
  const count = chunkSize(job, chunk.index);
  const r = job.request;
  // capped like the edge's deadlines: the most a worker accepts, and what a timer can hold
  const deadlineMs = Math.min(r.deadline_ms ?? ctx.deadlineMs ?? 120_000, HARD_LIMITS.deadline_ms);
  const message = workerCallFor(job, chunk, deadlineMs);
  const timeout = AbortSignal.timeout(deadlineMs + 5000);
  const { body, worker } = await ctx.pool.call(
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

/**
 * The chunk's .npy (the worker's float32 bytes as they came) and PNG grid; names fixed by (job, chunk).
 * Returns their keys and their size in bytes.
 */
async function writeFiles(
  ctx: JobsContext,
  job: JobRecord,
  index: number,
  data: Uint8Array,
): Promise<{ files: { npy: string; png?: string }; bytes: number }> {
  const count = chunkSize(job, index);
  const header = npyHeader([count, ...job.shape]);
  const npy = new Uint8Array(header.byteLength + data.byteLength);
  npy.set(header, 0);
  npy.set(data, header.byteLength);
  const files: { npy: string; png?: string } = { npy: chunkFile(job.id, index, "npy") };
  const put = (key: string, bytes: Uint8Array) =>
    ctx.store.put(key, bytes).catch((e) => Promise.reject(new StorageError(key, e)));
  const writes = [put(files.npy, npy)];
  let bytes = npy.byteLength;
  if (job.png) {
    files.png = chunkFile(job.id, index, "png");
    const png = gridPng(float32FromBytes(data), [count, ...job.shape], { scale: job.request.scale ?? 1 });
    writes.push(put(files.png, png));
    bytes += png.byteLength;
  }
  await Promise.all(writes);
  return { files, bytes };
}

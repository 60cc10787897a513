/**
 * Running a validated samples or encode request on the workers: per-sample seeds, splitting into
 * chunks of at most the model's `max_batch`, forwarding each chunk (signed msgpack) through the pool,
 * checking and joining the results, with progress per solver step and per finished chunk. The same
 * messages may instead be answered by this edge's own engine (`RunContext.pool` is then the route of
 * functions/local.ts): everything here is the same either way.
 *
 * Progress (`onProgress`, the SSE `progress` events): `queued` (`step` 0) when the chunks are sent;
 * then the chunks are sent with `stream: true` (core/api/worker.ts MSGPACK_STREAM) and `running`
 * events follow the workers' progress frames. `step` = 0, 1, …, steps − 1 in order is the step that
 * every chunk of the request has started (the slowest chunk's), so each step value is reported once
 * however many chunks there are; `steps_done` of `steps_total` (steps × chunks) counts the solver
 * steps finished over all chunks, so it moves as soon as any chunk does (events at most every
 * steps_total / 256 steps) and reaches the total only in the last event. Each finished chunk adds an
 * event with `done` samples of `n`: streamed, its `step` is the request's current step (so `step`
 * never goes back), and the last one (phase `done`) has `step` = `steps`. A worker that answers
 * plainly (no stream) sends no steps: then the finished chunks' events carry `step` = `steps` and
 * `steps_done` grows by whole chunks. With `preview`, the chunk of the first sample also sends x̂₀
 * previews (core/preview.ts), passed on with the next event.
 */
import type { Issue } from "../core/api/errors.ts";
import type { ModelInfo } from "../core/api/models.ts";
import {
  DEFAULT_SOLVER,
  type EncodeRequest,
  guidanceOf,
  type Img2ImgLegs,
  requestedCount,
  type SamplesRequest,
  seedsFrom,
} from "../core/api/samples.ts";
import {
  firstOutOfRange,
  float32FromBytes,
  outOfRangeMessage,
  shapeSize,
  tensorBytes,
} from "../core/api/tensor.ts";
import { BatchResponse, type Preview, PROTOCOL_VERSION } from "../core/api/worker.ts";
import {
  type Direction,
  planModelOf,
  planSolve,
  type SolvePlan,
  type SolveRequest,
  workerSolveFields,
} from "../core/plan.ts";
import { randomHex } from "../core/hex.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import type { Caller } from "./local.ts";

export interface Progress {
  step: number;
  steps: number;
  done: number;
  n: number;
  phase: "queued" | "running" | "done";
  /**
   * Solver steps finished, summed over every worker call (chunk) of the request, and their total
   * (steps × chunks): they move with the first step of any chunk and reach the total only with the
   * last event (phase `done`).
   */
  steps_done: number;
  steps_total: number;
  /** x̂₀ of the request's first sample, as the worker sent it (requests with `preview`). */
  preview?: Preview;
}

export interface RunContext {
  /** Where the messages go: the worker pool, or this edge's engine (functions/local.ts). */
  pool: Caller;
  /** Aborts on client disconnect or deadline. */
  signal: AbortSignal;
  /** Absolute deadline (ms since epoch), forwarded to the workers as the remaining deadline_ms. */
  deadlineAt: number;
  now: () => number;
  onProgress?: (p: Progress) => void;
  /** With `onProgress`: ask the worker call of the first sample for previews of x̂₀ (core/preview.ts). */
  preview?: boolean;
}

export interface RunOutcome {
  id: string;
  model: ModelInfo;
  solver: string;
  steps: number;
  nfe: number;
  /**
   * Per sample trajectory, as the workers report them (absent from a worker that does not): graph calls
   * of every kind, their forward-pass equivalents, and whether that cost uses a fallback ratio.
   */
  calls?: number;
  cost?: number;
  costEstimated?: boolean;
  /** The grid the workers used and its ρ, when they report it. */
  grid?: string;
  rho?: number;
  seeds: number[];
  /** [n, …sample shape] */
  shape: number[];
  /** float32 little-endian, C order. */
  data: Uint8Array;
  timings: { queue_ms: number; compute_ms: number; total_ms: number };
}

/** A request id: 16 random hex digits. */
function newId(): string {
  return randomHex(8);
}

/** The latents of a request as bytes, or issues (wrong size handled by the model check; NaN, ∞ or |x| > 10⁴ here). */
export function latentBytes(req: SamplesRequest): { bytes?: Uint8Array; issues: Issue[] } {
  if (!req.latents) return { issues: [] };
  const bytes = tensorBytes(req.latents.data);
  const bad = firstOutOfRange(float32FromBytes(bytes));
  if (bad) {
    return {
      issues: [{ path: ["latents", "data"], message: outOfRangeMessage(bad), code: "invalid_value" }],
    };
  }
  return { bytes, issues: [] };
}

/**
 * The plan of a request already checked against `model` (core/plan.ts): the solver and the step count
 * the edge expects (for progress before the worker answers). Undefined only if the request was not checked.
 */
function planOf(
  req: SolveRequest & { guidance_scale?: number },
  model: ModelInfo,
  direction: Direction,
): SolvePlan | undefined {
  try {
    return planSolve(
      { ...req, guidance: guidanceOf(req) },
      planModelOf(model),
      direction,
    );
  } catch {
    return undefined;
  }
}

/**
 * The fields of a `POST /v1/batch` message (core/api/worker.ts) that every chunk of a samples request
 * shares — the solve settings ({@link workerSolveFields}) and the conditioning — for the edge and the batch
 * jobs alike; a message adds `v`, `id`, `model`, `seeds`, `latents?` and `deadline_ms`.
 */
export function batchMessageFields(req: SamplesRequest): Record<string, unknown> {
  return { ...workerSolveFields(req, "sample"), ...conditioningFields(req) };
}

/** `class` and `guidance` (w, from `guidance` or `guidance_scale`) of a worker message, where given. */
function conditioningFields(
  req: { class?: number; guidance?: number; guidance_scale?: number },
): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (req.class !== undefined) fields.class = req.class;
  const guidance = guidanceOf(req);
  if (guidance !== undefined) fields.guidance = guidance;
  return fields;
}

interface Chunk {
  start: number;
  count: number;
  message: Record<string, unknown>;
}

/** Runs chunks concurrently; the first failure aborts the others. */
async function runChunks(
  path: string,
  id: string,
  chunks: Chunk[],
  model: ModelInfo,
  n: number,
  expected: number,
  ctx: RunContext,
): Promise<Omit<RunOutcome, "seeds" | "solver">> {
  const t0 = ctx.now();
  const inner = new AbortController();
  const onAbort = () => inner.abort(ctx.signal.reason);
  if (ctx.signal.aborted) onAbort();
  else ctx.signal.addEventListener("abort", onAbort, { once: true });
  const sampleBytes = shapeSize(model.shape) * 4;
  const data = new Uint8Array(n * sampleBytes);
  let done = 0, steps = expected, nfe = 0, queue = 0, compute = 0;
  // Every chunk runs the same solve, so the per-trajectory counts agree; the grid too.
  const price: Pick<RunOutcome, "calls" | "cost" | "costEstimated" | "grid" | "rho"> = {};
  // Request-wide step counts: the steps each chunk has finished (a streamed frame of step s means s
  // steps are done; a finished chunk has done them all), summed; events come at most every `stride`
  // steps of the sum (a request of many chunks and steps does not flood its client).
  const stepsTotal = expected * chunks.length;
  const finished = chunks.map(() => 0);
  const stride = Math.max(1, Math.floor(stepsTotal / 256));
  let sentSteps = 0, preview: Preview | undefined;
  const stepsDone = () => finished.reduce((a, b) => a + b, 0);
  const report = (p: Pick<Progress, "step" | "steps" | "done" | "n" | "phase">) => {
    sentSteps = stepsDone();
    const out: Progress = { ...p, steps_done: sentSteps, steps_total: stepsTotal };
    if (preview) out.preview = preview;
    preview = undefined;
    ctx.onProgress?.(out);
  };
  report({ step: 0, steps, done: 0, n, phase: "queued" });
  // Per-step progress: the step each chunk has started (−1 before its first frame, `steps` once done).
  const stream = ctx.onProgress !== undefined;
  const reached = chunks.map(() => -1);
  let reported = -1;
  const stepped = (i: number, step: number, of: number, shown?: Preview) => {
    // A worker's counts are bounded by the steps this request expects (a faulty worker cannot flood).
    of = Math.min(of, expected);
    if (!(Number.isInteger(step) && step >= 0)) return;
    reached[i] = Math.max(reached[i], Math.min(step, of - 1));
    finished[i] = Math.max(finished[i], reached[i]);
    if (shown) preview = shown;
    const all = Math.min(...reached);
    while (reported < Math.min(all, of - 1) && done < n) {
      report({ step: ++reported, steps: of, done, n, phase: "running" });
    }
    if (done < n && (stepsDone() >= sentSteps + stride || preview)) {
      report({ step: Math.max(0, reported), steps: of, done, n, phase: "running" });
    }
  };
  try {
    await Promise.all(chunks.map(async (chunk, i) => {
      const message = {
        ...chunk.message,
        deadline_ms: Math.max(1, Math.round(ctx.deadlineAt - ctx.now())),
        ...(stream ? { stream: true } : {}),
      };
      const onStep = stream
        ? (p: { step: number; steps: number; preview?: Preview }) => stepped(i, p.step, p.steps, p.preview)
        : undefined;
      const { body, worker } = await ctx.pool.call(
        path,
        model.name,
        message,
        inner.signal,
        chunk.count,
        onStep,
      );
      const r = BatchResponse.safeParse(body);
      const bad = (why: string) =>
        new ApiError(502, "worker_error", `worker ${worker} sent a bad response: ${why}`);
      if (!r.success) throw bad(r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
      const res = r.data;
      const want = [chunk.count, ...model.shape];
      if (res.shape.length !== want.length || res.shape.some((d, i) => d !== want[i])) {
        throw bad(`shape [${res.shape.join(", ")}], expected [${want.join(", ")}]`);
      }
      if (res.data.byteLength !== chunk.count * sampleBytes) throw bad(`${res.data.byteLength} data bytes`);
      data.set(res.data, chunk.start * sampleBytes);
      steps = res.steps;
      nfe = res.nfe;
      if (res.calls !== undefined) price.calls = res.calls;
      if (res.cost !== undefined) price.cost = res.cost;
      if (res.cost_estimated !== undefined) price.costEstimated = price.costEstimated || res.cost_estimated;
      if (res.grid !== undefined) price.grid = res.grid;
      if (res.rho !== undefined) price.rho = res.rho;
      queue = Math.max(queue, res.timings.queue_ms);
      compute = Math.max(compute, res.timings.compute_ms);
      reached[i] = Infinity;
      finished[i] = expected;
      done += chunk.count;
      // Streamed, the step stays the request's (it never goes back); else the finished samples'.
      const step = stream && done < n ? Math.max(0, reported) : steps;
      report({ step, steps, done, n, phase: done === n ? "done" : "running" });
    }));
  } catch (e) {
    inner.abort(e);
    throw e;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
  return {
    id,
    model,
    steps,
    nfe,
    ...price,
    shape: [n, ...model.shape],
    data,
    timings: { queue_ms: queue, compute_ms: compute, total_ms: ctx.now() - t0 },
  };
}

/** Splits [0, n) into runs of at most `max`. */
function chunkRanges(n: number, max: number): { start: number; count: number }[] {
  const out = [];
  for (let start = 0; start < n; start += max) out.push({ start, count: Math.min(max, n - start) });
  return out;
}

/** Samples for a request already checked against `model`. */
export async function runSamples(
  req: SamplesRequest,
  model: ModelInfo,
  firstSeed: number,
  latents: Uint8Array | undefined,
  ctx: RunContext,
): Promise<RunOutcome> {
  const id = newId();
  const n = requestedCount(req);
  const seeds = seedsFrom(firstSeed, n);
  const sampleBytes = shapeSize(model.shape) * 4;
  const plan = planOf(req, model, "sample");
  const base = { v: PROTOCOL_VERSION, model: model.name, ...batchMessageFields(req) };
  const chunks = chunkRanges(n, model.limits.max_batch).map(({ start, count }, i) => ({
    start,
    count,
    message: {
      ...base,
      id: `${id}.${i}`,
      seeds: seeds.slice(start, start + count),
      latents: latents?.subarray(start * sampleBytes, (start + count) * sampleBytes),
      // The first sample's x̂₀ as it forms (the chunk that holds it).
      ...(i === 0 && ctx.preview && ctx.onProgress ? { preview: true } : {}),
    },
  }));
  const out = await runChunks("/v1/batch", id, chunks, model, n, plan?.steps ?? 0, ctx);
  return { ...out, seeds, solver: plan?.solver ?? req.solver ?? DEFAULT_SOLVER };
}

/** Latents for images [n, …sample shape] given as float32 values in model space. */
export async function runEncode(
  req: Omit<EncodeRequest, "images" | "tensor">,
  model: ModelInfo,
  images: Float32Array,
  n: number,
  ctx: RunContext,
): Promise<RunOutcome> {
  const id = newId();
  const per = shapeSize(model.shape);
  const plan = planOf(req, model, "encode");
  const chunks = chunkRanges(n, model.limits.max_batch).map(({ start, count }, i) => {
    const slice = images.slice(start * per, (start + count) * per);
    return {
      start,
      count,
      message: {
        v: PROTOCOL_VERSION,
        model: model.name,
        ...workerSolveFields(req, "encode"),
        ...conditioningFields(req),
        id: `${id}.${i}`,
        images: new Uint8Array(slice.buffer, slice.byteOffset, slice.byteLength),
        shape: [count, ...model.shape],
      },
    };
  });
  const out = await runChunks("/v1/encode", id, chunks, model, n, plan?.steps ?? 0, ctx);
  return { ...out, seeds: [], solver: plan?.solver ?? req.solver ?? DEFAULT_SOLVER };
}

/**
 * img2img (core/api/checks.ts `img2imgLegs`): the images [n, …sample shape] encoded from t_min to
 * t = strength · t_max, then sampled back from t with the same solver settings, as two runs of worker
 * calls. Progress covers both: `steps_total` is both legs' steps, the encoding's events keep `done` at
 * 0 and phase `running`. `nfe`, `calls` and `cost` add both legs up (per sample trajectory), `steps`
 * is the sampling's; the timings add up too.
 */
export async function runImg2Img(
  req: SamplesRequest,
  model: ModelInfo,
  legs: Img2ImgLegs,
  firstSeed: number,
  images: Float32Array,
  ctx: RunContext,
): Promise<RunOutcome> {
  const t0 = ctx.now();
  const n = requestedCount(req);
  const chunks = Math.ceil(n / model.limits.max_batch);
  const encodeSteps = (planOf(legs.encode, model, "encode")?.steps ?? 0) * chunks;
  const total = encodeSteps + (planOf(legs.sample, model, "sample")?.steps ?? 0) * chunks;
  const on = ctx.onProgress;
  const encoded = await runEncode(legs.encode, model, images, n, {
    ...ctx,
    preview: false,
    onProgress: on &&
      ((p) => on({ ...p, done: 0, phase: p.phase === "queued" ? "queued" : "running", steps_total: total })),
  });
  const sampled = await runSamples(legs.sample, model, firstSeed, encoded.data, {
    ...ctx,
    onProgress: on && ((p) =>
      on({
        ...p,
        phase: p.phase === "queued" ? "running" : p.phase,
        steps_done: encodeSteps + p.steps_done,
        steps_total: total,
      })),
  });
  const both = <T extends number>(a: T | undefined, b: T | undefined) =>
    a === undefined || b === undefined ? undefined : a + b;
  const calls = both(encoded.calls, sampled.calls), cost = both(encoded.cost, sampled.cost);
  return {
    ...sampled,
    nfe: encoded.nfe + sampled.nfe,
    ...(calls !== undefined ? { calls } : { calls: undefined }),
    ...(cost !== undefined ? { cost: Number(cost.toFixed(6)) } : { cost: undefined }),
    ...(encoded.costEstimated || sampled.costEstimated ? { costEstimated: true } : {}),
    timings: {
      queue_ms: encoded.timings.queue_ms + sampled.timings.queue_ms,
      compute_ms: encoded.timings.compute_ms + sampled.timings.compute_ms,
      total_ms: ctx.now() - t0,
    },
  };
}

/** Images of an encode request (a tensor) as float32, or 422 when a value is not finite or too large. */
export function encodeTensor(req: EncodeRequest): Float32Array {
  return tensorValues(req.tensor!, "tensor");
}

/** A request's tensor `field` as float32, or 422 naming `field.data` when a value is not finite or too large. */
export function tensorValues(t: { data: string | Uint8Array }, field: string): Float32Array {
  const values = float32FromBytes(tensorBytes(t.data));
  const bad = firstOutOfRange(values);
  if (bad) {
    throw invalidRequest(`${field}.data: ${outOfRangeMessage(bad)}`, [{
      path: [field, "data"],
      message: outOfRangeMessage(bad),
      code: "invalid_value",
    }]);
  }
  return values;
}

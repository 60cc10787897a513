/**
 * Data parallelism for a training graph (`--parallel P` of the trainers): every batch is split into P
 * equal parts along its first axis, each part's loss and gradients are computed by its own ORT session
 * on its own worker thread (training/parallel_worker.ts), and the P results are averaged.
 *
 * Why: on a few cores ONNX Runtime spreads a training graph's many small and memory-bound nodes over its
 * intra-op threads less well than the few large ones of a forward pass, so P sessions of one thread on
 * 1/P of the batch each finish a step sooner than one session of P threads (docs/training.md measures it).
 *
 * The average equals the whole batch's loss and gradient when the loss is a mean over the batch, which
 * {@link ParallelGradients.create} checks (the loss node is a ReduceMean over all axes). The sums run in
 * a fixed order, so a run is deterministic for a given P and thread count; different P give different
 * roundings, so a run's segments record P, and a resumed run continues bit for bit only with the same P.
 *
 * Parameters, feeds and results travel through SharedArrayBuffers, and each step is started and
 * finished through flags in a shared Int32Array, so a step sends no message.
 */
import type { Provider, TensorInit } from "../onnx/ort.ts";
import type { TrainingGraph } from "../onnx/grad.ts";
import { encodeModel } from "../onnx/proto.ts";
import { TrainError } from "./optimizer.ts";

/** A parameter's place in the shared parameter and result buffers. */
export interface ParamSlot {
  name: string;
  grad: string;
  dims: readonly number[];
  offset: number;
  size: number;
}

/** A feed's place in a worker's shared feed buffer. */
export interface FeedLayout {
  name: string;
  type: "float32" | "int64" | "int32";
  dims: number[];
  offset: number;
  bytes: number;
}

/** What a worker gets once. */
export interface WorkerInit {
  index: number;
  workers: number;
  model: Uint8Array;
  providers: readonly Provider[];
  threads: number;
  loss: string;
  params: ParamSlot[];
  /** Int32 flags: commands [0, P), completions [P, 2P). */
  control: SharedArrayBuffer;
  paramBuffer: SharedArrayBuffer;
  /** Float32: the loss, then every gradient at 1 + its offset. */
  resultBuffer: SharedArrayBuffer;
  /** Int32 length and UTF-8 text of the last error. */
  errorBuffer: SharedArrayBuffer;
}

/** Commands to a worker and its completion states. */
export const RUN = 1, STOP = 2, OK = 1, FAILED = 2;

const ERROR_BYTES = 4096;

interface Part {
  worker: Worker;
  results: Float32Array;
  error: Uint8Array;
  feeds?: { key: string; bytes: Uint8Array; layout: FeedLayout[] };
}

/** The loss and gradients of a batch, from P workers. */
export class ParallelGradients {
  readonly #control: Int32Array;
  readonly #params: Float32Array;
  readonly #grads: Record<string, Float32Array>;
  #closed = false;

  private constructor(
    readonly graph: TrainingGraph,
    readonly slots: ParamSlot[],
    control: SharedArrayBuffer,
    params: SharedArrayBuffer,
    readonly parts: Part[],
  ) {
    this.#control = new Int32Array(control);
    this.#params = new Float32Array(params);
    this.#grads = Object.fromEntries(slots.map((s) => [s.name, new Float32Array(s.size)]));
  }

  /** Starts `workers` workers, each with a session of `threads` threads. */
  static async create(
    graph: TrainingGraph,
    workers: number,
    threads: number,
    providers: readonly Provider[],
  ): Promise<ParallelGradients> {
    if (!Number.isInteger(workers) || workers < 2) throw new TrainError(`parallel: ${workers} workers`);
    checkMeanLoss(graph);
    let offset = 0;
    const slots = graph.params.map((p) => {
      if (p.dtype !== "float32") throw new TrainError(`parallel: parameter '${p.name}' is not float32`);
      const size = p.dims.reduce((a, b) => a * b, 1);
      const slot = { name: p.name, grad: p.grad, dims: p.dims, offset, size };
      offset += size;
      return slot;
    });
    const control = new SharedArrayBuffer(4 * 2 * workers);
    const params = new SharedArrayBuffer(4 * offset);
    const model = encodeModel(graph.model);
    const parts: Part[] = [];
    try {
      for (let index = 0; index < workers; index++) {
        const worker = new Worker(new URL("./parallel_worker.ts", import.meta.url).href, { type: "module" });
        const resultBuffer = new SharedArrayBuffer(4 * (1 + offset)),
          errorBuffer = new SharedArrayBuffer(ERROR_BYTES);
        parts.push({ worker, results: new Float32Array(resultBuffer), error: new Uint8Array(errorBuffer) });
        const init: WorkerInit = {
          index,
          workers,
          model,
          providers,
          threads,
          loss: graph.loss,
          params: slots,
          control,
          paramBuffer: params,
          resultBuffer,
          errorBuffer,
        };
        await reply(worker, { kind: "init", init }, "ready");
        // a worker that dies ends the step it was on with its error instead of leaving it waiting
        const part = parts[index];
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          writeError(part.error, `the worker stopped: ${e.message}`);
          const ctrl = new Int32Array(control);
          Atomics.store(ctrl, workers + index, FAILED);
          Atomics.notify(ctrl, workers + index);
        };
      }
    } catch (e) {
      for (const p of parts) p.worker.terminate();
      throw e;
    }
    return new ParallelGradients(graph, slots, control, params, parts);
  }

  /**
   * The loss and gradients of the batch `data` (the graph's data inputs, each with the batch on its first
   * axis) at `params`. The gradients are this object's own arrays, overwritten by the next call.
   * `meanwhile` runs on this thread while the workers compute (its error is thrown once they are done).
   */
  async run(
    data: Record<string, TensorInit>,
    params: Readonly<Record<string, ArrayLike<number>>>,
    meanwhile?: () => void,
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    if (this.#closed) throw new TrainError("parallel: the workers were released");
    const P = this.parts.length;
    for (const s of this.slots) this.#params.set(params[s.name], s.offset);
    await this.#share(data);
    const ctrl = this.#control;
    for (let i = 0; i < P; i++) {
      Atomics.store(ctrl, P + i, 0);
      Atomics.store(ctrl, i, RUN);
      Atomics.notify(ctrl, i);
    }
    let meanwhileError: unknown;
    try {
      meanwhile?.();
    } catch (e) {
      meanwhileError = e;
    }
    for (let i = 0; i < P; i++) {
      const wait = Atomics.waitAsync(ctrl, P + i, 0);
      if (wait.async) await wait.value;
    }
    if (meanwhileError !== undefined) throw meanwhileError;
    const failed = this.parts.findIndex((_, i) => Atomics.load(ctrl, P + i) === FAILED);
    if (failed >= 0) {
      const e = this.parts[failed].error;
      const n = new DataView(e.buffer).getInt32(0);
      throw new TrainError(`worker ${failed}: ${new TextDecoder().decode(e.slice(4, 4 + n))}`);
    }
    // the mean over the parts, in a fixed order, in one pass over the results
    let loss = 0;
    for (const p of this.parts) loss += p.results[0];
    const results = this.parts.map((p) => p.results), inv = 1 / P;
    for (const s of this.slots) {
      const g = this.#grads[s.name], end = 1 + s.offset + s.size;
      if (P === 2) {
        const [a, b] = results;
        for (let at = 1 + s.offset, j = 0; at < end; at++, j++) g[j] = (a[at] + b[at]) * 0.5;
        continue;
      }
      for (let at = 1 + s.offset, j = 0; at < end; at++, j++) {
        let sum = 0;
        for (const r of results) sum += r[at];
        g[j] = sum * inv;
      }
    }
    return { loss: loss / P, grads: this.#grads };
  }

  /** Writes each worker's part of `data` into its shared feed buffer (new buffers when the shapes change). */
  async #share(data: Record<string, TensorInit>): Promise<void> {
    const P = this.parts.length;
    const entries = Object.entries(data);
    const batch = entries[0]?.[1].dims[0];
    if (batch === undefined) throw new TrainError("parallel: a batch without data feeds");
    if (batch % P !== 0) {
      throw new TrainError(`parallel: a batch of ${batch} does not split into ${P} equal parts`);
    }
    const part = batch / P;
    const layout: FeedLayout[] = [];
    let offset = 0;
    for (const [name, t] of entries) {
      if (t.type !== "float32" && t.type !== "int64" && t.type !== "int32") {
        throw new TrainError(`parallel: feed '${name}' is ${t.type}`);
      }
      if (t.dims[0] !== batch) {
        throw new TrainError(`parallel: feed '${name}' has ${t.dims[0]} rows, the batch ${batch}`);
      }
      const bytes = t.data.byteLength / P;
      layout.push({ name, type: t.type, dims: [part, ...t.dims.slice(1)], offset, bytes });
      offset += Math.ceil(bytes / 8) * 8;
    }
    const key = JSON.stringify(layout);
    for (let i = 0; i < P; i++) {
      const p = this.parts[i];
      if (p.feeds?.key !== key) {
        const buffer = new SharedArrayBuffer(offset);
        await reply(p.worker, { kind: "feeds", layout, buffer }, "feeds");
        p.feeds = { key, bytes: new Uint8Array(buffer), layout };
      }
      for (const f of layout) {
        const t = data[f.name].data;
        p.feeds.bytes.set(new Uint8Array(t.buffer, t.byteOffset + i * f.bytes, f.bytes), f.offset);
      }
    }
  }

  /** Stops the workers (their sessions are released). */
  release(): void {
    if (this.#closed) return;
    this.#closed = true;
    const P = this.parts.length;
    for (let i = 0; i < P; i++) {
      Atomics.store(this.#control, i, STOP);
      Atomics.notify(this.#control, i);
    }
  }
}

/** Refuses a graph whose loss is not a mean over the batch (averaging the parts would then be wrong). */
function checkMeanLoss(graph: TrainingGraph): void {
  const node = graph.model.graph?.node?.find((n) => n.output?.includes(graph.loss));
  const axes = node?.attribute?.find((a) => a.name === "axes");
  if (node?.opType !== "ReduceMean" || axes || (node.input?.length ?? 0) > 1) {
    throw new TrainError(
      `parallel: the loss '${graph.loss}' is not a mean over the batch (${node?.opType ?? "no node"}), ` +
        "so the parts' results cannot be averaged",
    );
  }
}

/** Writes an error's text where a worker's errors go: an Int32 length, then UTF-8. */
export function writeError(buffer: Uint8Array, message: string): void {
  const text = new TextEncoder().encode(message).slice(0, buffer.length - 4);
  new DataView(buffer.buffer).setInt32(0, text.length);
  buffer.set(text, 4);
}

/**
 * Posts `message` to `worker` and waits for its answer of kind `kind` (an error answer, or the worker's
 * death, throws); the worker's error handler is restored afterwards.
 */
function reply(worker: Worker, message: unknown, kind: string): Promise<void> {
  const onerror = worker.onerror;
  return new Promise<void>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as { kind: string; message?: string };
      if (m.kind === kind) resolve();
      else reject(new TrainError(`parallel worker: ${m.message ?? m.kind}`));
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new TrainError(`parallel worker: ${e.message}`));
    };
    worker.postMessage(message);
  }).finally(() => {
    worker.onerror = onerror;
  });
}

/**
 * One worker of training/parallel.ts: an ORT session of the training graph on this thread, computing the
 * loss and gradients of its part of every batch. Parameters, feeds and results travel through shared
 * memory; each step is started and finished by flags in a shared Int32Array (no message per step).
 */
import { createSession, runSession, type TensorInit } from "../onnx/ort.ts";
import type { InferenceSession } from "../onnx/ort.ts";
import { FAILED, type FeedLayout, OK, STOP, type WorkerInit, writeError } from "./parallel.ts";

const worker = self as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: unknown): void;
  close(): void;
};

let session: InferenceSession | undefined;
let init: WorkerInit | undefined;
let feeds: { layout: FeedLayout[]; bytes: Uint8Array } | undefined;

/** The tensors of this worker's part of the batch and the parameters, copied out of shared memory (ORT refuses it). */
function partFeeds(params: Float32Array): Record<string, TensorInit> {
  const out: Record<string, TensorInit> = {};
  for (const f of feeds!.layout) {
    const bytes = feeds!.bytes.slice(f.offset, f.offset + f.bytes).buffer;
    out[f.name] = f.type === "int64"
      ? { type: "int64", data: new BigInt64Array(bytes), dims: f.dims }
      : f.type === "int32"
      ? { type: "int32", data: new Int32Array(bytes), dims: f.dims }
      : { type: "float32", data: new Float32Array(bytes), dims: f.dims };
  }
  for (const p of init!.params) {
    out[p.name] = { type: "float32", data: params.slice(p.offset, p.offset + p.size), dims: p.dims };
  }
  return out;
}

async function loop(): Promise<void> {
  const { index, workers } = init!;
  const ctrl = new Int32Array(init!.control);
  const params = new Float32Array(init!.paramBuffer);
  const results = new Float32Array(init!.resultBuffer);
  const error = new Uint8Array(init!.errorBuffer);
  for (;;) {
    const wait = Atomics.waitAsync(ctrl, index, 0);
    if (wait.async) await wait.value;
    const command = Atomics.exchange(ctrl, index, 0);
    if (command === STOP) break;
    let done = OK;
    try {
      const out = await runSession(session!, partFeeds(params), [
        init!.loss,
        ...init!.params.map((p) => p.grad),
      ]);
      results[0] = Number(out[init!.loss].data[0]);
      for (const p of init!.params) results.set(out[p.grad].data as Float32Array, 1 + p.offset);
    } catch (e) {
      writeError(error, e instanceof Error ? e.message : String(e));
      done = FAILED;
    }
    Atomics.store(ctrl, workers + index, done);
    Atomics.notify(ctrl, workers + index);
  }
  await session?.release?.();
  worker.close();
}

worker.onmessage = async (e: MessageEvent) => {
  const m = e.data as { kind: "init"; init: WorkerInit } | {
    kind: "feeds";
    layout: FeedLayout[];
    buffer: SharedArrayBuffer;
  };
  try {
    if (m.kind === "init") {
      init = m.init;
      session =
        (await createSession(init.model, { providers: init.providers, threads: init.threads })).session;
      worker.postMessage({ kind: "ready" });
      loop();
    } else {
      feeds = { layout: m.layout, bytes: new Uint8Array(m.buffer) };
      worker.postMessage({ kind: "feeds" });
    }
  } catch (err) {
    worker.postMessage({ kind: "error", message: err instanceof Error ? err.message : String(err) });
  }
};

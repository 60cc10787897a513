/**
 * The inference thread: owns the ONNX Runtime sessions and nothing else. `InferenceSession.run()`
 * blocks its thread for the whole call, so it runs here (a Web Worker under Deno, worker_threads under
 * Node) while the network loop and the scheduler stay responsive on the main thread.
 *
 * Sessions are created once per (model, graph) at start-up and released only at close, or when a reload
 * retires a model's old version (creating and releasing sessions leaks memory upstream, so the worker
 * reloads only the folders that changed; gpu-worker/reload.ts). Each model tries the configured providers in order
 * (by default CUDA, then CPU; docs/backends.md) and reports the one that accepted it, then runs one
 * warm-up call per graph.
 * Tensors travel as ArrayBuffers, transferred, never copied by the message channel.
 *
 * Messages: see {@link ThreadRequest} and {@link ThreadReply} in inference.ts.
 */
import { readFileSync } from "node:fs";
import {
  createSession,
  type InferenceSession,
  type Provider,
  runSession,
  type SpinPolicy,
  type TensorInit,
} from "../onnx/ort.ts";
import {
  spinPolicy,
  type ThreadLoadModel,
  type ThreadReply,
  type ThreadRequest,
  type WireTensor,
} from "./inference.ts";
import { JVP_INPUTS, ODE_TANGENT_INPUTS } from "../onnx/tangent_inputs.ts";

interface Port {
  post(msg: ThreadReply, transfer?: ArrayBuffer[]): void;
  listen(handler: (msg: ThreadRequest) => void): void;
}

async function parentPort(): Promise<Port> {
  const g = globalThis as unknown as {
    postMessage?: (msg: unknown, transfer?: ArrayBuffer[]) => void;
    addEventListener?: (type: string, fn: (e: MessageEvent) => void) => void;
    WorkerGlobalScope?: unknown;
  };
  if (g.WorkerGlobalScope !== undefined && g.postMessage && g.addEventListener) {
    return {
      post: (msg, transfer) => g.postMessage!(msg, transfer ?? []),
      listen: (handler) => g.addEventListener!("message", (e) => handler(e.data as ThreadRequest)),
    };
  }
  const wt = await import("node:worker_threads");
  const port = wt.parentPort;
  if (!port) throw new Error("inference_thread.ts must run as a worker thread");
  return {
    post: (msg, transfer) => port.postMessage(msg, transfer ?? []),
    listen: (handler) => port.on("message", handler),
  };
}

const sessions = new Map<string, InferenceSession>();
const key = (model: string, graph: string) => `${model}\u0000${graph}`;

function toInit(t: WireTensor): TensorInit {
  if (t.type === "int64") return { type: "int64", data: new BigInt64Array(t.data), dims: t.dims };
  return { type: "float32", data: new Float32Array(t.data), dims: t.dims };
}

/** A batch-1 input for a warm-up call, by input name (the eps and JVP graphs under the model's names). */
function warmupFeeds(
  session: InferenceSession,
  model: ThreadLoadModel,
  graph: string,
): Record<string, TensorInit> {
  const feeds: Record<string, TensorInit> = {};
  const dim = model.shape.reduce((a, b) => a * b, 1);
  const mapped = (graph === "eps" || graph === "jvp") && model.names;
  const names = mapped ? model.names! : { x: "x", t: "t", class: "class" };
  const time = 0.5 * model.timeScale + (model.timeOffset ?? 0);
  for (const name of session.inputNames) {
    if (name === names.class) feeds[name] = { type: "int64", data: new BigInt64Array([0n]), dims: [1] };
    else if (name === names.t && mapped && model.timestep === "int64") {
      feeds[name] = {
        type: "int64",
        data: BigInt64Array.of(BigInt(Math.max(0, Math.round(time)))),
        dims: [1],
      };
    } else if (name === names.t) {
      feeds[name] = { type: "float32", data: new Float32Array([time]), dims: [1] };
    } else if (name === "dt") {
      feeds[name] = { type: "float32", data: new Float32Array([model.timeScale]), dims: [1] };
    } else if (name === ODE_TANGENT_INPUTS.out || name === ODE_TANGENT_INPUTS.x) {
      feeds[name] = { type: "float32", data: new Float32Array(1), dims: [1] };
    } else feeds[name] = { type: "float32", data: new Float32Array(dim), dims: [1, ...model.shape] };
  }
  return feeds;
}

async function load(msg: Extract<ThreadRequest, { type: "load" }>, port: Port): Promise<void> {
  const loaded: Extract<ThreadReply, { type: "loaded" }>["models"] = [];
  const failed: Extract<ThreadReply, { type: "loaded" }>["failed"] = [];
  // Every session the thread will hold, across models (those of a reload beside the ones it holds): the
  // spin policy follows from how many there are.
  const count = sessions.size + msg.models.reduce((n, m) => n + Object.keys(m.graphs).length, 0);
  const spin = spinPolicy(msg.options.spinning, count);
  for (const model of msg.models) {
    try {
      loaded.push(await loadModel(model, msg.options, spin));
    } catch (e) {
      // One model that ONNX Runtime refuses (or whose warm-up call fails) is left out; the others load.
      for (const graph of Object.keys(model.graphs)) {
        const s = sessions.get(key(model.name, graph));
        sessions.delete(key(model.name, graph));
        await s?.release().catch(() => {});
      }
      failed.push({ name: model.name, message: (e instanceof Error ? e.message : String(e)).split("\n")[0] });
    }
  }
  port.post({ type: "loaded", models: loaded, failed });
}

async function loadModel(
  model: ThreadLoadModel,
  options: Extract<ThreadRequest, { type: "load" }>["options"],
  spin: SpinPolicy,
): Promise<Extract<ThreadReply, { type: "loaded" }>["models"][number]> {
  const t0 = performance.now();
  let provider: Provider | undefined;
  const skipped: Record<string, string> = {};
  let providers = options.providers;
  const inputs: Record<string, string[]> = {}, outputs: Record<string, string[]> = {};
  for (const [graph, path] of Object.entries(model.graphs)) {
    const bytes = graph === "jvp" && model.odeJvp
      ? await alongOdeTangent(readFileSync(path), model)
      : readFileSync(path);
    const created = await createSession(bytes, {
      providers,
      threads: options.intraOpThreads,
      spin,
    });
    // Once a provider has accepted one graph of the model, use it for the others.
    provider = created.provider;
    providers = [provider];
    Object.assign(skipped, created.skipped);
    sessions.set(key(model.name, graph), created.session);
    inputs[graph] = [...created.session.inputNames];
    outputs[graph] = [...created.session.outputNames];
  }
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  if (options.warmup !== false) {
    for (const graph of Object.keys(model.graphs)) {
      const s = sessions.get(key(model.name, graph))!;
      await runSession(s, warmupFeeds(s, model, graph));
    }
  }
  return {
    name: model.name,
    provider: provider!,
    spin,
    skipped,
    inputs,
    outputs,
    loadMs,
    warmupMs: performance.now() - t1,
  };
}

/** The JVP graph that also makes its tangent of x from its own output (onnx/ode_jvp.ts). */
async function alongOdeTangent(bytes: Uint8Array, model: ThreadLoadModel): Promise<Uint8Array> {
  // loaded on first use: only runs that call the JVP graph pay for the protobuf module
  const { odeJvpBytes } = await import("../onnx/ode_jvp.ts");
  const names = { x: model.names?.x ?? "x", out: model.names?.eps ?? "eps", dx: JVP_INPUTS.x };
  try {
    return odeJvpBytes(bytes, names);
  } catch (e) {
    throw new Error(`the jvp graph cannot take the ODE's tangent: ${e instanceof Error ? e.message : e}`);
  }
}

async function run(msg: Extract<ThreadRequest, { type: "run" }>, port: Port): Promise<void> {
  const session = sessions.get(key(msg.model, msg.graph));
  if (!session) {
    port.post({ type: "error", id: msg.id, message: `no session for ${msg.model}/${msg.graph}` });
    return;
  }
  const feeds: Record<string, TensorInit> = {};
  for (const [name, t] of Object.entries(msg.feeds)) feeds[name] = toInit(t);
  const t0 = performance.now();
  const result = await runSession(session, feeds);
  const ms = performance.now() - t0;
  // ORT's output tensors own fresh buffers: hand them over by transfer, without a copy. Should the
  // binding ever return a buffer that cannot be transferred (a view, an external buffer), copy it.
  const posted = (copy: boolean) => {
    const outputs: Record<string, WireTensor> = {};
    const transfer = new Set<ArrayBuffer>();
    for (const [name, t] of Object.entries(result)) {
      const f = t.data as Float32Array;
      const whole = !copy && f.buffer instanceof ArrayBuffer && f.byteOffset === 0 &&
        f.byteLength === f.buffer.byteLength;
      const data = whole ? f.buffer as ArrayBuffer : Float32Array.from(f).buffer;
      outputs[name] = { type: "float32", data, dims: t.dims };
      transfer.add(data);
    }
    port.post({ type: "result", id: msg.id, outputs, ms }, [...transfer]);
  };
  try {
    posted(false);
  } catch {
    posted(true);
  }
}

/** Releases the sessions of models loaded earlier (a reload retires an old version, gpu-worker/reload.ts). */
async function unload(names: string[], port: Port): Promise<void> {
  for (const name of names) {
    for (const [k, s] of sessions) {
      if (!k.startsWith(`${name}\u0000`)) continue;
      sessions.delete(k);
      await s.release().catch(() => {});
    }
  }
  port.post({ type: "unloaded" });
}

async function close(port: Port): Promise<void> {
  for (const s of sessions.values()) await s.release();
  sessions.clear();
  port.post({ type: "closed" });
}

const port = await parentPort();
// Messages are handled one at a time, in order: ORT calls never overlap on this thread.
let chain: Promise<void> = Promise.resolve();
port.listen((msg) => {
  chain = chain.then(async () => {
    try {
      if (msg.type === "load") await load(msg, port);
      else if (msg.type === "run") await run(msg, port);
      else if (msg.type === "unload") await unload(msg.names, port);
      else if (msg.type === "close") await close(port);
    } catch (e) {
      port.post({
        type: "error",
        id: msg.type === "run" ? msg.id : undefined,
        message: e instanceof Error ? e.message : String(e),
      });
    }
  });
});
port.post({ type: "started" });

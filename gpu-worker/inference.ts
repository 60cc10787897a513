/**
 * The main thread's handle on the inference thread (inference_thread.ts): start it, load every model's
 * sessions once, run batches, close. One call at a time reaches ORT; calls queue in order.
 */
import type { Provider, SpinPolicy } from "../onnx/ort.ts";
import { type GraphKind, type LoadedModel, servesOdeTangent } from "./manifest.ts";

/** A tensor on the wire between threads: its bytes travel by transfer. */
export interface WireTensor {
  type: "float32" | "int64";
  data: ArrayBuffer;
  dims: number[];
}

export interface ThreadLoadModel {
  name: string;
  shape: number[];
  timeScale: number;
  /** The manifest's time offset (the model sees t × timeScale + timeOffset). */
  timeOffset?: number;
  /** The eps and JVP graphs' input and output names by role, where not the standard x, t, class, eps. */
  names?: { x: string; t: string; class: string; eps?: string };
  /**
   * Serve the JVP graph along the ODE's tangent too (onnx/ode_jvp.ts: the graph also takes `tangent_out`
   * and `tangent_x` and makes its tangent of x from its own output; manifest.ts `servesOdeTangent`).
   */
  odeJvp?: boolean;
  /** The eps and JVP graphs' time input type (default float32). */
  timestep?: "float32" | "int64";
  graphs: Partial<Record<GraphKind, string>>;
}

export interface ThreadOptions {
  /** Execution providers to try in order (default CUDA, then CPU). */
  providers: Provider[];
  /** ORT intra-op threads per session (ORT's default when omitted). */
  intraOpThreads?: number;
  /**
   * Whether ORT's intra-op threads spin-wait: true spins as ORT does by default (also between calls),
   * false never spins, undefined (auto) chooses per session from the call pattern ({@link spinPolicy});
   * a policy name sets that policy.
   */
  spinning?: boolean | SpinPolicy;
  /** One batch-1 call per graph after loading (default true). */
  warmup?: boolean;
}

/**
 * The spin policy of every session of an inference thread that holds `sessions` sessions (all models,
 * all graphs; on a reload, with the ones it already holds), under the `spinning` setting
 * (`GENIE_WORKER_SPIN`: on, off, a policy's name, or auto when undefined):
 *
 * - on → `"on"`, off → `"off"`, a policy's name → that policy, for every session;
 * - auto, one session → `"on"`: the only session there is runs every call, back to back, so its threads
 *   spinning between calls answer the next call sooner and compete with nothing;
 * - auto, more than one session (a model with eps and jvp or head graphs, or several models) → `"run"`:
 *   any call may follow any other (guided GENIE's eps and JVP calls alternate, requests of different
 *   models or solvers interleave), and a session whose threads kept spinning after its call would take
 *   the cores of the next session's call; spinning only inside a call keeps its speed within the call.
 *   `"brief"` (0.5 ms after a call) serves a lone stream of batch-1 calls of one graph about as fast as
 *   `"on"`, but measured beside another model's calls it slowed the larger request by about 10 %
 *   (docs/performance.md), so auto does not choose it; `GENIE_WORKER_SPIN=brief` does.
 *
 * onnxruntime-node has no shared (global) thread pool to give the sessions instead (onnx/ort.ts).
 */
export function spinPolicy(spinning: boolean | SpinPolicy | undefined, sessions: number): SpinPolicy {
  if (typeof spinning === "string") return spinning;
  if (spinning === true) return "on";
  if (spinning === false) return "off";
  return sessions <= 1 ? "on" : "run";
}

export type ThreadRequest =
  | { type: "load"; models: ThreadLoadModel[]; options: ThreadOptions }
  | { type: "run"; id: number; model: string; graph: GraphKind; feeds: Record<string, WireTensor> }
  | { type: "unload"; names: string[] }
  | { type: "close" };

export interface LoadedModelReport {
  name: string;
  /** The execution provider that accepted the model. */
  provider: Provider;
  /** How its sessions' intra-op threads wait for work ({@link spinPolicy}). */
  spin: SpinPolicy;
  /** Providers tried first and why they failed. */
  skipped: Record<string, string>;
  inputs: Record<string, string[]>;
  outputs: Record<string, string[]>;
  loadMs: number;
  warmupMs: number;
}

export type ThreadReply =
  | { type: "started" }
  | {
    type: "loaded";
    models: LoadedModelReport[];
    /** Models ONNX Runtime refused, or whose batch-1 warm-up call failed, with the first line of why. */
    failed?: { name: string; message: string }[];
  }
  | { type: "result"; id: number; outputs: Record<string, WireTensor>; ms: number }
  | { type: "error"; id?: number; message: string }
  | { type: "unloaded" }
  | { type: "closed" };

/** The outcome of loading models: their reports, and why the others failed. */
export interface LoadReport {
  models: Map<string, LoadedModelReport>;
  failed: Map<string, string>;
}

/** What a batch run returns: float32 outputs by name and the time spent inside ORT. */
export interface BatchOutputs {
  outputs: Record<string, Float32Array>;
  ms: number;
}

/** Anything that runs a batch on a model graph (the inference thread, or a stand-in in tests). */
export interface Inference {
  run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs>;
  close(): Promise<void>;
  /**
   * Loads more models while running (a reload, gpu-worker/reload.ts): each under its manifest name, which
   * must be new; reports the ones loaded and the ones that failed. Backends without it cannot reload.
   */
  load?(models: LoadedModel[]): Promise<LoadReport>;
  /** Releases the sessions of models loaded earlier (after their last call). */
  unload?(names: string[]): Promise<void>;
  /** Why the backend can no longer run anything (a crashed thread), if it cannot. */
  readonly failure?: Error;
}

interface ThreadHandle {
  post(msg: ThreadRequest, transfer?: ArrayBuffer[]): void;
  onMessage(fn: (msg: ThreadReply) => void): void;
  onError(fn: (err: unknown) => void): void;
  terminate(): void;
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** Spawns the thread: a module Web Worker under Deno, a worker_threads Worker under Node. */
async function spawn(url: URL): Promise<ThreadHandle> {
  if (isDeno || typeof Worker !== "undefined" && !("process" in globalThis)) {
    const w = new Worker(url.href, { type: "module" });
    return {
      post: (msg, transfer) => w.postMessage(msg, transfer ?? []),
      onMessage: (fn) => w.addEventListener("message", (e) => fn((e as MessageEvent).data)),
      onError: (fn) =>
        w.addEventListener("error", (e) => {
          (e as Event).preventDefault();
          fn((e as ErrorEvent).error ?? new Error((e as ErrorEvent).message));
        }),
      terminate: () => w.terminate(),
    };
  }
  const { Worker: NodeWorker } = await import("node:worker_threads");
  const w = new NodeWorker(url);
  return {
    post: (msg, transfer) => w.postMessage(msg, transfer ?? []),
    onMessage: (fn) => w.on("message", fn),
    onError: (fn) => w.on("error", fn),
    terminate: () => void w.terminate(),
  };
}

/**
 * The location of the thread's module: inference_thread.ts beside this file, or inference_thread.mjs
 * beside a bundle (under Node.js); GENIE_INFERENCE_THREAD overrides it (a path or URL).
 */
function threadModuleUrl(): URL {
  const proc =
    (globalThis as { process?: { env?: Record<string, string | undefined>; cwd(): string } }).process;
  const override = proc?.env?.GENIE_INFERENCE_THREAD;
  if (override) return new URL(override, `file://${proc!.cwd()}/`);
  const ext = /\.(m?js|ts)$/.exec(new URL(import.meta.url).pathname)?.[1] ?? "ts";
  return new URL(`./inference_thread.${ext}`, import.meta.url);
}

/** The ORT sessions of every model, in their own thread. */
export class InferenceThread implements Inference {
  #thread: ThreadHandle;
  #next = 1;
  #waiting = new Map<number, { resolve: (o: BatchOutputs) => void; reject: (e: Error) => void }>();
  /** Control replies awaited, in the order their requests were posted (the thread answers in order). */
  #control: { resolve: (m: ThreadReply) => void; reject: (e: Error) => void }[] = [];
  #options: ThreadOptions | undefined;
  #closed = false;
  #failure: Error | undefined;
  #failureListeners: ((err: Error) => void)[] = [];
  /** Per model: provider, input/output names, load and warm-up times. */
  readonly models = new Map<string, LoadedModelReport>();
  /** Models that failed to load or warm up (left out of {@link models}), with why. */
  readonly failed = new Map<string, string>();

  private constructor(thread: ThreadHandle) {
    this.#thread = thread;
    thread.onMessage((msg) => this.#onMessage(msg));
    thread.onError((err) => this.#fail(err instanceof Error ? err : new Error(String(err))));
  }

  /**
   * Starts the thread and loads every model (sessions, provider fallback, warm-up). A model that fails
   * to load or warm up is left out and listed in {@link failed}; when none loads, start() rejects.
   */
  static async start(
    models: LoadedModel[],
    options: ThreadOptions,
    url = threadModuleUrl(),
  ): Promise<InferenceThread> {
    const thread = new InferenceThread(await spawn(url));
    try {
      await thread.#load(models, options);
    } catch (e) {
      // a thread that failed to start or load is not left running
      thread.#closed = true;
      thread.#thread.terminate();
      throw e;
    }
    return thread;
  }

  async #load(models: LoadedModel[], options: ThreadOptions): Promise<void> {
    this.#options = options;
    await this.#expect("started");
    const reply = await this.#sendLoad(models, options);
    if (reply.type === "loaded") {
      for (const m of reply.models) this.models.set(m.name, m);
      for (const f of reply.failed ?? []) this.failed.set(f.name, f.message);
      // some models failing leaves the others to serve; none loading at all is a failed start
      if (reply.models.length === 0 && this.failed.size > 0) {
        throw new Error([...this.failed].map(([name, message]) => `${name}: ${message}`).join("; "));
      }
    }
  }

  /**
   * Loads more models into the running thread (with the options it started with); calls to the other
   * models wait meanwhile, as the thread handles one message at a time.
   */
  async load(models: LoadedModel[]): Promise<LoadReport> {
    if (this.#closed) throw new Error("the inference thread is closed");
    if (this.#failure) throw this.#failure;
    const reply = await this.#sendLoad(models, this.#options!);
    const report: LoadReport = { models: new Map(), failed: new Map() };
    if (reply.type === "loaded") {
      for (const m of reply.models) this.models.set(m.name, m), report.models.set(m.name, m);
      for (const f of reply.failed ?? []) report.failed.set(f.name, f.message);
    }
    return report;
  }

  /** Releases the sessions of `names` once the calls queued before have run. */
  async unload(names: string[]): Promise<void> {
    if (this.#closed || this.#failure) return;
    await this.#send({ type: "unload", names }, "unloaded");
    for (const name of names) this.models.delete(name);
  }

  #sendLoad(models: LoadedModel[], options: ThreadOptions): Promise<ThreadReply> {
    return this.#send({
      type: "load",
      options,
      models: models.map((m) => ({
        name: m.manifest.name,
        shape: m.manifest.shape,
        timeScale: m.manifest.time.scale,
        timeOffset: m.manifest.time.offset ?? 0,
        names: { x: m.names.x, t: m.names.t, class: m.names.class, eps: m.names.eps },
        timestep: m.timestep,
        odeJvp: servesOdeTangent(m),
        graphs: Object.fromEntries(
          Object.entries(m.graphPaths).filter(([kind]) => kind !== "features"),
        ),
      })),
    }, "loaded");
  }

  /** Waits for the next control reply, which must be of type `expect`. */
  #expect(expect: ThreadReply["type"]): Promise<ThreadReply> {
    return new Promise((resolve, reject) => {
      this.#control.push({
        resolve: (m) => m.type === expect ? resolve(m) : reject(new Error(`inference thread sent ${m.type}`)),
        reject,
      });
    });
  }

  #send(msg: ThreadRequest, expect: ThreadReply["type"]): Promise<ThreadReply> {
    const reply = this.#expect(expect);
    this.#thread.post(msg);
    return reply;
  }

  #onMessage(msg: ThreadReply): void {
    if (msg.type === "result") {
      const w = this.#waiting.get(msg.id);
      if (!w) return;
      this.#waiting.delete(msg.id);
      const outputs: Record<string, Float32Array> = {};
      for (const [name, t] of Object.entries(msg.outputs)) outputs[name] = new Float32Array(t.data);
      w.resolve({ outputs, ms: msg.ms });
    } else if (msg.type === "error" && msg.id !== undefined) {
      const w = this.#waiting.get(msg.id);
      this.#waiting.delete(msg.id);
      w?.reject(new Error(msg.message));
    } else if (msg.type === "error") {
      this.#control.shift()?.reject(new Error(msg.message));
    } else {
      this.#control.shift()?.resolve(msg);
    }
  }

  /** Set once the thread has crashed; every later call fails with it. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Calls `fn` once if the thread crashes (at once if it already has). */
  onFailure(fn: (err: Error) => void): void {
    if (this.#failure) fn(this.#failure);
    else this.#failureListeners.push(fn);
  }

  #fail(err: Error): void {
    if (this.#failure) return;
    this.#failure = err;
    for (const fn of this.#failureListeners.splice(0)) {
      try {
        fn(err);
      } catch {
        // a listener's error does not stop the others
      }
    }
    for (const w of this.#waiting.values()) w.reject(err);
    this.#waiting.clear();
    for (const c of this.#control.splice(0)) c.reject(err);
  }

  /** Runs one batch; the feeds' buffers are transferred (unusable afterwards). */
  run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>): Promise<BatchOutputs> {
    if (this.#closed) return Promise.reject(new Error("the inference thread is closed"));
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#thread.post({ type: "run", id, model, graph, feeds }, Object.values(feeds).map((t) => t.data));
    });
  }

  /** Releases the sessions and stops the thread (after the calls already queued). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failure) {
      await this.#send({ type: "close" }, "closed").catch(() => {});
    }
    this.#thread.terminate();
  }
}

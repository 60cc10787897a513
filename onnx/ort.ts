/**
 * ONNX Runtime sessions for Deno and Node. onnxruntime-node is imported lazily, so modules that only
 * build or transform graphs never load the native addon. Needs --allow-read --allow-ffi --allow-env
 * --allow-sys under Deno.
 *
 * `executionProviders: ["cuda", "cpu"]` does not fall back by itself: `createSession` tries each provider
 * in order, catches the failure, and reports the provider actually used.
 *
 * Two runtimes sit behind the same session interface: onnxruntime-node (native: `cuda`, `cpu`) and
 * onnxruntime-web (WebAssembly: `wasm`; WebGPU: `webgpu`, where `navigator.gpu` gives a hardware
 * adapter). Both return onnxruntime-common sessions; `runSession` builds each call's tensors with the
 * runtime that created the session. See docs/backends.md.
 */
import type * as Ort from "onnxruntime-node";

export type OrtModule = typeof Ort;
export type InferenceSession = Ort.InferenceSession;
export type OrtTensor = Ort.Tensor;
/** Execution providers: native (`cuda`, `cpu`) and onnxruntime-web (`wasm`, `webgpu`). */
export type Provider = "cuda" | "cpu" | "wasm" | "webgpu";

/** Every provider name, in the order they are usually preferred. */
const PROVIDERS: readonly Provider[] = ["webgpu", "cuda", "cpu", "wasm"];

/**
 * Parses a comma-separated provider list (`GENIE_PROVIDERS`, `--providers`): undefined when unset or
 * empty; an unknown or repeated name is an error that names `setting`.
 */
export function parseProviders(setting: string, raw: string | undefined): Provider[] | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  const list = raw.split(",").map((p) => p.trim()).filter(Boolean);
  for (const p of list) {
    if (!(PROVIDERS as readonly string[]).includes(p)) {
      throw new Error(
        `${setting}: unknown execution provider ${JSON.stringify(p)} (use ${PROVIDERS.join(", ")})`,
      );
    }
  }
  const dup = list.find((p, i) => list.indexOf(p) !== i);
  if (dup !== undefined) throw new Error(`${setting}: ${dup} is listed twice`);
  return list as Provider[];
}

let ortModule: Promise<OrtModule> | undefined;

/**
 * The onnxruntime-node module, imported on first use. ORT's native logger is limited to fatal
 * messages: every failure (a provider that cannot load, a bad model) surfaces as an exception that
 * `createSession` reports, so the native error lines would only repeat it on stderr.
 */
export function loadOrt(): Promise<OrtModule> {
  ortModule ??= import("onnxruntime-node").then((m) => {
    const ort = (m.default ?? m) as OrtModule;
    ort.env.logLevel = "fatal";
    return ort;
  });
  return ortModule;
}

/** onnxruntime-web's entry points share onnxruntime-node's session and tensor interfaces. */
const webModules: Partial<Record<"wasm" | "webgpu", Promise<OrtModule>>> = {};

/**
 * onnxruntime-web, imported on first use: the default entry for `wasm` (every CPU kernel, the
 * WebAssembly binary read from the package, nothing fetched), the WebGPU entry for `webgpu` (its own
 * WebAssembly build, with fewer CPU kernels). `threads` sets the WebAssembly thread count, read once
 * when the runtime starts (onnxruntime-web's default when omitted).
 */
function loadOrtWeb(kind: "wasm" | "webgpu", threads?: number): Promise<OrtModule> {
  webModules[kind] ??= (kind === "webgpu" ? import("onnxruntime-web/webgpu") : import("onnxruntime-web"))
    .then((m) => {
      const ort = ((m as { default?: unknown }).default ?? m) as unknown as OrtModule;
      ort.env.logLevel = "fatal";
      if (threads) ort.env.wasm.numThreads = threads;
      return ort;
    });
  return webModules[kind]!;
}

let webgpuAdapter: Promise<unknown> | undefined;

/**
 * The WebGPU adapter onnxruntime-web would use, or an error saying why there is none. A software
 * (fallback) adapter, such as a CPU rasteriser, counts as none: it is slower than the `cpu` and `wasm`
 * providers on the same cores.
 */
function requestWebGpuAdapter(): Promise<unknown> {
  webgpuAdapter ??= (async () => {
    const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(o?: unknown): Promise<unknown> } } })
      .navigator?.gpu;
    if (!gpu) throw new Error("WebGPU is not available here (no navigator.gpu)");
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" }) as
      | { info?: { isFallbackAdapter?: boolean; description?: string; vendor?: string } }
      | null;
    if (!adapter) throw new Error("navigator.gpu gives no WebGPU adapter");
    if (adapter.info?.isFallbackAdapter) {
      const what = adapter.info.description || adapter.info.vendor || "unnamed";
      throw new Error(`navigator.gpu gives only a software WebGPU adapter (${what})`);
    }
    return adapter;
  })();
  return webgpuAdapter;
}

/** The runtime module that created each session: its tensors are the ones the session accepts. */
const sessionRuntime = new WeakMap<InferenceSession, OrtModule>();

/**
 * How a session's intra-op threads wait for work. Each session has its own thread pool (onnxruntime-node
 * creates its environment without global thread pools, so sessions cannot share one).
 *
 * - `"on"`: ORT's default. The threads spin-wait between the parallel sections of a call and keep
 *   spinning for a while after the call returns, so the next call of the same session starts on awake
 *   threads. Right for a session called back to back by itself; wrong where another session runs next,
 *   whose threads then compete with these spinning ones for the cores.
 * - `"brief"`: spin while a call runs and for at most {@link BRIEF_SPIN_US} µs after it
 *   (`session.intra_op.spin_duration_us`): a call that follows within that time, as the next call of a
 *   solver does, starts on awake threads, and threads left spinning by another session's call take at
 *   most that long from this one.
 * - `"run"`: spin while a call runs and stop as soon as it returns (`session.force_spinning_stop`); the
 *   next call wakes the threads once. Keeps the speed of spinning inside a call without taking cores
 *   from whatever runs between calls (another session's call, the worker's main thread).
 * - `"off"`: never spin (`session.intra_op.allow_spinning` 0): the threads sleep whenever they run out
 *   of work, and every parallel section wakes them again.
 */
export type SpinPolicy = "on" | "brief" | "run" | "off";

/** How long the threads of a `"brief"` session keep spinning after running out of work, µs. */
export const BRIEF_SPIN_US = 500;

/** The session config entries (`extra`, nested by dots as onnxruntime-node reads them) of a spin policy. */
export function spinConfig(spin: SpinPolicy | undefined): Record<string, unknown> {
  if (spin === "off") {
    return { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } };
  }
  if (spin === "run") return { session: { force_spinning_stop: "1" } };
  if (spin === "brief") return { session: { intra_op: { spin_duration_us: String(BRIEF_SPIN_US) } } };
  return {};
}

export interface SessionOptions {
  /** Providers to try in order; default `["cuda", "cpu"]`. */
  providers?: readonly Provider[];
  /** Intra-op threads (ORT's default when omitted). */
  threads?: number;
  /** Graph optimisation level; default "all". */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * How ORT's intra-op threads wait for work ({@link SpinPolicy}; default `"on"`, ORT's own): spinning
   * between calls too, only while a call runs, or never.
   */
  spin?: SpinPolicy;
  /**
   * Record ORT's per-node profile; `session.endProfiling()` writes it to `<profile>_<date>.json`
   * (a path prefix). Read it with {@link readProfile}.
   */
  profile?: string;
}

export interface CreatedSession {
  session: InferenceSession;
  /** The provider that accepted the model. */
  provider: Provider;
  /** Why earlier providers were skipped, provider → message. */
  skipped: Partial<Record<Provider, string>>;
}

/** Creates a session from model bytes, trying the providers in order (CUDA, then CPU by default). */
export async function createSession(
  bytes: Uint8Array,
  options: SessionOptions = {},
): Promise<CreatedSession> {
  const providers = options.providers ?? ["cuda", "cpu"];
  const skipped: Partial<Record<Provider, string>> = {};
  for (const provider of providers) {
    try {
      if (provider === "wasm" || provider === "webgpu") {
        const session = await createWebSession(bytes, provider, options);
        return { session, provider, skipped };
      }
      const ort = await loadOrt();
      const session = await ort.InferenceSession.create(bytes, {
        executionProviders: [provider],
        graphOptimizationLevel: options.optimization ?? "all",
        ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
        logSeverityLevel: 3,
        ...(options.spin && options.spin !== "on" ? { extra: spinConfig(options.spin) } : {}),
        ...(options.profile ? { enableProfiling: true, profileFilePrefix: options.profile } : {}),
      });
      return { session, provider, skipped };
    } catch (e) {
      skipped[provider] = e instanceof Error ? e.message : String(e);
    }
  }
  const why = Object.entries(skipped).map(([p, m]) => `${p}: ${m}`).join("; ");
  throw new Error(`no execution provider could load the model (${why})`);
}

/** An onnxruntime-web session (`spin` and `profile` are native options and do not apply). */
async function createWebSession(
  bytes: Uint8Array,
  provider: "wasm" | "webgpu",
  options: SessionOptions,
): Promise<InferenceSession> {
  const adapter = provider === "webgpu" ? await requestWebGpuAdapter() : undefined;
  const ort = await loadOrtWeb(provider, options.threads);
  if (adapter) (ort.env as { webgpu?: { adapter?: unknown } }).webgpu!.adapter = adapter;
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: [provider],
    graphOptimizationLevel: options.optimization ?? "all",
    logSeverityLevel: 3,
  });
  sessionRuntime.set(session, ort);
  return session;
}

/** Element types of the tensors exchanged with sessions here. */
export type TensorInit =
  | { type: "float32"; data: Float32Array; dims: readonly number[] }
  | { type: "float64"; data: Float64Array; dims: readonly number[] }
  | { type: "int64"; data: BigInt64Array; dims: readonly number[] }
  | { type: "int32"; data: Int32Array; dims: readonly number[] }
  | { type: "bool"; data: Uint8Array; dims: readonly number[] };

/** A plain result tensor. */
export interface HostTensor {
  type: string;
  dims: number[];
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;
}

/** Runs a session on plain tensors and returns plain tensors (blocks the calling thread in ORT). */
export async function runSession(
  session: InferenceSession,
  feeds: Record<string, TensorInit>,
  outputs?: readonly string[],
): Promise<Record<string, HostTensor>> {
  const ort = sessionRuntime.get(session) ?? await loadOrt();
  const inputs: Record<string, Ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) inputs[name] = new ort.Tensor(t.type, t.data, t.dims);
  const result = outputs ? await session.run(inputs, [...outputs]) : await session.run(inputs);
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(result)) {
    out[name] = { type: t.type, dims: [...t.dims], data: t.data as HostTensor["data"] };
  }
  return out;
}

/**
 * ONNX Runtime sessions for Deno and Node. onnxruntime-node is imported lazily, so modules that only
 * build or transform graphs never load the native addon. Needs --allow-read --allow-ffi --allow-env
 * --allow-sys under Deno.
 *
 * `executionProviders: ["cuda", "cpu"]` does not fall back by itself: `createSession` tries each provider
 * in order, catches the failure, and reports the provider actually used.
 */
import type * as Ort from "onnxruntime-node";

export type OrtModule = typeof Ort;
export type InferenceSession = Ort.InferenceSession;
export type OrtTensor = Ort.Tensor;
export type Provider = "cuda" | "cpu";

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

export interface SessionOptions {
  /** Providers to try in order; default `["cuda", "cpu"]`. */
  providers?: readonly Provider[];
  /** Intra-op threads (ORT's default when omitted). */
  threads?: number;
  /** Graph optimisation level; default "all". */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * Whether ORT's intra-op threads spin-wait after each parallel section (ORT's default, true). Off, they
   * sleep at once and leave the cores to the process's other threads (the worker's main thread, which
   * prepares the next batch while ORT is idle).
   */
  spinning?: boolean;
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
  const ort = await loadOrt();
  const providers = options.providers ?? ["cuda", "cpu"];
  const skipped: Partial<Record<Provider, string>> = {};
  for (const provider of providers) {
    try {
      const session = await ort.InferenceSession.create(bytes, {
        executionProviders: [provider],
        graphOptimizationLevel: options.optimization ?? "all",
        ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
        logSeverityLevel: 3,
        ...(options.spinning === false ? { extra: { session: { intra_op: { allow_spinning: "0" } } } } : {}),
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
  const ort = await loadOrt();
  const inputs: Record<string, Ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) inputs[name] = new ort.Tensor(t.type, t.data, t.dims);
  const result = outputs ? await session.run(inputs, [...outputs]) : await session.run(inputs);
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(result)) {
    out[name] = { type: t.type, dims: [...t.dims], data: t.data as HostTensor["data"] };
  }
  return out;
}

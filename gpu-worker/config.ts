/**
 * The worker app's configuration (createWorkerApp in app.ts) and the environment variables it falls back
 * on: GENIE_MODELS_DIR, GENIE_WORKER_SECRET and GENIE_SIGNATURE_WINDOW_S (read here where the process has
 * an environment; none under runtimes without one).
 */
import type { Provider, SpinPolicy } from "../onnx/ort.ts";
import type { Inference } from "./inference.ts";
import { DEFAULT_SIGNATURE_WINDOW_S } from "./protocol.ts";
import type { RestartPolicy } from "./supervisor.ts";

export interface WorkerConfig {
  /** The models directory (default GENIE_MODELS_DIR or `models/`). */
  modelsDir?: string;
  /** Serve only these models (default: every valid folder). */
  models?: string[];
  /** Shared secret for request signatures; none = open (default GENIE_WORKER_SECRET). */
  secret?: string;
  /**
   * Signed requests are accepted when their timestamp is within this many seconds of the worker's
   * clock (default GENIE_SIGNATURE_WINDOW_S, else 60); the same signature is accepted once.
   */
  signatureWindowS?: number;
  /** Largest request body in bytes (default 32 MiB). */
  maxBodyBytes?: number;
  /**
   * How long a request body may take to arrive, in ms (default GENIE_WORKER_BODY_TIMEOUT_MS, else
   * 30 000; 0 = no limit): past it the body is cancelled and the answer is 408.
   */
  bodyTimeoutMs?: number;
  /** Samples per inference call (default 64; each model's limits.max_batch applies too). */
  maxBatch?: number;
  /** How long a batch with room left may wait for more samples (default 0 ms). */
  maxWaitMs?: number;
  /** Requests in flight at most before 429 (default 256). */
  maxQueue?: number;
  /** Inference time a request earns per turn when requests compete (ms; scheduler.ts). Default 5. */
  quantumMs?: number;
  /** Retry-After seconds on 429/503 (default 1). */
  retryAfterS?: number;
  /** Execution providers to try in order (default cuda, then cpu). */
  providers?: Provider[];
  /** ORT intra-op threads (default: ORT's choice). */
  intraOpThreads?: number;
  /**
   * How ORT's intra-op threads wait for work: true spins as ORT does, false never, a policy's name sets
   * it (onnx/ort.ts `SpinPolicy`), undefined chooses per thread (inference.ts `spinPolicy`).
   */
  spinning?: boolean | SpinPolicy;
  /** Warm-up call per graph at start (default true). */
  warmup?: boolean;
  /** Build missing analytic models at start (default true). */
  build?: boolean;
  /** The inference thread's module (default: inference_thread.ts, or GENIE_INFERENCE_THREAD). */
  threadUrl?: URL;
  /** Restarts of a crashed inference thread: backoff and when to give up (supervisor.ts). */
  restart?: RestartPolicy;
  /** Use this inference backend instead of starting the thread (tests). */
  inference?: Inference;
  log?: (line: string) => void;
}

/** An environment variable, or undefined where there is none (or no permission to read it). */
export const env = (name: string): string | undefined => {
  try {
    return (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
  } catch {
    return undefined;
  }
};

/** GENIE_SIGNATURE_WINDOW_S (seconds, > 0), or the default; a bad value throws naming the variable. */
export function windowFromEnv(): number {
  const raw = env("GENIE_SIGNATURE_WINDOW_S");
  if (raw === undefined || raw.trim() === "") return DEFAULT_SIGNATURE_WINDOW_S;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(
      `GENIE_SIGNATURE_WINDOW_S: must be a positive number of seconds, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

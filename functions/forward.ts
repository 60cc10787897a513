/**
 * What the routes that forward to the workers (functions/routes/samples.ts, functions/routes/encode.ts)
 * share: finding the request's model, and running it under its deadline and the client's connection.
 */
import type { ModelInfo } from "../core/api/models.ts";
import { HARD_LIMITS } from "../core/api/samples.ts";
import type { EdgeConfig } from "./config.ts";
import { ApiError, CANCELED, deadlineExceeded, invalidRequest, noWorker } from "./errors.ts";
import type { EdgeLocal, Route } from "./local.ts";
import type { WorkerPool } from "./pool.ts";
import type { RunContext } from "./sampling.ts";

/** What forwarding needs from the app. */
export interface ForwardOptions {
  config: EdgeConfig;
  pool: WorkerPool;
  /** Edge-local inference, when enabled (functions/local.ts). */
  local?: EdgeLocal;
  now: () => number;
}

/** The response header that says where a request ran: `edge-wasm` or `worker`. */
export const BACKEND_HEADER = "x-genie-backend";

/** Where a request on `model` runs: in this edge (functions/local.ts) when it may, else on the workers. */
export async function routeOf(opts: ForwardOptions, model: ModelInfo): Promise<Route> {
  return opts.local
    ? await opts.local.route(model, opts.pool)
    : { caller: opts.pool, backend: () => "worker" };
}

/** `res` with the {@link BACKEND_HEADER} of `route`. */
export function withBackend(res: Response, route: Route): Response {
  res.headers.set(BACKEND_HEADER, route.backend());
  return res;
}

/** The model named `name` among those the workers serve: 503 without workers, 422 naming the model field. */
export async function resolveModel(pool: WorkerPool, name: string): Promise<ModelInfo> {
  const models = await pool.models();
  if (models.length === 0) throw noWorker("no worker is available", pool.retryAfterS);
  const model = models.find((m) => m.name === name);
  if (!model) {
    const message = `unknown model ${JSON.stringify(name)} (one of ${models.map((m) => m.name).join(", ")})`;
    throw invalidRequest(message, [{ path: ["model"], message, code: "invalid_value" }]);
  }
  return model;
}

/**
 * The deadline of a request: its own, else the default, capped by the configured maximum and by
 * HARD_LIMITS.deadline_ms (1 h) — the most a worker accepts, and far below the 2³¹ − 1 ms a timer
 * can hold (a longer delay would fire at once).
 */
export function deadlineOf(config: EdgeConfig, requested: number | undefined): number {
  return Math.min(requested ?? config.defaultDeadlineMs, config.maxDeadlineMs, HARD_LIMITS.deadline_ms);
}

/** Runs `fn` under a deadline and the client's connection: 504 on the deadline, 499 on disconnect. */
export async function withDeadline<T>(
  now: () => number,
  clientSignal: AbortSignal,
  deadlineMs: number,
  fn: (ctx: Omit<RunContext, "pool" | "onProgress">) => Promise<T>,
): Promise<T> {
  const ctl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort(deadlineExceeded(deadlineMs));
  }, deadlineMs);
  const onClient = () => ctl.abort(CANCELED);
  if (clientSignal.aborted) onClient();
  else clientSignal.addEventListener("abort", onClient, { once: true });
  try {
    return await fn({ signal: ctl.signal, deadlineAt: now() + deadlineMs, now });
  } catch (e) {
    if (timedOut) throw deadlineExceeded(deadlineMs);
    if (ctl.signal.aborted && !(e instanceof ApiError)) throw ctl.signal.reason;
    throw e;
  } finally {
    clearTimeout(timer);
    clientSignal.removeEventListener("abort", onClient);
  }
}

/** The handler of every other method on a POST-only route: 405. */
export function usePost(): never {
  throw new ApiError(405, "method_not_allowed", "use POST");
}

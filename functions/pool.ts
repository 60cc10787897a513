/**
 * The GPU workers behind the edge (GENIE_WORKER_URLS): health-checked, least-loaded routing, and
 * failover for work that has not started.
 *
 * - Health: `GET /healthz` then `GET /v1/models` per worker, at most once per interval; checks run
 *   lazily on the request path (down workers come back as soon as they answer) and, when
 *   {@link WorkerPool.startBackground} is called, on a timer.
 * - Routing: among the workers that are up and serve the model, the one with the fewest samples in
 *   flight from this edge.
 * - Failover: a call that could not be delivered (connection refused, DNS) or that the worker
 *   refused before starting it (429 queue full, 503 unavailable) goes to the next worker. A call lost
 *   after delivery (connection reset mid-call) is not repeated: it fails with 503 worker_lost and a
 *   Retry-After, and the worker is marked down until its next successful health check.
 * - Each call opens its own connection (no keep-alive pool for calls; health checks keep theirs). A
 *   pooled connection that dies mid-call is silently retried by the HTTP client on a new connection,
 *   and its "connection refused" would then read as "never delivered", so a started call could run
 *   twice. On a fresh connection, a refused connect really means the call never left.
 * - Cancellation: the caller's AbortSignal aborts the forwarded call, which closes the connection
 *   to the worker so it can stop the work.
 */
import { readWithin } from "../core/api/body.ts";
import { normalizeModelList } from "../core/api/models.ts";
import type { ModelInfo } from "../core/api/models.ts";
import {
  MSGPACK,
  MSGPACK_STREAM,
  type Preview,
  ProgressFrame,
  readFrames,
  signedPath,
  signRequest,
  WorkerError,
} from "../core/api/worker.ts";
import { ApiError, retryAfter } from "./errors.ts";
import { isMsgpackType, packMsg, unpackMsg } from "../core/api/msgpack.ts";

export interface WorkerState {
  index: number;
  url: string;
  up: boolean;
  /** Time of the last completed health check (ms), 0 before the first. */
  checkedAt: number;
  /** Samples in flight from this edge. */
  inflight: number;
  models: ModelInfo[];
  calls: number;
  failures: number;
  lastError?: string;
}

export interface PoolOptions {
  secret?: string;
  fetch?: typeof fetch;
  now?: () => number;
  healthIntervalMs?: number;
  healthTimeoutMs?: number;
  log?: (message: string) => void;
  /** Largest response accepted from a worker (bytes). */
  maxResponseBytes?: number;
}

/** A decoded successful worker response and the worker that produced it (−1: the edge itself). */
export interface CallResult {
  worker: number;
  body: Record<string, unknown>;
}

/** The delivery failed before the worker received the request: safe to send elsewhere. */
function notDelivered(e: unknown): boolean {
  const msg = e instanceof Error
    ? `${e.message} ${String((e as { cause?: unknown }).cause ?? "")}`
    : String(e);
  return /\(Connect\)|tcp connect error|connection refused|ECONNREFUSED|dns error|failed to lookup|name resolution/i
    .test(msg);
}

/** An HTTP client that keeps no idle connections (Deno), or undefined where the runtime has none. */
function oneConnectionPerCall(): Deno.HttpClient | undefined {
  const create = (globalThis as { Deno?: { createHttpClient?: typeof Deno.createHttpClient } }).Deno
    ?.createHttpClient;
  return create ? create({ poolMaxIdlePerHost: 0 }) : undefined;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class WorkerPool {
  readonly workers: WorkerState[];
  private readonly fetchFn: typeof fetch;
  /** The HTTP client of worker calls: one connection per call (see Failover above). */
  private readonly callClient?: Deno.HttpClient;
  private readonly now: () => number;
  private readonly interval: number;
  private readonly timeout: number;
  private readonly log: (m: string) => void;
  private readonly maxResponseBytes: number;
  private readonly checks = new Map<number, Promise<void>>();
  private timer?: ReturnType<typeof setInterval>;
  private rotation = 0;
  private closed = false;

  constructor(urls: readonly string[], private readonly opts: PoolOptions = {}) {
    this.workers = urls.map((url, index) => ({
      index,
      url: url.replace(/\/+$/, ""),
      up: false,
      checkedAt: 0,
      inflight: 0,
      models: [],
      calls: 0,
      failures: 0,
    }));
    this.fetchFn = opts.fetch ?? fetch;
    this.callClient = opts.fetch ? undefined : oneConnectionPerCall();
    this.now = opts.now ?? Date.now;
    this.interval = opts.healthIntervalMs ?? 2000;
    this.timeout = opts.healthTimeoutMs ?? 1000;
    this.log = opts.log ?? ((m) => console.error(m));
    this.maxResponseBytes = opts.maxResponseBytes ?? 512 * 1024 * 1024;
  }

  /** Seconds a client should wait before retrying when no worker is available. */
  get retryAfterS(): number {
    return Math.max(1, Math.ceil(this.interval / 1000));
  }

  /** Checks every worker whose last check is older than the interval (or all with `force`). */
  async refresh(force = false): Promise<void> {
    const t = this.now();
    await Promise.all(
      this.workers.filter((w) => force || t - w.checkedAt >= this.interval).map((w) => this.check(w)),
    );
  }

  /** Checks workers that are down or never checked and due (the request path's cheap refresh). */
  private async refreshDown(): Promise<void> {
    const t = this.now();
    await Promise.all(
      this.workers.filter((w) => !w.up && t - w.checkedAt >= Math.min(this.interval, 250)).map((w) =>
        this.check(w)
      ),
    );
  }

  /** One health check of `w`, shared by concurrent callers. */
  check(w: WorkerState): Promise<void> {
    const running = this.checks.get(w.index);
    if (running) return running;
    const p = this.doCheck(w).finally(() => this.checks.delete(w.index));
    this.checks.set(w.index, p);
    return p;
  }

  private async doCheck(w: WorkerState): Promise<void> {
    const wasUp = w.up;
    try {
      const health = await this.get(w, "/healthz");
      if (!health.ok) throw new Error(`/healthz answered ${health.status}`);
      await health.body?.cancel();
      const res = await this.get(w, "/v1/models");
      if (!res.ok) throw new Error(`/v1/models answered ${res.status}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const raw = isMsgpackType(res.headers.get("content-type"))
        ? unpackMsg(bytes)
        : JSON.parse(new TextDecoder().decode(bytes));
      const models = normalizeModelList(raw);
      if (models.length === 0) throw new Error("serves no models");
      w.models = models;
      w.up = true;
      w.lastError = undefined;
      if (!wasUp) this.log(`worker ${w.index} (${w.url}) is up: ${models.map((m) => m.name).join(", ")}`);
    } catch (e) {
      w.up = false;
      w.lastError = errorText(e);
      if (wasUp) this.log(`worker ${w.index} (${w.url}) is down: ${w.lastError}`);
    } finally {
      w.checkedAt = this.now();
    }
  }

  private async get(w: WorkerState, path: string): Promise<Response> {
    const url = w.url + path;
    const headers: Record<string, string> = { accept: "application/json, application/msgpack;q=0.9" };
    if (this.opts.secret) {
      Object.assign(headers, await signRequest(this.opts.secret, { method: "GET", path: signedPath(url) }));
    }
    return await this.fetchFn(url, { headers, signal: AbortSignal.timeout(this.timeout) });
  }

  /** Health checks on a timer until {@link close}. */
  startBackground(): void {
    if (this.timer !== undefined || this.workers.length === 0) return;
    const timer = setInterval(() => {
      if (!this.closed) this.refresh().catch(() => {});
    }, this.interval);
    this.timer = timer;
    try {
      Deno.unrefTimer(timer as unknown as number);
    } catch { /* not Deno */ }
    this.refresh().catch(() => {});
  }

  /** Stops the timer and waits for running checks. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.allSettled([...this.checks.values()]);
    this.callClient?.close();
  }

  /** Models served by at least one worker that is up (first description wins). */
  async models(): Promise<ModelInfo[]> {
    if (this.workers.every((w) => w.checkedAt === 0)) await this.refresh(true);
    else await this.refreshDown();
    const seen = new Map<string, ModelInfo>();
    for (const w of this.workers) {
      if (!w.up) continue;
      for (const m of w.models) if (!seen.has(m.name)) seen.set(m.name, m);
    }
    return [...seen.values()];
  }

  /** A worker is up and serves a model. */
  ready(): boolean {
    return this.workers.some((w) => w.up && w.models.length > 0);
  }

  /** Least-loaded worker among those up that serve `model` and are not in `exclude`. */
  private pick(model: string, exclude: Set<number>): WorkerState | undefined {
    const candidates = this.workers.filter((w) =>
      w.up && !exclude.has(w.index) && w.models.some((m) => m.name === model)
    );
    if (candidates.length === 0) return undefined;
    const least = Math.min(...candidates.map((w) => w.inflight));
    const tied = candidates.filter((w) => w.inflight === least);
    return tied[this.rotation++ % tied.length];
  }

  private markDown(w: WorkerState, e: unknown): void {
    w.failures++;
    w.lastError = errorText(e);
    if (w.up) this.log(`worker ${w.index} (${w.url}) is down: ${w.lastError}`);
    w.up = false;
    w.checkedAt = this.now();
  }

  /**
   * Sends one msgpack message to `path` on a worker serving `model`, with failover as described above.
   * `weight` is the number of samples, for least-loaded routing. Throws {@link ApiError}s (503, 429,
   * 422, 502, 504) or the signal's abort reason.
   *
   * With `onProgress`, a worker that answers with a stream (the message asked `stream: true`; see
   * MSGPACK_STREAM in core/api/worker.ts) reports each progress frame to it; its final frame is the
   * result (or the error). A worker that answers plainly is read as usual.
   */
  async call(
    path: string,
    model: string,
    message: Record<string, unknown>,
    signal: AbortSignal,
    weight = 1,
    onProgress?: (p: StreamProgress) => void,
  ): Promise<CallResult> {
    const body = packMsg(message);
    const plain: Record<string, string> = {
      "content-type": MSGPACK,
      accept: onProgress ? `${MSGPACK_STREAM}, ${MSGPACK}` : MSGPACK,
    };
    const tried = new Set<number>();
    let refusal: ApiError | undefined;
    let refreshed = false;
    for (;;) {
      signal.throwIfAborted();
      let w = this.pick(model, tried);
      if (!w && !refreshed) {
        refreshed = true;
        await this.refreshDown();
        w = this.pick(model, tried);
      }
      if (!w) {
        throw refusal ??
          new ApiError(
            503,
            "no_worker",
            `no worker available for ${model}`,
            undefined,
            retryAfter(this.retryAfterS),
          );
      }
      tried.add(w.index);
      w.inflight += weight;
      w.calls++;
      let res: Response;
      let bytes: Uint8Array = new Uint8Array(0);
      /** A streamed answer's final frame, decoded (progress frames are decoded as they come). */
      let final: unknown;
      let streamed = false;
      try {
        // Signed per attempt: a signature holds for one request within the workers' time window.
        const url = w.url + path;
        const headers = this.opts.secret
          ? {
            ...plain,
            ...await signRequest(this.opts.secret, { method: "POST", path: signedPath(url), body }),
          }
          : plain;
        try {
          const init = { method: "POST", headers, body: body as BodyInit, signal, client: this.callClient };
          res = await this.fetchFn(url, init as RequestInit);
        } catch (e) {
          if (signal.aborted) throw signal.reason;
          this.markDown(w, e);
          if (notDelivered(e)) continue;
          throw this.lost(w, e);
        }
        try {
          streamed = onProgress !== undefined && res.ok && isStreamType(res.headers.get("content-type"));
          if (streamed) final = await readStream(res, this.maxResponseBytes, onProgress!);
          else bytes = await readLimited(res, this.maxResponseBytes);
        } catch (e) {
          if (signal.aborted) throw signal.reason;
          this.markDown(w, e);
          throw this.lost(w, e);
        }
      } finally {
        w.inflight -= weight;
      }
      if (res.status === 429 || res.status === 503) {
        // Refused before starting: try another worker, remember the refusal for when none is left.
        const after = Number(res.headers.get("retry-after")) || this.retryAfterS;
        const detail = workerErrorOf(bytes, res.headers.get("content-type"));
        refusal = res.status === 429
          ? new ApiError(
            429,
            "queue_full",
            detail?.message ?? "the workers' queues are full",
            undefined,
            retryAfter(after),
          )
          : new ApiError(
            503,
            "no_worker",
            detail?.message ?? "the workers are unavailable",
            undefined,
            retryAfter(after),
          );
        continue;
      }
      const decoded = streamed ? final : decodeBody(bytes, res.headers.get("content-type"));
      if (streamed && WorkerError.safeParse(decoded).success) {
        // A failure after the stream started: the error frame carries the status it would have had.
        const status = Number((decoded as { status?: unknown }).status);
        throw workerFailure(
          Number.isInteger(status) && status >= 400 ? status : 500,
          decoded,
          `worker ${w.index}`,
        );
      }
      if (res.ok) {
        if (!decoded || typeof decoded !== "object" || Array.isArray(decoded)) {
          throw new ApiError(502, "worker_error", `worker ${w.index} sent an unreadable response`);
        }
        return { worker: w.index, body: decoded as Record<string, unknown> };
      }
      throw workerFailure(res.status, decoded, `worker ${w.index}`);
    }
  }

  private lost(w: WorkerState, e: unknown): ApiError {
    return new ApiError(
      503,
      "worker_lost",
      `worker ${w.index} was lost during the call (${errorText(e)}); retry`,
      undefined,
      retryAfter(this.retryAfterS),
    );
  }

  /** Counts for /readyz and /metrics (no URLs: they may be internal). */
  snapshot(): {
    index: number;
    up: boolean;
    inflight: number;
    models: string[];
    calls: number;
    failures: number;
  }[] {
    return this.workers.map((w) => ({
      index: w.index,
      up: w.up,
      inflight: w.inflight,
      models: w.models.map((m) => m.name),
      calls: w.calls,
      failures: w.failures,
    }));
  }
}

/** The response body, refusing more than `max` bytes (reading stops at the limit). */
async function readLimited(res: Response, max: number): Promise<Uint8Array> {
  const len = Number(res.headers.get("content-length"));
  if (len > max) {
    await res.body?.cancel().catch(() => {});
    throw new Error(`response of ${len} bytes exceeds ${max}`);
  }
  if (!res.body) return new Uint8Array(0);
  const bytes = await readWithin(res.body.getReader(), max);
  if (!bytes) throw new Error(`response exceeds ${max} bytes`);
  return bytes;
}

function isStreamType(contentType: string | null): boolean {
  return (contentType ?? "").split(";")[0].trim().toLowerCase() === MSGPACK_STREAM;
}

/** A progress frame of a streamed answer (core/api/worker.ts ProgressFrame). */
export interface StreamProgress {
  step: number;
  steps: number;
  /** x̂₀ of the call's first sample, when the message asked for previews. */
  preview?: Preview;
}

/** Reads a streamed answer: progress frames go to `onProgress`; returns the final frame, decoded. */
async function readStream(
  res: Response,
  max: number,
  onProgress: (p: StreamProgress) => void,
): Promise<unknown> {
  if (!res.body) throw new Error("empty stream");
  let ended = false, last: unknown;
  for await (const f of readFrames(res.body, max)) {
    if (ended) throw new Error("a frame after the final one");
    const value = decodeBody(f, MSGPACK);
    const p = ProgressFrame.safeParse(value);
    if (p.success) {
      const { step, steps, preview } = p.data.progress;
      onProgress({ step, steps, ...(preview ? { preview } : {}) });
    } else {
      ended = true;
      last = value;
    }
  }
  if (!ended) throw new Error("the stream ended without a result");
  return last;
}

function decodeBody(bytes: Uint8Array, contentType: string | null): unknown {
  try {
    if (bytes.byteLength === 0) return undefined;
    if (isMsgpackType(contentType) || !/json/i.test(contentType ?? "")) return unpackMsg(bytes);
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

function workerErrorOf(
  bytes: Uint8Array,
  contentType: string | null,
): { code: string; message: string } | undefined {
  const r = WorkerError.safeParse(decodeBody(bytes, contentType));
  return r.success ? r.data.error : undefined;
}

/**
 * A worker's error status as the edge's error: its 4xx are the client's fault (422), 5xx are 502. `who`
 * names the worker in messages (`worker 0`; functions/local.ts: the edge's own engine).
 */
export function workerFailure(status: number, decoded: unknown, who: string): ApiError {
  const r = WorkerError.safeParse(decoded);
  const code = r.success ? r.data.error.code : "worker_error";
  const message = r.success ? r.data.error.message : `${who} answered HTTP ${status}`;
  const field = r.success && typeof r.data.error.field === "string" ? r.data.error.field : undefined;
  if (status === 504) return new ApiError(504, "deadline_exceeded", message);
  if (status === 400 || status === 404 || status === 422) {
    const path = field !== undefined ? field.split(".").filter(Boolean) : fieldOf(message);
    // The detail names its field by `path`; its message does not repeat it ("nfe: nfe: …").
    const prefix = `${path.join(".")}: `;
    const detail = path.length > 0 && message.startsWith(prefix) ? message.slice(prefix.length) : message;
    return new ApiError(422, "invalid_request", message, [{ path, message: detail, code }]);
  }
  if (status === 401 || status === 403) {
    return new ApiError(
      502,
      "worker_error",
      `${who} rejected the edge's signature (check GENIE_WORKER_SECRET)`,
    );
  }
  return new ApiError(502, "worker_error", `${who}: ${message}`);
}

/** The field a worker's message starts with ("nfe: genie cannot …" → ["nfe"]), else []. */
function fieldOf(message: string): string[] {
  const m = /^([a-z_][a-z0-9_]*)(?:\[\d+\])?:/i.exec(message);
  return m ? [m[1]] : [];
}

/**
 * The edge app (docs/contracts.md §2): validate, authenticate, limit, route to a GPU worker, encode outputs.
 * `createApp(config)` builds one; tests call it with `app.request()`; functions/main.ts only serves it.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { cors } from "hono/cors";
import { secureHeaders } from "hono/secure-headers";
import { issuesFromZod, summarizeIssues } from "../core/api/errors.ts";
import type { ModelInfo } from "../core/api/models.ts";
import {
  checkEncodeForModel,
  checkSamplesForModel,
  EncodeRequest,
  firstSeedOf,
  guidanceOf,
  HARD_LIMITS,
  isImageModel,
  requestedCount,
  SamplesRequest,
} from "../core/api/samples.ts";
import { gridSize, type ImageParameters, MAX_GRID_PIXELS, pngParameters } from "../core/image.ts";
import { base64ToBytes, bytesToBase64, float32FromBytes } from "../core/api/tensor.ts";
import { bearerToken, KeyStore } from "./auth.ts";
import { configFromEnv, type EdgeConfig, makeConfig } from "./config.ts";
import { ApiError, deadlineExceeded, invalid, noWorker, retryAfter } from "./errors.ts";
import { gridPng, pngsToTensor, samplesToPng } from "./images.ts";
import { ConcurrencyLimiter, RateLimiter } from "./limits.ts";
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry } from "../core/metrics.ts";
import { packMsg } from "./msgpack.ts";
import { negotiate, type OutputFormat, parseBody } from "./negotiate.ts";
import { openApiDocument } from "./openapi.ts";
import { WorkerPool } from "./pool.ts";
import {
  encodeTensor,
  latentBytes,
  type Progress,
  type RunContext,
  runEncode,
  type RunOutcome,
  runSamples,
} from "./sampling.ts";
import { serveStatic } from "./static.ts";
import { jobsRoutes } from "./jobs/routes.ts";
import { JobSystem } from "./jobs/system.ts";

type Env = {
  Bindings: { remoteAddr?: { hostname?: string } };
  Variables: { principal: string; route: string; requestId: string };
};

export type EdgeApp = Hono<Env> & {
  readonly config: EdgeConfig;
  readonly pool: WorkerPool;
  readonly metrics: Registry;
  /** Whether the server runs without API keys. */
  readonly open: boolean;
  /** Batch jobs (`/v1/jobs`) when enabled in the configuration; start with `jobs.start()`. */
  readonly jobs?: JobSystem;
  /** Stops background health checks and waits for running ones. */
  close(): Promise<void>;
};

const CANCELED = new ApiError(499, "canceled", "the client closed the connection");

/** Builds the edge app from `config` (defaults for everything left out; see functions/config.ts). */
export function createApp(partial: Partial<EdgeConfig> = {}): EdgeApp {
  const config = makeConfig(partial);
  const now = config.now ?? Date.now;
  const log = config.log ?? ((m: string) => console.error(m));
  const keys = KeyStore.create(config.apiKeys);
  keys.catch(() => {}); // reported on first use
  const open = config.apiKeys.length === 0;
  const pool = new WorkerPool(config.workerUrls, {
    secret: config.workerSecret,
    fetch: config.fetch,
    now,
    healthIntervalMs: config.healthIntervalMs,
    healthTimeoutMs: config.healthTimeoutMs,
    log,
  });
  const rate = new RateLimiter(config.rateLimit, now);
  const concurrency = new ConcurrencyLimiter(config.concurrencyPerKey);
  let queued = 0; // requests waiting on or running at workers, all keys
  const started = now();

  const metrics = new Registry();
  const requests = metrics.add("genie_edge_requests_total", new Counter("HTTP requests by route and status"));
  const duration = metrics.add(
    "genie_edge_request_duration_seconds",
    new Histogram("Request latency at the edge", LATENCY_BUCKETS),
  );
  const samplesTotal = metrics.add(
    "genie_edge_samples_total",
    new Counter("Samples returned, by model and solver"),
  );
  const limited = metrics.add(
    "genie_edge_limited_total",
    new Counter("Requests refused by a limit, by reason"),
  );
  metrics.add("genie_edge_inflight", Gauge.single("Requests at the workers from this edge", () => queued));
  metrics.add("genie_edge_open", Gauge.single("1 when no API keys are configured", () => open ? 1 : 0));
  metrics.add(
    "genie_edge_worker_up",
    new Gauge(
      "Worker health (1 up)",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.up ? 1 : 0]),
    ),
  );
  metrics.add(
    "genie_edge_worker_inflight_samples",
    new Gauge(
      "Samples in flight per worker",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.inflight]),
    ),
  );
  metrics.add(
    "genie_edge_worker_calls_total",
    new Gauge(
      "Calls forwarded per worker",
      () => pool.snapshot().map((w) => [{ worker: String(w.index) }, w.calls]),
      "counter",
    ),
  );

  const app = new Hono<Env>();

  // Request id, timing, metrics; every error becomes the JSON error body.
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    c.set("requestId", crypto.randomUUID());
    c.set("route", "other");
    await next();
    c.header("x-request-id", c.get("requestId"));
    const labels = { method: c.req.method, route: c.get("route"), status: String(c.res.status) };
    requests.inc(labels);
    duration.observe({ route: c.get("route") }, (performance.now() - t0) / 1000);
  });

  app.use(
    "*",
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", "data:", "blob:"],
        connectSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
      },
      crossOriginResourcePolicy: config.corsOrigins.length > 0 ? "cross-origin" : "same-origin",
      crossOriginEmbedderPolicy: false,
    }),
  );

  if (config.corsOrigins.length > 0) {
    app.use(
      "*",
      cors({
        origin: config.corsOrigins.includes("*") ? "*" : config.corsOrigins,
        allowMethods: ["GET", "POST", "OPTIONS"],
        allowHeaders: ["authorization", "content-type", "accept"],
        exposeHeaders: [
          "retry-after",
          "x-request-id",
          "x-genie-id",
          "x-genie-nfe",
          "x-genie-steps",
          "x-genie-calls",
          "x-genie-cost",
        ],
        maxAge: 600,
      }),
    );
  }

  // Authentication and per-key rate limit for the API.
  app.use("/v1/*", async (c, next) => {
    const store = await keys.catch((e) => {
      throw new ApiError(
        500,
        "internal",
        `API keys are misconfigured: ${e instanceof Error ? e.message : e}`,
      );
    });
    let principal: string;
    if (store.open) {
      principal = "ip:" + (c.env?.remoteAddr?.hostname ?? "local");
    } else {
      const token = bearerToken(c.req.header("authorization"));
      const id = token === null ? null : await store.verify(token);
      if (id === null) {
        throw new ApiError(
          401,
          "unauthorized",
          token === null ? "send Authorization: Bearer <API key>" : "unknown API key",
          undefined,
          { "www-authenticate": 'Bearer realm="genie"' },
        );
      }
      principal = id;
    }
    c.set("principal", principal);
    const wait = rate.take(principal);
    if (wait > 0) {
      limited.inc({ reason: "rate" });
      throw new ApiError(429, "rate_limited", "too many requests for this key", undefined, retryAfter(wait));
    }
    await next();
  });

  // ---- API ----

  app.get("/v1/models", async (c) => {
    c.set("route", "/v1/models");
    const models = await pool.models();
    if (models.length === 0) throw noWorker("no worker is available", pool.retryAfterS);
    return c.json(models);
  });

  /** Limits, deadline and cancellation around one forwarded request. */
  function admit(c: Context<Env>): () => void {
    const release = concurrency.acquire(c.get("principal"));
    if (!release) {
      limited.inc({ reason: "concurrency" });
      throw new ApiError(
        429,
        "too_many_concurrent",
        `at most ${config.concurrencyPerKey} concurrent requests per key`,
        undefined,
        retryAfter(1),
      );
    }
    if (queued >= config.maxQueue) {
      release();
      limited.inc({ reason: "queue" });
      throw new ApiError(
        429,
        "queue_full",
        "the server is at capacity",
        undefined,
        retryAfter(pool.retryAfterS),
      );
    }
    queued++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      queued--;
      release();
    };
  }

  /** Runs `fn` under a deadline and the client's connection: 504 on the deadline, 499 on disconnect. */
  async function withDeadline<T>(
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

  /**
   * The deadline of a request: its own, else the default, capped by the configured maximum and by
   * HARD_LIMITS.deadline_ms (1 h) — the most a worker accepts, and far below the 2³¹ − 1 ms a timer
   * can hold (a longer delay would fire at once).
   */
  function deadlineOf(requested: number | undefined): number {
    return Math.min(requested ?? config.defaultDeadlineMs, config.maxDeadlineMs, HARD_LIMITS.deadline_ms);
  }

  async function resolveModel(name: string): Promise<ModelInfo> {
    const models = await pool.models();
    if (models.length === 0) throw noWorker("no worker is available", pool.retryAfterS);
    const model = models.find((m) => m.name === name);
    if (!model) {
      const message = `unknown model ${JSON.stringify(name)} (one of ${
        models.map((m) => m.name).join(", ")
      })`;
      throw invalid(message, [{ path: ["model"], message, code: "invalid_value" }]);
    }
    return model;
  }

  app.post("/v1/samples", async (c) => {
    c.set("route", "/v1/samples");
    const format = negotiate(c.req.header("accept"), ["json", "msgpack", "png", "sse"]);
    if (!format) {
      throw new ApiError(
        406,
        "not_acceptable",
        "accept application/json, application/msgpack, image/png or text/event-stream",
      );
    }
    const release = admit(c);
    let handedOff = false;
    try {
      const raw = await parseBody(c.req.raw, config.maxBodyBytes, config.bodyTimeoutMs);
      const parsed = SamplesRequest.safeParse(raw);
      if (!parsed.success) {
        const details = issuesFromZod(parsed.error);
        throw invalid(summarizeIssues(details), details);
      }
      const req = parsed.data;
      const model = await resolveModel(req.model);
      const issues = checkSamplesForModel(req, model);
      if (issues.length > 0) throw invalid(summarizeIssues(issues), issues);
      if (format === "png" && !isImageModel(model)) {
        throw new ApiError(
          406,
          "not_acceptable",
          `${model.name} does not produce images; accept JSON or msgpack`,
        );
      }
      if (format === "png" && req.scale !== undefined && req.scale > 1) {
        const [, h, w] = model.shape;
        const g = gridSize(requestedCount(req), w, h);
        if (g.width * g.height * req.scale ** 2 > MAX_GRID_PIXELS) {
          const message =
            `a ${g.width}×${g.height} grid upscaled ${req.scale}× exceeds ${MAX_GRID_PIXELS} pixels`;
          throw invalid(`scale: ${message}`, [{ path: ["scale"], message, code: "too_big" }]);
        }
      }
      const lat = latentBytes(req);
      if (lat.issues.length > 0) throw invalid(summarizeIssues(lat.issues), lat.issues);
      const output = req.output ?? (isImageModel(model) ? "png" : "tensor");
      // seed absent or −1: a random seed; the response echoes every sample's seed.
      const firstSeed = firstSeedOf(req.seed);
      const deadlineMs = deadlineOf(req.deadline_ms);
      const run = (onProgress?: (p: Progress) => void, signal = c.req.raw.signal) =>
        withDeadline(
          signal,
          deadlineMs,
          (ctx) => runSamples(req, model, firstSeed, lat.bytes, { ...ctx, pool, onProgress }),
        );
      const count = (o: RunOutcome) =>
        samplesTotal.inc({ model: o.model.name, solver: o.solver }, o.seeds.length);
      if (format === "sse") {
        handedOff = true;
        return sseResponse(c.req.raw.signal, async (emit, signal) => {
          try {
            const outcome = await run((p) => emit("progress", p), signal);
            count(outcome);
            emit("completed", samplesBody(outcome, output, false, pngInfo(req)));
          } finally {
            release();
          }
        });
      }
      const outcome = await run();
      count(outcome);
      return render(c, format, outcome, output, pngInfo(req));
    } finally {
      if (!handedOff) release();
    }
  });

  app.post("/v1/encode", async (c) => {
    c.set("route", "/v1/encode");
    const format = negotiate(c.req.header("accept"), ["json", "msgpack"]);
    if (!format) throw new ApiError(406, "not_acceptable", "accept application/json or application/msgpack");
    const release = admit(c);
    try {
      const raw = await parseBody(c.req.raw, config.maxBodyBytes, config.bodyTimeoutMs);
      const parsed = EncodeRequest.safeParse(raw);
      if (!parsed.success) {
        const details = issuesFromZod(parsed.error);
        throw invalid(summarizeIssues(details), details);
      }
      const req = parsed.data;
      const model = await resolveModel(req.model);
      const issues = checkEncodeForModel(req, model);
      if (issues.length > 0) throw invalid(summarizeIssues(issues), issues);
      let images: Float32Array, n: number;
      if (req.tensor) {
        images = encodeTensor(req);
        n = req.tensor.shape[0];
      } else {
        const decoded = await pngsToTensor(req.images!.map((b) => base64ToBytes(b)), model.shape);
        if (decoded.issues.length > 0) throw invalid(summarizeIssues(decoded.issues), decoded.issues);
        images = decoded.data;
        n = req.images!.length;
      }
      const outcome = await withDeadline(
        c.req.raw.signal,
        deadlineOf(req.deadline_ms),
        (ctx) => runEncode(req, model, images, n, { ...ctx, pool }),
      );
      const binary = format === "msgpack";
      const body = {
        id: outcome.id,
        model: outcome.model.name,
        solver: outcome.solver,
        steps: outcome.steps,
        nfe: outcome.nfe,
        ...priceOf(outcome),
        latents: tensorOut(outcome, binary),
        timings: outcome.timings,
      };
      return binary ? msgpackResponse(body) : c.json(body);
    } finally {
      release();
    }
  });

  app.all("/v1/samples", () => {
    throw new ApiError(405, "method_not_allowed", "use POST");
  });
  app.all("/v1/encode", () => {
    throw new ApiError(405, "method_not_allowed", "use POST");
  });

  // ---- operations ----

  // Batch jobs (functions/jobs/): behind the same authentication and rate limit.
  const jobs = config.jobs?.enabled
    ? new JobSystem({ pool, config: config.jobs, now, log, metrics, deadlineMs: config.defaultDeadlineMs })
    : undefined;
  app.route(
    "/v1/jobs",
    jobsRoutes({
      jobs,
      pool,
      maxBodyBytes: config.maxBodyBytes,
      bodyTimeoutMs: config.bodyTimeoutMs,
      open,
    }),
  );

  app.get("/healthz", (c) => {
    c.set("route", "/healthz");
    return c.json({
      status: "ok",
      auth: open ? "open" : "api-keys",
      ...(open ? { warning: "no API keys configured (GENIE_API_KEYS): the server is open to anyone" } : {}),
      workers: config.workerUrls.length,
      uptime_s: Math.round((now() - started) / 1000),
    });
  });

  app.get("/readyz", async (c) => {
    c.set("route", "/readyz");
    const models = await pool.models();
    const workers = pool.snapshot().map(({ index, up, models }) => ({ index, up, models }));
    if (models.length === 0) {
      return c.json(
        { ready: false, error: { code: "no_worker", message: "no worker with a model is up" }, workers },
        503,
        retryAfter(pool.retryAfterS),
      );
    }
    // Batch jobs, when enabled, must be up as well: POST /v1/jobs answers 503 until they are.
    if (jobs && !jobs.ready) {
      const error = jobs.failure
        ? { code: "jobs_unavailable", message: `batch jobs are unavailable: ${jobs.failure}` }
        : { code: "jobs_starting", message: "batch jobs are starting" };
      return c.json({ ready: false, error, workers }, 503, retryAfter(1));
    }
    return c.json({
      ready: true,
      models: models.map((m) => m.name),
      ...(jobs ? { jobs: "ready" } : {}),
      workers,
    });
  });

  app.get("/metrics", (c) => {
    c.set("route", "/metrics");
    return c.body(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  app.get("/openapi.json", (c) => {
    c.set("route", "/openapi.json");
    return c.json(openApiDocument());
  });

  app.get("/", (c) => {
    c.set("route", "/");
    return serveStatic("playground.html");
  });
  app.get("/docs", (c) => {
    c.set("route", "/docs");
    return serveStatic("docs.html");
  });
  app.get("/static/:file", (c) => {
    c.set("route", "/static");
    return serveStatic(c.req.param("file"));
  });

  app.notFound(() => new ApiError(404, "not_found", "no such route").toResponse());

  app.onError((err, c) => {
    if (err instanceof ApiError) return err.toResponse();
    if (err instanceof SyntaxError) return new ApiError(400, "bad_request", "malformed request").toResponse();
    log(
      `internal error on ${c.req.method} ${new URL(c.req.url).pathname}: ${
        err instanceof Error ? err.stack : err
      }`,
    );
    return new ApiError(500, "internal", "internal error").toResponse();
  });

  return Object.assign(app, {
    config,
    pool,
    metrics,
    open,
    jobs,
    close: async () => {
      await jobs?.close();
      await pool.close();
    },
  }) as EdgeApp;
}

function tensorOut(o: RunOutcome, binary: boolean) {
  return { shape: o.shape, dtype: "float32" as const, data: binary ? o.data : bytesToBase64(o.data) };
}

/** calls, cost, cost_estimated, grid and rho of an outcome: those the workers reported. */
function priceOf(o: RunOutcome): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (o.calls !== undefined) out.calls = o.calls;
  if (o.cost !== undefined) out.cost = o.cost;
  if (o.costEstimated !== undefined) out.cost_estimated = o.costEstimated;
  if (o.grid !== undefined) out.grid = o.grid;
  if (o.rho !== undefined) out.rho = o.rho;
  return out;
}

/** What a samples request adds to its PNGs: the upscaling and the settings for their `parameters` text. */
interface PngInfo {
  scale: number;
  settings: Pick<ImageParameters, "class" | "guidance" | "genieDerivative" | "afs" | "denoise">;
  latents: boolean;
}

function pngInfo(req: SamplesRequest): PngInfo {
  return {
    scale: req.scale ?? 1,
    settings: {
      class: req.class,
      guidance: guidanceOf(req),
      genieDerivative: req.genie_derivative,
      afs: req.afs,
      denoise: req.denoise,
    },
    latents: req.latents !== undefined,
  };
}

/** The `parameters` PNG text of samples [from, from + count) of an outcome. */
function parametersText(o: RunOutcome, info: PngInfo, from: number, count: number): string {
  return pngParameters({
    model: o.model.name,
    solver: o.solver,
    steps: o.steps,
    nfe: o.nfe,
    seed: info.latents ? undefined : o.seeds[from],
    n: count,
    grid: o.grid,
    rho: o.rho,
    scale: info.scale,
    ...info.settings,
  });
}

/** The samples result object; binary fields raw (msgpack) or base64 (JSON). */
function samplesBody(
  o: RunOutcome,
  output: "png" | "tensor",
  binary: boolean,
  info: PngInfo,
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: o.id,
    model: o.model.name,
    solver: o.solver,
    steps: o.steps,
    nfe: o.nfe,
    ...priceOf(o),
    seeds: o.seeds,
    shape: o.shape,
  };
  if (output === "tensor") body.tensor = tensorOut(o, binary);
  else {
    const pngs = samplesToPng(float32FromBytes(o.data), o.shape, {
      scale: info.scale,
      parameters: (i) => parametersText(o, info, i, 1),
    });
    body.images = pngs.map((png, i) => ({ seed: o.seeds[i], png: binary ? png : bytesToBase64(png) }));
  }
  body.timings = o.timings;
  return body;
}

function msgpackResponse(body: unknown): Response {
  return new Response(packMsg(body) as BodyInit, { headers: { "content-type": "application/msgpack" } });
}

function render(
  c: Context<Env>,
  format: OutputFormat,
  o: RunOutcome,
  output: "png" | "tensor",
  info: PngInfo,
): Response {
  if (format === "png") {
    const png = gridPng(float32FromBytes(o.data), o.shape, {
      scale: info.scale,
      parameters: parametersText(o, info, 0, o.seeds.length),
    });
    return new Response(png as BodyInit, {
      headers: {
        "content-type": "image/png",
        "x-genie-id": o.id,
        "x-genie-steps": String(o.steps),
        "x-genie-nfe": String(o.nfe),
        ...(o.calls !== undefined ? { "x-genie-calls": String(o.calls) } : {}),
        ...(o.cost !== undefined ? { "x-genie-cost": String(o.cost) } : {}),
        "x-genie-seeds": o.seeds.length <= 64 ? o.seeds.join(",") : `${o.seeds[0]}+${o.seeds.length}`,
      },
    });
  }
  if (format === "msgpack") return msgpackResponse(samplesBody(o, output, true, info));
  return c.json(samplesBody(o, output, false, info));
}

/**
 * A text/event-stream response around `work`, which emits events; a thrown error becomes a `failed`
 * event. Closing the connection (the request's signal, or the stream's cancel) aborts `work`.
 */
function sseResponse(
  requestSignal: AbortSignal,
  work: (emit: (event: string, data: unknown) => void, signal: AbortSignal) => Promise<void>,
): Response {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(CANCELED);
  if (requestSignal.aborted) onAbort();
  else requestSignal.addEventListener("abort", onAbort, { once: true });
  const enc = new TextEncoder();
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      let closed = false;
      const write = (text: string) => {
        if (closed) return;
        try {
          controller.enqueue(enc.encode(text));
        } catch {
          closed = true;
        }
      };
      const emit = (event: string, data: unknown) =>
        write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      heartbeat = setInterval(() => write(": keep-alive\n\n"), 15_000);
      work(emit, ctl.signal)
        .catch((e) => {
          const err = e instanceof ApiError ? e : new ApiError(500, "internal", "internal error");
          emit("failed", { status: err.status, ...err.body() });
        })
        .finally(() => {
          clearInterval(heartbeat);
          requestSignal.removeEventListener("abort", onAbort);
          if (!closed) {
            closed = true;
            try {
              controller.close();
            } catch { /* already closed */ }
          }
        });
    },
    cancel() {
      clearInterval(heartbeat);
      ctl.abort(CANCELED);
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    },
  });
}

/** The app configured from the environment (GENIE_* variables); workers are checked lazily. */
export const app: EdgeApp = createApp(configFromEnv());

/**
 * The edge app (docs/contracts.md §2): validate, authenticate, limit, route to a GPU worker (or, for small
 * models marked `edge`, solve in-process: functions/local.ts), encode outputs.
 * `createApp(config)` builds one; tests call it with `app.request()`; functions/main.ts only serves it.
 *
 * This file only composes: the middleware of functions/middleware/ (observe, headers, auth, limits) and
 * the route sub-apps of functions/routes/ and functions/jobs/routes.ts.
 */
import { Hono } from "hono";
import type { MetricsRegistry } from "../core/metrics.ts";
import { configFromEnv, type EdgeConfig, type EdgeConfigInput, makeConfig } from "./config.ts";
import type { Env } from "./env.ts";
import { jobsRoutes } from "./jobs/routes.ts";
import { JobSystem } from "./jobs/system.ts";
import { EdgeLocal } from "./local.ts";
import { edgeMetrics } from "./metrics.ts";
import { authenticate } from "./middleware/auth.ts";
import { crossOrigin, securityHeaders } from "./middleware/headers.ts";
import { Admission, rateLimit } from "./middleware/limits.ts";
import { notFound, observe, onError } from "./middleware/observe.ts";
import { WorkerPool } from "./pool.ts";
import { encodeRoutes } from "./routes/encode.ts";
import { modelsRoutes } from "./routes/models.ts";
import { opsRoutes } from "./routes/ops.ts";
import { samplesRoutes } from "./routes/samples.ts";

export type EdgeApp = Hono<Env> & {
  readonly config: EdgeConfig;
  readonly pool: WorkerPool;
  readonly metrics: MetricsRegistry;
  /** Whether the server runs without API keys. */
  readonly open: boolean;
  /** Batch jobs (`/v1/jobs`) when enabled in the configuration; start with `jobs.start()`. */
  readonly jobs?: JobSystem;
  /** Edge-local inference (functions/local.ts) when `edgeLocal.mode` is `auto`. */
  readonly local?: EdgeLocal;
  /** Stops background health checks and waits for running ones. */
  close(): Promise<void>;
};

/** Builds the edge app from `config` (defaults for everything left out; see functions/config.ts). */
export function createApp(partial: EdgeConfigInput = {}): EdgeApp {
  const config = makeConfig(partial);
  const now = config.now ?? Date.now;
  const log = config.log ?? ((m: string) => console.error(m));
  const auth = authenticate(config.apiKeys);
  const open = config.apiKeys.length === 0;
  const pool = new WorkerPool(config.workerUrls, {
    secret: config.workerSecret,
    fetch: config.fetch,
    now,
    healthIntervalMs: config.healthIntervalMs,
    healthTimeoutMs: config.healthTimeoutMs,
    log,
  });
  const started = now();
  const metrics = edgeMetrics({ pool, open, inflight: () => admission.inflight });
  const admission = new Admission({
    perKey: config.concurrencyPerKey,
    maxQueue: config.maxQueue,
    retryAfterS: () => pool.retryAfterS,
    limited: metrics.limited,
  });
  const jobs = config.jobs?.enabled
    ? new JobSystem({
      pool,
      config: config.jobs,
      now,
      log,
      metrics: metrics.registry,
      deadlineMs: config.defaultDeadlineMs,
    })
    : undefined;

  const local = config.edgeLocal.mode === "auto" ? new EdgeLocal(config.edgeLocal, log) : undefined;

  const app = new Hono<Env>();

  // Every request: id, metrics and security headers (CORS where configured).
  app.use("*", observe(metrics));
  app.use("*", securityHeaders(config.corsOrigins));
  const cors = crossOrigin(config.corsOrigins);
  if (cors) app.use("*", cors);

  // The API: authentication and the per-key rate limit; forwarded requests are admitted in their routes.
  app.use("/v1/*", auth, rateLimit(config.rateLimit, now, metrics.limited));
  const forward = { config, pool, local, now, admission };
  app.route("/v1/models", modelsRoutes(pool));
  app.route("/v1/samples", samplesRoutes({ ...forward, samples: metrics.samples }));
  app.route("/v1/encode", encodeRoutes(forward));
  app.route(
    "/v1/jobs",
    jobsRoutes({ jobs, pool, maxBodyBytes: config.maxBodyBytes, bodyTimeoutMs: config.bodyTimeoutMs, open }),
  );

  // Operations and the public pages.
  app.route(
    "/",
    opsRoutes({
      pool,
      metrics: metrics.registry,
      jobs,
      open,
      workers: config.workerUrls.length,
      now,
      started,
    }),
  );

  app.notFound(notFound);
  app.onError(onError(log));

  return Object.assign(app, {
    config,
    pool,
    metrics: metrics.registry,
    open,
    jobs,
    local,
    close: async () => {
      await jobs?.close();
      await local?.close();
      await pool.close();
    },
  }) as EdgeApp;
}

/** The app configured from the environment (GENIE_* variables); workers are checked lazily. */
export const app: EdgeApp = createApp(configFromEnv());

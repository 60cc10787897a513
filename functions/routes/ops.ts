/**
 * The operational and public pages of the edge (docs/contracts.md §2), outside `/v1` and its keys:
 *
 *     GET /healthz        the process is up
 *     GET /readyz         a worker with a model is up (and batch jobs, where enabled)
 *     GET /metrics        Prometheus text
 *     GET /openapi.json   the OpenAPI document; GET /docs its reference page
 *     GET /               the playground; GET /static/:file their assets (functions/static/)
 */
import { Hono } from "hono";
import type { MetricsRegistry } from "../../core/metrics.ts";
import type { Env } from "../env.ts";
import { retryAfter } from "../errors.ts";
import type { JobSystem } from "../jobs/system.ts";
import { openApiDocument } from "../openapi.ts";
import type { WorkerPool } from "../pool.ts";
import { serveStatic } from "../static.ts";

export interface OpsRouteOptions {
  pool: WorkerPool;
  metrics: MetricsRegistry;
  /** Batch jobs, when enabled: `/readyz` waits for them. */
  jobs?: JobSystem;
  /** No API keys configured: `/healthz` warns. */
  open: boolean;
  /** How many workers are configured. */
  workers: number;
  now: () => number;
  /** When the app was built (ms, by `now`). */
  started: number;
}

/** The sub-app of the operational routes, mounted at `/`. */
export function opsRoutes(opts: OpsRouteOptions): Hono<Env> {
  const { pool, jobs, open, now } = opts;
  const routes = new Hono<Env>();

  routes.get("/healthz", (c) => {
    return c.json({
      status: "ok",
      auth: open ? "open" : "api-keys",
      ...(open ? { warning: "no API keys configured (GENIE_API_KEYS): the server is open to anyone" } : {}),
      workers: opts.workers,
      uptime_s: Math.round((now() - opts.started) / 1000),
    });
  });

  routes.get("/readyz", async (c) => {
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

  routes.get("/metrics", (c) => {
    return c.body(opts.metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  routes.get("/openapi.json", (c) => c.json(openApiDocument()));

  routes.get("/", () => serveStatic("playground.html"));
  routes.get("/docs", () => serveStatic("docs.html"));
  routes.get("/static/:file", (c) => serveStatic(c.req.param("file")));

  return routes;
}

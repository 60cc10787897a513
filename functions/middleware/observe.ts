/**
 * Observing every request: its id (`x-request-id`), its route label, the request metrics, and the logging
 * of internal errors. Mounted first, on every path, by functions/app.ts.
 */
import type { Context, ErrorHandler, MiddlewareHandler, NotFoundHandler } from "hono";
import { matchedRoutes } from "hono/route";
import { METHOD_NAME_ALL } from "hono/router";
import type { Counter, Histogram } from "../../core/metrics.ts";
import type { Env } from "../env.ts";
import { ApiError } from "../errors.ts";

/** Route paths whose label is shorter than the path: the last parameter is not part of the label. */
const LABELS: Record<string, string> = {
  "/static/:file": "/static",
  "/v1/jobs/:id/files/:name": "/v1/jobs/:id/files",
};

/**
 * The `route` label of a finished request: the path of the route whose handler answered it, as
 * registered (`/v1/jobs/:id`), or `other` where no route of the request's method answered — not found,
 * a 405, a preflight, or a refusal by middleware on every path (authentication, rate limit).
 */
function routeLabel(c: Context): string {
  const route = matchedRoutes(c)[c.req.routeIndex];
  if (!route || route.method === METHOD_NAME_ALL) return "other";
  return LABELS[route.path] ?? route.path;
}

export interface ObserveOptions {
  requests: Counter;
  duration: Histogram;
}

/** Request id, timing and the request metrics (`genie_edge_requests_total`, `…_request_duration_seconds`). */
export function observe({ requests, duration }: ObserveOptions): MiddlewareHandler<Env> {
  return async (c, next) => {
    const t0 = performance.now();
    c.set("requestId", crypto.randomUUID());
    await next();
    c.header("x-request-id", c.get("requestId"));
    const route = routeLabel(c);
    requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    duration.observe({ route }, (performance.now() - t0) / 1000);
  };
}

/** 404 `not_found` for a path no route serves. */
export const notFound: NotFoundHandler<Env> = () =>
  new ApiError(404, "not_found", "no such route").toResponse();

/** Every error becomes the JSON error body; anything but an ApiError or a malformed body is logged as a 500. */
export function onError(log: (message: string) => void): ErrorHandler<Env> {
  return (err, c) => {
    if (err instanceof ApiError) return err.toResponse();
    if (err instanceof SyntaxError) return new ApiError(400, "bad_request", "malformed request").toResponse();
    log(
      `internal error on ${c.req.method} ${new URL(c.req.url).pathname}: ${
        err instanceof Error ? err.stack : err
      }`,
    );
    return new ApiError(500, "internal", "internal error").toResponse();
  };
}

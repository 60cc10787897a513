/** `GET /v1/models` (docs/contracts.md §2): the models the workers serve; 503 when none is up. */
import { Hono } from "hono";
import type { Env } from "../env.ts";
import { noWorker } from "../errors.ts";
import type { WorkerPool } from "../pool.ts";

/** The `/v1/models` sub-app. */
export function modelsRoutes(pool: WorkerPool): Hono<Env> {
  const routes = new Hono<Env>();

  routes.get("/", async (c) => {
    const models = await pool.models();
    if (models.length === 0) throw noWorker("no worker is available", pool.retryAfterS);
    return c.json(models);
  });

  return routes;
}

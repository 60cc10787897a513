/**
 * The `/v1/jobs` routes (docs/contracts.md §2), mounted by functions/app.ts behind its authentication and
 * rate limit:
 *
 *     POST /v1/jobs                      {request, count, chunk?, schedule?} → 202 {id, …}
 *     GET  /v1/jobs                      the caller's quotas: {limits, usage, active}
 *     GET  /v1/jobs/:id                  {id, status, done, total, …}
 *     DELETE /v1/jobs/:id                delete the job and its files now → 204
 *     GET  /v1/jobs/:id/results?cursor=&limit=   a page of per-chunk results
 *     GET  /v1/jobs/:id/files/<name>     one result file (.npy samples, .png grid, index.json)
 *     GET  /v1/jobs/:id/archive          the whole job as one tar stream
 *     POST /v1/jobs/:id/cancel           cancel (idempotent) → the job's status
 *
 * With API keys configured, a job is visible to the key that submitted it only (404 for others). An
 * expired or deleted job answers 410 `job_expired` (functions/jobs/retention.ts).
 */
import { Hono } from "hono";
import { issuesFromZod, summarizeIssues } from "../../core/api/errors.ts";
import type { Issue } from "../../core/api/errors.ts";
import { JobRequest } from "../../core/api/jobs.ts";
import type { ModelInfo } from "../../core/api/models.ts";
import { checkSamplesForModel } from "../../core/api/samples.ts";
import { ApiError, badRequest, invalidRequest, noWorker } from "../errors.ts";
import { parseBody } from "../negotiate.ts";
import type { WorkerPool } from "../pool.ts";
import type { JobRecord } from "./keys.ts";
import { describeMs } from "./retention.ts";
import { JOB_ID, type JobSystem } from "./system.ts";
import { type TarEntry, tarStream } from "./tar.ts";

type JobsEnv = { Variables: { principal: string; route: string } };

export interface JobsRouteOptions {
  /** The job system, or undefined when jobs are off (every route answers 503). */
  jobs?: JobSystem;
  pool: WorkerPool;
  maxBodyBytes: number;
  /** How long a body may take to arrive (ms; 408 after). */
  bodyTimeoutMs?: number;
  /** No API keys: jobs are not tied to a key. */
  open: boolean;
  /** Why jobs are unavailable, for the 503 message. */
  unavailable?: string;
}

const FILE_NAME = /^(chunk-\d{6}\.(npy|png)|index\.json)$/;

/**
 * Model-dependent checks of a schema-valid job; issues name fields by their path in the job body. The
 * request's solve settings are planned as the edge plans a samples request (core/plan.ts, through
 * checkSamplesForModel), so a job is refused at submission for what its chunks would be refused for.
 */
function checkJobForModel(req: JobRequest, model: ModelInfo): Issue[] {
  const out: Issue[] = checkSamplesForModel(req.request, model).map((i) => ({
    ...i,
    path: ["request", ...i.path],
  }));
  if (req.chunk !== undefined && req.chunk > model.limits.max_n) {
    out.push({
      path: ["chunk"],
      message: `at most ${model.limits.max_n} for ${model.name}`,
      code: "invalid_value",
    });
  }
  return out;
}

/** The `/v1/jobs` sub-app. */
export function jobsRoutes(opts: JobsRouteOptions): Hono<JobsEnv> {
  const routes = new Hono<JobsEnv>();

  const system = (): JobSystem => {
    if (!opts.jobs) {
      throw new ApiError(
        503,
        "jobs_unavailable",
        opts.unavailable ?? "batch jobs are not enabled on this server",
      );
    }
    return opts.jobs;
  };

  /** The job, if it exists and the caller may see it. */
  async function load(id: string, principal: string): Promise<JobRecord> {
    const jobs = system();
    const job = JOB_ID.test(id) ? await jobs.job(id) : null;
    const mine = (owner: string) => opts.open || owner === principal;
    if (!job && JOB_ID.test(id)) {
      // An expired or deleted job (functions/jobs/retention.ts): 410 to its key.
      const gone = await jobs.gone(id);
      if (gone && mine(gone.principal)) {
        const when = new Date(gone.at).toISOString();
        throw new ApiError(
          410,
          "job_expired",
          gone.reason === "deleted"
            ? `job ${id} was deleted at ${when}`
            : `job ${id} expired at ${when}: jobs are kept for ${
              describeMs(jobs.config.retentionMs)
            } after they end`,
        );
      }
    }
    if (!job || !mine(job.principal)) {
      throw new ApiError(404, "not_found", `no job ${JSON.stringify(id)}`);
    }
    return job;
  }

  routes.post("/", async (c) => {
    c.set("route", "/v1/jobs");
    const jobs = system();
    const raw = await parseBody(c.req.raw, opts.maxBodyBytes, opts.bodyTimeoutMs);
    const parsed = JobRequest.safeParse(raw);
    if (!parsed.success) {
      const details = issuesFromZod(parsed.error);
      throw invalidRequest(summarizeIssues(details), details);
    }
    const req = parsed.data;
    const models = await opts.pool.models();
    if (models.length === 0) {
      throw noWorker("no worker is available to check the request", opts.pool.retryAfterS);
    }
    const model = models.find((m) => m.name === req.request.model);
    if (!model) {
      const message = `unknown model ${JSON.stringify(req.request.model)} (one of ${
        models.map((m) => m.name).join(", ")
      })`;
      throw invalidRequest(message, [{ path: ["request", "model"], message, code: "invalid_value" }]);
    }
    const issues = checkJobForModel(req, model);
    if (issues.length > 0) throw invalidRequest(summarizeIssues(issues), issues);
    const job = await jobs.submit(req, model, c.get("principal"));
    const info = await jobs.info(job);
    return c.json(info, 202, { location: `/v1/jobs/${job.id}` });
  });

  routes.get("/", async (c) => {
    c.set("route", "/v1/jobs");
    return c.json(await system().usage(c.get("principal")));
  });

  routes.delete("/:id", async (c) => {
    c.set("route", "/v1/jobs/:id");
    const job = await load(c.req.param("id"), c.get("principal"));
    await system().delete(job.id);
    return c.body(null, 204);
  });

  routes.get("/:id", async (c) => {
    c.set("route", "/v1/jobs/:id");
    const job = await load(c.req.param("id"), c.get("principal"));
    return c.json(await system().info(job));
  });

  routes.post("/:id/cancel", async (c) => {
    c.set("route", "/v1/jobs/:id/cancel");
    const job = await load(c.req.param("id"), c.get("principal"));
    const jobs = system();
    const canceled = (await jobs.cancel(job.id)) ?? job;
    return c.json(await jobs.info(canceled));
  });

  routes.get("/:id/results", async (c) => {
    c.set("route", "/v1/jobs/:id/results");
    const job = await load(c.req.param("id"), c.get("principal"));
    const jobs = system();
    const cursorText = c.req.query("cursor") ?? "0";
    const limitText = c.req.query("limit") ?? String(jobs.config.pageSize);
    if (!/^\d{1,9}$/.test(cursorText)) throw badRequest("cursor: not a cursor from a previous page");
    if (!/^\d{1,6}$/.test(limitText) || Number(limitText) < 1) throw badRequest("limit: a positive integer");
    const limit = Math.min(Number(limitText), jobs.config.maxPageSize);
    const target = await jobs.resultsJob(job);
    if (!target) {
      return c.json({ id: job.id, status: (await jobs.info(job)).status, items: [], next_cursor: null });
    }
    const page = await jobs.results(target, Number(cursorText), limit);
    return c.json({
      id: target.id,
      status: target.status,
      items: page.items,
      next_cursor: page.next === null ? null : String(page.next),
    });
  });

  routes.get("/:id/files/:name", async (c) => {
    c.set("route", "/v1/jobs/:id/files");
    const job = await load(c.req.param("id"), c.get("principal"));
    const name = c.req.param("name");
    if (!FILE_NAME.test(name)) throw new ApiError(404, "not_found", `no file ${JSON.stringify(name)}`);
    if (job.files_deleted) {
      throw new ApiError(
        404,
        "not_found",
        `no file ${JSON.stringify(name)}: canceling the job deleted its files`,
      );
    }
    const bytes = await system().store.get(`${job.id}/${name}`);
    if (!bytes) throw new ApiError(404, "not_found", `no file ${JSON.stringify(name)} (yet)`);
    const type = name.endsWith(".png")
      ? "image/png"
      : name.endsWith(".json")
      ? "application/json"
      : "application/octet-stream";
    return new Response(bytes as BodyInit, {
      headers: { "content-type": type, "content-length": String(bytes.byteLength) },
    });
  });

  routes.get("/:id/archive", async (c) => {
    c.set("route", "/v1/jobs/:id/archive");
    const job = await load(c.req.param("id"), c.get("principal"));
    const jobs = system();
    const target = await jobs.resultsJob(job);
    if (!target) throw new ApiError(404, "not_found", `job ${job.id} has not run yet`);
    const info = await jobs.info(target);
    const enc = new TextEncoder();
    async function* entries(): AsyncGenerator<TarEntry> {
      const index = [];
      for await (const rec of jobs.finishedChunks(target!)) {
        index.push(jobs.resultItem(target!, rec, ""));
        for (const key of [rec.files?.npy, rec.files?.png]) {
          if (!key) continue;
          const data = await jobs.store.get(key);
          if (data) yield { name: key, data, mtime: rec.finished_at };
        }
      }
      yield {
        name: `${target!.id}/index.json`,
        data: enc.encode(JSON.stringify({ job: info, chunks: index }, null, 1)),
      };
    }
    return new Response(tarStream(entries()), {
      headers: {
        "content-type": "application/x-tar",
        "content-disposition": `attachment; filename="${target.id}.tar"`,
        "cache-control": "no-store",
      },
    });
  });

  return routes;
}

/**
 * `POST /v1/samples` (docs/contracts.md §2), mounted by functions/app.ts behind its authentication and
 * rate limit: validate against the request's model, forward through the worker pool (functions/sampling.ts)
 * under the request's deadline, and answer as JSON, msgpack, one PNG grid or server-sent events.
 */
import { Hono } from "hono";
import type { Counter } from "../../core/metrics.ts";
import {
  checkSamplesForModel,
  firstSeedOf,
  isImageModel,
  requestedCount,
  SamplesRequest,
} from "../../core/api/samples.ts";
import { summarizeIssues } from "../../core/api/errors.ts";
import { gridSize, MAX_GRID_PIXELS } from "../../core/image.ts";
import type { Env } from "../env.ts";
import { ApiError, invalid } from "../errors.ts";
import { deadlineOf, type ForwardOptions, resolveModel, usePost, withDeadline } from "../forward.ts";
import { accepts } from "../middleware/accepts.ts";
import { type Admission, admit } from "../middleware/limits.ts";
import { parseBody } from "../negotiate.ts";
import { pngInfo, renderSamples, samplesBody } from "../render.ts";
import { latentBytes, type Progress, type RunOutcome, runSamples } from "../sampling.ts";
import { sseResponse } from "../sse.ts";
import { parseWith } from "../validate.ts";

export interface SamplesRouteOptions extends ForwardOptions {
  admission: Admission;
  /** `genie_edge_samples_total`. */
  samples: Counter;
}

const parseRequest = parseWith(SamplesRequest);

/** The `/v1/samples` sub-app. */
export function samplesRoutes(opts: SamplesRouteOptions): Hono<Env> {
  const { config, pool, now } = opts;
  const routes = new Hono<Env>();

  routes.post(
    "/",
    accepts(
      ["json", "msgpack", "png", "sse"],
      "accept application/json, application/msgpack, image/png or text/event-stream",
    ),
    admit(opts.admission),
    async (c) => {
      const format = c.get("format");
      const req = parseRequest(await parseBody(c.req.raw, config.maxBodyBytes, config.bodyTimeoutMs));
      const model = await resolveModel(pool, req.model);
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
      const deadlineMs = deadlineOf(config, req.deadline_ms);
      const run = (onProgress?: (p: Progress) => void, signal = c.req.raw.signal) =>
        withDeadline(
          now,
          signal,
          deadlineMs,
          (ctx) => runSamples(req, model, firstSeed, lat.bytes, { ...ctx, pool, onProgress }),
        );
      const count = (o: RunOutcome) =>
        opts.samples.inc({ model: o.model.name, solver: o.solver }, o.seeds.length);
      if (format === "sse") {
        // The stream outlives this handler: it holds the request's slot until the work is done.
        const release = c.get("slot").keep();
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
      return renderSamples(c, format, outcome, output, pngInfo(req));
    },
  );

  routes.all("/", usePost);

  return routes;
}

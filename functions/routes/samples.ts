/**
 * `POST /v1/samples` (docs/contracts.md §2), mounted by functions/app.ts behind its authentication and
 * rate limit: validate against the request's model, forward through the worker pool (functions/sampling.ts)
 * — or solve in this edge for a small model marked `edge` (functions/local.ts) — under the request's
 * deadline — img2img (`images` with `strength`) as an encoding then a sampling — and answer as JSON,
 * msgpack, one PNG grid or server-sent events (with x̂₀ previews when asked); `x-genie-backend` says
 * where it ran.
 */
import { Hono } from "hono";
import type { Counter } from "../../core/metrics.ts";
import {
  checkSamplesForModel,
  firstSeedOf,
  type Img2ImgLegs,
  img2imgLegs,
  isImageModel,
  requestedCount,
  SamplesRequest,
} from "../../core/api/samples.ts";
import { base64ToBytes } from "../../core/api/tensor.ts";
import { summarizeIssues } from "../../core/api/errors.ts";
import { gridSize, MAX_GRID_PIXELS } from "../../core/image.ts";
import type { Env } from "../env.ts";
import { ApiError, invalidRequest } from "../errors.ts";
import {
  deadlineOf,
  type ForwardOptions,
  resolveModel,
  routeOf,
  usePost,
  withBackend,
  withDeadline,
} from "../forward.ts";
import { accepts } from "../middleware/accepts.ts";
import { type Admission, admit } from "../middleware/limits.ts";
import { parseBody } from "../negotiate.ts";
import { pngsToTensor } from "../images.ts";
import { pngInfo, progressEvent, renderSamples, samplesBody } from "../render.ts";
import {
  latentBytes,
  type Progress,
  runImg2Img,
  type RunOutcome,
  runSamples,
  tensorValues,
} from "../sampling.ts";
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
      if (issues.length > 0) throw invalidRequest(summarizeIssues(issues), issues);
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
          throw invalidRequest(`scale: ${message}`, [{ path: ["scale"], message, code: "too_big" }]);
        }
      }
      const lat = latentBytes(req);
      if (lat.issues.length > 0) throw invalidRequest(summarizeIssues(lat.issues), lat.issues);
      // img2img: the input images as float32 in model space, and the two legs of the run.
      let img2img: { images: Float32Array; legs: Img2ImgLegs } | undefined;
      if (req.images) {
        const legs = img2imgLegs(req, model);
        if (typeof legs === "string") {
          throw invalidRequest(`strength: ${legs}`, [{
            path: ["strength"],
            message: legs,
            code: "invalid_value",
          }]);
        }
        let images: Float32Array;
        if (Array.isArray(req.images)) {
          const decoded = await pngsToTensor(req.images.map((b) => base64ToBytes(b)), model.shape);
          if (decoded.issues.length > 0) {
            throw invalidRequest(summarizeIssues(decoded.issues), decoded.issues);
          }
          images = decoded.data;
        } else images = tensorValues(req.images, "images");
        img2img = { images, legs };
      }
      // Previews of x̂₀ (SSE only): `preview: true` in the body, or ?preview=1.
      const query = new URL(c.req.url).searchParams.get("preview");
      const preview = req.preview === true || query === "1" || query === "true";
      const output = req.output ?? (isImageModel(model) ? "png" : "tensor");
      // seed absent or −1: a random seed; the response echoes every sample's seed.
      const firstSeed = firstSeedOf(req.seed);
      const deadlineMs = deadlineOf(config, req.deadline_ms);
      const route = await routeOf(opts, model);
      const run = (onProgress?: (p: Progress) => void, signal = c.req.raw.signal) =>
        withDeadline(now, signal, deadlineMs, (ctx) => {
          const context = { ...ctx, pool: route.caller, onProgress, preview };
          return img2img
            ? runImg2Img(req, model, img2img.legs, firstSeed, img2img.images, context)
            : runSamples(req, model, firstSeed, lat.bytes, context);
        });
      const count = (o: RunOutcome) =>
        opts.samples.inc({ model: o.model.name, solver: o.solver }, o.seeds.length);
      if (format === "sse") {
        // The stream outlives this handler: it holds the request's slot until the work is done.
        const release = c.get("slot").keep();
        // Sent before the work: where the request starts (a failed local evaluation moves it to a worker).
        return withBackend(
          sseResponse(c.req.raw.signal, async (emit, signal) => {
            try {
              const outcome = await run((p) => emit("progress", progressEvent(p)), signal);
              count(outcome);
              emit("completed", samplesBody(outcome, output, false, pngInfo(req)));
            } finally {
              release();
            }
          }),
          route,
        );
      }
      const outcome = await run();
      count(outcome);
      return withBackend(renderSamples(c, format, outcome, output, pngInfo(req)), route);
    },
  );

  routes.all("/", usePost);

  return routes;
}

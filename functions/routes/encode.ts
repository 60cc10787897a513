/**
 * `POST /v1/encode` (docs/contracts.md §2), mounted by functions/app.ts behind its authentication and rate
 * limit: map PNGs or a tensor to latents on a worker (or in this edge for a small model marked `edge`:
 * functions/local.ts), answered as JSON or msgpack; `x-genie-backend` says where it ran.
 */
import { Hono } from "hono";
import { checkEncodeForModel, EncodeRequest } from "../../core/api/samples.ts";
import { summarizeIssues } from "../../core/api/errors.ts";
import { base64ToBytes } from "../../core/api/tensor.ts";
import type { Env } from "../env.ts";
import { invalidRequest } from "../errors.ts";
import {
  deadlineOf,
  type ForwardOptions,
  resolveModel,
  routeOf,
  usePost,
  withBackend,
  withDeadline,
} from "../forward.ts";
import { pngsToTensor } from "../images.ts";
import { accepts } from "../middleware/accepts.ts";
import { type Admission, admit } from "../middleware/limits.ts";
import { parseBody } from "../negotiate.ts";
import { msgpackResponse, priceOf, tensorOut } from "../render.ts";
import { encodeTensor, runEncode } from "../sampling.ts";
import { parseWith } from "../validate.ts";

export interface EncodeRouteOptions extends ForwardOptions {
  admission: Admission;
}

const parseRequest = parseWith(EncodeRequest);

/** The `/v1/encode` sub-app. */
export function encodeRoutes(opts: EncodeRouteOptions): Hono<Env> {
  const { config, pool, now } = opts;
  const routes = new Hono<Env>();

  routes.post(
    "/",
    accepts(["json", "msgpack"], "accept application/json or application/msgpack"),
    admit(opts.admission),
    async (c) => {
      const req = parseRequest(await parseBody(c.req.raw, config.maxBodyBytes, config.bodyTimeoutMs));
      const model = await resolveModel(pool, req.model);
      const issues = checkEncodeForModel(req, model);
      if (issues.length > 0) throw invalidRequest(summarizeIssues(issues), issues);
      let images: Float32Array, n: number;
      if (req.tensor) {
        images = encodeTensor(req);
        n = req.tensor.shape[0];
      } else {
        const decoded = await pngsToTensor(req.images!.map((b) => base64ToBytes(b)), model.shape);
        if (decoded.issues.length > 0) throw invalidRequest(summarizeIssues(decoded.issues), decoded.issues);
        images = decoded.data;
        n = req.images!.length;
      }
      const route = await routeOf(opts, model);
      const outcome = await withDeadline(
        now,
        c.req.raw.signal,
        deadlineOf(config, req.deadline_ms),
        (ctx) => runEncode(req, model, images, n, { ...ctx, pool: route.caller }),
      );
      const binary = c.get("format") === "msgpack";
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
      return withBackend(binary ? msgpackResponse(body) : c.json(body), route);
    },
  );

  routes.all("/", usePost);

  return routes;
}

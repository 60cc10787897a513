/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the zod schemas in core/api that also
 * validate the requests (one source of truth). Component schemas come from the schemas' `id` metadata.
 */
import { z } from "zod";
import { ErrorBody } from "../core/api/errors.ts";
import { ModelList } from "../core/api/models.ts";
import {
  EncodeRequest,
  EncodeResponse,
  ProgressEvent,
  SamplesRequest,
  SamplesResponse,
} from "../core/api/samples.ts";
import { Bytes, bytesToBase64 } from "../core/api/tensor.ts";
import { JobInfo, JobRequest, JobResultsPage, JobsUsage } from "../core/api/jobs.ts";

const COMPONENTS = "#/components/schemas/";

type JsonSchema = Record<string, unknown>;

function components(): Record<string, JsonSchema> {
  // Touch every schema so its id is registered, then convert the registry into components.
  void [ErrorBody, ModelList, SamplesRequest, SamplesResponse, EncodeRequest, EncodeResponse, ProgressEvent];
  void [JobRequest, JobInfo, JobResultsPage, JobsUsage];
  const out = z.toJSONSchema(z.globalRegistry, {
    io: "input",
    target: "draft-2020-12",
    unrepresentable: "any",
    uri: (id) => COMPONENTS + id,
    override: (ctx) => {
      if (ctx.zodSchema === Bytes) {
        ctx.jsonSchema.type = "string";
        ctx.jsonSchema.format = "binary";
      }
    },
  }) as { schemas: Record<string, JsonSchema> };
  const schemas: Record<string, JsonSchema> = {};
  for (const [id, s] of Object.entries(out.schemas)) {
    const { $schema: _, $id: __, ...rest } = s;
    schemas[id] = rest;
  }
  return schemas;
}

const ref = (id: string) => ({ $ref: COMPONENTS + id });

function errorResponse(description: string, headers?: Record<string, unknown>) {
  return {
    description,
    content: { "application/json": { schema: ref("Error") } },
    ...(headers ? { headers } : {}),
  };
}

const RETRY_AFTER = { "Retry-After": { description: "Seconds to wait", schema: { type: "integer" } } };

const GET_ERRORS = {
  "401": errorResponse("Missing or unknown API key"),
  "429": errorResponse("Rate limit", RETRY_AFTER),
  "503": errorResponse("No worker available", RETRY_AFTER),
};

const COMMON_ERRORS = {
  "400": errorResponse("Malformed body (not JSON/msgpack)"),
  "401": errorResponse("Missing or unknown API key"),
  "413": errorResponse("Body too large"),
  "415": errorResponse("Unsupported Content-Type"),
  "422": errorResponse("Valid JSON, invalid values; details name each field by path"),
  "429": errorResponse("Rate limit, concurrency cap or queue full", RETRY_AFTER),
  "503": errorResponse("No worker available", RETRY_AFTER),
  "504": errorResponse("Deadline exceeded"),
};

/**
 * The request examples of the reference page's "Try it" boxes (functions/static/docs.js), each valid as
 * shipped against the default model (tests/functions/docs_examples.test.ts sends every one): bodies as
 * `example` of their JSON content, path parameters as `example` of the parameter. `{id}` of the job
 * routes has none: the page fills it with the id of the job its POST /v1/jobs example created.
 */
export const EXAMPLES = {
  createSamples: { model: "mnist-mix", n: 4, solver: "genie", nfe: 10, seed: 0 },
  /** One mid-grey 28×28 image (784 float32 zeros) as a tensor. */
  encodeImages: {
    model: "mnist-mix",
    solver: "ddim",
    steps: 10,
    tensor: { shape: [1, 1, 28, 28], dtype: "float32", data: bytesToBase64(new Uint8Array(784 * 4)) },
  },
  createJob: { request: { model: "mnist-mix", n: 4, nfe: 10, seed: 0 }, count: 2 },
  /** A file every job has once its first chunk is done. */
  fileName: "chunk-000000.npy",
} as const;

let cached: JsonSchema | undefined;

export function openApiDocument(): JsonSchema {
  if (cached) return cached;
  const json = (id: string, example?: unknown) => ({
    "application/json": { schema: ref(id), ...(example !== undefined ? { example } : {}) },
  });
  const both = (id: string, example?: unknown) => ({
    ...json(id, example),
    "application/msgpack": { schema: ref(id) },
  });
  cached = {
    openapi: "3.1.0",
    info: {
      title: "GENIE diffusion sampler",
      version: "1.0.0",
      description: "Samples from diffusion models with the GENIE ODE solver and baselines. " +
        "Binary fields are base64 in JSON and raw bytes in msgpack.",
    },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths: {
      "/v1/models": {
        get: {
          summary: "Models, their solvers, derivative sources and limits",
          operationId: "listModels",
          responses: { "200": { description: "Models", content: json("ModelList") }, ...GET_ERRORS },
        },
      },
      "/v1/samples": {
        post: {
          summary: "Draw samples",
          operationId: "createSamples",
          description: "Accept selects the output: application/json (base64 PNGs, or a tensor with " +
            '"output":"tensor"), application/msgpack (raw bytes), image/png (one grid of all samples), ' +
            "text/event-stream (progress events, then completed or failed; closing the connection cancels).",
          requestBody: { required: true, content: both("SamplesRequest", EXAMPLES.createSamples) },
          responses: {
            "200": {
              description: "Samples",
              content: {
                ...both("SamplesResponse"),
                "image/png": { schema: { type: "string", format: "binary" } },
                "text/event-stream": {
                  schema: { type: "string" },
                  description: "event: progress (ProgressEvent) … then event: completed (SamplesResponse) " +
                    "or event: failed (Error)",
                },
              },
            },
            "406": errorResponse("No acceptable output format (e.g. image/png for a non-image model)"),
            ...COMMON_ERRORS,
          },
        },
      },
      "/v1/encode": {
        post: {
          summary: "Encode images into latents (the ODE run forward)",
          operationId: "encodeImages",
          requestBody: { required: true, content: both("EncodeRequest", EXAMPLES.encodeImages) },
          responses: { "200": { description: "Latents", content: both("EncodeResponse") }, ...COMMON_ERRORS },
        },
      },
      ...jobPaths(json),
      "/healthz": {
        get: {
          summary: "Process up; says whether the server runs open",
          security: [],
          responses: { "200": { description: "Up" } },
        },
      },
      "/readyz": {
        get: {
          summary: "A worker and its models are ready",
          security: [],
          responses: { "200": { description: "Ready" }, "503": errorResponse("Not ready", RETRY_AFTER) },
        },
      },
      "/metrics": {
        get: {
          summary: "Prometheus metrics",
          security: [],
          responses: {
            "200": {
              description: "Text exposition",
              content: { "text/plain": { schema: { type: "string" } } },
            },
          },
        },
      },
    },
    components: {
      schemas: components(),
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "An API key from GENIE_API_KEYS" },
      },
    },
  };
  return cached;
}

/** The `/v1/jobs` routes (functions/jobs/routes.ts). */
function jobPaths(json: (id: string, example?: unknown) => Record<string, unknown>): Record<string, unknown> {
  const id = {
    name: "id",
    in: "path",
    required: true,
    schema: { type: "string" },
    description: "A job's id, as POST /v1/jobs answers it",
  };
  const NOT_FOUND = {
    "404": errorResponse("No such job (or not this key's)"),
    "410": errorResponse("job_expired: the job expired or was deleted, with its files"),
  };
  return {
    "/v1/jobs": {
      get: {
        summary: "The caller's job quotas: limits, current usage and active jobs",
        operationId: "getJobsUsage",
        responses: { "200": { description: "Limits and usage", content: json("JobsUsage") }, ...GET_ERRORS },
      },
      post: {
        summary: "Submit a batch job: a samples request run count times, in chunks, or on a cron schedule",
        operationId: "createJob",
        description: "Sample i of the job uses seed (base_seed + i) mod 2^32 (base_seed: request.seed or " +
          "random); results are bit-identical however the job is chunked, interrupted or retried.",
        requestBody: {
          required: true,
          content: {
            ...json("JobRequest", EXAMPLES.createJob),
            "application/msgpack": { schema: ref("JobRequest") },
          },
        },
        responses: {
          "202": {
            description: "Accepted; Location names the job",
            content: json("Job"),
            headers: { Location: { schema: { type: "string" } } },
          },
          ...COMMON_ERRORS,
          "413": errorResponse("Body too large, or quota_exceeded: the job alone is over a per-key limit"),
          "429": errorResponse(
            "Rate limit (with Retry-After), or quota_exceeded: over a per-key limit with the key's other jobs",
          ),
        },
      },
    },
    "/v1/jobs/{id}": {
      get: {
        summary: "A job's status and progress",
        operationId: "getJob",
        parameters: [id],
        responses: { "200": { description: "The job", content: json("Job") }, ...NOT_FOUND, ...GET_ERRORS },
      },
      delete: {
        summary: "Delete a job and its files now (a running job is canceled first)",
        operationId: "deleteJob",
        parameters: [id],
        responses: { "204": { description: "Deleted" }, ...NOT_FOUND, ...GET_ERRORS },
      },
    },
    "/v1/jobs/{id}/results": {
      get: {
        summary: "A page of results, one item per finished chunk",
        operationId: "listJobResults",
        parameters: [
          id,
          {
            name: "cursor",
            in: "query",
            schema: { type: "string" },
            description: "next_cursor of the last page",
          },
          { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } },
        ],
        responses: {
          "200": { description: "Results", content: json("JobResultsPage") },
          ...NOT_FOUND,
          ...GET_ERRORS,
        },
      },
    },
    "/v1/jobs/{id}/files/{name}": {
      get: {
        summary: "One result file: chunk-NNNNNN.npy, chunk-NNNNNN.png (image models) or index.json",
        operationId: "getJobFile",
        parameters: [id, {
          name: "name",
          in: "path",
          required: true,
          schema: { type: "string" },
          example: EXAMPLES.fileName,
        }],
        responses: {
          "200": {
            description: "The file",
            content: {
              "application/octet-stream": { schema: { type: "string", format: "binary" } },
              "image/png": { schema: { type: "string", format: "binary" } },
            },
          },
          ...NOT_FOUND,
        },
      },
    },
    "/v1/jobs/{id}/archive": {
      get: {
        summary: "The whole job as one tar (ustar) stream: every chunk's files and index.json",
        operationId: "getJobArchive",
        parameters: [id],
        responses: {
          "200": {
            description: "tar stream",
            content: { "application/x-tar": { schema: { type: "string", format: "binary" } } },
          },
          ...NOT_FOUND,
        },
      },
    },
    "/v1/jobs/{id}/cancel": {
      post: {
        summary: "Cancel a job (a recurring job also stops scheduling); idempotent",
        operationId: "cancelJob",
        parameters: [id],
        responses: { "200": { description: "The job", content: json("Job") }, ...NOT_FOUND, ...GET_ERRORS },
      },
    },
  };
}

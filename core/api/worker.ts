/**
 * The worker protocol (CONTRACTS.md §3): msgpack bodies, binary tensors as raw bytes. These schemas are
 * the one definition both the edge (which builds and reads these messages) and the worker (which
 * validates them) use.
 */
import { z } from "zod";
import { GRID_KINDS } from "../grid.ts";
import { DERIVATIVE_SOURCES } from "../solvers/types.ts";
import { ModelName } from "./models.ts";
import { HARD_LIMITS, VARIANTS } from "./samples.ts";
import { Bytes } from "./tensor.ts";

export const PROTOCOL_VERSION = 1;
export const SIGNATURE_HEADER = "x-genie-signature";
export const MSGPACK = "application/msgpack";

const solve = {
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().min(1).max(128),
  model: ModelName,
  solver: z.string().min(1).max(64),
  steps: z.int().min(1).max(HARD_LIMITS.steps).optional(),
  nfe: z.int().min(1).max(HARD_LIMITS.nfe).optional(),
  grid: z.enum(GRID_KINDS).optional(),
  rho: z.number().positive().optional(),
  order: z.int().min(1).max(4).optional(),
  variant: z.enum(VARIANTS).optional(),
  deadline_ms: z.int().min(1).optional(),
};

/** `POST /v1/batch` request. */
export const BatchRequest = z.object({
  ...solve,
  afs: z.boolean().optional(),
  denoise: z.boolean().optional(),
  seeds: z.array(z.int().min(0).max(0xffffffff)).min(1).max(HARD_LIMITS.n),
  latents: Bytes.optional(),
  class: z.int().min(0).optional(),
  guidance: z.number().optional(),
  genie_derivative: z.enum(DERIVATIVE_SOURCES).optional(),
});
export type BatchRequest = z.infer<typeof BatchRequest>;

/** `POST /v1/encode` request: `images` are float32 LE in model space, `shape` = [n, …sample shape]. */
export const EncodeBatchRequest = z.object({
  ...solve,
  images: Bytes,
  shape: z.array(z.int().min(1)).min(1).optional(),
});
export type EncodeBatchRequest = z.infer<typeof EncodeBatchRequest>;

export const WorkerTimings = z.looseObject({ queue_ms: z.number(), compute_ms: z.number() });

/** Success of `POST /v1/batch` and `POST /v1/encode`. */
export const BatchResponse = z.looseObject({
  v: z.literal(PROTOCOL_VERSION),
  id: z.string(),
  shape: z.array(z.int().min(0)),
  data: Bytes,
  nfe: z.int().min(0),
  steps: z.int().min(0),
  timings: WorkerTimings,
});
export type BatchResponse = z.infer<typeof BatchResponse>;

/** Failure of any worker call, sent with the matching HTTP status. */
export const WorkerError = z.looseObject({
  v: z.literal(PROTOCOL_VERSION).optional(),
  id: z.string().optional(),
  error: z.looseObject({ code: z.string(), message: z.string() }),
});
export type WorkerError = z.infer<typeof WorkerError>;

/** Hex HMAC-SHA-256 of `body` with `secret` (web crypto), as sent in `x-genie-signature: sha256=<hex>`. */
export async function signBody(secret: string, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, body as BufferSource));
  return "sha256=" + Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

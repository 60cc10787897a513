/**
 * The worker protocol (docs/contracts.md §3): msgpack bodies, binary tensors as raw bytes. These schemas are
 * the one definition both the edge (which builds and reads these messages) and the worker (which
 * validates them) use.
 */
import { z } from "zod";
import { GRID_KINDS } from "../grid.ts";
import { DERIVATIVE_SOURCES } from "../solvers/types.ts";
import { ModelName } from "./models.ts";
import { HARD_LIMITS, VARIANTS } from "./samples.ts";
import { Bytes } from "./tensor.ts";
import { constantTimeEqual, fromHex, randomHex, toHex } from "../hex.ts";
import { PREVIEW_MAX_SIDE, previewEvery } from "../preview.ts";

export { PREVIEW_MAX_SIDE, previewEvery };

export const PROTOCOL_VERSION = 1;
/**
 * Signed requests (with a shared secret): `x-genie-signature: sha256=<hex>` is the HMAC-SHA-256 of
 * {@link signedPayload} — method, path with query, `x-genie-timestamp` (Unix time in ms) and
 * `x-genie-nonce` (random, unique per request), then the body — so a signature is valid for one request
 * only, and only for a short time; the worker also refuses a signature it has already seen.
 */
export const SIGNATURE_HEADER = "x-genie-signature";
export const TIMESTAMP_HEADER = "x-genie-timestamp";
export const NONCE_HEADER = "x-genie-nonce";
export const MSGPACK = "application/msgpack";
/**
 * Content type of a streamed `POST /v1/batch` answer (request field `stream: true`): a sequence of
 * frames, each a 4-byte big-endian length then one msgpack map of that many bytes. Progress frames
 * `{v:1, id, progress:{step, steps, preview?}}` come first (one per solver step, `step` 0-based, in
 * order; `preview` with the request's `preview: true`, see {@link ProgressFrame}), then
 * one final frame: the normal response object, or the normal error object with its HTTP status added
 * as `status` (the HTTP status of a streamed answer is 200; errors found before streaming starts keep
 * their normal status and body).
 */
export const MSGPACK_STREAM = "application/x-msgpack-stream";

const solve = {
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().min(1).max(128),
  model: ModelName,
  solver: z.string().min(1).max(64),
  steps: z.int().min(1).max(HARD_LIMITS.steps).optional(),
  nfe: z.int().min(1).max(HARD_LIMITS.nfe).optional(),
  grid: z.enum(GRID_KINDS).optional(),
  rho: z.number().positive().optional(),
  /** The grid's ends (default the model's schedule's; core/plan.ts checks them against it). */
  t_min: z.number().positive().optional(),
  t_max: z.number().positive().optional(),
  order: z.int().min(1).max(4).optional(),
  variant: z.enum(VARIANTS).optional(),
  /** At most HARD_LIMITS.deadline_ms (1 h), well within what a timer can hold (2³¹ − 1 ms). */
  deadline_ms: z.int().min(1).max(HARD_LIMITS.deadline_ms).optional(),
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
  /** Answer as a {@link MSGPACK_STREAM} with per-step progress frames. */
  stream: z.boolean().optional(),
  /**
   * With `stream`: progress frames carry, every {@link previewEvery} steps, a {@link Preview} of the
   * model's current prediction x̂₀ of the first sample (core/preview.ts).
   */
  preview: z.boolean().optional(),
});
export type BatchRequest = z.infer<typeof BatchRequest>;

/** `POST /v1/encode` request: `images` are float32 LE in model space, `shape` = [n, …sample shape]. */
export const EncodeBatchRequest = z.object({
  ...solve,
  images: Bytes,
  shape: z.array(z.int().min(1)).min(1).optional(),
  /** Conditioning of the ODE, as on `POST /v1/batch` (encoding with a class runs its conditional ODE). */
  class: z.int().min(0).optional(),
  guidance: z.number().optional(),
  genie_derivative: z.enum(DERIVATIVE_SOURCES).optional(),
  /** Answer as a {@link MSGPACK_STREAM} with per-step progress frames, as `POST /v1/batch` does. */
  stream: z.boolean().optional(),
});
export type EncodeBatchRequest = z.infer<typeof EncodeBatchRequest>;

export const WorkerTimings = z.looseObject({ queue_ms: z.number(), compute_ms: z.number() });

/**
 * Success of `POST /v1/batch` and `POST /v1/encode`. `nfe` counts evaluations of ε, `calls` graph calls
 * of every kind and `cost` their forward-pass equivalents, all per sample trajectory (core/cost.ts);
 * `cost_estimated` is true when a called graph had no measured cost ratio. `calls`, `cost`,
 * `cost_estimated`, `grid` and `rho` are optional here so that the edge still reads workers that do not
 * report them.
 */
export const BatchResponse = z.looseObject({
  v: z.literal(PROTOCOL_VERSION),
  id: z.string(),
  shape: z.array(z.int().min(0)),
  data: Bytes,
  nfe: z.int().min(0),
  calls: z.int().min(0).optional(),
  cost: z.number().min(0).optional(),
  cost_estimated: z.boolean().optional(),
  steps: z.int().min(0),
  grid: z.enum(GRID_KINDS).optional(),
  rho: z.number().positive().optional(),
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

/**
 * A small picture of the model's current prediction x̂₀ = (x − σ ε̂)/α of one sample (core/preview.ts):
 * `shape` is the sample's shape, or for images [C, H', W'] with H', W' ≤ {@link PREVIEW_MAX_SIDE}
 * (box-averaged), and `data` its float32 values (little-endian, C order) in model space. `step` is the
 * solver step whose evaluation it comes from.
 */
export const Preview = z.looseObject({
  step: z.int().min(0),
  shape: z.array(z.int().min(1)).min(1).max(4),
  data: Bytes,
});
export type Preview = z.infer<typeof Preview>;

/**
 * A progress frame of a streamed answer: `step` is the solver step the request has started. `preview`
 * (optional; only when the request asked for it) is the latest x̂₀ of its first sample.
 */
export const ProgressFrame = z.looseObject({
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().optional(),
  progress: z.looseObject({ step: z.int().min(0), steps: z.int().min(0), preview: Preview.optional() }),
});
export type ProgressFrame = z.infer<typeof ProgressFrame>;

/** One frame of a {@link MSGPACK_STREAM}: the 4-byte big-endian length, then the msgpack body. */
export function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength);
  out.set(body, 4);
  return out;
}

/**
 * The frame bodies of a {@link MSGPACK_STREAM}, as they arrive. Throws on a frame over `maxFrame`
 * bytes or a stream that ends inside a frame.
 */
export async function* readFrames(
  body: ReadableStream<Uint8Array>,
  maxFrame: number,
): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let have = 0;
  // Removes the first k bytes (k ≤ have) from the queue.
  const take = (k: number): Uint8Array => {
    const out = new Uint8Array(k);
    let at = 0;
    while (at < k) {
      const c = chunks[0], m = Math.min(c.byteLength, k - at);
      out.set(c.subarray(0, m), at);
      at += m;
      if (m === c.byteLength) chunks.shift();
      else chunks[0] = c.subarray(m);
    }
    have -= k;
    return out;
  };
  let len = -1;
  try {
    for (;;) {
      for (;;) {
        if (len < 0 && have >= 4) {
          len = new DataView(take(4).buffer).getUint32(0);
          if (len > maxFrame) throw new Error(`stream frame of ${len} bytes exceeds ${maxFrame}`);
        }
        if (len < 0 || have < len) break;
        const out = take(len);
        len = -1;
        yield out;
      }
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      have += value.byteLength;
    }
  } finally {
    // Stops the transfer when the reader gives up early (a no-op once the stream has ended).
    await reader.cancel().catch(() => {});
  }
  if (len >= 0 || have > 0) throw new Error("the stream ended inside a frame");
}

const keys = new Map<string, Promise<CryptoKey>>();

/** The HMAC-SHA-256 key of a secret (imported once per secret). */
function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    keys.set(secret, key);
  }
  return key;
}

/** What a request signature covers: `METHOD\npath?query\ntimestamp\nnonce\n` followed by the body. */
export function signedPayload(
  method: string,
  path: string,
  timestamp: string,
  nonce: string,
  body: Uint8Array,
): Uint8Array {
  const head = new TextEncoder().encode(`${method.toUpperCase()}\n${path}\n${timestamp}\n${nonce}\n`);
  const out = new Uint8Array(head.byteLength + body.byteLength);
  out.set(head);
  out.set(body, head.byteLength);
  return out;
}

/** The raw HMAC-SHA-256 of a request's {@link signedPayload}. */
async function requestMac(
  secret: string,
  method: string,
  path: string,
  timestamp: string,
  nonce: string,
  body: Uint8Array,
): Promise<Uint8Array> {
  const payload = signedPayload(method, path, timestamp, nonce, body);
  return new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), payload as BufferSource));
}

/**
 * Whether `signatureHex` (64 hex digits, either case) is the {@link requestMac} of the request, compared
 * in constant time: the check the worker applies to {@link signRequest}'s signatures.
 */
export async function verifyMac(
  secret: string,
  signatureHex: string,
  req: { method: string; path: string; timestamp: string; nonce: string; body: Uint8Array },
): Promise<boolean> {
  const expected = await requestMac(secret, req.method, req.path, req.timestamp, req.nonce, req.body);
  return constantTimeEqual(expected, fromHex(signatureHex));
}

/**
 * The headers that sign one request: `x-genie-timestamp`, `x-genie-nonce` and `x-genie-signature`.
 * `path` is the URL's path and query as the worker receives them (`/v1/models?x=1`); `timestamp`
 * (Unix ms) and `nonce` default to now and a random one.
 */
export async function signRequest(
  secret: string,
  req: { method: string; path: string; body?: Uint8Array; timestamp?: number; nonce?: string },
): Promise<Record<string, string>> {
  const timestamp = String(req.timestamp ?? Date.now());
  const nonce = req.nonce ?? randomHex(16);
  const mac = await requestMac(secret, req.method, req.path, timestamp, nonce, req.body ?? new Uint8Array(0));
  return {
    [TIMESTAMP_HEADER]: timestamp,
    [NONCE_HEADER]: nonce,
    [SIGNATURE_HEADER]: "sha256=" + toHex(mac),
  };
}

/** The path and query of a URL, as signed: `/v1/models?x=1`. */
export function signedPath(url: string | URL): string {
  const u = typeof url === "string" ? new URL(url) : url;
  return u.pathname + u.search;
}

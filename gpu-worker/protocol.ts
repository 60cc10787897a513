/**
 * The worker's wire format (docs/contracts.md §3): msgpack bodies (core/api/msgpack.ts, the codec the edge
 * uses too), binary tensors as raw little-endian float32 bytes in plain `bin` fields, so any msgpack
 * library can read them — and HMAC-SHA256 request signatures (`x-genie-signature: sha256=<hex>`
 * over method, path, `x-genie-timestamp`, `x-genie-nonce` and body; see core/api/worker.ts), checked
 * against a time window and a memory of the signatures already accepted.
 */
import { DEFAULT_BODY_TIMEOUT_MS, readRequestBody } from "../core/api/body.ts";
import { isMsgpackType, packMsg, unpackMsg } from "../core/api/msgpack.ts";
import {
  NONCE_HEADER,
  SIGNATURE_HEADER,
  signedPath,
  TIMESTAMP_HEADER,
  verifyMac,
} from "../core/api/worker.ts";
import { WorkerError } from "./errors.ts";

/** Encodes a message (a Float32Array is written as its bytes, a `bin`). */
export function encodeMessage(value: unknown): Uint8Array {
  return packMsg(value);
}

/** Decodes one untrusted message; anything malformed (or trailing bytes) is a 400. */
export function decodeMessage(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new WorkerError("bad_request", "empty body (expected a msgpack map)");
  try {
    return unpackMsg(bytes);
  } catch (e) {
    throw new WorkerError("bad_request", `malformed msgpack: ${e instanceof Error ? e.message : e}`);
  }
}

/** True when a content type names msgpack (or is absent). */
export function acceptsMsgpackBody(contentType: string | null): boolean {
  if (contentType === null || contentType === "") return true;
  return isMsgpackType(contentType) ||
    contentType.split(";")[0].trim().toLowerCase() === "application/octet-stream";
}

/**
 * Reads a request body of at most `limit` bytes (core/api/body.ts): 413 past the limit, by
 * Content-Length or while streaming; 400 when the body breaks off while being read; 408 when it has not
 * arrived whole within `timeoutMs` (the body is cancelled).
 */
export async function readBody(
  req: Request,
  limit: number,
  timeoutMs = DEFAULT_BODY_TIMEOUT_MS,
): Promise<Uint8Array> {
  const read = await readRequestBody(req, limit, timeoutMs);
  if (read.ok) return read.bytes;
  if (read.reason === "unreadable") {
    throw new WorkerError("bad_request", `the request body could not be read: ${read.message}`);
  }
  if (read.reason === "timeout") {
    throw new WorkerError("request_timeout", `the request body did not arrive within ${read.ms} ms`);
  }
  throw new WorkerError(
    "payload_too_large",
    read.declared !== undefined
      ? `the body has ${read.declared} bytes; the limit is ${limit}`
      : `the body exceeds the limit of ${limit} bytes`,
  );
}

/** Default half-width of the accepted timestamp window (s): GENIE_SIGNATURE_WINDOW_S. */
export const DEFAULT_SIGNATURE_WINDOW_S = 60;
/** Signatures remembered at most; past that (all still within the window), signed requests get 503. */
const MAX_REMEMBERED_SIGNATURES = 100_000;

export interface SignatureOptions {
  /** Half-width of the accepted timestamp window in seconds (default 60). */
  windowS?: number;
  /** The clock (Unix ms; default Date.now). */
  now?: () => number;
  /** Signatures remembered at most (default {@link MAX_REMEMBERED_SIGNATURES}). */
  maxRemembered?: number;
}

/**
 * Checks request signatures (401 when missing or wrong): the HMAC of method, path with query,
 * timestamp, nonce and body (core/api/worker.ts `verifyMac`: WebCrypto, compared in constant time); a
 * timestamp more than the window away from this clock; a signature accepted before. Accepted signatures are
 * remembered until their timestamp leaves the window — after that the timestamp check refuses them —
 * so the memory holds at most the signatures of one window (bounded by `maxRemembered`).
 */
export class SignatureVerifier {
  readonly windowMs: number;
  readonly #now: () => number;
  readonly #max: number;
  /** Accepted signatures (hex) → when they may be forgotten (Unix ms). */
  readonly #seen = new Map<string, number>();

  constructor(private readonly secret: string, opts: SignatureOptions = {}) {
    const windowS = opts.windowS ?? DEFAULT_SIGNATURE_WINDOW_S;
    if (!Number.isFinite(windowS) || windowS <= 0) {
      throw new Error(`signature window: must be a positive number of seconds, got ${windowS}`);
    }
    this.windowMs = windowS * 1000;
    this.#now = opts.now ?? Date.now;
    this.#max = opts.maxRemembered ?? MAX_REMEMBERED_SIGNATURES;
  }

  /** Signatures remembered now. */
  get remembered(): number {
    return this.#seen.size;
  }

  /** Accepts `req` (whose body is `body`) or throws a 401 saying why (503 when the memory is full). */
  async verify(req: Request, body: Uint8Array): Promise<void> {
    const header = req.headers.get(SIGNATURE_HEADER);
    if (header === null) throw new WorkerError("unauthorized", `missing ${SIGNATURE_HEADER} header`);
    const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
    if (!m) throw new WorkerError("unauthorized", `${SIGNATURE_HEADER} must be sha256=<64 hex digits>`);
    const timestamp = req.headers.get(TIMESTAMP_HEADER)?.trim();
    if (timestamp === undefined) {
      throw new WorkerError("unauthorized", `missing ${TIMESTAMP_HEADER} header (Unix time in ms)`);
    }
    if (!/^\d{1,16}$/.test(timestamp)) {
      throw new WorkerError("unauthorized", `${TIMESTAMP_HEADER} must be Unix time in milliseconds`);
    }
    const nonce = req.headers.get(NONCE_HEADER)?.trim();
    if (nonce === undefined) throw new WorkerError("unauthorized", `missing ${NONCE_HEADER} header`);
    if (!/^[A-Za-z0-9_-]{8,128}$/.test(nonce)) {
      throw new WorkerError("unauthorized", `${NONCE_HEADER} must be 8 to 128 letters, digits, '-' or '_'`);
    }
    const now = this.#now();
    const ts = Number(timestamp);
    if (Math.abs(now - ts) > this.windowMs) {
      throw new WorkerError(
        "unauthorized",
        `${TIMESTAMP_HEADER} is ${((now - ts) / 1000).toFixed(1)} s from the worker's clock; ` +
          `signed requests are accepted within ±${this.windowMs / 1000} s`,
      );
    }
    const path = signedPath(req.url);
    if (!await verifyMac(this.secret, m[1], { method: req.method, path, timestamp, nonce, body })) {
      throw new WorkerError(
        "unauthorized",
        "the signature does not match the request (method, path, timestamp, nonce and body)",
      );
    }
    this.#forget(now);
    const key = m[1].toLowerCase();
    if (this.#seen.has(key)) {
      throw new WorkerError("unauthorized", "this signed request was already received (a replay)");
    }
    if (this.#seen.size >= this.#max) {
      throw new WorkerError("unavailable", "too many signed requests within the signature window; retry");
    }
    this.#seen.set(key, ts + this.windowMs);
  }

  /** Drops remembered signatures whose timestamps have left the window. */
  #forget(now: number): void {
    // Oldest first; a full map gets a full sweep (timestamps need not arrive in order).
    for (const [key, until] of this.#seen) {
      if (until >= now) break;
      this.#seen.delete(key);
    }
    if (this.#seen.size >= this.#max) {
      for (const [key, until] of this.#seen) if (until < now) this.#seen.delete(key);
    }
  }
}

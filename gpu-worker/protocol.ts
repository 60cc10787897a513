/**
 * The worker's wire format (CONTRACTS.md §3): msgpack bodies (msgpackr), binary tensors as raw
 * little-endian float32 bytes in plain `bin` fields — never msgpackr's typed-array extensions, so any
 * msgpack library can read them — and HMAC-SHA256 signatures (`x-genie-signature: sha256=<hex>`).
 */
import { Packr, Unpackr } from "msgpackr";
import { readRequestBody } from "../core/api/body.ts";
import { float32ToBytes } from "../core/api/tensor.ts";
import { MSGPACK, SIGNATURE_HEADER } from "../core/api/worker.ts";
import { WorkerError } from "./errors.ts";

export { MSGPACK, SIGNATURE_HEADER };

// Plain msgpack both ways: maps as objects, no records, no msgpackr-only extensions on output.
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  bundleStrings: false,
  encodeUndefinedAsNil: false,
});
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** Encodes a message; Float32Arrays must already be bytes (see {@link tensorBytes}). */
export function encodeMessage(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes one untrusted message; anything malformed (or trailing bytes) is a 400. */
export function decodeMessage(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new WorkerError("bad_request", "empty body (expected a msgpack map)");
  try {
    return unpackr.unpack(bytes);
  } catch (e) {
    throw new WorkerError("bad_request", `malformed msgpack: ${e instanceof Error ? e.message : e}`);
  }
}

/** Float32 values as little-endian bytes for a `bin` field. */
export function tensorBytes(values: Float32Array): Uint8Array {
  return float32ToBytes(values);
}

/** True when a content type names msgpack (or is absent). */
export function acceptsMsgpackBody(contentType: string | null): boolean {
  if (contentType === null || contentType === "") return true;
  const t = contentType.split(";")[0].trim().toLowerCase();
  return t === MSGPACK || t === "application/x-msgpack" || t === "application/vnd.msgpack" ||
    t === "application/octet-stream";
}

/**
 * Reads a request body of at most `limit` bytes (core/api/body.ts): 413 past the limit, by
 * Content-Length or while streaming; 400 when the body breaks off while being read.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const read = await readRequestBody(req, limit);
  if (read.ok) return read.bytes;
  if (read.reason === "unreadable") {
    throw new WorkerError("bad_request", `the request body could not be read: ${read.message}`);
  }
  throw new WorkerError(
    "payload_too_large",
    read.declared !== undefined
      ? `the body has ${read.declared} bytes; the limit is ${limit}`
      : `the body exceeds the limit of ${limit} bytes`,
  );
}

const keys = new Map<string, Promise<CryptoKey>>();

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

/** `sha256=<hex>` of the body's HMAC-SHA256 with the secret. */
export async function sign(secret: string, body: Uint8Array): Promise<string> {
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), body as BufferSource));
  return "sha256=" + Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Checks `x-genie-signature` against the body (401 when missing or wrong). The expected HMAC is
 * computed with WebCrypto and compared in constant time (every byte, no early exit).
 */
export async function verifySignature(
  secret: string,
  header: string | null,
  body: Uint8Array,
): Promise<void> {
  if (header === null) throw new WorkerError("unauthorized", `missing ${SIGNATURE_HEADER} header`);
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (!m) throw new WorkerError("unauthorized", `${SIGNATURE_HEADER} must be sha256=<64 hex digits>`);
  const given = new Uint8Array(32);
  for (let i = 0; i < 32; i++) given[i] = parseInt(m[1].slice(2 * i, 2 * i + 2), 16);
  const key = await hmacKey(secret);
  const expected = new Uint8Array(await crypto.subtle.sign("HMAC", key, body as BufferSource));
  let diff = 0;
  for (let i = 0; i < 32; i++) diff |= expected[i] ^ given[i];
  if (diff !== 0) throw new WorkerError("unauthorized", "the signature does not match the body");
}

/**
 * msgpack: the one codec of the API (`application/msgpack`), the worker protocol (docs/contracts.md §3)
 * and the command line's `.msgpack` files, used by the edge, the worker and the CLI alike. It is
 * @msgpack/msgpack (docs/architecture.md says why): pure JavaScript that needs no permission, so it runs on
 * Deno Deploy, in Node.js and in the browser. Plain msgpack both ways: maps as objects, binary data as
 * `bin` (a typed array is written as its bytes, so any msgpack library reads them), never
 * library-specific extensions; properties whose value is undefined are left out.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

/** The content types that name msgpack. */
const MSGPACK_TYPES = ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"];

const encoder = new Encoder({ ignoreUndefined: true, initialBufferSize: 64 * 1024 });

/** Decoder for untrusted input: bounded strings, arrays and maps; no extensions. */
function boundedDecoder(maxBytes: number): Decoder {
  return new Decoder({
    maxStrLength: maxBytes,
    maxBinLength: maxBytes,
    maxArrayLength: 1 << 20,
    maxMapLength: 1 << 12,
    maxExtLength: 0,
  });
}

/** Encodes one value (a fresh copy of the bytes). */
export function packMsg(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/**
 * Decodes one msgpack value; throws on malformed input, trailing bytes or oversized items. A `bin` comes
 * back as a Uint8Array view into `bytes`, at any offset (core/api/tensor.ts `float32FromBytes` copies
 * it into aligned floats).
 */
export function unpackMsg(bytes: Uint8Array, maxBytes = bytes.byteLength): unknown {
  return boundedDecoder(Math.max(maxBytes, 1)).decode(bytes);
}

/** True when a content type names msgpack. */
export function isMsgpackType(contentType: string | null | undefined): boolean {
  const t = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return MSGPACK_TYPES.includes(t);
}

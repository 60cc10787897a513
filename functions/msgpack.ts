/**
 * msgpack for the API (`application/msgpack`) and the worker protocol. Pure JavaScript
 * (@msgpack/msgpack), so it runs on Deno Deploy; binary fields are plain `bin` (Uint8Array), never
 * library-specific extensions (docs/contracts.md §3).
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

export const MSGPACK_TYPES = ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"];

const encoder = new Encoder({ ignoreUndefined: true, initialBufferSize: 64 * 1024 });

/** Decoder for untrusted input: bounded strings, arrays and maps. */
function boundedDecoder(maxBytes: number): Decoder {
  return new Decoder({
    maxStrLength: maxBytes,
    maxBinLength: maxBytes,
    maxArrayLength: 1 << 20,
    maxMapLength: 1 << 12,
    maxExtLength: 0,
  });
}

export function packMsg(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** Decodes one msgpack value; throws on malformed input, trailing bytes or oversized items. */
export function unpackMsg(bytes: Uint8Array, maxBytes = bytes.byteLength): unknown {
  return boundedDecoder(Math.max(maxBytes, 1)).decode(bytes);
}

/** True when a content type names msgpack. */
export function isMsgpackType(contentType: string | null | undefined): boolean {
  const t = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return MSGPACK_TYPES.includes(t);
}

/**
 * Tensors on the wire: `{shape, dtype: "float32", data}` with `data` the little-endian float32 bytes —
 * base64 in JSON, raw bytes in msgpack (docs/contracts.md §2). Web-standard APIs only.
 */
import { z } from "zod";

/** Raw bytes (a msgpack `bin`); in JSON documents the same field is a base64 string. */
export const Bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, { message: "Expected bytes" })
  .meta({ description: "Raw bytes (msgpack bin)" });

/** Little-endian float32 bytes: base64 text in JSON, raw bytes in msgpack. */
export const TensorData = z.union([z.base64(), Bytes]).meta({
  description: "Little-endian float32 values in C order: base64 in JSON, raw bytes in msgpack",
});

export const MAX_TENSOR_DIMS = 8;

export const Tensor = z.strictObject({
  shape: z.array(z.int().min(1).max(1 << 24)).min(1).max(MAX_TENSOR_DIMS),
  dtype: z.literal("float32").optional().meta({ description: 'Always "float32" (the default)' }),
  data: TensorData,
}).meta({ id: "Tensor" });
export type Tensor = z.infer<typeof Tensor>;

/** The same tensor as sent back: `data` is base64 in JSON and raw bytes in msgpack. */
export const TensorOutput = z.object({
  shape: z.array(z.int()),
  dtype: z.literal("float32"),
  data: z.string().meta({ description: "base64 of little-endian float32 (raw bytes in msgpack)" }),
}).meta({ id: "TensorOutput" });

/** Number of elements of a shape. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < B64.length; i++) t[B64.charCodeAt(i)] = i;
  t["-".charCodeAt(0)] = 62; // base64url
  t["_".charCodeAt(0)] = 63;
  return t;
})();

const B64_CODES = Uint8Array.from(B64, (c) => c.charCodeAt(0));
const PAD = 61; // "="

/** The platform's base64 codec on Uint8Array (TC39 proposal; Deno, recent browsers), if present. */
const nativeBase64 = Uint8Array as unknown as {
  fromBase64?: (text: string) => Uint8Array;
  prototype: { toBase64?: () => string };
};

/** Standard base64 (with padding) of bytes. */
export function bytesToBase64(bytes: Uint8Array): string {
  if (typeof nativeBase64.prototype.toBase64 === "function") {
    return (bytes as unknown as { toBase64(): string }).toBase64();
  }
  const out = new Uint8Array(Math.ceil(bytes.length / 3) * 4);
  let o = 0, j = 0;
  for (; j + 2 < bytes.length; j += 3) {
    const v = (bytes[j] << 16) | (bytes[j + 1] << 8) | bytes[j + 2];
    out[o++] = B64_CODES[v >> 18];
    out[o++] = B64_CODES[(v >> 12) & 63];
    out[o++] = B64_CODES[(v >> 6) & 63];
    out[o++] = B64_CODES[v & 63];
  }
  const rest = bytes.length - j;
  if (rest > 0) {
    const v = (bytes[j] << 16) | (rest > 1 ? bytes[j + 1] << 8 : 0);
    out[o++] = B64_CODES[v >> 18];
    out[o++] = B64_CODES[(v >> 12) & 63];
    out[o++] = rest > 1 ? B64_CODES[(v >> 6) & 63] : PAD;
    out[o++] = PAD;
  }
  return new TextDecoder().decode(out);
}

/** Bytes of a base64 (or base64url) string; throws a TypeError on any other character. */
export function base64ToBytes(text: string): Uint8Array {
  if (typeof nativeBase64.fromBase64 === "function" && !/[^A-Za-z0-9+/=]/.test(text)) {
    try {
      return nativeBase64.fromBase64(text);
    } catch {
      throw new TypeError("invalid base64");
    }
  }
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === PAD) end--;
  if (text.length - end > 2) throw new TypeError("invalid base64 padding");
  if (end % 4 === 1) throw new TypeError("invalid base64 length");
  const out = new Uint8Array(Math.floor((end * 3) / 4));
  let acc = 0, bits = 0, o = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1;
    if (v < 0) throw new TypeError(`invalid base64 character at ${i}`);
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/** The bytes of a tensor's data field (decoding base64 when it is text). */
export function tensorBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? base64ToBytes(data) : data;
}

/** Little-endian float32 bytes as a Float32Array (copied, so alignment never matters). */
export function float32FromBytes(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) {
    throw new TypeError(`${bytes.byteLength} bytes is not a whole number of float32`);
  }
  const out = new Float32Array(bytes.byteLength / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** A Float32Array's values as little-endian bytes (a view when the platform is little-endian). */
export function float32ToBytes(values: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The largest magnitude accepted in input tensors (latents, images to encode): |x| ≤ 10⁴. Latents are
 * standard normal noise at t_max (|x| < 10 for any realistic number of samples) and images lie in
 * [−1, 1], so 10⁴ leaves three orders of magnitude of room; yet the models compute in float32 (max
 * ≈ 3.4·10³⁸) and square, sum and scale their inputs — a squared distance over 10⁶ elements of 10⁴
 * is 10¹⁴, scaled by the schedules' factors (1/σ, 1/α up to about 10³) still far from overflow —
 * whereas unbounded finite inputs (3·10³⁸) overflow to ±∞ or NaN in the first step.
 */
export const MAX_INPUT_MAGNITUDE = 1e4;

/** Index and value of the first element that is not finite or exceeds {@link MAX_INPUT_MAGNITUDE}. */
export function firstOutOfRange(values: ArrayLike<number>): { index: number; value: number } | undefined {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(Math.abs(v) <= MAX_INPUT_MAGNITUDE)) return { index: i, value: v };
  }
  return undefined;
}

/** The message for {@link firstOutOfRange}'s finding: "value 3 is -20000; values must be …". */
export function outOfRangeMessage(bad: { index: number; value: number }): string {
  return `value ${bad.index} is ${bad.value}; values must be finite with |x| ≤ ${MAX_INPUT_MAGNITUDE}`;
}

/**
 * Images in and out of the API. Out: PNGs per sample and grids (core/png.ts over core/image.ts).
 * In (`POST /v1/encode`): PNG bytes back to planar model-space floats, p ↦ p / 127.5 − 1 (the inverse
 * of core/image.ts's mapping, exact on its 256 levels up to rounding).
 */
import { decode } from "fast-png";
import type { Issue } from "../core/api/errors.ts";
import { gridPng, planarFromPixels, samplesToPng } from "../core/png.ts";

export { gridPng, samplesToPng };

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Width and height from a PNG's IHDR chunk, read before decoding anything (no decompression bombs). */
function pngSize(bytes: Uint8Array): { width: number; height: number } | null {
  if (bytes.byteLength < 24 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") return null;
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

/** Channels of the PNG colour types this API reads: grey, RGB, each with or without alpha. */
const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 4: 2, 6: 4 };
/** Adam7 passes: first column, first row, column step, row step. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [
  0,
  1,
  1,
  2,
]];
/** Compressed bytes fed to the inflater at a time: deflate expands 1 KiB to at most about 1 MiB. */
const INFLATE_INPUT_CHUNK = 1024;
const UNSUPPORTED = "only 8- and 16-bit grey or RGB PNGs are supported";

/**
 * The exact size of a PNG's inflated image data: its filtered scanlines (one filter byte per row),
 * per Adam7 pass when interlaced.
 */
export function scanlineBytes(
  width: number,
  height: number,
  bitsPerPixel: number,
  interlaced: boolean,
): number {
  const rows = (
    w: number,
    h: number,
  ) => (w === 0 || h === 0 ? 0 : h * (1 + Math.ceil((w * bitsPerPixel) / 8)));
  if (!interlaced) return rows(width, height);
  let total = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    total += rows(Math.max(0, Math.ceil((width - x0) / dx)), Math.max(0, Math.ceil((height - y0) / dy)));
  }
  return total;
}

/**
 * Inflates a zlib stream chunk by chunk, keeping nothing but the running size, and stops as soon as
 * the output passes `limit` bytes: "too_big" then, "unreadable" for a broken stream, else the size.
 * Memory and time stay bounded by the limit whatever the stream would expand to.
 */
export async function boundedInflateSize(
  zlib: Uint8Array,
  limit: number,
): Promise<{ size: number } | { error: "too_big" } | { error: "unreadable"; message: string }> {
  const stream = new DecompressionStream("deflate");
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  let stop = false;
  const feeding = (async () => {
    for (let at = 0; at < zlib.byteLength && !stop; at += INFLATE_INPUT_CHUNK) {
      await writer.write(zlib.slice(at, at + INFLATE_INPUT_CHUNK));
    }
    if (!stop) await writer.close();
  })();
  // Failures of the writing side surface on the reading side too; this only keeps them handled.
  feeding.catch(() => {});
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        stop = true;
        await reader.cancel().catch(() => {});
        await writer.abort().catch(() => {});
        return { error: "too_big" };
      }
    }
    await feeding;
    return { size };
  } catch (e) {
    stop = true;
    await writer.abort().catch(() => {});
    return { error: "unreadable", message: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * Checks a PNG before anything decodes it: the chunk layout, an IHDR of `width`×`height` in a supported
 * format, and image data that inflates to exactly the size those scanlines need (decompression bombs
 * stop at that size). Returns the PNG reduced to its critical chunks (IHDR, IDAT, IEND; ancillary
 * chunks such as compressed profiles or text are never inflated), or the problem.
 */
export async function checkPng(
  bytes: Uint8Array,
  width: number,
  height: number,
): Promise<{ png: Uint8Array } | { message: string }> {
  const size = pngSize(bytes);
  if (!size) return { message: "not a PNG" };
  if (size.width !== width || size.height !== height) {
    return { message: `is ${size.width}×${size.height}, the model takes ${width}×${height}` };
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kept: Uint8Array[] = [bytes.subarray(0, 8)];
  const idat: Uint8Array[] = [];
  let at = 8, ihdr: Uint8Array | undefined, ended = false;
  while (at + 12 <= bytes.byteLength) {
    const length = v.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const end = at + 12 + length;
    if (end > bytes.byteLength) {
      return { message: `unreadable PNG: chunk ${JSON.stringify(type)} is truncated` };
    }
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      if (ihdr || length !== 13) return { message: "unreadable PNG: bad IHDR chunk" };
      ihdr = data;
      kept.push(bytes.subarray(at, end));
    } else if (type === "IDAT") {
      idat.push(data);
      kept.push(bytes.subarray(at, end));
    } else if (type === "IEND") {
      kept.push(bytes.subarray(at, end));
      ended = true;
      break;
    }
    at = end;
  }
  if (!ihdr) return { message: "unreadable PNG: no IHDR chunk" };
  if (!ended) return { message: "unreadable PNG: no IEND chunk" };
  if (idat.length === 0) return { message: "unreadable PNG: no image data" };
  const [depth, colour, compression, filter, interlace] = ihdr.subarray(8, 13);
  const channels = CHANNELS[colour];
  if (channels === undefined || (depth !== 8 && depth !== 16)) return { message: UNSUPPORTED };
  if (compression !== 0 || filter !== 0 || interlace > 1) {
    return { message: "unreadable PNG: unknown method in IHDR" };
  }
  const expected = scanlineBytes(width, height, channels * depth, interlace === 1);
  const zlib = new Uint8Array(idat.reduce((n, d) => n + d.byteLength, 0));
  let o = 0;
  for (const d of idat) {
    zlib.set(d, o);
    o += d.byteLength;
  }
  const inflated = await boundedInflateSize(zlib, expected);
  if ("error" in inflated) {
    return inflated.error === "too_big"
      ? { message: `PNG data inflates beyond its ${width}×${height} size (${expected} bytes of scanlines)` }
      : { message: `unreadable PNG: ${inflated.message}` };
  }
  if (inflated.size !== expected) {
    return {
      message:
        `unreadable PNG: image data holds ${inflated.size} bytes, ${width}×${height} needs ${expected}`,
    };
  }
  const png = new Uint8Array(kept.reduce((n, d) => n + d.byteLength, 0));
  o = 0;
  for (const d of kept) {
    png.set(d, o);
    o += d.byteLength;
  }
  return { png };
}

/**
 * PNGs of shape [C, H, W] (C = 1 grey or 3 RGB; an alpha channel is dropped; 16-bit depth scaled) as
 * one float32 batch [n, C, H, W] in [−1, 1], or the issues naming each bad image. Each PNG is checked
 * first ({@link checkPng}): its size must be the model's, and its image data may not inflate beyond
 * what that size needs.
 */
export async function pngsToTensor(
  pngs: readonly Uint8Array[],
  shape: readonly number[],
): Promise<{ data: Float32Array; issues: Issue[] }> {
  const [c, h, w] = shape;
  const plane = h * w;
  const data = new Float32Array(pngs.length * c * plane);
  const issues: Issue[] = [];
  for (const [i, bytes] of pngs.entries()) {
    const path = ["images", i];
    const checked = await checkPng(bytes, w, h);
    if ("message" in checked) {
      issues.push({ path, message: checked.message, code: "invalid_value" });
      continue;
    }
    let img;
    try {
      img = decode(checked.png);
    } catch (e) {
      issues.push({
        path,
        message: `unreadable PNG: ${e instanceof Error ? e.message : e}`,
        code: "invalid_value",
      });
      continue;
    }
    if (img.palette || (img.depth !== 8 && img.depth !== 16)) {
      issues.push({ path, message: UNSUPPORTED, code: "invalid_value" });
      continue;
    }
    const colour = img.channels >= 3 ? 3 : 1;
    if (colour !== c) {
      issues.push({
        path,
        message: `has ${colour === 3 ? "RGB" : "grey"} pixels, the model takes ${c} channel(s)`,
        code: "invalid_value",
      });
      continue;
    }
    planarFromPixels({ ...img, data: img.data as ArrayLike<number> }, data, i * c * plane);
  }
  return { data, issues };
}

/**
 * Images in and out of the API. Out: PNGs per sample and grids (cli/png.ts over core/image.ts).
 * In (`POST /v1/encode`): PNG bytes back to planar model-space floats, p ↦ p / 127.5 − 1 (the inverse
 * of core/image.ts's mapping, exact on its 256 levels up to rounding).
 */
import { decode } from "fast-png";
import type { Issue } from "../core/api/errors.ts";
import { gridPng, samplesToPng } from "../cli/png.ts";

export { gridPng, samplesToPng };

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Width and height from a PNG's IHDR chunk, read before decoding anything (no decompression bombs). */
export function pngSize(bytes: Uint8Array): { width: number; height: number } | null {
  if (bytes.byteLength < 24 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") return null;
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

/**
 * PNGs of shape [C, H, W] (C = 1 grey or 3 RGB; an alpha channel is dropped; 16-bit depth scaled) as
 * one float32 batch [n, C, H, W] in [−1, 1], or the issues naming each bad image.
 */
export function pngsToTensor(
  pngs: readonly Uint8Array[],
  shape: readonly number[],
): { data: Float32Array; issues: Issue[] } {
  const [c, h, w] = shape;
  const plane = h * w;
  const data = new Float32Array(pngs.length * c * plane);
  const issues: Issue[] = [];
  pngs.forEach((bytes, i) => {
    const path = ["images", i];
    const size = pngSize(bytes);
    if (!size) return issues.push({ path, message: "not a PNG", code: "invalid_value" });
    if (size.width !== w || size.height !== h) {
      return issues.push({
        path,
        message: `is ${size.width}×${size.height}, the model takes ${w}×${h}`,
        code: "invalid_value",
      });
    }
    let img;
    try {
      img = decode(bytes);
    } catch (e) {
      return issues.push({
        path,
        message: `unreadable PNG: ${e instanceof Error ? e.message : e}`,
        code: "invalid_value",
      });
    }
    if (img.palette || (img.depth !== 8 && img.depth !== 16)) {
      return issues.push({
        path,
        message: "only 8- and 16-bit grey or RGB PNGs are supported",
        code: "invalid_value",
      });
    }
    const colour = img.channels >= 3 ? 3 : 1;
    if (colour !== c) {
      return issues.push({
        path,
        message: `has ${colour === 3 ? "RGB" : "grey"} pixels, the model takes ${c} channel(s)`,
        code: "invalid_value",
      });
    }
    const max = img.depth === 16 ? 65535 : 255;
    const src = img.data as ArrayLike<number>;
    const base = i * c * plane;
    for (let p = 0; p < plane; p++) {
      for (let ch = 0; ch < c; ch++) data[base + ch * plane + p] = (src[p * img.channels + ch] / max) * 2 - 1;
    }
  });
  return { data, issues };
}

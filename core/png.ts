/**
 * PNG files of image samples: one per sample, or all samples tiled in one grid (core/image.ts). Each PNG
 * can carry a `parameters` tEXt chunk (AUTOMATIC1111's keyword; text from core/image.ts pngParameters)
 * and be upscaled by an integer factor (nearest neighbour).
 */
import { encode } from "fast-png";
import { batchToImages, type GridOptions, tileGrid, type Uint8Image, upscale } from "./image.ts";

/** The keyword of the tEXt chunk that holds what produced the image. */
export const PARAMETERS_KEYWORD = "parameters";

/** Options of every PNG written: upscaling and the `parameters` text. */
export interface PngOptions {
  /** Integer upscaling factor, nearest neighbour (default 1). */
  scale?: number;
  /** The `parameters` tEXt chunk (Latin-1; see core/image.ts pngParameters). */
  parameters?: string;
}

/** An 8-bit image as PNG bytes, with an optional `parameters` tEXt chunk. */
export function encodePng(image: Uint8Image, parameters?: string): Uint8Array {
  return encode({
    width: image.width,
    height: image.height,
    data: image.data,
    channels: image.channels,
    depth: 8,
    ...(parameters !== undefined ? { text: { [PARAMETERS_KEYWORD]: parameters } } : {}),
  });
}

/**
 * One PNG per sample of a batch [n, C, H, W] in [−1, 1]; `parameters(i)` gives sample i's text.
 */
export function samplesToPng(
  data: ArrayLike<number>,
  shape: readonly number[],
  opts: { scale?: number; parameters?: (i: number) => string | undefined } = {},
): Uint8Array[] {
  return batchToImages(data, shape).map((im, i) =>
    encodePng(upscale(im, opts.scale ?? 1), opts.parameters?.(i))
  );
}

/**
 * All samples of a batch [n, C, H, W] in one near-square PNG grid (2-px padding by default), the whole
 * grid upscaled by `scale`.
 */
export function gridPng(
  data: ArrayLike<number>,
  shape: readonly number[],
  opts: GridOptions & PngOptions = {},
): Uint8Array {
  return encodePng(upscale(tileGrid(batchToImages(data, shape), opts), opts.scale ?? 1), opts.parameters);
}

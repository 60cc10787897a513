/**
 * PNG files of image samples: one per sample, or all samples tiled in one grid (core/image.ts). Each PNG
 * can carry a `parameters` tEXt chunk (AUTOMATIC1111's keyword; text from core/image.ts pngParameters)
 * and be upscaled by an integer factor (nearest neighbour).
 */
import { decode, encode } from "fast-png";
import {
  batchToImages,
  type GridOptions,
  gridSize,
  ImageError,
  tileGrid,
  type Uint8Image,
  upscale,
} from "./image.ts";

/** The keyword of the tEXt chunk that holds what produced the image. */
const PARAMETERS_KEYWORD = "parameters";

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

/** Decoded PNG pixels: interleaved channels (grey, grey + alpha, RGB or RGBA), 8 or 16 bits. */
export interface PngPixels {
  width: number;
  height: number;
  channels: number;
  depth: number;
  data: ArrayLike<number>;
}

/**
 * PNG pixels as one planar sample [C, H, W] in [−1, 1], p ↦ p / max · 2 − 1 (the inverse of
 * core/image.ts's mapping up to rounding): C = 1 for grey, 3 for RGB; an alpha channel is dropped.
 * Written into `out` at `offset` when given.
 */
export function planarFromPixels(
  img: PngPixels,
  out = new Float32Array((img.channels >= 3 ? 3 : 1) * img.width * img.height),
  offset = 0,
): Float32Array {
  const c = img.channels >= 3 ? 3 : 1, plane = img.width * img.height;
  const max = img.depth === 16 ? 65535 : 255;
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < c; ch++) {
      out[offset + ch * plane + p] = (img.data[p * img.channels + ch] / max) * 2 - 1;
    }
  }
  return out;
}

/**
 * A PNG file as one sample [C, H, W] in [−1, 1] (8- or 16-bit grey or RGB, with or without alpha);
 * an {@link ImageError} for anything else. For trusted input (the command line): the HTTP API checks
 * PNGs for their size and decompression bombs first (functions/images.ts).
 */
export function decodePngSample(
  bytes: Uint8Array,
): { shape: [number, number, number]; data: Float32Array; parameters?: string } {
  let img;
  try {
    img = decode(bytes);
  } catch (e) {
    throw new ImageError(`unreadable PNG: ${e instanceof Error ? e.message : e}`);
  }
  if (img.palette || (img.depth !== 8 && img.depth !== 16)) {
    throw new ImageError("only 8- and 16-bit grey or RGB PNGs are supported");
  }
  const px = { ...img, data: img.data as ArrayLike<number> };
  const parameters = img.text?.[PARAMETERS_KEYWORD];
  return {
    shape: [img.channels >= 3 ? 3 : 1, img.height, img.width],
    data: planarFromPixels(px),
    ...(parameters !== undefined ? { parameters } : {}),
  };
}

/**
 * The tiles of a grid image [C, H, W] as {@link tileGrid} lays them out (near-square, `padding` pixels
 * between and around tiles of h × w): `count` tiles (default: every tile of the layout), as a batch
 * [count, C, h, w]. Undefined when the image is not such a grid of `count` tiles.
 */
export function gridTiles(
  image: { shape: readonly number[]; data: ArrayLike<number> },
  tile: readonly [number, number],
  count?: number,
  padding = 2,
): { shape: [number, number, number, number]; data: Float32Array } | undefined {
  const [c, height, width] = image.shape, [h, w] = tile;
  const cols = (width - padding) / (w + padding), rows = (height - padding) / (h + padding);
  if (!(Number.isInteger(cols) && Number.isInteger(rows) && cols >= 1 && rows >= 1)) return undefined;
  const n = count ?? cols * rows;
  const size = gridSize(n, w, h, padding);
  if (!(n >= 1 && n <= cols * rows && size.width === width && size.height === height)) return undefined;
  const data = new Float32Array(n * c * h * w);
  for (let i = 0; i < n; i++) {
    const x0 = padding + (i % cols) * (w + padding), y0 = padding + Math.floor(i / cols) * (h + padding);
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          data[((i * c + ch) * h + y) * w + x] = image.data[(ch * height + y0 + y) * width + x0 + x];
        }
      }
    }
  }
  return { shape: [n, c, h, w], data };
}

/** PNG files of image samples: one per sample, or all samples tiled in one grid (core/image.ts). */
import { encode } from "fast-png";
import { batchToImages, type GridOptions, tileGrid, type Uint8Image } from "../core/image.ts";

/** An 8-bit image as PNG bytes. */
export function encodePng(image: Uint8Image): Uint8Array {
  return encode({
    width: image.width,
    height: image.height,
    data: image.data,
    channels: image.channels,
    depth: 8,
  });
}

/** One PNG per sample of a batch [n, C, H, W] in [−1, 1]. */
export function samplesToPng(data: ArrayLike<number>, shape: readonly number[]): Uint8Array[] {
  return batchToImages(data, shape).map(encodePng);
}

/** All samples of a batch [n, C, H, W] in one near-square PNG grid (2-px padding by default). */
export function gridPng(
  data: ArrayLike<number>,
  shape: readonly number[],
  opts: GridOptions = {},
): Uint8Array {
  return encodePng(tileGrid(batchToImages(data, shape), opts));
}

/**
 * Model-space image tensors to 8-bit pixels. Samples are planar [C, H, W] floats in [−1, 1]; pixels
 * are interleaved rows (H × W × C bytes), the layout PNG encoders take. C = 1 is grey, C = 3 is RGB.
 */

/** An 8-bit image, rows top to bottom, channels interleaved. */
export interface Uint8Image {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

/** A tensor that is not an image batch, or images that cannot be tiled together. */
export class ImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageError";
  }
}

/** True for a per-sample shape [C, H, W] with C = 1 (grey) or 3 (RGB). */
export function isImageShape(sampleShape: readonly number[]): boolean {
  return sampleShape.length === 3 && (sampleShape[0] === 1 || sampleShape[0] === 3) &&
    sampleShape.every((d) => Number.isInteger(d) && d >= 1);
}

/** v ∈ [−1, 1] ↦ round((v + 1)/2 · 255), clamped to 0…255 (NaN ↦ 0). */
export function toByte(v: number): number {
  const p = Math.round((v + 1) * 127.5);
  return p > 255 ? 255 : p >= 0 ? p : 0;
}

/**
 * One planar sample [C, H, W] (starting at `offset` in `data`) as an interleaved 8-bit image.
 */
export function toUint8Image(
  data: ArrayLike<number>,
  shape: readonly [number, number, number] | readonly number[],
  offset = 0,
): Uint8Image {
  if (!isImageShape(shape)) {
    throw new ImageError(`shape [${shape.join(", ")}] is not an image [C, H, W] with C = 1 or 3`);
  }
  const [c, h, w] = shape;
  const plane = h * w;
  if (offset < 0 || offset + c * plane > data.length) {
    throw new ImageError(`data has ${data.length} numbers, too few for [${c}, ${h}, ${w}] at ${offset}`);
  }
  const out = new Uint8Array(c * plane);
  for (let ch = 0; ch < c; ch++) {
    const base = offset + ch * plane;
    for (let p = 0; p < plane; p++) out[p * c + ch] = toByte(data[base + p]);
  }
  return { width: w, height: h, channels: c as 1 | 3, data: out };
}

/** Every sample of a batch [n, C, H, W] as an 8-bit image. */
export function batchToImages(data: ArrayLike<number>, shape: readonly number[]): Uint8Image[] {
  if (shape.length !== 4 || !isImageShape(shape.slice(1))) {
    throw new ImageError(`shape [${shape.join(", ")}] is not an image batch [n, C, H, W] with C = 1 or 3`);
  }
  const [n, c, h, w] = shape;
  if (data.length !== n * c * h * w) {
    throw new ImageError(
      `data has ${data.length} numbers, shape [${shape.join(", ")}] needs ${n * c * h * w}`,
    );
  }
  return Array.from({ length: n }, (_, i) => toUint8Image(data, [c, h, w], i * c * h * w));
}

export interface GridOptions {
  /** Pixels between tiles and around the border (default 2). */
  padding?: number;
  /** Tiles per row (default ⌈√n⌉, a near-square grid). */
  columns?: number;
  /** Byte value of the padding (default 0, black). */
  background?: number;
}

/**
 * Tiles images of one size row by row into a near-square grid with `padding` pixels between tiles
 * and around the border.
 */
export function tileGrid(images: readonly Uint8Image[], opts: GridOptions = {}): Uint8Image {
  if (images.length === 0) throw new ImageError("no images to tile");
  const { width: w, height: h, channels: c } = images[0];
  for (const im of images) {
    if (im.width !== w || im.height !== h || im.channels !== c) {
      throw new ImageError("all images of a grid must have the same size and channels");
    }
  }
  const pad = opts.padding ?? 2;
  const cols = Math.min(images.length, opts.columns ?? Math.ceil(Math.sqrt(images.length)));
  if (!(Number.isInteger(pad) && pad >= 0)) throw new ImageError("padding must be a non-negative integer");
  if (!(Number.isInteger(cols) && cols >= 1)) throw new ImageError("columns must be a positive integer");
  const rows = Math.ceil(images.length / cols);
  const width = cols * (w + pad) + pad, height = rows * (h + pad) + pad;
  const out = new Uint8Array(width * height * c).fill(opts.background ?? 0);
  images.forEach((im, i) => {
    const x0 = pad + (i % cols) * (w + pad), y0 = pad + Math.floor(i / cols) * (h + pad);
    for (let y = 0; y < h; y++) {
      const src = y * w * c;
      out.set(im.data.subarray(src, src + w * c), ((y0 + y) * width + x0) * c);
    }
  });
  return { width, height, channels: c, data: out };
}

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

/** The largest PNG upscaling factor the API and the command line accept. */
export const MAX_PNG_SCALE = 8;

/** The most pixels of an upscaled PNG grid the API writes (4096 × 4096). */
export const MAX_GRID_PIXELS = 4096 * 4096;

/** Width and height of {@link tileGrid}'s near-square grid of n tiles of w × h (default padding 2). */
export function gridSize(n: number, w: number, h: number, padding = 2): { width: number; height: number } {
  const cols = Math.max(1, Math.min(n, Math.ceil(Math.sqrt(n))));
  const rows = Math.ceil(n / cols);
  return { width: cols * (w + padding) + padding, height: rows * (h + padding) + padding };
}

/** Every pixel of `image` as a `factor`×`factor` block (nearest neighbour); factor 1 returns the image. */
export function upscale(image: Uint8Image, factor: number): Uint8Image {
  if (!(Number.isInteger(factor) && factor >= 1 && factor <= MAX_PNG_SCALE)) {
    throw new ImageError(`scale must be an integer in [1, ${MAX_PNG_SCALE}], got ${factor}`);
  }
  if (factor === 1) return image;
  const { width: w, height: h, channels: c } = image;
  const width = w * factor, height = h * factor;
  const out = new Uint8Array(width * height * c);
  const row = new Uint8Array(width * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = (y * w + x) * c;
      for (let k = 0; k < factor; k++) {
        for (let ch = 0; ch < c; ch++) row[((x * factor + k) * c) + ch] = image.data[src + ch];
      }
    }
    for (let k = 0; k < factor; k++) out.set(row, (y * factor + k) * width * c);
  }
  return { width, height, channels: c, data: out };
}

/** What produced an image, for its `parameters` text (see {@link pngParameters}). */
export interface ImageParameters {
  model: string;
  solver: string;
  steps: number;
  nfe: number;
  /** The seed of the (first) sample; absent when the run started from given latents. */
  seed?: number;
  /** Samples in the image: a grid of n > 1 samples has seeds seed, seed + 1, … (mod 2³²). */
  n?: number;
  class?: number;
  /** Classifier-free guidance w (0 = off); the text also gives diffusers' scale s = 1 + w. */
  guidance?: number;
  grid?: string;
  rho?: number;
  genieDerivative?: string;
  afs?: boolean;
  denoise?: boolean;
  /** img2img: how far into the noise the input images were taken (A1111's "Denoising strength"). */
  strength?: number;
  /** The PNG upscaling factor, when not 1. */
  scale?: number;
}

/** Characters a PNG tEXt chunk can hold (Latin-1, no NUL); others become "?". */
function latin1(text: string): string {
  let out = "";
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    out += code >= 1 && code <= 0xff ? ch : "?";
  }
  return out;
}

/**
 * One line of `Key: value` pairs in the style of AUTOMATIC1111's `parameters` PNG text, e.g.
 * `Steps: 5, Sampler: genie, NFE: 10, Seed: 7, Batch size: 16, Model: mnist-mix, Class: 3,
 * Guidance: 1, CFG scale: 2, Grid: quadratic`. Seeds of a batch are Seed, Seed + 1, … as in A1111.
 */
export function pngParameters(p: ImageParameters): string {
  const parts: [string, string | number][] = [["Steps", p.steps], ["Sampler", p.solver], ["NFE", p.nfe]];
  if (p.seed !== undefined) parts.push(["Seed", p.seed]);
  else if (p.strength === undefined) parts.push(["Latents", "given"]);
  if (p.n !== undefined && p.n > 1) parts.push(["Batch size", p.n]);
  parts.push(["Model", p.model]);
  if (p.class !== undefined) parts.push(["Class", p.class]);
  if (p.guidance !== undefined && p.guidance !== 0) {
    parts.push(["Guidance", p.guidance], ["CFG scale", Number((1 + p.guidance).toPrecision(12))]);
  }
  if (p.grid !== undefined) parts.push(["Grid", p.grid]);
  if (p.rho !== undefined) parts.push(["Rho", p.rho]);
  if (p.genieDerivative !== undefined) parts.push(["GENIE derivative", p.genieDerivative]);
  if (p.afs) parts.push(["AFS", "on"]);
  if (p.denoise) parts.push(["Denoise", "on"]);
  if (p.strength !== undefined) parts.push(["Denoising strength", p.strength]);
  if (p.scale !== undefined && p.scale !== 1) parts.push(["Upscale", p.scale]);
  return latin1(parts.map(([k, v]) => `${k}: ${String(v).replace(/[,\n]/g, " ")}`).join(", "));
}

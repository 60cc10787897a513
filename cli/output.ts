/** Tensor files of the command line: .npy input, and .npy, .png or .msgpack output. */
import { packMsg } from "../core/api/msgpack.ts";
import { ImageError, isImageShape } from "../core/image.ts";
import { decodeNpy, encodeNpy, NpyError } from "../core/npy.ts";
import { UsageError } from "./args.ts";
import { decodePngSample, gridPng, gridTiles, type PngOptions } from "../core/png.ts";
import type { ShapedData } from "./run.ts";

/** Reads a `.npy` tensor given by `flag`; unreadable or malformed files are UsageErrors naming it. */
export async function readNpy(path: string, flag: string): Promise<ShapedData> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new UsageError(flag, `cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
  try {
    const { shape, data } = decodeNpy(bytes);
    return { shape, data };
  } catch (e) {
    if (e instanceof NpyError) throw new UsageError(flag, `${path}: ${e.message}`);
    throw e;
  }
}

/**
 * Reads images given by `flag`: a `.npy` tensor [n, …sample shape], or a `.png` in [−1, 1] (core/png.ts):
 * one image of the sample shape [C, H, W], or a grid of them as `--out OUT.png` writes one (2-px
 * padding, unscaled; its `Batch size` parameter says how many tiles hold samples). Unreadable files
 * are UsageErrors naming the flag; a wrong shape is left to the caller's check.
 */
export async function readImages(
  path: string,
  flag: string,
  sampleShape?: readonly number[],
): Promise<ShapedData> {
  if (!/\.png$/i.test(path)) return await readNpy(path, flag);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new UsageError(flag, `cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
  try {
    const { shape, data, parameters } = decodePngSample(bytes);
    if (
      sampleShape?.length === 3 && shape[0] === sampleShape[0] &&
      (shape[1] !== sampleShape[1] || shape[2] !== sampleShape[2])
    ) {
      const batch = /(?:^|, )Batch size: (\d+)/.exec(parameters ?? "");
      const grid = gridTiles(
        { shape, data },
        [sampleShape[1], sampleShape[2]],
        batch ? Number(batch[1]) : undefined,
      );
      if (grid) return grid;
    }
    return { shape: [1, ...shape], data };
  } catch (e) {
    if (e instanceof ImageError) throw new UsageError(flag, `${path}: ${e.message}`);
    throw e;
  }
}

/** Float32 numbers as little-endian bytes. */
function float32Bytes(data: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(4 * data.length);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i], true);
  return out;
}

/** `{shape, dtype: "float32", data: bytes}` in plain msgpack (data is a bin field, float32 LE). */
function tensorMsgpack(data: ArrayLike<number>, shape: readonly number[]): Uint8Array {
  return packMsg({ shape: [...shape], dtype: "float32", data: float32Bytes(data) });
}

function extension(path: string): string {
  return /\.[^./\\]+$/.exec(path)?.[0].toLowerCase() ?? "";
}

/** Checks before a run that `--out` can hold samples of this per-sample shape. */
export function checkOutput(path: string, sampleShape: readonly number[]): void {
  const ext = extension(path);
  if (ext === ".png" && !isImageShape(sampleShape)) {
    throw new UsageError(
      "--out",
      `PNG output needs image samples [C, H, W] with C = 1 or 3, but samples have shape [${
        sampleShape.join(", ")
      }] (use .npy or .msgpack)`,
    );
  }
  if (ext !== ".npy" && ext !== ".png" && ext !== ".msgpack") {
    throw new UsageError("--out", `must end in .npy, .png or .msgpack, got ${JSON.stringify(path)}`);
  }
}

/**
 * The bytes of an output file, by extension: `.npy`, `.png` (a grid of all samples; only for image
 * shapes [n, C, H, W] with C = 1 or 3; `png` sets its scale and `parameters` text) or `.msgpack`.
 * Problems name --out.
 */
function outputBytes(
  path: string,
  data: ArrayLike<number>,
  shape: readonly number[],
  png: PngOptions = {},
): Uint8Array {
  checkOutput(path, shape.slice(1));
  const ext = extension(path);
  if (ext === ".npy") return encodeNpy(data, shape);
  if (ext === ".msgpack") return tensorMsgpack(data, shape);
  return gridPng(data, shape, png);
}

/**
 * Writes an output file, creating its folder when missing (`--out out/x.npy`); the output format is
 * checked before anything is written.
 */
export async function writeOutput(
  path: string,
  data: ArrayLike<number>,
  shape: readonly number[],
  png: PngOptions = {},
): Promise<void> {
  const bytes = outputBytes(path, data, shape, png);
  const dir = parentDir(path);
  if (dir !== "") await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(path, bytes);
}

/** The folder part of a path ("" for a bare file name). */
function parentDir(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut <= 0 ? (cut === 0 ? "/" : "") : path.slice(0, cut);
}

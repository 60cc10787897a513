/** Tensor files of the command line: .npy input, and .npy, .png or .msgpack output. */
import { pack } from "msgpackr";
import { isImageShape } from "../core/image.ts";
import { decodeNpy, encodeNpy, NpyError } from "../core/npy.ts";
import { UsageError } from "./args.ts";
import { gridPng, type PngOptions } from "../core/png.ts";
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

/** Float32 numbers as little-endian bytes. */
export function float32Bytes(data: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(4 * data.length);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i], true);
  return out;
}

/** `{shape, dtype: "float32", data: bytes}` in plain msgpack (data is a bin field, float32 LE). */
export function tensorMsgpack(data: ArrayLike<number>, shape: readonly number[]): Uint8Array {
  return pack({ shape: [...shape], dtype: "float32", data: float32Bytes(data) });
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
export function outputBytes(
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
export function parentDir(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut <= 0 ? (cut === 0 ? "/" : "") : path.slice(0, cut);
}

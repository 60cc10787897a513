import { assert, assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import {
  batchToImages,
  gridSize,
  ImageError,
  isImageShape,
  MAX_PNG_SCALE,
  pngParameters,
  tileGrid,
  toByte,
  toUint8Image,
  upscale,
} from "../../core/image.ts";

test("pixel mapping: [-1, 1] to 0..255 with rounding and clamping", () => {
  assertEquals([-1, 0, 1, -5, 7, NaN, 0.5, -0.999].map(toByte), [0, 128, 255, 0, 255, 0, 191, 0]);
  // round((v + 1) · 127.5): 127.5 rounds half up; (0.004 + 1) · 127.5 = 128.01.
  assertStrictEquals(toByte(-1 + 1 / 127.5), 1);
});

test("toUint8Image interleaves planar RGB", () => {
  // [3, 1, 2]: R = (-1, 1), G = (0, 0), B = (1, -1)
  const im = toUint8Image(new Float32Array([-1, 1, 0, 0, 1, -1]), [3, 1, 2]);
  assertEquals({ w: im.width, h: im.height, c: im.channels }, { w: 2, h: 1, c: 3 });
  assertEquals(Array.from(im.data), [0, 128, 255, 255, 128, 0]);
  assert(isImageShape([1, 28, 28]) && !isImageShape([2, 4, 4]) && !isImageShape([16]));
  assertThrows(() => toUint8Image(new Float32Array(4), [2]), ImageError);
});

test("batchToImages splits [n, C, H, W] into samples", () => {
  const ims = batchToImages(new Float32Array([-1, 1, 1, -1]), [2, 1, 1, 2]);
  assertEquals(ims.map((im) => Array.from(im.data)), [[0, 255], [255, 0]]);
  assertThrows(() => batchToImages(new Float32Array(4), [2, 2]), ImageError);
});

test("tileGrid places tiles row by row with padding and background", () => {
  const tile = (v: number) => ({ width: 2, height: 1, channels: 1 as const, data: new Uint8Array([v, v]) });
  const g = tileGrid([tile(1), tile(2), tile(3)], { padding: 1 });
  // ⌈√3⌉ = 2 columns, 2 rows: width 2·(2+1)+1 = 7, height 2·(1+1)+1 = 5.
  assertEquals([g.width, g.height], [7, 5]);
  assertEquals(Array.from(g.data), [
    ...[0, 0, 0, 0, 0, 0, 0],
    ...[0, 1, 1, 0, 2, 2, 0],
    ...[0, 0, 0, 0, 0, 0, 0],
    ...[0, 3, 3, 0, 0, 0, 0],
    ...[0, 0, 0, 0, 0, 0, 0],
  ]);
  assertThrows(() => tileGrid([]), ImageError);
  assertThrows(() => tileGrid([tile(1), { ...tile(1), width: 1, data: new Uint8Array([1]) }]), ImageError);
});

test("upscale repeats every pixel as a factor × factor block; gridSize matches tileGrid", () => {
  const im = { width: 2, height: 1, channels: 3 as const, data: new Uint8Array([1, 2, 3, 4, 5, 6]) };
  const up = upscale(im, 2);
  assertEquals([up.width, up.height, up.channels], [4, 2, 3]);
  assertEquals(Array.from(up.data), [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6, 1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
  assertStrictEquals(upscale(im, 1), im);
  assertThrows(() => upscale(im, 0), ImageError);
  assertThrows(() => upscale(im, MAX_PNG_SCALE + 1), ImageError);
  assertThrows(() => upscale(im, 1.5), ImageError);
  const tile = { width: 28, height: 28, channels: 1 as const, data: new Uint8Array(784) };
  for (const n of [1, 2, 5, 16, 17]) {
    const g = tileGrid(Array.from({ length: n }, () => tile));
    assertEquals(gridSize(n, 28, 28), { width: g.width, height: g.height }, `n = ${n}`);
  }
  assertEquals(gridSize(16, 28, 28), { width: 122, height: 122 });
});

test("pngParameters: A1111-style settings text", () => {
  assertStrictEquals(
    pngParameters({
      model: "mnist-mix",
      solver: "genie",
      steps: 10,
      nfe: 10,
      seed: 7,
      n: 16,
      class: 3,
      guidance: 1.5,
      grid: "quadratic",
      rho: 2,
      genieDerivative: "head",
      scale: 4,
    }),
    "Steps: 10, Sampler: genie, NFE: 10, Seed: 7, Batch size: 16, Model: mnist-mix, Class: 3, Guidance: 1.5, " +
      "CFG scale: 2.5, Grid: quadratic, Rho: 2, GENIE derivative: head, Upscale: 4",
  );
  // From latents there is no seed; no guidance, one sample and scale 1 are left out; text stays Latin-1.
  assertStrictEquals(
    pngParameters({
      model: "m,ρ",
      solver: "ddim",
      steps: 5,
      nfe: 6,
      n: 1,
      guidance: 0,
      denoise: true,
      scale: 1,
    }),
    "Steps: 5, Sampler: ddim, NFE: 6, Latents: given, Model: m ?, Denoise: on",
  );
});

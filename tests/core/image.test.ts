import { assert, assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import { batchToImages, ImageError, isImageShape, tileGrid, toByte, toUint8Image } from "../../core/image.ts";

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

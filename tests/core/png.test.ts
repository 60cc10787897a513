import { assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import { decode } from "fast-png";
import { gridPng, samplesToPng } from "../../core/png.ts";
import { ImageError, tileGrid } from "../../core/image.ts";

test("samplesToPng: one grey PNG per sample with the mapped pixels", () => {
  // n = 2, C = 1, H = 2, W = 3
  const data = new Float32Array([-1, -0.5, 0, 0.5, 1, 2, 1, 1, 1, -1, -1, -1]);
  const pngs = samplesToPng(data, [2, 1, 2, 3]);
  assertStrictEquals(pngs.length, 2);
  const a = decode(pngs[0]), b = decode(pngs[1]);
  assertEquals([a.width, a.height, a.channels, a.depth], [3, 2, 1, 8]);
  assertEquals(Array.from(a.data), [0, 64, 128, 191, 255, 255]);
  assertEquals(Array.from(b.data), [255, 255, 255, 0, 0, 0]);
});

test("samplesToPng: RGB samples decode to interleaved pixels", () => {
  // n = 1, C = 3, H = 1, W = 2
  const png = samplesToPng(new Float32Array([1, -1, -1, 1, 0, 0]), [1, 3, 1, 2])[0];
  const d = decode(png);
  assertEquals([d.width, d.height, d.channels], [2, 1, 3]);
  assertEquals(Array.from(d.data), [255, 0, 128, 0, 255, 128]);
});

test("gridPng tiles samples near-square with 2-px black padding", () => {
  // 5 samples of 1×2×2 with values chosen so each tile is a constant colour 50·(i+1).
  const n = 5, h = 2, w = 2;
  const data = new Float32Array(n * h * w);
  for (let i = 0; i < n; i++) data.fill(((50 * (i + 1)) / 127.5) - 1, i * 4, i * 4 + 4);
  const d = decode(gridPng(data, [n, 1, h, w]));
  // ⌈√5⌉ = 3 columns, 2 rows: width 3·(2+2)+2 = 14, height 2·(2+2)+2 = 10.
  assertEquals([d.width, d.height, d.channels], [14, 10, 1]);
  const px = (x: number, y: number) => d.data[y * d.width + x];
  for (let i = 0; i < n; i++) {
    const x0 = 2 + (i % 3) * 4, y0 = 2 + Math.floor(i / 3) * 4;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) assertStrictEquals(px(x0 + x, y0 + y), 50 * (i + 1));
    }
  }
  // Padding and the empty sixth cell are black.
  for (const [x, y] of [[0, 0], [1, 5], [4, 2], [13, 9], [10, 6], [11, 7]]) assertStrictEquals(px(x, y), 0);
});

test("gridPng of RGB and tileGrid options", () => {
  const d = decode(gridPng(new Float32Array(2 * 3 * 1 * 1).fill(1), [2, 3, 1, 1]));
  // 2 columns: width 2·(1+2)+2 = 8, height 1·(1+2)+2 = 5; tiles at (2, 2) and (5, 2).
  assertEquals([d.width, d.height, d.channels], [8, 5, 3]);
  const rgb = (x: number, y: number) => Array.from(d.data.slice(3 * (y * 8 + x), 3 * (y * 8 + x) + 3));
  assertEquals([rgb(2, 2), rgb(5, 2), rgb(3, 2), rgb(2, 1)], [[255, 255, 255], [255, 255, 255], [0, 0, 0], [
    0,
    0,
    0,
  ]]);
  const tiles = [0, 1, 2].map(() => ({
    width: 1,
    height: 1,
    channels: 1 as const,
    data: new Uint8Array([9]),
  }));
  const row = tileGrid(tiles, { columns: 3, padding: 1, background: 7 });
  assertEquals([row.width, row.height, Array.from(row.data)], [7, 3, [
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    9,
    7,
    9,
    7,
    9,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
  ]]);
});

test("non-image shapes are rejected", () => {
  assertThrows(() => samplesToPng(new Float32Array(8), [4, 2]), ImageError);
  assertThrows(() => gridPng(new Float32Array(8), [2, 2, 1, 2]), ImageError);
  assertThrows(() => gridPng(new Float32Array(3), [2, 1, 1, 2]), ImageError);
});

/**
 * The edge against hostile input: PNG decompression bombs, values that would overflow the solver's
 * float32 arithmetic, and deadlines beyond what a timer can hold.
 */
import { encode as encodePng } from "fast-png";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { bytesToBase64 } from "../../core/api/tensor.ts";
import { MAX_INPUT_MAGNITUDE } from "../../core/api/tensor.ts";
import { boundedInflateSize, checkPng, scanlineBytes } from "../../functions/images.ts";
import { errorOf, post, withFake } from "./helpers.ts";

const MNIST = { model: "mnist-mix" };

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.byteLength);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  v.setUint32(8 + data.byteLength, crc32(out.subarray(4, 8 + data.byteLength)));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** A zlib stream of `total` zero bytes, compressed as it is produced (never held uncompressed). */
async function zlibZeros(total: number): Promise<Uint8Array> {
  const zeros = new Uint8Array(1 << 20);
  const cs = new CompressionStream("deflate");
  const writer = cs.writable.getWriter();
  const writing = (async () => {
    for (let done = 0; done < total; done += zeros.byteLength) {
      await writer.write(zeros.subarray(0, Math.min(zeros.byteLength, total - done)));
    }
    await writer.close();
  })();
  const parts: Uint8Array[] = [];
  for await (const part of cs.readable) parts.push(part);
  await writing;
  return concat(parts);
}

/** A grey 8-bit PNG whose IHDR says width×height and whose IDAT holds `zlib`. */
function pngWith(width: number, height: number, zlib: Uint8Array): Uint8Array {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 0, 0, 0, 0], 8);
  return concat([
    new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

Deno.test("POST /v1/encode: a PNG decompression bomb is a quick 422 naming the image", async () => {
  // 256 MiB of zeros behind a 28×28 header (about 256 KB compressed)
  const bomb = pngWith(28, 28, await zlibZeros(256 << 20));
  assert(bomb.byteLength < 1 << 20, `bomb of ${bomb.byteLength} bytes`);
  await withFake(async (app, worker) => {
    const t0 = performance.now();
    const res = await post(app, "/v1/encode", { ...MNIST, images: [bytesToBase64(bomb)] });
    const ms = performance.now() - t0;
    assertStrictEquals(res.status, 422);
    const err = await errorOf(res);
    assertEquals(err.details![0].path, ["images", 0]);
    assertMatch(err.details![0].message, /inflates beyond its 28×28 size/);
    assert(ms < 2000, `took ${ms.toFixed(0)} ms`);
    assertStrictEquals(worker.batches.length, 0);
  });
});

Deno.test("PNG checks: exact scanline sizes, wrong sizes refused before inflating, valid PNGs pass", async () => {
  assertStrictEquals(scanlineBytes(28, 28, 8, false), 28 * 29);
  assertStrictEquals(scanlineBytes(3, 2, 48, false), 2 * (1 + 18));
  // Adam7 of 1×1: only the first pass has a pixel.
  assertStrictEquals(scanlineBytes(1, 1, 8, true), 2);
  // A header of another size is refused without looking at the data (which is not even zlib).
  const wrong = pngWith(4096, 4096, new Uint8Array([1, 2, 3]));
  assertEquals(await checkPng(wrong, 28, 28), { message: "is 4096×4096, the model takes 28×28" });
  // Short data is refused too; the exact size passes.
  const short = pngWith(28, 28, await zlibZeros(100));
  assertMatch((await checkPng(short, 28, 28) as { message: string }).message, /holds 100 bytes/);
  const png = encodePng({ width: 28, height: 28, data: new Uint8Array(784).fill(7), channels: 1, depth: 8 });
  assert("png" in await checkPng(png, 28, 28));
  assertEquals(await boundedInflateSize(await zlibZeros(5000), 4000), { error: "too_big" });
  assertEquals(await boundedInflateSize(await zlibZeros(5000), 5000), { size: 5000 });
  const broken = await boundedInflateSize(new Uint8Array([1, 2, 3, 4]), 100);
  assertStrictEquals((broken as { error: string }).error, "unreadable");
});

Deno.test("latents and tensors beyond the float32-safe magnitude are 422 naming the field", async () => {
  await withFake(async (app, worker) => {
    const latents = new Float32Array([3e38, -3e38]);
    const res = await post(app, "/v1/samples", {
      model: "gmm-2d",
      latents: { shape: [1, 2], data: bytesToBase64(new Uint8Array(latents.buffer)) },
    });
    assertStrictEquals(res.status, 422);
    const err = await errorOf(res);
    assertEquals(err.details![0].path, ["latents", "data"]);
    assertMatch(err.details![0].message, new RegExp(`value 0 .*${MAX_INPUT_MAGNITUDE}`));
    const t = new Float32Array(784).fill(0.5);
    t[3] = -2e4;
    const enc = await post(app, "/v1/encode", {
      ...MNIST,
      tensor: { shape: [1, 1, 28, 28], data: bytesToBase64(new Uint8Array(t.buffer)) },
    });
    assertStrictEquals(enc.status, 422);
    const encErr = await errorOf(enc);
    assertEquals(encErr.details![0].path, ["tensor", "data"]);
    assertMatch(encErr.details![0].message, /value 3/);
    assertStrictEquals(worker.batches.length, 0);
    // At the bound itself the request goes through.
    const edge = new Float32Array([MAX_INPUT_MAGNITUDE, -MAX_INPUT_MAGNITUDE]);
    const fine = await post(app, "/v1/samples", {
      model: "gmm-2d",
      latents: { shape: [1, 2], data: bytesToBase64(new Uint8Array(edge.buffer)) },
    });
    assertStrictEquals(fine.status, 200);
  });
});

Deno.test("deadlines beyond a timer's range are capped, not an immediate 504", async () => {
  // a configured default and maximum of 2³¹ ms used to overflow the edge's timer, which fired at once
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { model: "gmm-2d", output: "tensor" });
    assertStrictEquals(res.status, 200, JSON.stringify(await res.clone().json()));
    // the worker is given at most an hour
    const sent = worker.batches[0].deadline_ms as number;
    assert(sent > 3_500_000 && sent <= 3_600_000, `deadline_ms ${sent}`);
  }, { defaultDeadlineMs: 2 ** 31, maxDeadlineMs: 2 ** 32 });
});

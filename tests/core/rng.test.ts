import { assert, assertEquals, assertNotEquals, assertThrows, test } from "../testing.ts";
import {
  gaussianBatch,
  gaussianNoise,
  mulhi32,
  philox4x32,
  portableLog,
  portableSinCos2Pi,
  RngError,
  rngStream,
  seedKey,
} from "../../core/rng.ts";

const PINNED_HASH = "dd3b3c24";
const hex = (w: Uint32Array) => Array.from(w, (x) => x.toString(16).padStart(8, "0")).join(" ");
const words = (s: string) => s.split(" ").map((h) => parseInt(h, 16));

// Random123's tests/kat_vectors, philox4x32 with 10 rounds: counter (4 words), key (2 words), output.
const KAT: [string, string, string][] = [
  ["00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"],
  ["ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"],
  ["243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"],
];

test("philox4x32-10 reproduces the Random123 known-answer vectors exactly", () => {
  for (const [ctr, key, out] of KAT) {
    assertEquals(hex(philox4x32(words(ctr), words(key))), out);
    assertEquals(hex(philox4x32(Uint32Array.from(words(ctr)), words(key))), out);
  }
});

test("mulhi32 equals the BigInt product's high word", () => {
  const pts = [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0xD2511F53, 0xCD9E8D57];
  const s = rngStream(11);
  for (let i = 0; i < 300; i++) pts.push(s.u32());
  for (const a of pts) {
    for (const b of pts) {
      const want = Number((BigInt(a) * BigInt(b)) >> 32n);
      if (mulhi32(a, b) !== want) throw new Error(`mulhi32(${a}, ${b}) = ${mulhi32(a, b)}, want ${want}`);
    }
  }
});

test("gaussianNoise: element i is Box–Muller on block ⌊i/4⌋ of counter (block, sample, 0, 0)", () => {
  const seed = 0x1234_5678_9abc, sample = 7;
  const z = gaussianNoise(seed, sample, 10);
  const key = [seed % 2 ** 32, Math.floor(seed / 2 ** 32)];
  for (let block = 0; block < 3; block++) {
    const w = philox4x32([block, sample, 0, 0], key);
    for (let p = 0; p < 2; p++) {
      const i = 4 * block + 2 * p;
      if (i >= 10) continue;
      const u1 = (w[2 * p] + 1) / 2 ** 32, u2 = (w[2 * p + 1] + 1) / 2 ** 32;
      const r = Math.sqrt(-2 * portableLog(u1)), [c, s] = portableSinCos2Pi(u2);
      assertEquals(z[i], r * c);
      assertEquals(z[i + 1], r * s);
      // …which is Box–Muller with the library functions up to rounding.
      const rr = Math.sqrt(-2 * Math.log(u1));
      assert(Math.abs(z[i] - rr * Math.cos(2 * Math.PI * u2)) < 1e-14 * (1 + rr));
      assert(Math.abs(z[i + 1] - rr * Math.sin(2 * Math.PI * u2)) < 1e-14 * (1 + rr));
    }
  }
});

test("portableLog and portableSinCos2Pi agree with Math.log/cos/sin to a few ulp", () => {
  const ulp = (x: number) => 2 ** (Math.max(Math.floor(Math.log2(Math.abs(x))), -1022) - 52);
  const pts = [
    1,
    2 ** -32,
    2 ** -53,
    0.5,
    Math.SQRT2 / 2,
    1 - 2 ** -53,
    0.25,
    0.75,
    1e-300,
    5e-324,
    3.7,
    1e300,
  ];
  const s = rngStream(5);
  for (let i = 0; i < 20_000; i++) pts.push(s.uniform(), (s.u32() + 1) / 2 ** 32);
  for (const u of pts) {
    const l = portableLog(u), L = Math.log(u);
    assert(L === 0 ? l === 0 : Math.abs(l - L) <= 4 * ulp(L), `log(${u}) = ${l}, Math.log ${L}`);
    if (u > 1) continue;
    const [c, sn] = portableSinCos2Pi(u);
    assert(Math.abs(c - Math.cos(2 * Math.PI * u)) < 2e-15, `cos 2π·${u}`);
    assert(Math.abs(sn - Math.sin(2 * Math.PI * u)) < 2e-15, `sin 2π·${u}`);
  }
  assertEquals(portableLog(0), -Infinity);
  assert(Number.isNaN(portableLog(-1)));
  assertEquals(portableSinCos2Pi(1), [1, 0]);
  assertEquals(portableSinCos2Pi(0.25), [-0, 1]);
  assertEquals(portableSinCos2Pi(0.5), [-1, -0]);
});

/** FNV-1a over the little-endian bytes of float64 values. */
function fnv(values: Float64Array): string {
  const view = new DataView(new ArrayBuffer(8));
  let h = 0x811c9dc5;
  for (const v of values) {
    view.setFloat64(0, v, true);
    for (let i = 0; i < 8; i++) h = Math.imul(h ^ view.getUint8(i), 0x01000193) >>> 0;
  }
  return h.toString(16);
}

test("noise is pinned bit for bit (the same values in every runtime)", () => {
  assertEquals(Array.from(gaussianNoise(0, 0, 6)), [
    0.9911376804493666,
    -0.9246625867937412,
    -0.6176089589473684,
    -0.48206858781466644,
    -0.15363823010340644,
    0.18082589728249815,
  ]);
  assertEquals(Array.from(gaussianNoise(2 ** 32 + 3, 9, 4)), [
    -2.3532538851334333,
    0.45421376913366457,
    0.6938557011563974,
    0.15677380467484495,
  ]);
  assertEquals(fnv(gaussianNoise(7, 3, 4096)), PINNED_HASH);
  const st = rngStream(1);
  assertEquals([st.uniform(), st.normal(), st.normal()], [
    0.027452232389168052,
    0.19833507516187787,
    1.7215323567760694,
  ]);
});

test("gaussianNoise has mean 0, variance 1 and Gaussian tails over 1e5 draws", () => {
  const n = 100_000;
  const z = gaussianNoise(2024, 0, n);
  let m1 = 0, m2 = 0, m4 = 0, beyond2 = 0;
  for (const v of z) {
    assert(Number.isFinite(v));
    m1 += v, m2 += v * v, m4 += v ** 4;
    if (Math.abs(v) > 2) beyond2++;
  }
  m1 /= n, m2 /= n, m4 /= n;
  // Five standard errors: sd(mean) = 1/sqrt(n), sd(var) ≈ sqrt(2/n), sd(m4) ≈ sqrt(96/n).
  assert(Math.abs(m1) < 5 / Math.sqrt(n), `mean ${m1}`);
  assert(Math.abs(m2 - 1) < 5 * Math.sqrt(2 / n), `variance ${m2}`);
  assert(Math.abs(m4 - 3) < 5 * Math.sqrt(96 / n), `fourth moment ${m4}`);
  const p2 = 0.0455003; // P(|Z| > 2)
  assert(Math.abs(beyond2 / n - p2) < 5 * Math.sqrt(p2 * (1 - p2) / n), `P(|z|>2) ${beyond2 / n}`);
  // Neighbouring elements (same pair, same block, next block) are uncorrelated.
  for (const lag of [1, 2, 4]) {
    let c = 0;
    for (let i = 0; i + lag < n; i++) c += z[i] * z[i + lag];
    assert(Math.abs(c / (n - lag)) < 5 / Math.sqrt(n), `lag-${lag} correlation ${c / (n - lag)}`);
  }
});

test("noise depends only on (seed, sample): any batch size or position, any dim prefix", () => {
  const dim = 37;
  const seeds = [3, 99, 0, 2 ** 32 - 1, 17, 5, 2 ** 40 + 5, 8];
  const alone = gaussianNoise(5, 0, dim);
  const batch = gaussianBatch(seeds, dim);
  assertEquals(batch.subarray(5 * dim, 6 * dim), alone);
  const other = gaussianBatch([5, 1, 2], dim);
  assertEquals(other.subarray(0, dim), alone);
  // Sample index 5 of one seed, alone or among sample indices 0..7.
  const s5 = gaussianNoise(42, 5, dim);
  assertEquals(gaussianBatch([42], dim, 5), s5);
  for (let j = 0; j < 8; j++) {
    assertEquals(gaussianNoise(42, j, dim), gaussianBatch(Array(8).fill(42), dim, j).subarray(0, dim));
  }
  // Deterministic across calls and prefix-consistent across dims.
  assertEquals(gaussianNoise(42, 5, dim), s5);
  assertEquals(gaussianNoise(42, 5, 5), s5.subarray(0, 5));
  assertEquals(gaussianNoise(42, 5, 1), s5.subarray(0, 1));
  assertEquals(gaussianNoise(42, 5, 0).length, 0);
});

test("different seeds and samples give different noise; large seeds use the high key word", () => {
  const dim = 16;
  const seen = new Set<string>();
  for (const seed of [0, 1, 2, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]) {
    for (const sample of [0, 1, 2]) seen.add(gaussianNoise(seed, sample, dim).join(","));
  }
  assertEquals(seen.size, 21);
  assertEquals(seedKey(2 ** 32 + 7), [7, 1]);
  assertEquals(seedKey(Number.MAX_SAFE_INTEGER), [2 ** 32 - 1, 2 ** 21 - 1]);
  assertNotEquals(gaussianNoise(2 ** 32 + 7, 0, dim).join(), gaussianNoise(7, 0, dim).join());
});

test("invalid seeds, sample indices and sizes are rejected", () => {
  for (const seed of [-1, 0.5, NaN, Infinity, 2 ** 53]) {
    assertThrows(() => gaussianNoise(seed, 0, 4), RngError);
  }
  for (const s of [-1, 1.5, 2 ** 32]) assertThrows(() => gaussianNoise(1, s, 4), RngError);
  assertThrows(() => gaussianNoise(1, 0, -1), RngError);
  assertThrows(() => rngStream(1, -2), RngError);
});

test("rngStream: deterministic, uniforms in (0, 1], normals with unit variance, disjoint from noise", () => {
  const a = rngStream(9), b = rngStream(9);
  for (let i = 0; i < 50; i++) assertEquals(a.u32(), b.u32());
  // The stream's first words are block (0, stream, 1, 0).
  const s = rngStream(9, 3);
  assertEquals(
    hex(Uint32Array.of(s.u32(), s.u32(), s.u32(), s.u32())),
    hex(philox4x32([0, 3, 1, 0], [9, 0])),
  );
  const n = 100_000;
  const r = rngStream(123);
  let um = 0, m1 = 0, m2 = 0;
  for (let i = 0; i < n; i++) {
    const u = r.uniform();
    assert(u > 0 && u <= 1, `uniform ${u}`);
    um += u;
    const z = r.normal();
    m1 += z, m2 += z * z;
  }
  assert(Math.abs(um / n - 0.5) < 5 * Math.sqrt(1 / 12 / n), `uniform mean ${um / n}`);
  assert(Math.abs(m1 / n) < 5 / Math.sqrt(n), `normal mean ${m1 / n}`);
  assert(Math.abs(m2 / n - 1) < 5 * Math.sqrt(2 / n), `normal variance ${m2 / n}`);
  assertNotEquals(rngStream(1).normal(), rngStream(2).normal());
  assertNotEquals(rngStream(1, 0).normal(), rngStream(1, 1).normal());
});

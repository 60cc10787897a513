/** Slab-carved float64 arrays behave like new ones: zeroed, the right length, never overlapping. */
import { float64Array } from "../../core/solvers/arrays.ts";
import { assert, assertEquals, assertStrictEquals, test } from "../testing.ts";

test("float64Array: zeroed, disjoint arrays of the asked length, across many slabs", () => {
  const arrays: Float64Array[] = [];
  // 784 numbers (one 28×28 sample), 1, 8 and an odd size, enough of them to fill several slabs
  for (let i = 0; i < 400; i++) {
    const n = [784, 1, 8, 1001][i % 4];
    const a = float64Array(n);
    assertStrictEquals(a.length, n);
    assert(a.every((v) => v === 0), `array ${i} starts at zero`);
    a.fill(i + 1);
    arrays.push(a);
  }
  // writing each one left every other one as it was
  arrays.forEach((a, i) => assert(a.every((v) => v === i + 1), `array ${i} kept its values`));
  // views on a shared buffer: ranges on the same buffer never overlap
  const byBuffer = new Map<ArrayBufferLike, [number, number][]>();
  for (const a of arrays) {
    const ranges = byBuffer.get(a.buffer) ?? [];
    ranges.push([a.byteOffset, a.byteOffset + a.byteLength]);
    byBuffer.set(a.buffer, ranges);
  }
  assert(byBuffer.size > 1, "more than one slab was used");
  for (const ranges of byBuffer.values()) {
    ranges.sort((p, q) => p[0] - q[0]);
    for (let i = 1; i < ranges.length; i++) assert(ranges[i][0] >= ranges[i - 1][1], "no overlap");
  }
});

test("float64Array: large arrays get a buffer of their own", () => {
  const big = float64Array(32 * 784);
  assertStrictEquals(big.byteOffset, 0);
  assertStrictEquals(big.buffer.byteLength, big.byteLength);
  assertEquals(float64Array(0).length, 0);
});

/**
 * The one place tests import their runner and assertions from. `node:test` and `node:assert/strict`
 * run unchanged under Deno's test runner and under Node.js, so the core's tests prove `core/` is
 * runtime-neutral.
 */
export { describe, it, mock, test } from "node:test";
export {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  notStrictEqual as assertNotEquals,
  ok as assert,
  rejects as assertRejects,
  strictEqual as assertStrictEquals,
  throws as assertThrows,
} from "node:assert/strict";

/** Asserts |actual − expected| ≤ tol (absolute), with a message naming both. */
export function assertClose(actual: number, expected: number, tol: number, what = "value"): void {
  if (!(Math.abs(actual - expected) <= tol)) {
    throw new Error(
      `${what}: expected ${expected} ± ${tol}, got ${actual} (diff ${Math.abs(actual - expected)})`,
    );
  }
}

/** Max |a_i − b_i| over two arrays of equal length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The arithmetic mean. */
export function mean(v: readonly number[]): number {
  return v.reduce((a, b) => a + b, 0) / v.length;
}

/** Asserts two sets of named float arrays have the same names and the same bytes, naming the first that differs. */
export function assertSameBits(
  a: Record<string, Float32Array | Float64Array>,
  b: Record<string, Float32Array | Float64Array>,
): void {
  const keys = Object.keys(a);
  if (keys.join() !== Object.keys(b).join()) throw new Error(`names differ: ${keys} vs ${Object.keys(b)}`);
  for (const k of keys) {
    const x = new Uint8Array(a[k].buffer, a[k].byteOffset, a[k].byteLength);
    const y = new Uint8Array(b[k].buffer, b[k].byteOffset, b[k].byteLength);
    if (!(x.length === y.length && x.every((v, i) => v === y[i]))) throw new Error(`${k} differs`);
  }
}

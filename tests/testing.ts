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

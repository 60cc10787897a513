/**
 * The one place tests import their runner and assertions from. `node:test` and `node:assert/strict`
 * run unchanged under Deno's test runner and under Node.js, so the core's tests prove `core/` is
 * runtime-neutral.
 */
export { describe, it, mock, test } from "node:test";
import { throws } from "node:assert/strict";
export {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  notStrictEqual as assertNotEquals,
  ok as assert,
  strictEqual as assertStrictEquals,
} from "node:assert/strict";

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;
/**
 * What a thrown error must be: an error class (then the string after it is a part of the message, as in
 * @std/assert), or node:assert's RegExp, object or validator (then the string is the failure's message).
 */
type Expected = ErrorClass | RegExp | object | ((e: unknown) => boolean);

const isErrorClass = (v: unknown): v is ErrorClass =>
  typeof v === "function" && (v === Error || v.prototype instanceof Error);

/** Checks `caught` against `expected` as @std/assert does: an error class and a part of the message. */
function check(caught: unknown, expected: Expected | undefined, msgIncludes: string | undefined): void {
  if (isErrorClass(expected)) {
    if (!(caught instanceof expected)) {
      throw new Error(
        `expected a ${expected.name}, got ${
          caught instanceof Error ? caught.name : typeof caught
        }: ${caught}`,
      );
    }
    if (msgIncludes !== undefined && !caught.message.includes(msgIncludes)) {
      throw new Error(
        `expected the message to include ${JSON.stringify(msgIncludes)}, got ${
          JSON.stringify(caught.message)
        }`,
      );
    }
    return;
  }
  // node:assert's form: the string after a RegExp, object or validator is the failure's message
  throws(
    () => {
      throw caught;
    },
    expected as RegExp,
    msgIncludes,
  );
}

/**
 * Asserts `fn` throws. With @std/assert's arguments (an error class, then a part of the message) both are
 * checked; node:assert's RegExp, object or validator function work as there.
 */
export function assertThrows(fn: () => unknown, expected?: Expected, msgIncludes?: string): void {
  let caught: unknown, threw = false;
  try {
    fn();
  } catch (e) {
    caught = e;
    threw = true;
  }
  if (!threw) throw new Error("expected the function to throw");
  if (expected !== undefined) check(caught, expected, msgIncludes);
}

/** {@link assertThrows} for a promise or an async function. */
export async function assertRejects(
  fn: Promise<unknown> | (() => Promise<unknown>),
  expected?: Expected,
  msgIncludes?: string,
): Promise<void> {
  let caught: unknown, threw = false;
  try {
    await (typeof fn === "function" ? fn() : fn);
  } catch (e) {
    caught = e;
    threw = true;
  }
  if (!threw) throw new Error("expected the promise to reject");
  if (expected !== undefined) check(caught, expected, msgIncludes);
}

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

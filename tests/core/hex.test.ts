/** core/hex.ts: hex text of bytes both ways, random hex, constant-time equality. */
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStrictEquals,
  assertThrows,
  test,
} from "../testing.ts";
import { constantTimeEqual, fromHex, randomHex, toHex } from "../../core/hex.ts";

test("hex: two lower-case digits a byte, and back in either case", () => {
  const bytes = new Uint8Array([0, 1, 15, 16, 127, 128, 254, 255]);
  assertStrictEquals(toHex(bytes), "00010f107f80feff");
  assertStrictEquals(toHex(bytes), Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""));
  assertEquals(fromHex("00010F107f80FEff"), bytes);
  assertEquals(fromHex(""), new Uint8Array(0));
  assertThrows(() => fromHex("abc"), TypeError);
  assertThrows(() => fromHex("zz"), TypeError);
});

test("hex: random hex has two digits a byte and differs between calls", () => {
  assertMatch(randomHex(8), /^[0-9a-f]{16}$/);
  assertStrictEquals(randomHex(32).length, 64);
  assertNotEquals(randomHex(16), randomHex(16));
});

test("hex: constant-time equality compares contents and lengths", () => {
  assert(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3])));
  assert(!constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 4])));
  assert(!constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 3])));
});

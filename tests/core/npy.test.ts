import { assert, assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import { decodeNpy, encodeNpy, NpyError, npyHeader } from "../../core/npy.ts";

const latin1 = (b: Uint8Array) => Array.from(b, (c) => String.fromCharCode(c)).join("");

/** A hand-built file: any version, a header string padded to 64 bytes, then raw data bytes. */
function rawNpy(header: string, data: Uint8Array, version: [number, number] = [1, 0]): Uint8Array {
  const pre = version[0] === 1 ? 10 : 12;
  const unpadded = pre + header.length + 1;
  const total = Math.ceil(unpadded / 64) * 64;
  const text = header + " ".repeat(total - unpadded) + "\n";
  const out = new Uint8Array(total + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version[0], version[1]]);
  const dv = new DataView(out.buffer);
  if (pre === 10) dv.setUint16(8, text.length, true);
  else dv.setUint32(8, text.length, true);
  for (let i = 0; i < text.length; i++) out[pre + i] = text.charCodeAt(i);
  out.set(data, total);
  return out;
}

test("npy header is byte-exact for a (2, 3) float32 array", () => {
  const h = npyHeader([2, 3]);
  const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  // 10 preamble bytes + 59-byte dict + 58 spaces + "\n" = 128 (the next multiple of 64), so the
  // header length field is 118 = 0x76 (this is also exactly what numpy writes).
  assertStrictEquals(dict.length, 59);
  const expected = "\x93NUMPY\x01\x00\x76\x00" + dict + " ".repeat(58) + "\n";
  assertStrictEquals(h.length, 128);
  assertStrictEquals(latin1(h), expected);
  assertEquals(Array.from(h.subarray(0, 10)), [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 118, 0]);
});

test("npy header: 1-d and scalar shapes use Python tuple syntax; length is a multiple of 64", () => {
  assert(latin1(npyHeader([5])).includes("'shape': (5,), }"));
  assert(latin1(npyHeader([])).includes("'shape': (), }"));
  for (const shape of [[1], [2, 3], [64, 3, 32, 32], Array.from({ length: 12 }, () => 123456789)]) {
    const h = npyHeader(shape);
    assertStrictEquals(h.length % 64, 0);
    assertStrictEquals(h[h.length - 1], 0x0a);
    assertStrictEquals(new DataView(h.buffer).getUint16(8, true), h.length - 10);
  }
});

test("npy round trip keeps shape and float32 values", () => {
  const data = Float32Array.from({ length: 24 }, (_, i) => (i - 11.5) / 7);
  const bytes = encodeNpy(data, [2, 3, 4]);
  assertStrictEquals(bytes.length, 128 + 24 * 4);
  const back = decodeNpy(bytes);
  assertEquals(back.shape, [2, 3, 4]);
  assertStrictEquals(back.dtype, "<f4");
  assert(back.data instanceof Float32Array);
  assertEquals(Array.from(back.data), Array.from(data));
});

test("npy data is little-endian float32 after the header", () => {
  const bytes = encodeNpy([1, -2.5], [2]);
  assertStrictEquals(bytes.length, 128 + 8);
  const dv = new DataView(bytes.buffer, 128);
  assertStrictEquals(dv.getFloat32(0, true), 1);
  assertStrictEquals(dv.getFloat32(4, true), -2.5);
});

test("npy encode rounds float64 input to float32", () => {
  const back = decodeNpy(encodeNpy(new Float64Array([0.1, 1 / 3]), [2]));
  assertEquals(Array.from(back.data), [Math.fround(0.1), Math.fround(1 / 3)]);
});

test("npy reads <f8 as Float64Array and works on an offset view", () => {
  const vals = [Math.PI, -1e-300, 2];
  const data = new Uint8Array(24);
  vals.forEach((v, i) => new DataView(data.buffer).setFloat64(8 * i, v, true));
  const file = rawNpy("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1), }", data);
  const padded = new Uint8Array(file.length + 3);
  padded.set(file, 3);
  const back = decodeNpy(padded.subarray(3));
  assertEquals(back.shape, [3, 1]);
  assertStrictEquals(back.dtype, "<f8");
  assert(back.data instanceof Float64Array);
  assertEquals(Array.from(back.data), vals);
});

test("npy reads version 2.0 headers and double-quoted keys", () => {
  const data = new Uint8Array(8);
  new DataView(data.buffer).setFloat32(4, 7, true);
  const back = decodeNpy(rawNpy('{"descr": "<f4", "fortran_order": False, "shape": (2,)}', data, [2, 0]));
  assertEquals(back.shape, [2]);
  assertEquals(Array.from(back.data), [0, 7]);
});

test("npy rejects bad magic, other dtypes, Fortran order, truncation and bad versions", () => {
  const f4 = new Uint8Array(16);
  const cases: [Uint8Array, RegExp][] = [
    [new TextEncoder().encode("PK\x03\x04 not numpy at all"), /bad magic/],
    [new Uint8Array(4), /bad magic/],
    [rawNpy("{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", f4), /dtype "<i4"/],
    [rawNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", f4), /dtype ">f4"/],
    [rawNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", f4), /Fortran/],
    [rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", f4), /truncated/],
    [rawNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", f4), /structured/],
    [rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", f4, [4, 0]), /version 4\.0/],
    [rawNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }", f4), /shape/],
  ];
  for (const [bytes, re] of cases) {
    assertThrows(() => decodeNpy(bytes), (e: unknown) => e instanceof NpyError && re.test(e.message));
  }
});

test("npy encode checks the shape against the data", () => {
  assertThrows(() => encodeNpy(new Float32Array(5), [2, 3]), NpyError);
  assertThrows(() => encodeNpy(new Float32Array(0), [-1]), NpyError);
  assertThrows(() => encodeNpy(new Float32Array(2), [1.5, 2]), NpyError);
});

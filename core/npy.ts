/**
 * The NumPy `.npy` format on plain bytes (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
 *
 * Writing produces format version 1.0, dtype `<f4`, C order. Reading accepts versions 1.0–3.0 with dtype
 * `<f4` or `<f8` in C order and rejects everything else with an {@link NpyError}.
 */

/** The dtypes this module reads. */
export type NpyDtype = "<f4" | "<f8";

/** A decoded array: `data` is row-major with `shape`'s product elements. */
export interface NpyArray {
  shape: number[];
  dtype: NpyDtype;
  data: Float32Array | Float64Array;
}

/** A malformed or unsupported `.npy` file, or an invalid array to write. */
export class NpyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NpyError";
  }
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const PREAMBLE_V1 = 10; // magic (6) + version (2) + uint16 header length (2)
const ALIGN = 64;

/** The number of elements of an array of this shape (1 for a scalar shape `[]`). */
function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** The Python tuple literal numpy writes for a shape: `()`, `(3,)`, `(2, 3)`. */
function shapeLiteral(shape: readonly number[]): string {
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(", ")})`;
}

function checkShape(shape: readonly number[]): void {
  for (const [i, d] of shape.entries()) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new NpyError(`shape[${i}] must be a non-negative integer, got ${d}`);
    }
  }
}

/**
 * The header of a version 1.0 `<f4` C-order file: magic, version, header length and the padded
 * header dict, `PREAMBLE + dict` a multiple of 64 bytes and ending in a newline.
 */
export function npyHeader(shape: readonly number[]): Uint8Array {
  checkShape(shape);
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeLiteral(shape)}, }`;
  const unpadded = PREAMBLE_V1 + dict.length + 1; // + "\n"
  const total = Math.ceil(unpadded / ALIGN) * ALIGN;
  const headerLen = total - PREAMBLE_V1;
  if (headerLen > 0xffff) throw new NpyError("shape is too long for a version 1.0 header");
  const text = dict + " ".repeat(total - unpadded) + "\n";
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, headerLen, true);
  for (let i = 0; i < text.length; i++) out[PREAMBLE_V1 + i] = text.charCodeAt(i);
  return out;
}

/**
 * Encodes row-major numbers as a `.npy` file (version 1.0, `<f4`, C order). Float64 input is
 * rounded to float32.
 */
export function encodeNpy(data: ArrayLike<number>, shape: readonly number[]): Uint8Array {
  checkShape(shape);
  const n = shapeSize(shape);
  if (data.length !== n) {
    throw new NpyError(`data has ${data.length} elements but shape (${shape.join(", ")}) needs ${n}`);
  }
  const header = npyHeader(shape);
  const out = new Uint8Array(header.length + 4 * n);
  out.set(header, 0);
  const view = new DataView(out.buffer, header.length);
  for (let i = 0; i < n; i++) view.setFloat32(4 * i, data[i], true);
  return out;
}

/** Decodes a `.npy` file with dtype `<f4` or `<f8` in C order. */
export function decodeNpy(bytes: Uint8Array): NpyArray {
  if (bytes.length < PREAMBLE_V1 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new NpyError("not a .npy file (bad magic; expected \\x93NUMPY)");
  }
  const major = bytes[6], minor = bytes[7];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number, headerLen: number;
  if (major === 1 && minor === 0) {
    headerStart = 10;
    headerLen = view.getUint16(8, true);
  } else if ((major === 2 || major === 3) && minor === 0) {
    if (bytes.length < 12) throw new NpyError("truncated .npy header");
    headerStart = 12;
    headerLen = view.getUint32(8, true);
  } else {
    throw new NpyError(`unsupported .npy format version ${major}.${minor}`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) throw new NpyError("truncated .npy header");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(headerStart, dataStart),
  );
  const { descr, fortranOrder, shape } = parseHeader(header);
  if (fortranOrder) throw new NpyError("Fortran-order .npy arrays are not supported (C order only)");
  if (descr !== "<f4" && descr !== "<f8") {
    throw new NpyError(`unsupported .npy dtype ${JSON.stringify(descr)} (expected '<f4' or '<f8')`);
  }
  const width = descr === "<f4" ? 4 : 8;
  const n = shapeSize(shape);
  const available = bytes.length - dataStart;
  if (available < n * width) {
    throw new NpyError(
      `truncated .npy data: shape (${shape.join(", ")}) needs ${n * width} bytes, found ${available}`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + dataStart, n * width);
  if (descr === "<f4") {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = dv.getFloat32(4 * i, true);
    return { shape, dtype: descr, data };
  }
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = dv.getFloat64(8 * i, true);
  return { shape, dtype: descr, data };
}

/** Reads the three keys of a header dict literal, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`. */
function parseHeader(header: string): { descr: string; fortranOrder: boolean; shape: number[] } {
  const text = header.trim();
  if (!text.startsWith("{") || !text.endsWith("}")) {
    throw new NpyError(`malformed .npy header ${JSON.stringify(text)}`);
  }
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(text);
  if (!descr) {
    // Structured dtypes are written as a list of fields.
    if (/['"]descr['"]\s*:\s*\[/.test(text)) throw new NpyError("structured .npy dtypes are not supported");
    throw new NpyError("malformed .npy header: no 'descr'");
  }
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text);
  if (!fortran) throw new NpyError("malformed .npy header: no 'fortran_order'");
  const shapeMatch = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text);
  if (!shapeMatch) throw new NpyError("malformed .npy header: no 'shape'");
  const parts = shapeMatch[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
  const shape = parts.map((s) => {
    const d = /^\d+L?$/.test(s) ? Number.parseInt(s, 10) : NaN;
    if (!Number.isSafeInteger(d)) throw new NpyError(`malformed .npy shape (${shapeMatch[1]})`);
    return d;
  });
  return { descr: descr[1], fortranOrder: fortran[1] === "True", shape };
}

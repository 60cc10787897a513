/**
 * Tensor messages (onnx/proto.ts): built from typed arrays or plain numbers, read back as numbers, and
 * IEEE half-precision conversion.
 */
import {
  DataType,
  dataTypeOf,
  type DType,
  type ITensorProto,
  onnx,
  type TensorProto,
  toNumber,
} from "./messages.ts";

/** Typed arrays accepted as tensor data. */
export type TensorData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int8Array
  | Uint8Array;

function bytesOf(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
}

function inferDataType(data: TensorData): number {
  if (data instanceof Float32Array) return DataType.FLOAT;
  if (data instanceof Float64Array) return DataType.DOUBLE;
  if (data instanceof BigInt64Array) return DataType.INT64;
  if (data instanceof Int32Array) return DataType.INT32;
  if (data instanceof Int8Array) return DataType.INT8;
  return DataType.UINT8;
}

/**
 * A tensor message holding `data` (little-endian raw bytes). `dims` defaults to a 1-D tensor of the data's
 * length; pass `[]` for a scalar. `dtype` overrides the type implied by the array (e.g. "bool" from a
 * Uint8Array, "float16" from a Uint16-bit pattern stored in a Uint8Array).
 */
export function tensorProto(
  name: string,
  data: TensorData,
  dims?: readonly number[],
  dtype?: DType | number,
): TensorProto {
  const shape = dims ?? [data.length];
  const count = shape.reduce((a, b) => a * b, 1);
  const dataType = dtype === undefined ? inferDataType(data) : dataTypeOf(dtype);
  if (dataType !== DataType.FLOAT16 && count !== data.length) {
    throw new Error(`tensor '${name}': ${data.length} values for shape [${shape.join(", ")}]`);
  }
  return onnx.TensorProto.create({ name, dims: [...shape], dataType, rawData: bytesOf(data) });
}

/** Converts a number to IEEE half-precision bits. */
export function toFloat16Bits(value: number): number {
  const f = new Float32Array([value]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant = (mant | 0x800000) >> (1 - e);
    if (mant & 0x1000) mant += 0x2000;
    return sign | (mant >> 13);
  }
  if (mant & 0x1000) {
    mant += 0x2000;
    if (mant & 0x800000) {
      mant = 0;
      e += 1;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | (mant >> 13);
}

/** A tensor message of `dtype` filled from plain numbers (floats, ints, bools as 0/1). */
export function tensorFromNumbers(
  name: string,
  values: readonly number[],
  dims: readonly number[] | undefined,
  dtype: DType | number,
): TensorProto {
  const code = dataTypeOf(dtype);
  switch (code) {
    case DataType.FLOAT:
      return tensorProto(name, Float32Array.from(values), dims);
    case DataType.DOUBLE:
      return tensorProto(name, Float64Array.from(values), dims);
    case DataType.INT64:
      return tensorProto(name, BigInt64Array.from(values, (v) => BigInt(Math.trunc(v))), dims);
    case DataType.INT32:
      return tensorProto(name, Int32Array.from(values), dims);
    case DataType.INT8:
      return tensorProto(name, Int8Array.from(values), dims);
    case DataType.UINT8:
    case DataType.BOOL:
      return tensorProto(
        name,
        Uint8Array.from(values, (v) => (code === DataType.BOOL ? (v ? 1 : 0) : v)),
        dims,
        code,
      );
    case DataType.FLOAT16: {
      const bits = Uint16Array.from(values, toFloat16Bits);
      const t = tensorProto(name, new Uint8Array(bits.buffer), dims ?? [values.length], DataType.FLOAT16);
      return t;
    }
    default:
      throw new Error(`tensorFromNumbers: unsupported data type ${code}`);
  }
}

/** Reads a tensor message's values as numbers (raw or typed fields; int64 converted with Number). */
export function tensorValues(t: ITensorProto): number[] {
  const code = t.dataType ?? 0;
  const raw = t.rawData && t.rawData.length ? t.rawData : undefined;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    throw new Error(`tensor '${t.name}' keeps its data in an external file`);
  }
  if (raw) {
    const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    switch (code) {
      case DataType.FLOAT:
        return Array.from(new Float32Array(buf));
      case DataType.DOUBLE:
        return Array.from(new Float64Array(buf));
      case DataType.INT64:
        return Array.from(new BigInt64Array(buf), Number);
      case DataType.UINT64:
        return Array.from(new BigUint64Array(buf), Number);
      case DataType.INT32:
        return Array.from(new Int32Array(buf));
      case DataType.UINT32:
        return Array.from(new Uint32Array(buf));
      case DataType.INT16:
        return Array.from(new Int16Array(buf));
      case DataType.UINT16:
        return Array.from(new Uint16Array(buf));
      case DataType.INT8:
        return Array.from(new Int8Array(buf));
      case DataType.UINT8:
      case DataType.BOOL:
        return Array.from(new Uint8Array(buf));
      case DataType.FLOAT16:
        return Array.from(new Uint16Array(buf), fromFloat16Bits);
      default:
        throw new Error(`tensor '${t.name}': cannot read data type ${code}`);
    }
  }
  if (t.floatData?.length) {
    return code === DataType.FLOAT16 ? t.floatData.map(fromFloat16Bits) : [...t.floatData];
  }
  if (t.doubleData?.length) return [...t.doubleData];
  if (t.int64Data?.length) return t.int64Data.map(toNumber);
  if (t.uint64Data?.length) return t.uint64Data.map(toNumber);
  if (t.int32Data?.length) {
    return code === DataType.FLOAT16 ? t.int32Data.map(fromFloat16Bits) : [...t.int32Data];
  }
  return [];
}

/** A tensor message's dims as numbers. */
export function tensorDims(t: ITensorProto): number[] {
  return (t.dims ?? []).map(toNumber);
}

/** Converts IEEE half-precision bits to a number. */
export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

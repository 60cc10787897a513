/**
 * The protobuf messages of `onnx-proto` and their vocabulary (onnx/proto.ts): the generated namespace and
 * message types, the default opset and IR version, element types and their codes, dimensions, int64
 * fields as numbers, and typed value infos.
 */
import pkg from "onnx-proto";
import type { onnx as OnnxTypes } from "onnx-proto";

/** The generated protobuf namespace (`onnx.ModelProto`, `onnx.TensorProto.DataType`, …). */
export const onnx: typeof OnnxTypes = pkg.onnx;

export type ModelProto = OnnxTypes.ModelProto;
export type GraphProto = OnnxTypes.GraphProto;
export type NodeProto = OnnxTypes.NodeProto;
export type TensorProto = OnnxTypes.TensorProto;
export type AttributeProto = OnnxTypes.AttributeProto;
export type ValueInfoProto = OnnxTypes.ValueInfoProto;
export type IModelProto = OnnxTypes.IModelProto;
export type IGraphProto = OnnxTypes.IGraphProto;
export type INodeProto = OnnxTypes.INodeProto;
export type ITensorProto = OnnxTypes.ITensorProto;
export type IAttributeProto = OnnxTypes.IAttributeProto;
export type IValueInfoProto = OnnxTypes.IValueInfoProto;

/** Default operator set of the default ("ai.onnx") domain. */
export const DEFAULT_OPSET = 17;
/** Default IR version (ONNX 1.10+; ORT accepts 8 and later). */
export const DEFAULT_IR_VERSION = 8;

/** Element types by the names ONNX Runtime uses for tensors. */
export type DType = "float32" | "float64" | "float16" | "int64" | "int32" | "int8" | "uint8" | "bool";

/** ONNX `TensorProto.DataType` codes. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

const DTYPE_CODE: Record<DType, number> = {
  float32: DataType.FLOAT,
  float64: DataType.DOUBLE,
  float16: DataType.FLOAT16,
  int64: DataType.INT64,
  int32: DataType.INT32,
  int8: DataType.INT8,
  uint8: DataType.UINT8,
  bool: DataType.BOOL,
};

/** The ONNX data type code of a dtype name (codes pass through). */
export function dataTypeOf(dtype: DType | number): number {
  if (typeof dtype === "number") return dtype;
  const code = DTYPE_CODE[dtype];
  if (code === undefined) throw new Error(`unknown dtype '${dtype}'`);
  return code;
}

/** The dtype name of an ONNX data type code, or undefined for types without one here. */
export function dtypeName(code: number): DType | undefined {
  for (const [name, c] of Object.entries(DTYPE_CODE)) if (c === code) return name as DType;
  return undefined;
}

/** True for the floating-point codes (float, double, float16, bfloat16). */
export function isFloatType(code: number | undefined): boolean {
  return code === DataType.FLOAT || code === DataType.DOUBLE || code === DataType.FLOAT16 ||
    code === DataType.BFLOAT16;
}

/** A dimension: a fixed size, or a symbolic name such as "B". */
export type Dim = number | string;
/** An int64 field as a number: decoded messages hold `Long` objects (via protobufjs), built ones numbers. */
export function toNumber(v: number | bigint | { toNumber(): number } | string | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === "number") return v;
  if (typeof v === "bigint" || typeof v === "string") return Number(v);
  return v.toNumber();
}

/** Typed value info `name: dtype[shape]`; `shape` undefined leaves the rank unknown. */
export function valueInfo(name: string, dtype: DType | number, shape?: readonly Dim[]): ValueInfoProto {
  const tensorType: OnnxTypes.TypeProto.ITensor = { elemType: dataTypeOf(dtype) };
  if (shape) {
    tensorType.shape = {
      dim: shape.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d }),
    };
  }
  return onnx.ValueInfoProto.create({ name, type: { tensorType } });
}

/** The element type and shape recorded in a value info (shape undefined when the rank is unknown). */
export function valueInfoType(vi: IValueInfoProto): { elemType?: number; shape?: (Dim | undefined)[] } {
  const tt = vi.type?.tensorType;
  if (!tt) return {};
  const elemType = tt.elemType ?? undefined;
  if (!tt.shape) return { elemType };
  const shape = (tt.shape.dim ?? []).map((d) =>
    d.dimParam
      ? d.dimParam
      : d.dimValue !== undefined && d.dimValue !== null
      ? toNumber(d.dimValue)
      : undefined
  );
  return { elemType, shape };
}

/**
 * A thin, typed layer over the protobuf messages of `onnx-proto`: build ONNX graphs by name, encode them
 * to the bytes ONNX Runtime loads, and decode model files back into messages.
 *
 *     const g = new GraphBuilder("affine");
 *     const x = g.input("x", "float32", ["B", 3]);
 *     const w = g.initializer("W", new Float32Array(6), [3, 2]);
 *     const [y] = g.node("Sigmoid", [g.op("MatMul", [x, w])]);
 *     g.output(y, "float32", ["B", 2]);
 *     const bytes = encodeModel(g.model());
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

/** Typed arrays accepted as tensor data. */
export type TensorData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int8Array
  | Uint8Array;

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

/** An attribute value wrapper forcing the FLOAT (or FLOATS) type for a whole number. */
export class FloatAttr {
  constructor(readonly value: number | readonly number[]) {}
}
/** Marks an attribute value as float even if it is a whole number: `{ alpha: float(1) }`. */
export function float(value: number | readonly number[]): FloatAttr {
  return new FloatAttr(value);
}

/**
 * Attribute values. Numbers become INT when whole, FLOAT otherwise — except for attribute names that are
 * always float in the standard operators (`alpha`, `beta`, `epsilon`, …), and values wrapped in `float()`.
 */
export type AttrValue =
  | number
  | bigint
  | string
  | readonly number[]
  | readonly bigint[]
  | readonly string[]
  | FloatAttr
  | ITensorProto
  | IGraphProto;

/** Standard attributes whose type is FLOAT/FLOATS whatever the value looks like. */
const FLOAT_ATTRIBUTES = new Set([
  "alpha",
  "beta",
  "gamma",
  "epsilon",
  "momentum",
  "bias",
  "lambd",
  "cubic_coeff_a",
  "extrapolation_value",
  "ratio",
  "scale",
  "spatial_scale",
  "value_float",
  "value_floats",
  "scales",
  "min",
  "max",
  "mean",
  "high",
  "low",
]);

/** Converts a value to an AttributeProto. */
export function attribute(name: string, value: AttrValue): AttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  const a: IAttributeProto = { name };
  const floatName = FLOAT_ATTRIBUTES.has(name);
  if (value instanceof FloatAttr) {
    if (typeof value.value === "number") Object.assign(a, { type: T.FLOAT, f: value.value });
    else Object.assign(a, { type: T.FLOATS, floats: [...value.value] });
  } else if (typeof value === "number") {
    if (floatName || !Number.isInteger(value)) Object.assign(a, { type: T.FLOAT, f: value });
    else Object.assign(a, { type: T.INT, i: value });
  } else if (typeof value === "bigint") {
    Object.assign(a, { type: T.INT, i: Number(value) });
  } else if (typeof value === "string") {
    Object.assign(a, { type: T.STRING, s: new TextEncoder().encode(value) });
  } else if (Array.isArray(value)) {
    const arr = value as readonly (number | bigint | string)[];
    if (arr.length > 0 && typeof arr[0] === "string") {
      Object.assign(a, { type: T.STRINGS, strings: arr.map((s) => new TextEncoder().encode(s as string)) });
    } else if (arr.some((v) => typeof v === "number" && !Number.isInteger(v)) || (floatName && arr.length)) {
      Object.assign(a, { type: T.FLOATS, floats: arr.map(Number) });
    } else {
      Object.assign(a, { type: T.INTS, ints: arr.map(Number) });
    }
  } else if ("node" in (value as object) || "initializer" in (value as object)) {
    Object.assign(a, { type: T.GRAPH, g: value as IGraphProto });
  } else {
    Object.assign(a, { type: T.TENSOR, t: value as ITensorProto });
  }
  return onnx.AttributeProto.create(a);
}

/** Reads an attribute as a plain value (INT → number, STRING → string, TENSOR → TensorProto, …). */
export function attributeValue(a: IAttributeProto): unknown {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case T.FLOAT:
      return a.f ?? 0;
    case T.INT:
      return toNumber(a.i);
    case T.STRING:
      return new TextDecoder().decode(a.s ?? new Uint8Array());
    case T.TENSOR:
      return a.t;
    case T.GRAPH:
      return a.g;
    case T.FLOATS:
      return [...(a.floats ?? [])];
    case T.INTS:
      return (a.ints ?? []).map(toNumber);
    case T.STRINGS:
      return (a.strings ?? []).map((s) => new TextDecoder().decode(s));
    default:
      return undefined;
  }
}

/** Looks up an attribute of a node by name. */
export function getAttribute(node: INodeProto, name: string): unknown {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a ? attributeValue(a) : undefined;
}

/** Options of a whole model. */
export interface ModelOptions {
  /** Default-domain opset (17). */
  opset?: number;
  /** IR version (8). */
  irVersion?: number;
  /** Extra domains, e.g. `{ "com.microsoft": 1 }`. */
  domains?: Record<string, number>;
  producerName?: string;
}

/** Builds one graph with unique, readable names; `model()` wraps it in a ModelProto. */
export class GraphBuilder {
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly nodes: NodeProto[] = [];
  readonly valueInfo: ValueInfoProto[] = [];
  readonly opset: number;
  readonly irVersion: number;
  readonly #domains: Record<string, number>;
  readonly #producer: string;
  readonly #names = new Set<string>();
  readonly #counters = new Map<string, number>();
  readonly #unclaimed = new Set<string>();

  constructor(readonly name = "graph", options: ModelOptions = {}) {
    this.opset = options.opset ?? DEFAULT_OPSET;
    this.irVersion = options.irVersion ?? DEFAULT_IR_VERSION;
    this.#domains = options.domains ?? {};
    this.#producer = options.producerName ?? "genie-onnx";
  }

  /** Reserves `name` (throws if already used). */
  reserve(name: string): string {
    if (this.#unclaimed.delete(name)) return name;
    if (this.#names.has(name)) throw new Error(`name '${name}' is already used in graph '${this.name}'`);
    this.#names.add(name);
    return name;
  }

  /**
   * Reserves every name `graph` already uses (inputs, outputs, value infos, initializers, node names and
   * outputs) that is not reserved here yet, so that what is built here cannot clash with it.
   */
  reserveNamesOf(graph: IGraphProto): void {
    const values = [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])];
    const names = [
      ...values.map((v) => v.name),
      ...(graph.initializer ?? []).map((t) => t.name),
      ...(graph.node ?? []).flatMap((n) => [n.name, ...(n.output ?? [])]),
    ];
    for (const name of names) if (name && !this.#names.has(name)) this.reserve(name);
  }

  /**
   * A fresh name starting with `prefix` (`prefix`, `prefix_1`, `prefix_2`, …), reserved for the caller:
   * pass it once to `input`, `initializer` or `node` outputs.
   */
  fresh(prefix: string): string {
    const name = this.#generate(prefix);
    this.#unclaimed.add(name);
    return name;
  }

  #generate(prefix: string): string {
    let n = this.#counters.get(prefix) ?? 0;
    let name = n === 0 ? prefix : `${prefix}_${n}`;
    while (this.#names.has(name)) name = `${prefix}_${++n}`;
    this.#counters.set(prefix, n + 1);
    this.#names.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, dtype: DType | number, shape?: readonly Dim[]): string {
    this.inputs.push(valueInfo(this.reserve(name), dtype, shape));
    return name;
  }

  /** Declares an existing value as a graph output (its type is required by ONNX; shape optional). */
  output(name: string, dtype: DType | number, shape?: readonly Dim[]): string {
    this.outputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /**
   * Adds a named initializer (weights). Plain number arrays need a dtype; typed arrays imply theirs.
   * Returns the name.
   */
  initializer(
    name: string,
    data: TensorData | readonly number[],
    dims?: readonly number[],
    dtype?: DType | number,
  ): string {
    this.reserve(name);
    return this.#addInitializer(name, data, dims, dtype);
  }

  #addInitializer(
    name: string,
    data: TensorData | readonly number[],
    dims?: readonly number[],
    dtype?: DType | number,
  ): string {
    const t = Array.isArray(data)
      ? tensorFromNumbers(name, data as number[], dims, dtype ?? "float32")
      : tensorProto(name, data as TensorData, dims, dtype);
    this.initializers.push(t);
    return name;
  }

  /** A constant tensor as an initializer with a generated name (scalar when `dims` is []). */
  constant(
    values: TensorData | readonly number[] | number,
    dims?: readonly number[],
    dtype?: DType | number,
    prefix = "const",
  ): string {
    const data = typeof values === "number" ? [values] : values;
    const shape = dims ?? (typeof values === "number" ? [] : undefined);
    return this.#addInitializer(this.#generate(prefix), data, shape, dtype);
  }

  /** Adds a node. `outputs` is a count (names generated) or explicit names. Returns the output names. */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: number | readonly string[] = 1,
    attrs: Record<string, AttrValue | undefined> = {},
    options: { domain?: string; name?: string } = {},
  ): string[] {
    const base = opType.toLowerCase();
    const outs = typeof outputs === "number"
      ? Array.from({ length: outputs }, () => this.#generate(base))
      : outputs.map((o) => (o === "" ? "" : this.reserve(o)));
    const attribute_ = Object.entries(attrs)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => attribute(k, v as AttrValue));
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        domain: options.domain ?? "",
        name: options.name ?? this.#generate(`${opType}_node`),
        input: [...inputs],
        output: outs,
        attribute: attribute_,
      }),
    );
    return outs;
  }

  /** Adds a single-output node and returns its output name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}): string {
    return this.node(opType, inputs, 1, attrs)[0];
  }

  /** The graph message. */
  graph(): GraphProto {
    return onnx.GraphProto.create({
      name: this.name,
      node: this.nodes,
      input: this.inputs,
      output: this.outputs,
      initializer: this.initializers,
      valueInfo: this.valueInfo,
    });
  }

  /** The model message (opset and IR version from the constructor options). */
  model(): ModelProto {
    const opsetImport = [{ domain: "", version: this.opset }];
    for (const [domain, version] of Object.entries(this.#domains)) opsetImport.push({ domain, version });
    return onnx.ModelProto.create({
      irVersion: this.irVersion,
      producerName: this.#producer,
      opsetImport,
      graph: this.graph(),
    });
  }

  /** The encoded model. */
  bytes(): Uint8Array {
    return encodeModel(this.model());
  }
}

/** Serialises a model message to bytes. */
export function encodeModel(model: IModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** Parses model bytes (e.g. read from a .onnx file). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** The version of the default ("" or "ai.onnx") domain a model imports. */
export function modelOpset(model: IModelProto): number {
  const entry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === "ai.onnx");
  if (!entry) throw new Error("model imports no default-domain opset");
  return toNumber(entry.version);
}

/**
 * Node attributes (onnx/proto.ts): plain values to AttributeProto messages and back.
 */
import {
  type AttributeProto,
  type IAttributeProto,
  type IGraphProto,
  type INodeProto,
  type ITensorProto,
  onnx,
  toNumber,
} from "./messages.ts";

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

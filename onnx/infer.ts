/**
 * Partial type inference for ONNX graphs: the element type of every value it can tell, its shape where
 * known (dimensions as numbers, symbolic names, or null when unknown), and the values of small integer
 * tensors that shapes are computed from (Shape → Gather → Concat → Reshape chains of exported models).
 *
 * It never guesses: an unknown dimension is null and an unknown rank is a null shape. Callers use it to
 * prove facts (two shapes are equal), never to reject a model.
 */
import {
  DataType,
  getAttribute,
  type IGraphProto,
  type INodeProto,
  type ITensorProto,
  tensorDims,
  tensorValues,
  valueInfoType,
} from "./proto.ts";

/** A dimension: fixed size, symbolic name, or null (unknown). */
export type SDim = number | string | null;
/** A shape, or null when even the rank is unknown. */
export type SShape = SDim[] | null;

export interface Inferred {
  dtype: Map<string, number>;
  shape: Map<string, SShape>;
  /** Values of small 1-D/0-D integer tensors (entries may be symbolic or unknown). */
  value: Map<string, SDim[]>;
}

const SMALL = 64;

/** Broadcasts two dimensions under the assumption the model is valid. */
function broadcastDim(a: SDim, b: SDim): SDim {
  if (a === 1) return b;
  if (b === 1) return a;
  if (a === b) return a;
  if (typeof a === "number") return a; // b must be 1 or a
  if (typeof b === "number") return b;
  return null;
}

/**
 * The size a Reshape's −1 stands for: the input's elements ÷ the other output dimensions. Symbolic
 * dimensions cancel when the output keeps them (e.g. [B, 16, 14, 14] → [B, 16, −1] gives 196); null when
 * the count is not known.
 */
function inferredMinusOne(x: SShape, rest: SDim[]): SDim {
  if (!x || x.some((d) => d === null) || rest.some((d) => d === null)) return null;
  const pool = [...x];
  let known = 1;
  for (const d of rest) {
    if (typeof d === "number") {
      known *= d;
      continue;
    }
    const k = pool.indexOf(d);
    if (k < 0) return null;
    pool.splice(k, 1);
  }
  if (pool.some((d) => typeof d !== "number")) return null;
  const total = (pool as number[]).reduce((a, b) => a * b, 1);
  return known > 0 && total % known === 0 ? total / known : null;
}

/** Multidirectional (numpy) broadcast of shapes. */
export function broadcastShapes(shapes: readonly SShape[]): SShape {
  if (shapes.some((s) => s === null)) return null;
  const rank = Math.max(0, ...shapes.map((s) => s!.length));
  const out: SDim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: SDim = 1;
    for (const s of shapes) {
      const k = i - (rank - s!.length);
      if (k >= 0) d = broadcastDim(d, s![k]);
    }
    out.push(d);
  }
  return out;
}

/** True when broadcasting `other` against `base` provably leaves `base`'s shape unchanged. */
export function broadcastKeeps(base: SShape, other: SShape): boolean {
  if (!base || !other || other.length > base.length) return false;
  const off = base.length - other.length;
  return other.every((d, i) => d === 1 || (d !== null && base[off + i] === d));
}

/** True when two shapes are provably equal. */
export function sameShape(a: SShape, b: SShape): boolean {
  return !!a && !!b && a.length === b.length && a.every((d, i) => d !== null && d === b[i]);
}

const UNARY_SAME = new Set([
  "Identity",
  "Neg",
  "Abs",
  "Sigmoid",
  "Tanh",
  "Relu",
  "LeakyRelu",
  "Elu",
  "Selu",
  "Softplus",
  "Softsign",
  "HardSigmoid",
  "HardSwish",
  "Gelu",
  "Mish",
  "Exp",
  "Log",
  "Sqrt",
  "Reciprocal",
  "Sin",
  "Cos",
  "Tan",
  "Erf",
  "Floor",
  "Ceil",
  "Round",
  "Sign",
  "Softmax",
  "LogSoftmax",
  "Clip",
  "Dropout",
  "InstanceNormalization",
  "GroupNormalization",
  "LayerNormalization",
  "BatchNormalization",
  "Cast",
  "CastLike",
  "CumSum",
  "Not",
  "IsNaN",
  "IsInf",
]);

const BROADCAST = new Set([
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Pow",
  "Max",
  "Min",
  "Sum",
  "Mean",
  "Where",
  "Equal",
  "Less",
  "LessOrEqual",
  "Greater",
  "GreaterOrEqual",
  "And",
  "Or",
  "Xor",
  "PRelu",
  "Mod",
  "BitShift",
]);

const CONTROL_FLOW = new Set(["If", "Loop", "Scan", "SequenceMap"]);

const BOOL_OUT = new Set([
  "Equal",
  "Less",
  "LessOrEqual",
  "Greater",
  "GreaterOrEqual",
  "And",
  "Or",
  "Xor",
  "Not",
  "IsNaN",
  "IsInf",
]);
const INT64_OUT = new Set(["Shape", "Size", "ArgMax", "ArgMin", "NonZero"]);

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function attrInts(node: INodeProto, name: string): number[] | undefined {
  return getAttribute(node, name) as number[] | undefined;
}

function attrInt(node: INodeProto, name: string, dflt: number): number {
  const v = getAttribute(node, name);
  return v === undefined ? dflt : v as number;
}

function numericOrNull(values: SDim[] | undefined): number[] | undefined {
  if (!values || values.some((v) => typeof v !== "number")) return undefined;
  return values as number[];
}

/** Infers what it can about every value of a graph (`opset`: the default domain's version). */
export function inferGraph(graph: IGraphProto, opset: number): Inferred {
  const dtype = new Map<string, number>();
  const shape = new Map<string, SShape>();
  const value = new Map<string, SDim[]>();

  const setTensor = (name: string, t: ITensorProto) => {
    dtype.set(name, t.dataType ?? 0);
    const dims = tensorDims(t);
    shape.set(name, dims);
    const count = dims.reduce((a, b) => a * b, 1);
    const dt = t.dataType;
    if (dims.length <= 1 && count <= SMALL && (dt === DataType.INT64 || dt === DataType.INT32)) {
      try {
        value.set(name, tensorValues(t));
      } catch {
        // external data: value unknown
      }
    }
  };

  for (const vi of [...(graph.input ?? []), ...(graph.valueInfo ?? []), ...(graph.output ?? [])]) {
    const { elemType, shape: s } = valueInfoType(vi);
    if (elemType) dtype.set(vi.name!, elemType);
    if (s) shape.set(vi.name!, s.map((d) => d ?? null));
  }
  for (const t of graph.initializer ?? []) setTensor(t.name!, t);

  const S = (n: string | undefined): SShape => (n ? shape.get(n) ?? null : null);
  const V = (n: string | undefined): SDim[] | undefined => (n ? value.get(n) : undefined);

  for (const node of graph.node ?? []) {
    const op = node.opType ?? "";
    const ins = node.input ?? [];
    const outs = node.output ?? [];
    if (node.domain && node.domain !== "ai.onnx") continue;

    // ----- element types
    const d0 = dtype.get(ins[0]);
    let outType: number | undefined = d0;
    if (op === "Constant") {
      const t = getAttribute(node, "value") as ITensorProto | undefined;
      if (t) setTensor(outs[0], t);
      else if (getAttribute(node, "value_float") !== undefined) {
        dtype.set(outs[0], DataType.FLOAT);
        shape.set(outs[0], []);
      } else if (getAttribute(node, "value_int") !== undefined) {
        dtype.set(outs[0], DataType.INT64);
        shape.set(outs[0], []);
        value.set(outs[0], [getAttribute(node, "value_int") as number]);
      } else if (getAttribute(node, "value_ints") !== undefined) {
        const v = getAttribute(node, "value_ints") as number[];
        dtype.set(outs[0], DataType.INT64);
        shape.set(outs[0], [v.length]);
        value.set(outs[0], v);
      } else if (getAttribute(node, "value_floats") !== undefined) {
        dtype.set(outs[0], DataType.FLOAT);
        shape.set(outs[0], [(getAttribute(node, "value_floats") as number[]).length]);
      }
      continue;
    }
    if (BOOL_OUT.has(op)) outType = DataType.BOOL;
    else if (INT64_OUT.has(op)) outType = DataType.INT64;
    else if (op === "Cast") outType = attrInt(node, "to", 0);
    else if (op === "CastLike" || op === "Where") outType = dtype.get(ins[op === "Where" ? 1 : 1]);
    else if (op === "ConstantOfShape") {
      const t = getAttribute(node, "value") as ITensorProto | undefined;
      outType = t?.dataType ?? DataType.FLOAT;
    }
    if (CONTROL_FLOW.has(op)) continue;
    if (outType !== undefined && outs[0] && !dtype.has(outs[0])) dtype.set(outs[0], outType);
    if (op === "Split") { for (const o of outs) if (o && d0 !== undefined) dtype.set(o, d0); }
    if ((op === "MaxPool" || op === "TopK") && outs[1]) dtype.set(outs[1], DataType.INT64);
    if (op === "TopK" && outs[0] && d0 !== undefined) dtype.set(outs[0], d0);
    if (op === "Dropout" && outs[1]) dtype.set(outs[1], DataType.BOOL);
    if (op === "LayerNormalization") {
      const stash = attrInt(node, "stash_type", DataType.FLOAT);
      for (const o of outs.slice(1)) if (o) dtype.set(o, stash);
    }

    // ----- shapes (and small values)
    const set = (s: SShape) => {
      // a declared shape (value_info) wins unless the inferred one knows more
      const declared = outs[0] ? shape.get(outs[0]) : undefined;
      if (
        declared && (!s || declared.filter((d) => d !== null).length >= s.filter((d) => d !== null).length)
      ) return;
      if (outs[0]) shape.set(outs[0], s);
    };
    const x = S(ins[0]);
    switch (true) {
      case UNARY_SAME.has(op):
        set(x);
        if (op === "Cast" && V(ins[0])) value.set(outs[0], V(ins[0])!);
        break;
      case BROADCAST.has(op):
        set(broadcastShapes(ins.filter((i) => i).map(S)));
        break;
      case op === "Shape": {
        if (!x) break;
        const start = normAxis(attrInt(node, "start", 0), x.length);
        const end = normAxis(attrInt(node, "end", x.length), x.length);
        const v = x.slice(Math.max(0, start), Math.min(x.length, end));
        set([v.length]);
        value.set(outs[0], v);
        break;
      }
      case op === "Size":
        set([]);
        break;
      case op === "Conv" || op === "AveragePool" || op === "MaxPool" || op === "LpPool": {
        set(convLikeShape(node, x, op === "Conv" ? S(ins[1]) : null));
        if (op === "MaxPool" && outs[1]) shape.set(outs[1], S(outs[0]));
        break;
      }
      case op === "ConvTranspose":
        set(convTransposeShape(node, x, S(ins[1])));
        break;
      case op === "GlobalAveragePool" || op === "GlobalMaxPool":
        set(x ? [x[0], x[1], ...x.slice(2).map(() => 1)] : null);
        break;
      case op === "MatMul": {
        const b = S(ins[1]);
        if (!x || !b) break;
        if (x.length === 1 && b.length === 1) set([]);
        else if (x.length === 1) set([...b.slice(0, -2), b[b.length - 1]]);
        else if (b.length === 1) set(x.slice(0, -1));
        else {
          const batch = broadcastShapes([x.slice(0, -2), b.slice(0, -2)]);
          set(batch ? [...batch, x[x.length - 2], b[b.length - 1]] : null);
        }
        break;
      }
      case op === "Gemm": {
        const b = S(ins[1]);
        if (!x || !b || x.length !== 2 || b.length !== 2) break;
        const m = attrInt(node, "transA", 0) ? x[1] : x[0];
        const n = attrInt(node, "transB", 0) ? b[0] : b[1];
        set([m, n]);
        break;
      }
      case op === "Transpose": {
        if (!x) break;
        const perm = attrInts(node, "perm") ?? x.map((_, i) => x.length - 1 - i);
        set(perm.map((p) => x[p]));
        break;
      }
      case op === "Reshape": {
        const t = V(ins[1]);
        if (!t) break;
        const allowzero = attrInt(node, "allowzero", 0);
        const dims = t.map((d, i) => (d === 0 && !allowzero ? (x ? x[i] ?? null : null) : d));
        const minus = dims.indexOf(-1);
        if (minus >= 0) dims[minus] = inferredMinusOne(x, dims.filter((_, i) => i !== minus));
        set(dims);
        break;
      }
      case op === "Flatten": {
        if (!x) break;
        const axis = normAxis(attrInt(node, "axis", 1), x.length);
        const prod = (ds: SDim[]) =>
          ds.every((d) => typeof d === "number") ? (ds as number[]).reduce((a, b) => a * b, 1) : null;
        const a = x.slice(0, axis);
        set([a.length === 1 ? a[0] : prod(a), prod(x.slice(axis))]);
        break;
      }
      case op === "Unsqueeze" || op === "Squeeze": {
        const axes = opset >= 13 ? numericOrNull(V(ins[1])) : attrInts(node, "axes");
        if (!x) break;
        if (op === "Unsqueeze") {
          if (!axes) break;
          const rank = x.length + axes.length;
          const norm = axes.map((a) => normAxis(a, rank));
          const out: SDim[] = [];
          let k = 0;
          for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : x[k++]);
          set(out);
        } else {
          if (!axes) {
            if (x.every((d) => d !== null)) set(x.filter((d) => d !== 1));
            break;
          }
          const norm = axes.map((a) => normAxis(a, x.length));
          set(x.filter((_, i) => !norm.includes(i)));
        }
        if (V(ins[0])) value.set(outs[0], V(ins[0])!);
        break;
      }
      case op === "Concat": {
        const shapes = ins.map(S);
        if (shapes.some((s) => !s)) break;
        const rank = shapes[0]!.length;
        const axis = normAxis(attrInt(node, "axis", 0), rank);
        const out = [...shapes[0]!];
        let total: SDim = 0;
        for (const s of shapes) {
          const d = s![axis];
          total = typeof total === "number" && typeof d === "number" ? total + d : null;
        }
        out[axis] = total;
        for (let i = 0; i < rank; i++) {
          if (i !== axis) out[i] = shapes.map((s) => s![i]).find((d) => d !== null) ?? null;
        }
        set(out);
        const vals = ins.map(V);
        if (rank === 1 && vals.every((v) => v)) value.set(outs[0], vals.flatMap((v) => v!));
        break;
      }
      case op === "Gather": {
        const idx = S(ins[1]);
        if (!x || !idx) break;
        const axis = normAxis(attrInt(node, "axis", 0), x.length);
        set([...x.slice(0, axis), ...idx, ...x.slice(axis + 1)]);
        const data = V(ins[0]);
        const iv = numericOrNull(V(ins[1]));
        if (data && iv && x.length === 1) {
          value.set(outs[0], iv.map((i) => data[i < 0 ? i + data.length : i] ?? null));
        }
        break;
      }
      case op === "ReduceMean" || op === "ReduceSum" || op === "ReduceMax" || op === "ReduceMin" ||
        op === "ReduceProd" || op === "ReduceL2" || op === "ReduceSumSquare" || op === "ReduceLogSumExp": {
        if (!x) break;
        const axesAsInput = op === "ReduceSum" ? opset >= 13 : opset >= 18;
        const axes = axesAsInput ? (ins[1] ? numericOrNull(V(ins[1])) : []) : attrInts(node, "axes") ?? [];
        if (!axes) break;
        const keep = attrInt(node, "keepdims", 1);
        const noop = attrInt(node, "noop_with_empty_axes", 0);
        if (axes.length === 0 && noop) {
          set(x);
          break;
        }
        const norm = axes.length ? axes.map((a) => normAxis(a, x.length)) : x.map((_, i) => i);
        set(keep ? x.map((d, i) => (norm.includes(i) ? 1 : d)) : x.filter((_, i) => !norm.includes(i)));
        break;
      }
      case op === "Expand": {
        const t = V(ins[1]);
        if (t && x) set(broadcastShapes([x, t]));
        break;
      }
      case op === "ConstantOfShape": {
        const t = V(ins[0]);
        if (t) set(t);
        break;
      }
      case op === "Split": {
        if (!x) break;
        const axis = normAxis(attrInt(node, "axis", 0), x.length);
        const sizes = opset >= 13 ? (ins[1] ? numericOrNull(V(ins[1])) : undefined) : attrInts(node, "split");
        outs.forEach((o, k) => {
          const s = [...x];
          const whole = x[axis];
          s[axis] = sizes
            ? sizes[k]
            : typeof whole === "number" && whole % outs.length === 0
            ? whole / outs.length
            : null;
          shape.set(o, s);
        });
        break;
      }
      case op === "Slice": {
        if (!x) break;
        const axes = opset >= 10 ? (ins[3] ? numericOrNull(V(ins[3])) : undefined) : attrInts(node, "axes");
        const starts = opset >= 10 ? numericOrNull(V(ins[1])) : attrInts(node, "starts");
        const ends = opset >= 10 ? numericOrNull(V(ins[2])) : attrInts(node, "ends");
        const steps = opset >= 10 && ins[4] ? numericOrNull(V(ins[4])) : undefined;
        if (!starts || !ends) {
          set(x.map(() => null));
          break;
        }
        const ax = axes ?? starts.map((_, i) => i);
        const out = [...x];
        ax.forEach((a, k) => {
          const i = normAxis(a, x.length);
          const dim = x[i];
          const step = steps ? steps[k] : 1;
          if (typeof dim !== "number" || step !== 1) {
            out[i] = null;
            return;
          }
          const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
          out[i] = Math.max(0, clamp(ends[k]) - clamp(starts[k]));
        });
        set(out);
        const data = V(ins[0]);
        if (data && x.length === 1 && typeof out[0] === "number" && (!steps || steps[0] === 1)) {
          const s0 = starts[0] < 0 ? starts[0] + data.length : Math.min(starts[0], data.length);
          value.set(outs[0], data.slice(s0, s0 + (out[0] as number)));
        }
        break;
      }
      case op === "Resize" || op === "Upsample": {
        if (!x) break;
        const sizes = op === "Resize" && ins[3] ? numericOrNull(V(ins[3])) : undefined;
        set(sizes ?? x.map((d, i) => (i < 2 ? d : null)));
        break;
      }
      case op === "Einsum":
      default:
        break;
    }
  }
  return { dtype, shape, value };
}

/** The kernel, strides, dilations and pads of a convolution-like node (ONNX defaults filled in). */
interface Window {
  kernel: number[];
  strides: number[];
  dil: number[];
  pads: number[];
}

/** The node's {@link Window}, the kernel taken from `w` when not an attribute; undefined when unknown. */
function windowOf(node: INodeProto, w: SShape): Window | undefined {
  const kernel = attrInts(node, "kernel_shape") ?? (w ? (w.slice(2) as number[]) : undefined);
  if (!kernel || kernel.some((k) => typeof k !== "number")) return undefined;
  return {
    kernel,
    strides: attrInts(node, "strides") ?? kernel.map(() => 1),
    dil: attrInts(node, "dilations") ?? kernel.map(() => 1),
    pads: attrInts(node, "pads") ?? kernel.map(() => 0).concat(kernel.map(() => 0)),
  };
}

function convLikeShape(node: INodeProto, x: SShape, w: SShape): SShape {
  if (!x) return null;
  const n = x.length - 2;
  const outC = node.opType === "Conv" ? (w ? w[0] : null) : x[1];
  const win = windowOf(node, w);
  if (!win) return [x[0], outC, ...x.slice(2).map(() => null)];
  const { kernel, strides, dil, pads } = win;
  const auto = (getAttribute(node, "auto_pad") as string | undefined) ?? "NOTSET";
  const ceil = attrInt(node, "ceil_mode", 0);
  const spatial: SDim[] = [];
  for (let i = 0; i < n; i++) {
    const d = x[2 + i];
    if (typeof d !== "number") {
      spatial.push(null);
      continue;
    }
    const k = (kernel[i] - 1) * dil[i] + 1;
    if (auto === "SAME_UPPER" || auto === "SAME_LOWER") spatial.push(Math.ceil(d / strides[i]));
    else if (auto === "VALID") spatial.push(Math.ceil((d - k + 1) / strides[i]));
    else {
      const r = (d + pads[i] + pads[i + n] - k) / strides[i];
      spatial.push((ceil ? Math.ceil(r) : Math.floor(r)) + 1);
    }
  }
  return [x[0], outC, ...spatial];
}

function convTransposeShape(node: INodeProto, x: SShape, w: SShape): SShape {
  if (!x) return null;
  const group = attrInt(node, "group", 1);
  const outC = w && typeof w[1] === "number" ? w[1] * group : null;
  const explicit = attrInts(node, "output_shape");
  if (explicit) return [x[0], outC, ...explicit.slice(-(x.length - 2))];
  const n = x.length - 2;
  const win = windowOf(node, w);
  if (!win) return [x[0], outC, ...x.slice(2).map(() => null)];
  const { kernel, strides, dil, pads } = win;
  const outPad = attrInts(node, "output_padding") ?? kernel.map(() => 0);
  const auto = (getAttribute(node, "auto_pad") as string | undefined) ?? "NOTSET";
  const spatial: SDim[] = [];
  for (let i = 0; i < n; i++) {
    const d = x[2 + i];
    if (typeof d !== "number") spatial.push(null);
    else if (auto === "SAME_UPPER" || auto === "SAME_LOWER") spatial.push(d * strides[i]);
    else {
      spatial.push(strides[i] * (d - 1) + outPad[i] + (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + n]);
    }
  }
  return [x[0], outC, ...spatial];
}

/**
 * Every vector-Jacobian rule of onnx/grad.ts (and its attribute variants) against central finite
 * differences of the loss, run in ONNX Runtime: float64 where ORT's CPU kernels support it, float32
 * (looser tolerance) otherwise.
 */
import { describe, it } from "../testing.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { type Feed, feed, type FloatType } from "./jvp_check.ts";
import { checkGrad, type GradCheckOptions } from "./grad_check.ts";

interface GradCase {
  name: string;
  opset?: number;
  /** Differentiated tensors (initializers of the forward model). */
  params: Record<string, Feed>;
  /** Data inputs (not differentiated). */
  inputs?: Record<string, Feed>;
  build: (g: GraphBuilder, v: Record<string, string>, T: FloatType) => string | string[];
  options?: Partial<GradCheckOptions>;
  /** Declare the data inputs with a symbolic batch ("batch") or symbolic batch and spatial dims ("all"). */
  symbolic?: "batch" | "all";
}

const F32: FloatType = "float32";
const F64: FloatType = "float64";
const away = (...kinks: number[]) => ({ kinks, margin: 0.05 });
const positive = { lo: 0.5, hi: 2 };
const ints = (values: number[], dims = [values.length]): Feed => ({ type: "int64", dims, values });

function unary(op: string, T: FloatType, attrs = {}, opts = {}, opset?: number): GradCase {
  return {
    name: `${op}${Object.keys(attrs).length ? " " + JSON.stringify(attrs) : ""} (${T})`,
    opset,
    params: { x: feed([2, 3, 4], 1, T, opts) },
    build: (g, v) => g.op(op, [v.x], attrs),
  };
}

const cases: GradCase[] = [
  // ----- pointwise
  unary("Identity", F64),
  unary("Neg", F64),
  unary("Sigmoid", F64),
  unary("Tanh", F64),
  unary("Relu", F64, {}, away(0)),
  unary("LeakyRelu", F64, { alpha: 0.2 }, away(0)),
  unary("Softplus", F32),
  unary("Abs", F64, {}, away(0)),
  unary("Exp", F64),
  unary("Log", F64, {}, positive),
  unary("Sqrt", F64, {}, positive),
  unary("Reciprocal", F64, {}, positive),
  unary("Sin", F64),
  unary("Cos", F64),
  unary("Erf", F32),
  unary("Gelu", F32, {}, {}, 20),
  unary("Softmax", F64, { axis: -1 }),
  unary("Softmax", F64, { axis: 1 }),
  unary("Softmax", F32, { axis: 1 }, {}, 11),
  unary("LogSoftmax", F64, { axis: 2 }),
  unary("LogSoftmax", F32, { axis: 1 }, {}, 11),
  {
    name: "Clip with min/max inputs",
    params: { x: feed([2, 3, 4], 2, F64, away(-0.5, 0.5)) },
    build: (g, v, T) => g.op("Clip", [v.x, g.constant(-0.5, [], T), g.constant(0.5, [], T)]),
  },
  {
    name: "Cast float32 → float64 → float32",
    params: { x: feed([2, 3], 3, F32) },
    build: (g, v) =>
      g.op("Cast", [g.op("Mul", [g.op("Cast", [v.x], { to: 11 }), g.constant(2, [], F64)])], { to: 1 }),
  },
  // ----- sums and products with broadcasting (both operands differentiated)
  {
    name: "Add/Sub/Mul/Div with broadcasting [2,3,4] ⊕ [3,1] ⊕ [4] ⊕ []",
    params: {
      a: feed([2, 3, 4], 4, F64),
      b: feed([3, 1], 5, F64, positive),
      c: feed([4], 6, F64, positive),
      s: feed([], 7, F64, positive),
    },
    build: (g, v) => [
      g.op("Add", [v.a, v.b]),
      g.op("Sub", [v.b, v.a]),
      g.op("Mul", [v.a, v.c]),
      g.op("Div", [v.a, v.b]),
      g.op("Div", [v.s, v.c]),
      g.op("Mul", [v.s, v.a]),
    ],
  },
  {
    name: "Add/Mul with an input broadcast up by a data input [1,3,1] ⊕ [2,1,4]",
    params: { a: feed([1, 3, 1], 8, F64) },
    inputs: { x: feed([2, 1, 4], 9, F64) },
    build: (g, v) => [g.op("Add", [v.a, v.x]), g.op("Mul", [v.x, v.a])],
  },
  {
    name: "broadcast against a symbolic batch (sums found at run time)",
    params: { a: feed([3, 1], 10, F64) },
    inputs: { x: feed([2, 3, 4], 11, F64) },
    symbolic: "batch",
    build: (g, v) => g.op("Mul", [g.op("Add", [v.x, v.a]), v.a]),
  },
  {
    name: "Sum of three with broadcasting",
    params: { a: feed([2, 3], 12, F64), b: feed([3], 13, F64), c: feed([2, 1], 14, F64) },
    build: (g, v) => g.op("Sum", [v.a, v.b, v.c]),
  },
  {
    name: "Pow: a^2 (constant), a^b (both), a^3 (int64 exponent)",
    params: { a: feed([2, 3], 15, F64, positive), b: feed([2, 3], 16, F64) },
    build: (g, v, T) => [
      g.op("Pow", [v.a, g.constant(2, [], T)]),
      g.op("Pow", [v.a, v.b]),
      g.op("Pow", [v.b, g.constant([3], [1], "int64")]),
    ],
  },
  {
    name: "Max/Min of two inputs (broadcast), Where with both branches",
    params: { a: feed([2, 3], 17, F64), b: { type: F64, dims: [3], values: [-0.4, 0.9, 0.05] } },
    build: (g, v) => [
      g.op("Max", [v.a, v.b]),
      g.op("Min", [v.b, v.a]),
      g.op("Where", [g.constant([1, 0, 1, 0, 0, 1], [2, 3], "bool"), v.a, v.b]),
    ],
  },
  // ----- linear algebra
  {
    name: "MatMul: 3-D × 2-D, batched broadcasting [2,1,2,3] × [3,3,4], 1-D × 2-D, 2-D × 1-D, 1-D × 1-D",
    params: {
      a: feed([2, 2, 3], 18, F64),
      w: feed([3, 4], 19, F64),
      p: feed([2, 1, 2, 3], 20, F64),
      q: feed([3, 3, 4], 21, F64),
      u: feed([3], 22, F64),
      z: feed([4], 23, F64),
    },
    build: (g, v) => [
      g.op("MatMul", [v.a, v.w]),
      g.op("MatMul", [v.p, v.q]),
      g.op("MatMul", [v.u, v.w]),
      g.op("MatMul", [v.w, v.z]),
      g.op("MatMul", [v.u, v.u]),
    ],
  },
  ...[[0, 0], [1, 0], [0, 1], [1, 1]].map(([transA, transB]): GradCase => ({
    name: `Gemm transA=${transA} transB=${transB}, alpha, beta, C [4] and C [3,1]`,
    params: {
      a: feed(transA ? [2, 3] : [3, 2], 24, F64),
      b: feed(transB ? [4, 2] : [2, 4], 25, F64),
      c: feed([4], 26, F64),
      d: feed([3, 1], 27, F64),
    },
    build: (g, v) => [
      g.op("Gemm", [v.a, v.b, v.c], { alpha: 0.7, beta: 1.3, transA, transB }),
      g.op("Gemm", [v.a, v.b, v.d], { transA, transB }),
      g.op("Gemm", [v.a, v.b], { transA, transB, alpha: 2 }),
    ],
  })),
  // ----- convolutions (float32: ORT's CPU Conv is float only)
  ...[
    { pads: [1, 1, 1, 1] },
    { strides: [2, 2], pads: [0, 1, 1, 0] },
    { strides: [2, 2], pads: [1, 1, 1, 1] },
    { dilations: [2, 1], group: 2 },
    { auto_pad: "SAME_UPPER", strides: [2, 2] },
    { auto_pad: "SAME_LOWER" },
    { group: 4, pads: [1, 1, 1, 1] },
  ].map((attrs): GradCase => {
    const group = (attrs as { group?: number }).group ?? 1;
    const cout = group === 4 ? 8 : 6;
    return {
      name: `Conv ${JSON.stringify(attrs)} with bias`,
      params: { x: feed([2, 4, 5, 6], 28), w: feed([cout, 4 / group, 3, 3], 29), b: feed([cout], 30) },
      build: (g, v) => g.op("Conv", [v.x, v.w, v.b], attrs),
    };
  }),
  {
    name: "Conv 1-D (stride 2) and 1×1 without bias",
    params: {
      x: feed([2, 3, 7], 31),
      w: feed([4, 3, 3], 32),
      w1: feed([5, 3, 1, 1], 33),
      y: feed([1, 3, 4, 4], 34),
    },
    build: (g, v) => [g.op("Conv", [v.x, v.w], { strides: [2] }), g.op("Conv", [v.y, v.w1])],
  },
  {
    name: "Conv on a symbolic batch",
    params: { w: feed([4, 2, 3, 3], 35), b: feed([4], 36) },
    inputs: { x: feed([3, 2, 6, 6], 37) },
    symbolic: "batch",
    build: (g, v) => g.op("Conv", [v.x, v.w, v.b], { pads: [1, 1, 1, 1], strides: [2, 2] }),
  },
  {
    name: "Conv, AveragePool and ConvTranspose with spatial sizes known only at run time",
    params: {
      w: feed([4, 2, 3, 3], 70),
      b: feed([4], 71),
      w2: feed([3, 4, 3, 3], 72),
      wt: feed([4, 3, 3, 3], 73),
    },
    inputs: { x: feed([2, 2, 7, 6], 74) },
    symbolic: "all",
    build: (g, v) => {
      const h = g.op("Conv", [v.x, v.w, v.b], { pads: [1, 1, 1, 1] });
      return [
        g.op("Conv", [h, v.w2], { pads: [1, 0, 1, 1], strides: [2, 2] }),
        g.op("Conv", [h, v.w2], { strides: [3, 2], dilations: [1, 2] }),
        g.op("AveragePool", [h], { kernel_shape: [2, 2], strides: [2, 2] }),
        g.op("ConvTranspose", [h, v.wt], { strides: [2, 2], pads: [1, 1, 0, 0] }),
      ];
    },
  },
  ...[
    { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] },
    { strides: [2, 2] },
    { pads: [1, 0, 0, 1], group: 2 },
    { strides: [3, 2], dilations: [1, 2] },
  ].map((attrs): GradCase => {
    const group = (attrs as { group?: number }).group ?? 1;
    return {
      name: `ConvTranspose ${JSON.stringify(attrs)} with bias`,
      params: { x: feed([2, 4, 3, 4], 38), w: feed([4, 6 / group, 3, 3], 39), b: feed([6], 40) },
      build: (g, v) => g.op("ConvTranspose", [v.x, v.w, v.b], attrs),
    };
  }),
  // ----- pooling and resampling
  ...[
    { kernel_shape: [2, 2], strides: [2, 2] },
    { kernel_shape: [3, 3], pads: [1, 1, 1, 1] },
    { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1 },
    { kernel_shape: [3, 2], strides: [2, 1], pads: [0, 1, 1, 0] },
  ].map((attrs): GradCase => ({
    name: `AveragePool ${JSON.stringify(attrs)}`,
    params: { x: feed([2, 3, 5, 6], 41) },
    build: (g, v) => g.op("AveragePool", [v.x], attrs),
  })),
  {
    name: "GlobalAveragePool",
    params: { x: feed([2, 3, 4, 5], 42) },
    build: (g, v) => g.op("GlobalAveragePool", [v.x]),
  },
  {
    name: "Resize nearest ×2 (scales), ×(2,3) (sizes), asymmetric/floor ×3",
    params: { x: feed([2, 3, 3, 4], 43) },
    build: (g, v) => [
      g.op("Resize", [v.x, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" }),
      g.op("Resize", [v.x, "", "", g.constant([2, 3, 6, 12], [4], "int64")], { mode: "nearest" }),
      g.op("Resize", [v.x, "", g.constant([1, 1, 3, 3], [4], "float32")], {
        mode: "nearest",
        coordinate_transformation_mode: "asymmetric",
        nearest_mode: "floor",
      }),
    ],
  },
  // ----- reductions
  {
    name: "ReduceMean/ReduceSum: keepdims 0/1, negative axes, all axes",
    params: { x: feed([2, 3, 4], 44, F64) },
    build: (g, v) => [
      g.op("ReduceMean", [v.x], { axes: [1], keepdims: 0 }),
      g.op("ReduceMean", [v.x], { axes: [-1, 0] }),
      g.op("ReduceMean", [v.x], { keepdims: 0 }),
      g.op("ReduceSum", [v.x, g.constant([-2], [1], "int64")], { keepdims: 0 }),
      g.op("ReduceSum", [v.x, g.constant([0, 2], [2], "int64")]),
      g.op("ReduceSum", [v.x], { keepdims: 0 }),
    ],
  },
  {
    name: "ReduceMean with axes as input (opset 18)",
    opset: 18,
    params: { x: feed([2, 3, 4], 45, F64) },
    build: (g, v) => [g.op("ReduceMean", [v.x, g.constant([0, -1], [2], "int64")], { keepdims: 0 })],
  },
  // ----- normalisations
  {
    name: "GroupNorm decomposed (Reshape, ReduceMean, Sub, Mul, Add, Sqrt, Div) with scale and bias",
    params: {
      x: feed([2, 4, 3, 3], 46, F64),
      gamma: feed([4, 1, 1], 47, F64, positive),
      beta: feed([4, 1, 1], 48, F64),
    },
    build: (g, v, T) => {
      const grouped = g.op("Reshape", [v.x, g.constant([0, 2, -1], [3], "int64")]);
      const mean = g.op("ReduceMean", [grouped], { axes: [2] });
      const xc = g.op("Sub", [grouped, mean]);
      const variance = g.op("ReduceMean", [g.op("Mul", [xc, xc])], { axes: [2] });
      const normed = g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [variance, g.constant(1e-5, [], T)])])]);
      const back = g.op("Reshape", [normed, g.op("Shape", [v.x])]);
      return g.op("Add", [g.op("Mul", [back, v.gamma]), v.beta]);
    },
  },
  {
    // composite (onnx/grad_composites.ts): standardisation over two axes, axes as input (opset 18), ε on
    // the left, and the centred values, the variance and the root also used by other outputs
    name: "standardisation written out over axes [-1, 1] (opset 18), its inner values also outputs",
    opset: 18,
    params: { x: feed([2, 3, 4], 61, F64) },
    build: (g, v, T) => {
      const axes = g.constant([-1, 1], [2], "int64");
      const xc = g.op("Sub", [v.x, g.op("ReduceMean", [v.x, axes])]);
      const variance = g.op("ReduceMean", [g.op("Mul", [xc, xc]), axes]);
      const root = g.op("Sqrt", [g.op("Add", [g.constant(1e-3, [], T), variance])]);
      const normed = g.op("Div", [xc, root]);
      return [normed, g.op("Sin", [xc]), g.op("Mul", [variance, root])];
    },
  },
  {
    name: "SiLU written out, x·Sigmoid(x) and Sigmoid(x)·x, the Sigmoid also an output",
    params: { x: feed([2, 3, 4], 62, F64) },
    build: (g, v) => {
      const s = g.op("Sigmoid", [v.x]);
      return [g.op("Mul", [v.x, s]), g.op("Mul", [g.op("Cos", [s]), g.op("Mul", [s, v.x])])];
    },
  },
  {
    name: "InstanceNormalization (scale and bias differentiated)",
    params: { x: feed([2, 3, 4, 3], 49), s: feed([3], 50, F32, positive), b: feed([3], 51) },
    build: (g, v) => g.op("InstanceNormalization", [v.x, v.s, v.b], { epsilon: 1e-3 }),
  },
  {
    // ORT computes it in single precision even for double tensors: checked in float32
    name: "GroupNormalization (opset 21: scale per channel)",
    opset: 21,
    params: { x: feed([2, 4, 3, 2], 52), s: feed([4], 53, F32, positive), b: feed([4], 54) },
    build: (g, v) => g.op("GroupNormalization", [v.x, v.s, v.b], { num_groups: 2, epsilon: 1e-3 }),
  },
  {
    name: "LayerNormalization over the last two axes",
    params: { x: feed([2, 3, 4], 55, F64), s: feed([3, 4], 56, F64, positive), b: feed([4], 57, F64) },
    build: (g, v) => g.op("LayerNormalization", [v.x, v.s, v.b], { axis: 1, epsilon: 1e-3 }),
  },
  // ----- data movement
  {
    name: "Concat (with a data input), Split (an output unused), Slice (negative start, axes), Pad",
    params: { a: feed([2, 3, 4], 58, F64), b: feed([2, 2, 4], 59, F64) },
    inputs: { x: feed([2, 1, 4], 60, F64) },
    build: (g, v, T) => {
      const cat = g.op("Concat", [v.a, v.x, v.b], { axis: 1 });
      const [p, , r] = g.node("Split", [cat, g.constant([2, 3, 1], [3], "int64")], 3, { axis: 1 });
      const sl = g.op("Slice", [
        v.a,
        g.constant([-3, 1], [2], "int64"),
        g.constant([100, 3], [2], "int64"),
        g.constant([2, 1], [2], "int64"),
      ]);
      const padded = g.op("Pad", [v.b, g.constant([0, 1, 0, 1, 0, 2], [6], "int64"), g.constant(0.5, [], T)]);
      return [p, r, sl, padded];
    },
  },
  {
    name: "Concat with sizes known only at run time (symbolic batch on the axis)",
    params: { a: feed([2, 3], 61, F64) },
    inputs: { x: feed([3, 3], 62, F64) },
    symbolic: "batch",
    build: (g, v) => g.op("Mul", [g.op("Concat", [v.x, v.a], { axis: 0 }), g.constant(3, [], F64)]),
  },
  {
    name: "Gather: embedding lookup (axis 0, repeated and negative indices) and axis 1 with 2-D indices",
    params: { table: feed([5, 3], 63, F64), m: feed([2, 4, 3], 64, F64) },
    inputs: { idx: ints([1, 4, 1, -1, 0, 2]), idx2: ints([0, 3, 3, 1], [2, 2]) },
    build: (g, v) => [
      g.op("Gather", [v.table, v.idx], { axis: 0 }),
      g.op("Gather", [v.m, v.idx2], { axis: 1 }),
      g.op("Gather", [v.m, g.constant(1, [], "int64")], { axis: -1 }),
    ],
  },
  {
    name: "Reshape, Transpose (perm and default), Unsqueeze, Squeeze, Flatten, Expand, Identity, Constant",
    params: { x: feed([2, 3, 4], 65, F64), e: feed([3, 1], 66, F64) },
    build: (g, v) => {
      const k = g.op("Constant", [], { value_float: 0.5 });
      return [
        g.op("Reshape", [v.x, g.constant([4, -1], [2], "int64")]),
        g.op("Transpose", [v.x], { perm: [1, 2, 0] }),
        g.op("Transpose", [v.x]),
        g.op("Squeeze", [
          g.op("Unsqueeze", [v.x, g.constant([0, 3], [2], "int64")]),
          g.constant([0], [1], "int64"),
        ]),
        g.op("Flatten", [v.x], { axis: 2 }),
        g.op("Expand", [v.e, g.constant([2, 3, 5], [3], "int64")]),
        g.op("Mul", [g.op("Identity", [v.x]), g.op("Cast", [k], { to: 11 })]),
      ];
    },
  },
  {
    name: "shape arithmetic (Shape → Gather → Concat → Reshape) carries no gradient",
    params: { x: feed([2, 3, 4], 67, F64) },
    build: (g, v) => {
      const s = g.op("Shape", [v.x]);
      const b = g.op("Gather", [s, g.constant(0, [], "int64")], { axis: 0 });
      const target = g.op("Concat", [
        g.op("Unsqueeze", [b, g.constant([0], [1], "int64")]),
        g.constant([-1], [1], "int64"),
      ], {
        axis: 0,
      });
      return g.op("Tanh", [g.op("Reshape", [v.x, target])]);
    },
  },
  {
    name: "a value used by several consumers accumulates its gradient",
    params: { x: feed([3, 3], 68, F64), w: feed([3, 3], 69, F64) },
    build: (g, v) => {
      const h = g.op("MatMul", [v.x, v.w]);
      return g.op("Add", [g.op("Mul", [h, h]), g.op("Sin", [g.op("MatMul", [h, v.x])])]);
    },
  },
];

describe("onnx/grad rules against finite differences", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const g = new GraphBuilder(c.name.replace(/\W+/g, "_"), { opset: c.opset ?? 17 });
      const T = (Object.values(c.params)[0].type) as FloatType;
      const v: Record<string, string> = {};
      for (const [name, f] of Object.entries(c.inputs ?? {})) {
        v[name] = g.input(
          name,
          f.type,
          c.symbolic
            ? f.dims.map((d, i) => (i === 0 ? "B" : i >= 2 && c.symbolic === "all" ? `S${i}` : d))
            : f.dims,
        );
      }
      for (const [name, f] of Object.entries(c.params)) {
        const data = f.type === "float64" ? Float64Array.from(f.values) : Float32Array.from(f.values);
        v[name] = g.initializer(name, data, f.dims);
      }
      const outs = c.build(g, v, T);
      for (const o of Array.isArray(outs) ? outs : [outs]) g.output(o, T);
      await checkGrad(g.model(), c.inputs ?? {}, { params: Object.keys(c.params), ...c.options });
    });
  }
});

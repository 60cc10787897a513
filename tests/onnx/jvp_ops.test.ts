/**
 * Every operator rule of onnx/jvp.ts (and its attribute variants) against central finite differences of
 * the original graph, run in ONNX Runtime.
 */
import { describe, it } from "../testing.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { checkJvp, type CheckOptions, declare, type Feed, feed, type FloatType } from "./jvp_check.ts";

interface OpCase {
  name: string;
  opset?: number;
  feeds: Record<string, Feed>;
  /** Builds the graph from the declared inputs; returns its output names. */
  build: (g: GraphBuilder, i: Record<string, string>, T: FloatType) => string | string[];
  options?: CheckOptions;
}

const F32: FloatType = "float32";
const F64: FloatType = "float64";
const away = (...kinks: number[]) => ({ kinks, margin: 0.05 });
const positive = { lo: 0.5, hi: 2 };

function unary(op: string, type: FloatType, attrs = {}, opts = {}, opset?: number): OpCase {
  return {
    name: `${op}${Object.keys(attrs).length ? " " + JSON.stringify(attrs) : ""} (${type})`,
    opset,
    feeds: { x: feed([2, 3, 4], 1, type, opts) },
    build: (g, i) => g.op(op, [i.x], attrs),
  };
}

const cases: OpCase[] = [
  // ----- pointwise
  unary("Identity", F64),
  unary("Neg", F64),
  unary("Sigmoid", F64),
  unary("Tanh", F64),
  unary("Relu", F64, {}, away(0)),
  unary("LeakyRelu", F32, { alpha: 0.2 }, away(0)),
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
  unary("Gelu", F32, { approximate: "tanh" }, {}, 20),
  unary("Softmax", F64, { axis: -1 }),
  unary("Softmax", F64, { axis: 1 }),
  unary("Softmax", F32, { axis: 1 }, {}, 11), // opset < 13: softmax over the flattened dims 1..
  unary("LogSoftmax", F64, { axis: 2 }),
  unary("LogSoftmax", F32, { axis: 1 }, {}, 11),
  {
    name: "Clip with min/max inputs",
    feeds: { x: feed([2, 3, 4], 2, F32, away(-0.5, 0.5)) },
    build: (g, i, T) => g.op("Clip", [i.x, g.constant(-0.5, [], T), g.constant(0.5, [], T)]),
  },
  {
    name: "Clip with only max",
    feeds: { x: feed([2, 3, 4], 2, F32, away(0.3)) },
    build: (g, i, T) => g.op("Clip", [i.x, "", g.constant(0.3, [], T)]),
  },
  {
    name: "Cast float32 → float64 and to int64 (no tangent)",
    feeds: { x: feed([2, 3], 3, F32, { lo: 0.1, hi: 0.9 }) },
    build: (
      g,
      i,
    ) => [g.op("Cast", [i.x], { to: 11 }), g.op("Cast", [g.op("Cast", [i.x], { to: 7 })], { to: 1 })],
  },
  {
    name: "CastLike",
    opset: 15,
    feeds: { x: feed([2, 3], 3, F32) },
    build: (g, i) => g.op("CastLike", [i.x, g.constant([1], [1], "float64")]),
  },
  {
    name: "Dropout (inference)",
    opset: 13,
    feeds: { x: feed([2, 3], 3, F32) },
    build: (g, i) => g.node("Dropout", [i.x], 2)[0],
  },
  // ----- sums and products, with broadcasting
  {
    name: "Add/Sub/Mul/Div of two inputs with broadcasting",
    feeds: { a: feed([2, 3, 4], 4, F64), b: feed([3, 1], 5, F64, positive) },
    build: (
      g,
      i,
    ) => [g.op("Add", [i.a, i.b]), g.op("Sub", [i.b, i.a]), g.op("Mul", [i.a, i.b]), g.op("Div", [i.a, i.b])],
  },
  {
    name: "Add/Sub/Mul/Div with a constant operand that broadcasts the input up",
    feeds: { x: feed([2, 1], 4, F64, positive) },
    build: (g, i, T) => {
      const w = g.constant([1, 2, 3], [1, 3], T);
      return [g.op("Add", [i.x, w]), g.op("Sub", [w, i.x]), g.op("Mul", [w, i.x]), g.op("Div", [w, i.x])];
    },
  },
  {
    name: "Add with a bias that does not broadcast the input (no Expand needed)",
    feeds: { x: feed([2, 3, 4], 4, F32) },
    build: (g, i, T) => g.op("Add", [i.x, g.constant([1, 2, 3, 4], [4], T)]),
  },
  {
    name: "Sum of three inputs, one constant",
    feeds: { a: feed([2, 3], 6, F64), b: feed([3], 7, F64) },
    build: (g, i, T) => g.op("Sum", [i.a, i.b, g.constant([1, 2, 3, 4, 5, 6], [2, 3], T)]),
  },
  {
    name: "Pow: x^2 (float), x^3 (int64 exponent), a^b (both)",
    feeds: { a: feed([2, 3], 8, F64, positive), b: feed([2, 3], 9, F64) },
    build: (g, i, T) => [
      g.op("Pow", [i.a, g.constant(2, [], T)]),
      g.op("Pow", [i.b, g.constant([3], [1], "int64")]),
      g.op("Pow", [i.a, i.b]),
    ],
  },
  {
    name: "Max/Min of two inputs",
    feeds: {
      a: feed([2, 3], 10, F64),
      b: { type: F64, dims: [3], values: [-0.4, 0.9, 0.05] },
    },
    build: (g, i) => [g.op("Max", [i.a, i.b]), g.op("Min", [i.b, i.a])],
    options: { h: 1e-7, tol: 1e-5 },
  },
  {
    name: "Where with both branches and with a constant branch that broadcasts",
    feeds: { a: feed([2, 3], 11, F64), b: feed([3], 12, F64) },
    build: (g, i, T) => {
      const cond = g.constant([1, 0, 1, 0, 0, 1], [2, 3], "bool");
      const wide = g.constant([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3], T);
      return [g.op("Where", [cond, i.a, i.b]), g.op("Where", [cond, i.b, wide])];
    },
  },
  // ----- linear algebra
  {
    name: "MatMul: input × weight, batched input × input, vector × matrix",
    feeds: { a: feed([2, 2, 3], 13, F64), b: feed([3, 4], 14, F64), v: feed([3], 15, F64) },
    build: (g, i, T) => [
      g.op("MatMul", [i.a, g.constant(Array.from({ length: 12 }, (_, k) => Math.sin(k)), [3, 4], T)]),
      g.op("MatMul", [i.a, i.b]),
      g.op("MatMul", [i.v, i.b]),
    ],
  },
  {
    name: "Gemm: alpha, beta, transA, transB, C as input (broadcast [4]) and as constant",
    feeds: { a: feed([3, 2], 16, F64), b: feed([4, 3], 17, F64), c: feed([4], 18, F64) },
    build: (g, i, T) => [
      g.op("Gemm", [i.a, i.b, i.c], { alpha: 0.7, beta: 1.3, transA: 1, transB: 1 }),
      g.op("Gemm", [i.a, g.constant(Array.from({ length: 12 }, (_, k) => k / 10), [3, 4], T), i.c], {
        transA: 1,
        beta: 2,
      }),
    ],
    options: { wrt: ["a", "b"] },
  },
  {
    name: "Gemm with only C carrying a tangent (broadcast [4] → [2, 4])",
    feeds: { c: feed([4], 18, F64) },
    build: (g, i, T) =>
      g.op("Gemm", [
        g.constant([1, 2, 3, 4, 5, 6], [2, 3], T),
        g.constant(Array.from({ length: 12 }, (_, k) => k), [3, 4], T),
        i.c,
      ], {
        beta: 0.5,
      }),
  },
  {
    name: "Einsum bij,bjk->bik and a trace-like contraction",
    opset: 12,
    feeds: { a: feed([2, 2, 3], 19, F64), b: feed([2, 3, 2], 20, F64) },
    build: (
      g,
      i,
    ) => [
      g.op("Einsum", [i.a, i.b], { equation: "bij,bjk->bik" }),
      g.op("Einsum", [i.a, i.a], { equation: "bij,bij->b" }),
    ],
  },
  // ----- convolutions
  ...[
    { pads: [1, 1, 1, 1] },
    { strides: [2, 2], pads: [0, 1, 1, 0] },
    { dilations: [2, 1], group: 2 },
    { auto_pad: "SAME_UPPER", strides: [2, 2] },
  ].map((attrs): OpCase => ({
    name: `Conv ${JSON.stringify(attrs)} with bias`,
    feeds: { x: feed([2, 4, 5, 5], 21) },
    build: (g, i, T) => {
      const cin = attrs.group ? 4 / attrs.group : 4;
      const w = g.constant(Array.from({ length: 6 * cin * 9 }, (_, k) => Math.cos(k * 0.7) * 0.3), [
        6,
        cin,
        3,
        3,
      ], T);
      const b = g.constant([0.1, -0.2, 0.3, 0, 0.5, -0.1], [6], T);
      return g.op("Conv", [i.x, w, b], { kernel_shape: [3, 3], ...attrs });
    },
  })),
  {
    name: "Conv with tangents on input, weight and bias (1-D)",
    feeds: { x: feed([2, 3, 7], 22), w: feed([4, 3, 2], 23), b: feed([4], 24) },
    build: (g, i) => g.op("Conv", [i.x, i.w, i.b], { strides: [2] }),
  },
  {
    name: "ConvTranspose strides 2, output_padding, pads, group, bias",
    feeds: { x: feed([2, 4, 3, 3], 25) },
    build: (g, i, T) => {
      const w = g.constant(
        Array.from({ length: 4 * 3 * 9 }, (_, k) => Math.sin(k * 0.3) * 0.3),
        [4, 3, 3, 3],
        T,
      );
      const b = g.constant([0.1, -0.2, 0.3, 0.05, 0.5, -0.1], [6], T);
      return g.op("ConvTranspose", [i.x, w, b], {
        strides: [2, 2],
        output_padding: [1, 1],
        pads: [1, 1, 1, 1],
        group: 2,
      });
    },
  },
  {
    name: "ConvTranspose with tangents on input, weight and bias",
    feeds: { x: feed([1, 2, 3, 3], 26), w: feed([2, 3, 2, 2], 27), b: feed([3], 28) },
    build: (g, i) => g.op("ConvTranspose", [i.x, i.w, i.b], { strides: [2, 2] }),
  },
  // ----- pooling and resampling
  {
    name: "AveragePool k2 s2, and k3 pads without counting them; GlobalAveragePool",
    feeds: { x: feed([2, 3, 4, 4], 29, F32) },
    build: (g, i) => [
      g.op("AveragePool", [i.x], { kernel_shape: [2, 2], strides: [2, 2] }),
      g.op("AveragePool", [i.x], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 0 }),
      g.op("GlobalAveragePool", [i.x]),
    ],
  },
  {
    name: "MaxPool k2 s2, k3 s1 pads 1, and with its Indices output used",
    feeds: { x: feed([2, 3, 4, 4], 30, F64) },
    build: (g, i) => {
      const [m, idx] = g.node("MaxPool", [i.x], 2, { kernel_shape: [2, 2], strides: [2, 2] });
      return [
        m,
        g.op("MaxPool", [i.x], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
        g.op("Mul", [m, g.op("Cast", [idx], { to: 11 })]),
      ];
    },
    options: { h: 1e-7, tol: 1e-5 },
  },
  {
    name: "Resize nearest (scales) and linear (sizes)",
    opset: 13,
    feeds: { x: feed([1, 2, 3, 3], 31, F32) },
    build: (g, i) => [
      g.op("Resize", [i.x, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" }),
      g.op("Resize", [i.x, "", "", g.constant([1, 2, 5, 4], [4], "int64")], {
        mode: "linear",
        coordinate_transformation_mode: "half_pixel",
      }),
      g.op("Resize", [i.x, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "cubic" }),
    ],
  },
  {
    name: "Upsample (opset 9)",
    opset: 9,
    feeds: { x: feed([1, 2, 2, 3], 32, F32) },
    build: (g, i) => g.op("Upsample", [i.x, g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" }),
  },
  // ----- reductions
  {
    name: "ReduceMean (axes attribute, opset 17) and ReduceSum (axes input)",
    feeds: { x: feed([2, 3, 4], 33, F64) },
    build: (g, i) => [
      g.op("ReduceMean", [i.x], { axes: [1], keepdims: 0 }),
      g.op("ReduceMean", [i.x], {}),
      g.op("ReduceSum", [i.x, g.constant([-1, 0], [2], "int64")], { keepdims: 1 }),
    ],
  },
  {
    name: "ReduceMean with axes input (opset 18)",
    opset: 18,
    feeds: { x: feed([2, 3, 4], 34, F64) },
    build: (g, i) => g.op("ReduceMean", [i.x, g.constant([2], [1], "int64")], { keepdims: 0 }),
  },
  // ----- normalisations
  {
    name: "InstanceNormalization",
    feeds: { x: feed([2, 3, 2, 3], 35) },
    build: (g, i, T) =>
      g.op("InstanceNormalization", [
        i.x,
        g.constant([1, 0.5, -2], [3], T),
        g.constant([0.1, 0.2, 0.3], [3], T),
      ], {
        epsilon: 1e-3,
      }),
  },
  {
    name: "GroupNormalization (opset 18: scale per group)",
    opset: 18,
    feeds: { x: feed([2, 4, 3, 2], 36) },
    build: (g, i, T) =>
      g.op("GroupNormalization", [i.x, g.constant([1.5, -0.5], [2], T), g.constant([0.1, 0.2], [2], T)], {
        num_groups: 2,
        epsilon: 1e-3,
      }),
  },
  {
    name: "GroupNormalization (opset 21: scale per channel)",
    opset: 21,
    feeds: { x: feed([2, 4, 3, 2], 37) },
    build: (g, i, T) =>
      g.op("GroupNormalization", [
        i.x,
        g.constant([1.5, -0.5, 1, 2], [4], T),
        g.constant([0.1, 0.2, 0, 1], [4], T),
      ], {
        num_groups: 2,
      }),
  },
  {
    name: "GroupNorm as exporters decompose it (Reshape → InstanceNormalization → Reshape → Mul → Add)",
    feeds: { x: feed([2, 4, 3, 3], 38) },
    build: (g, i, T) => {
      const grouped = g.op("Reshape", [i.x, g.constant([0, 2, -1], [3], "int64")]);
      const n = g.op("InstanceNormalization", [
        grouped,
        g.constant([1, 1], [2], T),
        g.constant([0, 0], [2], T),
      ], {
        epsilon: 1e-5,
      });
      const back = g.op("Reshape", [n, g.op("Shape", [i.x])]);
      const scaled = g.op("Mul", [back, g.constant([1, 2, -1, 0.5], [4, 1, 1], T)]);
      return g.op("Add", [scaled, g.constant([0.1, 0.2, 0.3, 0.4], [4, 1, 1], T)]);
    },
  },
  {
    name: "LayerNormalization axis −1 and axis 1",
    feeds: { x: feed([2, 3, 4], 39, F64) },
    build: (g, i, T) => [
      g.op("LayerNormalization", [
        i.x,
        g.constant([1, 2, 0.5, -1], [4], T),
        g.constant([0, 1, 0, 1], [4], T),
      ]),
      g.op("LayerNormalization", [
        i.x,
        g.constant(Array.from({ length: 12 }, (_, k) => 1 + k / 10), [3, 4], T),
      ], {
        axis: 1,
        epsilon: 1e-3,
      }),
    ],
    options: { tol: 1e-5 },
  },
  {
    name: "LayerNormalization with tangents on scale and bias",
    feeds: { x: feed([2, 4], 40, F64), s: feed([4], 41, F64), b: feed([4], 42, F64) },
    build: (g, i) => g.op("LayerNormalization", [i.x, i.s, i.b]),
    options: { tol: 1e-5 },
  },
  {
    name: "BatchNormalization (inference)",
    feeds: { x: feed([2, 3, 2, 2], 43, F64) },
    build: (g, i, T) =>
      g.op("BatchNormalization", [
        i.x,
        g.constant([1, 2, 3], [3], T),
        g.constant([0.1, 0.2, 0.3], [3], T),
        g.constant([0.5, -0.5, 0], [3], T),
        g.constant([1, 4, 0.25], [3], T),
      ]),
  },
  // ----- data movement
  {
    name: "Concat with a non-differentiated operand; Split (split input and num_outputs)",
    opset: 18,
    feeds: { x: feed([2, 3], 44, F64) },
    build: (g, i, T) => [
      g.op("Concat", [i.x, g.constant([1, 2, 3], [1, 3], T), i.x], { axis: 0 }),
      ...g.node("Split", [i.x, g.constant([1, 2], [2], "int64")], 2, { axis: 1 }),
      ...g.node("Split", [i.x], 2, { axis: 0, num_outputs: 2 }),
    ],
  },
  {
    name: "Split (opset 11: split attribute)",
    opset: 11,
    feeds: { x: feed([2, 5], 45) },
    build: (g, i) => g.node("Split", [i.x], 2, { axis: 1, split: [2, 3] }),
  },
  {
    name: "Slice (negative step, axes) and Gather (constant indices)",
    feeds: { x: feed([3, 4, 5], 46, F64) },
    build: (g, i) => [
      g.op("Slice", [
        i.x,
        g.constant([-1, 1], [2], "int64"),
        g.constant([-1000, 4], [2], "int64"),
        g.constant([2, 0], [2], "int64"),
        g.constant([-2, 2], [2], "int64"),
      ]),
      g.op("Gather", [i.x, g.constant([[2, 0], [1, 1]].flat(), [2, 2], "int64")], { axis: 1 }),
      g.op("GatherElements", [
        i.x,
        g.constant(Array.from({ length: 60 }, (_, k) => k % 3), [3, 4, 5], "int64"),
      ], {
        axis: 0,
      }),
    ],
  },
  {
    name: "Reshape (0, −1), Transpose, Unsqueeze, Squeeze, Flatten, Expand, Tile",
    feeds: { x: feed([2, 1, 6], 47, F64) },
    build: (g, i) => [
      g.op("Reshape", [i.x, g.constant([0, 3, -1], [3], "int64")]),
      g.op("Transpose", [i.x], { perm: [2, 0, 1] }),
      g.op("Unsqueeze", [i.x, g.constant([0, -1], [2], "int64")]),
      g.op("Squeeze", [i.x, g.constant([1], [1], "int64")]),
      g.op("Flatten", [i.x], { axis: 2 }),
      g.op("Expand", [i.x, g.constant([3, 2, 4, 6], [4], "int64")]),
      g.op("Tile", [i.x, g.constant([1, 2, 2], [3], "int64")]),
    ],
  },
  {
    name: "Squeeze/Unsqueeze with axes attributes (opset 11)",
    opset: 11,
    feeds: { x: feed([2, 1, 3], 48) },
    build: (g, i) => [g.op("Squeeze", [i.x], { axes: [1] }), g.op("Unsqueeze", [i.x], { axes: [0, 4] })],
  },
  {
    name: "Pad constant (non-zero value), reflect; DepthToSpace; SpaceToDepth; CumSum",
    feeds: { x: feed([1, 4, 2, 2], 49) },
    build: (g, i, T) => [
      g.op("Pad", [i.x, g.constant([0, 0, 1, 2, 0, 0, 2, 1], [8], "int64"), g.constant(3, [], T)]),
      g.op("Pad", [i.x, g.constant([0, 0, 1, 1, 0, 0, 1, 1], [8], "int64")], { mode: "reflect" }),
      g.op("DepthToSpace", [i.x], { blocksize: 2 }),
      g.op("SpaceToDepth", [i.x], { blocksize: 2 }),
      g.op("CumSum", [i.x, g.constant(1, [], "int64")], { reverse: 1 }),
    ],
  },
  {
    name: "shape arithmetic (Shape → Gather → Concat → Reshape, ConstantOfShape) carries no tangent",
    feeds: { x: feed([2, 3, 4], 50, F64) },
    build: (g, i, T) => {
      const s = g.op("Shape", [i.x]);
      const b = g.op("Gather", [s, g.constant(0, [], "int64")], { axis: 0 });
      const target = g.op("Concat", [
        g.op("Unsqueeze", [b, g.constant([0], [1], "int64")]),
        g.constant([-1], [1], "int64"),
      ], {
        axis: 0,
      });
      const flat = g.op("Reshape", [i.x, target]);
      const ones = g.op("ConstantOfShape", [g.op("Shape", [flat])], {
        value: {
          dims: [1],
          dataType: T === F64 ? 11 : 1,
          rawData: new Uint8Array(new Float64Array([2]).buffer),
        },
      });
      const k = g.op("Constant", [], { value_float: 0.5 });
      return g.op("Mul", [g.op("Add", [flat, ones]), g.op("Cast", [k], { to: 11 })]);
    },
  },
];

describe("onnx/jvp rules against finite differences", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const g = new GraphBuilder(c.name.replace(/\W+/g, "_"), { opset: c.opset ?? 17 });
      const T = (Object.values(c.feeds).find((f) =>
        f.type.startsWith("float")
      )?.type ?? "float32") as FloatType;
      const ins = declare(g, c.feeds);
      const outs = c.build(g, ins, T);
      for (const o of Array.isArray(outs) ? outs : [outs]) g.output(o, guessType(g, o, T));
      await checkJvp(g.model(), c.feeds, c.options);
    });
  }
});

/** Output element type: Cast nodes say theirs, everything else follows the inputs. */
function guessType(g: GraphBuilder, name: string, T: FloatType): number {
  const node = g.nodes.find((n) => n.output.includes(name));
  if (node?.opType === "Cast") return Number(node.attribute.find((a) => a.name === "to")!.i);
  if (node?.opType === "CastLike") return 11;
  return T === "float64" ? 11 : 1;
}

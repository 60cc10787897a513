/**
 * Rules of onnx/jvp.ts beyond one operator at a time, against central finite differences:
 * - the nonlinear reductions (ReduceMax, ReduceMin, ReduceSumSquare, ReduceL2, ReduceLogSumExp) with axes as
 *   attribute (opset 17) and as input (opset 18), keepdims 0 and 1, all axes, two-way ties, and the
 *   written-out softmax that exporters and the analytic models' graphs use (ReduceMax, Sub, Exp, ReduceSum,
 *   Div);
 * - the patterns with a cheaper tangent: SiLU x·σ(x) (slope σ + y·(1 − σ)), InstanceNormalization with
 *   unit scale and zero bias (exporters' GroupNorm: its output is x̂ itself), and MatMul with tangents on
 *   both inputs and a small inner dimension (one product [dA, A]·[B; dB], e.g. attention scores), also
 *   inside a 28×28 U-Net; x·x (2·x·dx); the standardisation written out (ReduceMean, Sub, Mul or Pow,
 *   ReduceMean, Add, Sqrt, Div: LayerNorm and GroupNorm as exporters and training/layers.ts write them,
 *   and RMS normalisation), in one piece; a per-channel scale after a group normalisation, folded into
 *   its divisor; and softmax weights times values (A·V and V·Aᵀ), without forming the softmax's tangent;
 * - the U-Net the project trains (training/unet.ts) as a whole.
 */
import { assert, assertEquals, describe, it } from "../testing.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { jvpModel } from "../../onnx/jvp.ts";
import { checkJvp, declare, type Feed, feed } from "./jvp_check.ts";
import { buildUNet } from "../../bench/unet_fixture.ts";
import { buildTrainableUNet } from "../../training/unet.ts";

interface Case {
  name: string;
  opset?: number;
  feeds: Record<string, Feed>;
  build: (g: GraphBuilder, x: string, inputs: Record<string, string>) => string | string[];
}

const axes = (g: GraphBuilder, v: number[]) => g.constant(v, [v.length], "int64");

/** Values of [2, 3, 4] with two equal maxima (and two equal minima) in each row of the last axis. */
function tied(): Feed {
  const f = feed([2, 3, 4], 9, "float64");
  for (let r = 0; r < 6; r++) {
    const row = f.values.slice(4 * r, 4 * r + 4);
    const [hi, lo] = [Math.max(...row) + 0.5, Math.min(...row) - 0.5];
    f.values[4 * r + 1] = f.values[4 * r + 3] = hi;
    f.values[4 * r] = f.values[4 * r + 2] = lo;
  }
  return f;
}

const cases: Case[] = [
  {
    name: "ReduceMax and ReduceMin (axes attribute, keepdims 0 and 1, all axes)",
    feeds: { x: feed([2, 3, 4], 1, "float64") },
    build: (g, x) => [
      g.op("ReduceMax", [x], { axes: [1], keepdims: 0 }),
      g.op("ReduceMin", [x], { axes: [0, 2], keepdims: 1 }),
      g.op("ReduceMax", [x], { keepdims: 0 }),
      g.op("ReduceMin", [x], {}),
    ],
  },
  {
    name: "ReduceMax and ReduceMin with an axes input (opset 18)",
    opset: 18,
    feeds: { x: feed([2, 3, 4], 2, "float32") },
    build: (g, x) => [
      g.op("ReduceMax", [x, axes(g, [-1])], { keepdims: 0 }),
      g.op("ReduceMin", [x, axes(g, [0, 1])], { keepdims: 1 }),
      g.op("ReduceMax", [x], { keepdims: 0, noop_with_empty_axes: 1 }),
    ],
  },
  {
    name: "ReduceMax/ReduceMin with two-way ties: the mean of the tied tangents (the central difference)",
    feeds: { x: tied() },
    build: (g, x) => [
      g.op("ReduceMax", [x], { axes: [2], keepdims: 0 }),
      g.op("ReduceMin", [x], { axes: [-1], keepdims: 1 }),
    ],
  },
  {
    name: "ReduceSumSquare, ReduceL2, ReduceLogSumExp (axes attribute)",
    feeds: { x: feed([2, 3, 4], 3, "float64") },
    build: (g, x) => [
      g.op("ReduceSumSquare", [x], { axes: [0, 2], keepdims: 0 }),
      g.op("ReduceL2", [x], { axes: [1], keepdims: 1 }),
      g.op("ReduceLogSumExp", [x], { axes: [2], keepdims: 0 }),
      g.op("ReduceLogSumExp", [x], {}),
    ],
  },
  {
    name: "ReduceSumSquare, ReduceL2, ReduceLogSumExp with an axes input (opset 18)",
    opset: 18,
    feeds: { x: feed([2, 3, 4], 4, "float64") },
    build: (g, x) => [
      g.op("ReduceSumSquare", [x, axes(g, [1])], { keepdims: 1 }),
      g.op("ReduceL2", [x, axes(g, [-1, 0])], { keepdims: 0 }),
      g.op("ReduceLogSumExp", [x, axes(g, [1])], { keepdims: 0 }),
    ],
  },
  {
    name: "softmax written out: exp(x − max x) / Σ exp(x − max x)",
    feeds: { x: feed([3, 5], 5, "float64", { lo: -3, hi: 3 }) },
    build: (g, x) => {
      const shifted = g.op("Sub", [x, g.op("ReduceMax", [x], { axes: [1], keepdims: 1 })]);
      const e = g.op("Exp", [shifted]);
      return g.op("Div", [e, g.op("ReduceSum", [e, axes(g, [1])], { keepdims: 1 })]);
    },
  },
  {
    name: "SiLU x·σ(x) and σ(x)·x (float32 and float64), and x·σ(2x) by the product rule",
    feeds: { x: feed([2, 3, 4], 6, "float64", { lo: -4, hi: 4 }) },
    build: (g, x) => [
      g.op("Mul", [x, g.op("Sigmoid", [x])]),
      g.op("Mul", [g.op("Sigmoid", [x]), x]),
      g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, g.constant(2, [], "float64")])])]),
    ],
  },
  {
    name: "SiLU in float32",
    feeds: { x: feed([2, 8], 7, "float32", { lo: -4, hi: 4 }) },
    build: (g, x) => g.op("Mul", [x, g.op("Sigmoid", [x])]),
  },
  {
    name: "InstanceNormalization with unit scale and zero bias, and with others (float32)",
    feeds: { x: feed([2, 3, 5], 8, "float32", { lo: -2, hi: 3 }) },
    build: (g, x) => [
      g.op("InstanceNormalization", [
        x,
        g.constant([1, 1, 1], [3], "float32"),
        g.constant([0, 0, 0], [3], "float32"),
      ]),
      g.op("InstanceNormalization", [
        x,
        g.constant([1, 1, 1], [3], "float32"),
        g.constant([0, 0.5, 0], [3], "float32"),
      ]),
      g.op("InstanceNormalization", [
        x,
        g.constant([2, -1, 0.5], [3], "float32"),
        g.constant([0, 0, 0], [3], "float32"),
      ]),
    ],
  },
  {
    name: "x·x (2·x·dx) beside a product of two different values",
    feeds: { x: feed([2, 5], 15, "float64"), y: feed([2, 5], 16, "float64") },
    build: (g, x, ins) => [g.op("Mul", [x, x]), g.op("Mul", [x, ins.y])],
  },
  {
    name: "LayerNorm written out with Pow (opset 17, axes attribute): (x − m)/sqrt(mean((x − m)²) + ε)",
    feeds: { x: feed([2, 3, 6], 17, "float64", { lo: -2, hi: 3 }) },
    build: (g, x) => standardized(g, x, { axes: [-1], pow: true, eps: 1e-5 }),
  },
  {
    name: "the same over two axes with Mul (opset 18, axes input), float32",
    opset: 18,
    feeds: { x: feed([2, 3, 4], 18, "float32", { lo: -2, hi: 2 }) },
    build: (g, x) => standardized(g, x, { axes: [1, 2], input: true, eps: 1e-3 }),
  },
  {
    name: "RMS normalisation x/sqrt(mean(x²) + ε) (no centring)",
    feeds: { x: feed([3, 8], 19, "float64", { lo: -2, hi: 2 }) },
    build: (g, x) => standardized(g, x, { axes: [1], centre: false, eps: 1e-6 }),
  },
  {
    name: "GroupNorm as training/layers.ts writes it, scale [C, 1, 1] folded into the divisor (16×16×16)",
    feeds: { x: feed([2, 16, 16, 16], 20, "float64", { lo: -2, hi: 2 }) },
    build: (g, x) => [groupNorm(g, x, 16, 4, [16, 1, 1]), groupNorm(g, x, 16, 4, [1, 16, 1, 1])],
  },
  {
    name: "the same in exporters' InstanceNormalization form, and on maps too small to fold",
    // float32: ONNX Runtime's CPU InstanceNormalization has no float64 kernel
    feeds: { x: feed([2, 16, 16, 16], 21, "float32", { lo: -2, hi: 2 }) },
    build: (g, x) => [
      groupNorm(g, x, 16, 4, [16, 1, 1], true),
      groupNorm(g, g.op("AveragePool", [x], { kernel_shape: [2, 2], strides: [2, 2] }), 16, 4, [16, 1, 1]),
    ],
  },
  {
    name: "softmax weights times values: A·V and V·Aᵀ, with and without a tangent on V",
    opset: 13,
    feeds: { x: feed([2, 5, 5], 22, "float64"), v: feed([2, 5, 3], 23, "float64") },
    build: (g, s, ins) => {
      const a = g.op("Softmax", [s], { axis: -1 });
      const w = g.constant(Array.from({ length: 30 }, (_, k) => Math.sin(k)), [2, 3, 5], "float64");
      return [
        g.op("MatMul", [a, ins.v]),
        g.op("MatMul", [w, g.op("Transpose", [a], { perm: [0, 2, 1] })]),
        g.op("MatMul", [
          g.op("Transpose", [ins.v], { perm: [0, 2, 1] }),
          g.op("Transpose", [a], { perm: [0, 2, 1] }),
        ]),
      ];
    },
  },
  {
    name: "MatMul with tangents on both inputs and a small inner dimension: one product [dA, A]·[B; dB]",
    feeds: { a: feed([2, 12, 2], 10, "float64"), b: feed([2, 2, 12], 11, "float64") },
    build: (g, a, ins) => g.op("MatMul", [a, ins.b]),
  },
];

/**
 * A standardisation written out over `axes` (keepdims): (x − mean x)/sqrt(mean((x − mean x)²) + ε), or
 * x/sqrt(mean(x²) + ε) without centring; squares by Mul or Pow, axes as attribute or input.
 */
function standardized(
  g: GraphBuilder,
  x: string,
  o: { axes: number[]; eps: number; pow?: boolean; input?: boolean; centre?: boolean; type?: number },
): string {
  const T = o.type ?? g.model().graph!.input!.find((i) => i.name === x)!.type!.tensorType!.elemType!;
  const mean = (v: string) =>
    o.input ? g.op("ReduceMean", [v, axes(g, o.axes)], { keepdims: 1 }) : g.op("ReduceMean", [v], {
      axes: o.axes,
      keepdims: 1,
    });
  const xc = o.centre === false ? x : g.op("Sub", [x, mean(x)]);
  const sq = o.pow ? g.op("Pow", [xc, g.constant(2, [], T)]) : g.op("Mul", [xc, xc]);
  return g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [mean(sq), g.constant(o.eps, [], T)])])]);
}

/** GroupNorm over `groups` groups of x [N, C, H, W]: written out, or by InstanceNormalization; scale, bias. */
function groupNorm(
  g: GraphBuilder,
  x: string,
  C: number,
  groups: number,
  scaleDims: number[],
  instance = false,
): string {
  // the element type of the graph's input
  const T = g.model().graph!.input![0].type!.tensorType!.elemType!;
  const grouped = g.op("Reshape", [x, axes(g, [0, groups, -1])]);
  const n = instance
    ? g.op("InstanceNormalization", [
      grouped,
      g.constant(new Array(groups).fill(1), [groups], T),
      g.constant(new Array(groups).fill(0), [groups], T),
    ], { epsilon: 1e-5 })
    : standardized(g, grouped, { axes: [2], eps: 1e-5, type: T });
  const back = g.op("Reshape", [n, g.op("Shape", [x])]);
  const scale = g.constant(Array.from({ length: C }, (_, k) => 1 + 0.5 * k), scaleDims, T);
  return g.op("Add", [
    g.op("Mul", [back, scale]),
    g.constant(Array.from({ length: C }, (_, k) => 0.1 * k), scaleDims, T),
  ]);
}

describe("onnx/jvp reductions and patterns against finite differences", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const g = new GraphBuilder(c.name.replace(/\W+/g, "_"), { opset: c.opset ?? 17 });
      const ins = declare(g, c.feeds);
      const outs = c.build(g, ins.x ?? ins.a, ins);
      const type = Object.values(c.feeds)[0].type === "float64" ? 11 : 1;
      for (const o of Array.isArray(outs) ? outs : [outs]) g.output(o, type);
      await checkJvp(g.model(), c.feeds);
    });
  }
});

describe("onnx/jvp pattern rules take their short form", () => {
  it("SiLU: the slope from σ and y, no tangent of σ itself", () => {
    const g = new GraphBuilder("silu", { opset: 17 });
    const x = g.input("x", "float32", [2, 8]);
    g.node("Mul", [x, g.op("Sigmoid", [x])], ["y"]);
    g.output("y", "float32", [2, 8]);
    const ops = jvpModel(g.model()).graph!.node!.map((n) => n.opType);
    // primal Sigmoid and Mul; tangent Sub(1, σ), Mul(y, ·), Add(σ, ·), Mul(dx, ·); an Identity to the output
    assertEquals(ops.filter((o) => o === "Mul").length, 3, ops.join(" "));
    assertEquals(ops.filter((o) => o === "Sigmoid").length, 1, ops.join(" "));
  });

  it("x·x: two tangent passes, 2·(x·dx), no product rule", () => {
    const g = new GraphBuilder("square", { opset: 17 });
    const x = g.input("x", "float32", [2, 8]);
    g.node("Mul", [x, x], ["y"]);
    g.output("y", "float32", [2, 8]);
    const ops = jvpModel(g.model()).graph!.node!.map((n) => n.opType);
    assertEquals(ops.filter((o) => o === "Mul").length, 3, ops.join(" "));
    assertEquals(ops.filter((o) => o === "Add").length, 0, ops.join(" "));
  });

  it("a written-out standardisation: one tangent quotient, no tangent of the square root", () => {
    const g = new GraphBuilder("standardize", { opset: 17 });
    const x = g.input("x", "float32", [2, 3, 6]);
    g.node("Identity", [standardized(g, x, { axes: [-1], eps: 1e-5 })], ["y"]);
    g.output("y", "float32", [2, 3, 6]);
    const ops = jvpModel(g.model()).graph!.node!.map((n) => n.opType);
    // primal: Sub, Mul, Div, Sqrt, …; tangent: Sub, Mul(x̂, dxc), ReduceMean, Mul(x̂, ·), Sub, Div
    assertEquals(ops.filter((o) => o === "Div").length, 2, ops.join(" "));
    assertEquals(ops.filter((o) => o === "Sqrt").length, 1, ops.join(" "));
    assertEquals(ops.filter((o) => o === "Mul").length, 3, ops.join(" "));
  });

  it("a per-channel scale after GroupNorm folds into the divisor, on maps of 4096 values or more", () => {
    const uses = (size: number) => {
      const g = new GraphBuilder("gn", { opset: 17 });
      const x = g.input("x", "float32", ["N", 16, size, size]);
      g.node("Identity", [groupNorm(g, x, 16, 4, [16, 1, 1])], ["y"]);
      g.output("y", "float32", ["N", 16, size, size]);
      const model = g.model();
      const scale = model.graph!.node!.find((n) => n.opType === "Mul" && n.input![0].startsWith("reshape"))!
        .input![1];
      // nodes that read the scale: the primal product, and either a tangent product or the fold's Reshape
      return jvpModel(model).graph!.node!.filter((n) => n.input!.includes(scale)).map((n) => n.opType).sort();
    };
    assertEquals(uses(16), ["Mul", "Reshape"]);
    assertEquals(uses(8), ["Mul", "Mul"]);
  });

  it("softmax weights times values: no tangent of the softmax itself", () => {
    const g = new GraphBuilder("attn", { opset: 13 });
    const s = g.input("s", "float32", [2, 5, 5]), v = g.input("v", "float32", [2, 5, 3]);
    g.node("MatMul", [g.op("Softmax", [s], { axis: -1 }), v], ["y"]);
    g.output("y", "float32", [2, 5, 3]);
    const ops = jvpModel(g.model()).graph!.node!.map((n) => n.opType);
    // the softmax rule's y·(d − Σ y·d) takes two Muls and a Sub over the weights; here one Mul over them,
    // one over y, and one Sub over y
    assertEquals(ops.filter((o) => o === "Mul").length, 2, ops.join(" "));
    assertEquals(ops.filter((o) => o === "MatMul").length, 3, ops.join(" "));
  });

  it("MatMul with a small inner dimension: one tangent product over the concatenated inputs", () => {
    const g = new GraphBuilder("mm", { opset: 17 });
    const a = g.input("a", "float32", ["B", 12, 2]), b = g.input("b", "float32", ["B", 2, 12]);
    g.node("MatMul", [a, b], ["y"]);
    g.output("y", "float32", ["B", 12, 12]);
    const ops = jvpModel(g.model()).graph!.node!.map((n) => n.opType);
    assertEquals(ops.filter((o) => o === "MatMul").length, 2, ops.join(" "));
    assertEquals(ops.filter((o) => o === "Concat").length, 2, ops.join(" "));
  });

  it("InstanceNormalization with unit scale and zero bias reuses its output as x̂", () => {
    const build = (bias: number) => {
      const g = new GraphBuilder("in", { opset: 17 });
      const x = g.input("x", "float32", [2, 3, 5]);
      g.node("InstanceNormalization", [
        x,
        g.constant([1, 1, 1], [3], "float32"),
        g.constant([bias, 0, 0], [3], "float32"),
      ], ["y"]);
      g.output("y", "float32", [2, 3, 5]);
      return jvpModel(g.model()).graph!.node!.filter((n) => n.opType === "Mul").length;
    };
    assert(build(0) < build(0.5), `unit: ${build(0)} Mul nodes, general: ${build(0.5)}`);
  });
});

describe("onnx/jvp on a 28×28 U-Net, whose attention takes the one-product MatMul form", () => {
  it("matches finite differences", async () => {
    const model = buildUNet({ channels: 1, size: 28, classes: 4 });
    const ops = jvpModel(model).graph!.node!;
    assert(ops.some((n) => n.opType === "Concat" && n.name?.startsWith("jvp/")), "a concatenated product");
    await checkJvp(model, {
      x: feed([2, 1, 28, 28], 12),
      t: { type: "float32", dims: [2], values: [0.2, 0.7] },
      class: { type: "int64", dims: [2], values: [1, 3] },
    });
  });
});

describe("onnx/jvp on the project's trainable U-Net (training/unet.ts)", () => {
  it("matches finite differences along x, and along t with a step its 1000·t time embedding allows", async () => {
    const { model } = buildTrainableUNet({ classes: 10, zeroOutput: false });
    const feeds: Record<string, Feed> = {
      x: feed([2, 1, 28, 28], 13),
      t: { type: "float32", dims: [2], values: [0.25, 0.75] },
      class: { type: "int64", dims: [2], values: [1, 9] },
    };
    const zeros = new Array(2 * 28 * 28).fill(0);
    await checkJvp(model, feeds, { tangents: { x: feed([2, 1, 28, 28], 14).values, t: [0, 0] } });
    // sin(1000 t f): a step of 1e-3 in t turns the phase by a radian; 3e-5 keeps the difference honest
    await checkJvp(model, feeds, { tangents: { x: zeros, t: [1, -1] }, h: 3e-5, tol: 2e-2 });
  });
});

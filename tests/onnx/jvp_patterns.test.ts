/**
 * Rules of onnx/jvp.ts beyond one operator at a time, against central finite differences:
 * - the nonlinear reductions (ReduceMax, ReduceMin, ReduceSumSquare, ReduceL2, ReduceLogSumExp) with axes as
 *   attribute (opset 17) and as input (opset 18), keepdims 0 and 1, all axes, two-way ties, and the
 *   written-out softmax that exporters and the analytic models' graphs use (ReduceMax, Sub, Exp, ReduceSum,
 *   Div);
 * - the patterns with a cheaper tangent: SiLU x·σ(x) (slope σ + y·(1 − σ)), InstanceNormalization with
 *   unit scale and zero bias (exporters' GroupNorm: its output is x̂ itself), and MatMul with tangents on
 *   both inputs and a small inner dimension (one product [dA, A]·[B; dB], e.g. attention scores), also
 *   inside a 28×28 U-Net;
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
    name: "MatMul with tangents on both inputs and a small inner dimension: one product [dA, A]·[B; dB]",
    feeds: { a: feed([2, 12, 2], 10, "float64"), b: feed([2, 2, 12], 11, "float64") },
    build: (g, a, ins) => g.op("MatMul", [a, ins.b]),
  },
];

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

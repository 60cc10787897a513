import { assert, assertEquals, assertThrows, describe, it } from "../testing.ts";
import {
  floatInitializers,
  GradError,
  gradModel,
  meanSquaredErrorLoss,
  SUPPORTED_OPERATORS,
  withLoss,
} from "../../onnx/grad.ts";
import { encodeModel, GraphBuilder, type ModelProto } from "../../onnx/proto.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { feed } from "./jvp_check.ts";
import { checkGrad } from "./grad_check.ts";
import { buildUNet, UNET } from "../../bench/unet_fixture.ts";
import { buildTrainableUNet } from "../../training/unet.ts";

/** y = tanh(x·W + b) with x an input [B, 3] and W [3, 2], b [2] initializers (and one unused). */
function affine(): ModelProto {
  const g = new GraphBuilder("affine");
  const x = g.input("x", "float64", ["B", 3]);
  const w = g.initializer("W", Float64Array.from([0.1, -0.2, 0.3, 0.4, -0.5, 0.6]), [3, 2]);
  const b = g.initializer("b", Float64Array.from([0.05, -0.05]), [2]);
  g.initializer("unused", Float64Array.from([1, 2]), [2]);
  const [y] = g.node("Tanh", [g.op("Add", [g.op("MatMul", [x, w]), b])], ["y"]);
  g.output(y, "float64", ["B", 2]);
  return g.model();
}

describe("onnx/grad: the training graph", () => {
  it("has the data inputs then the parameters as inputs, and outputs loss then grad.<param>", () => {
    const model = meanSquaredErrorLoss(affine(), "y");
    const t = gradModel(model, { params: ["W", "b"] });
    const graph = t.model.graph!;
    assertEquals(graph.input!.map((i) => i.name), ["x", "y_target", "W", "b"]);
    assertEquals(graph.output!.map((o) => o.name), ["loss", "grad.W", "grad.b"]);
    assertEquals(t.inputs, ["x", "y_target"]);
    assertEquals(t.params.map((p) => [p.name, p.grad, p.dtype, p.dims]), [
      ["W", "grad.W", "float64", [3, 2]],
      ["b", "grad.b", "float64", [2]],
    ]);
    assertEquals([...t.params[0].init!], [0.1, -0.2, 0.3, 0.4, -0.5, 0.6]);
    const inits = new Set(graph.initializer!.map((i) => i.name));
    assert(!inits.has("W") && !inits.has("b"), "parameters are not initializers");
  });

  it("computes the mean-squared-error gradient in closed form", async () => {
    const model = meanSquaredErrorLoss(affine(), "y");
    const t = gradModel(model, { params: ["W", "b"], keep: ["y"] });
    const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
    const x = Float64Array.from([1, 2, 3, -1, 0.5, 2]);
    const target = Float64Array.from([0.2, -0.1, 0.3, 0.4]);
    const out = await runSession(session, {
      x: { type: "float64", data: x, dims: [2, 3] },
      y_target: { type: "float64", data: target, dims: [2, 2] },
      W: { type: "float64", data: t.params[0].init as Float64Array, dims: [3, 2] },
      b: { type: "float64", data: t.params[1].init as Float64Array, dims: [2] },
    });
    const y = out.y.data as Float64Array;
    // loss = mean_b mean_j (y − t)²; dL/dpre = 2(y − t)(1 − y²)/(B·J)
    const dpre = Array.from(y, (v, i) => (2 * (v - target[i]) * (1 - v * v)) / 4);
    const gb = [dpre[0] + dpre[2], dpre[1] + dpre[3]];
    const gW = [0, 1, 2].flatMap((i) => [0, 1].map((j) => x[i] * dpre[j] + x[3 + i] * dpre[2 + j]));
    const loss = Array.from(y, (v, i) => (v - target[i]) ** 2).reduce((a, b) => a + b) / 4;
    assert(Math.abs(Number(out.loss.data[0]) - loss) < 1e-15);
    for (let i = 0; i < 6; i++) assert(Math.abs(Number(out["grad.W"].data[i]) - gW[i]) < 1e-15);
    for (let i = 0; i < 2; i++) assert(Math.abs(Number(out["grad.b"].data[i]) - gb[i]) < 1e-15);
  });

  it("weighted mean-squared error: mean over the batch of w_b · Σ (y − target)²", async () => {
    const model = meanSquaredErrorLoss(affine(), "y", { weight: "w", perSample: "sum", target: "tau" });
    const t = gradModel(model, { params: ["b"] });
    assertEquals(t.inputs, ["x", "tau", "w"]);
    const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
    const out = await runSession(session, {
      x: { type: "float64", data: new Float64Array(6), dims: [2, 3] },
      tau: { type: "float64", data: Float64Array.from([1, 0, 0, 1]), dims: [2, 2] },
      w: { type: "float64", data: Float64Array.from([2, 0.5]), dims: [2] },
      b: { type: "float64", data: new Float64Array(2), dims: [2] },
    });
    // y = tanh(0) = 0: per-sample sums are 1 and 1 → loss = (2·1 + 0.5·1)/2
    assertEquals(Number(out.loss.data[0]), 1.25);
    // dL/db_j = Σ_b w_b · 2(y − τ)_bj / B · (1 − y²)
    assertEquals([...out["grad.b"].data as Float64Array], [-2, -0.5]);
  });

  it("differentiates with respect to a graph input too (grad.x = dL/dpre · Wᵀ)", async () => {
    const model = withLoss(affine(), (g) => g.op("ReduceSum", ["y"], { keepdims: 0 }));
    const t = gradModel(model, { params: ["x", "W"] });
    assertEquals(t.inputs, []);
    assertEquals(t.model.graph!.input!.map((i) => i.name), ["x", "W"]);
    const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
    const x = Float64Array.from([1, 2, 3]), W = t.params[1].init as Float64Array;
    const out = await runSession(session, {
      x: { type: "float64", data: x, dims: [1, 3] },
      W: { type: "float64", data: W, dims: [3, 2] },
    });
    const pre = [0, 1].map((j) => x[0] * W[j] + x[1] * W[2 + j] + x[2] * W[4 + j] + [0.05, -0.05][j]);
    const dpre = pre.map((p) => 1 - Math.tanh(p) ** 2);
    const gx = [0, 1, 2].map((i) => dpre[0] * W[2 * i] + dpre[1] * W[2 * i + 1]);
    for (let i = 0; i < 3; i++) assert(Math.abs(Number(out["grad.x"].data[i]) - gx[i]) < 1e-15);
  });

  it("picks the floating-point initializers that reach the loss by default (not resize scales)", () => {
    const g = new GraphBuilder("resize");
    const x = g.input("x", "float32", [1, 1, 2, 2]);
    const w = g.initializer("w", Float32Array.from([2]), [1, 1, 1, 1]);
    g.initializer("dangling", Float32Array.from([2]), [1]);
    const up = g.op("Resize", [g.op("Conv", [x, w]), "", g.constant([1, 1, 2, 2], [4], "float32")], {
      mode: "nearest",
    });
    const [loss] = g.node("ReduceSum", [up], ["loss"], { keepdims: 0 });
    g.output(loss, "float32", []);
    const model = g.model();
    assertEquals(floatInitializers(model).sort(), ["const", "dangling", "w"]);
    assertEquals(gradModel(model).params.map((p) => p.name), ["w"]);
    assertEquals(gradModel(model, { params: (n) => n !== "w" }).params.map((p) => p.name), []);
  });

  it("gives zero gradients to parameters that do not reach the loss", async () => {
    const model = withLoss(affine(), (g) => g.op("ReduceSum", ["y"], { keepdims: 0 }));
    const t = gradModel(model, { params: ["W", "unused"] });
    const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
    const out = await runSession(session, {
      x: { type: "float64", data: new Float64Array(3), dims: [1, 3] },
      W: { type: "float64", data: new Float64Array(6), dims: [3, 2] },
      unused: { type: "float64", data: Float64Array.from([1, 2]), dims: [2] },
    });
    assertEquals([...out["grad.unused"].data as Float64Array], [0, 0]);
  });

  it("rejects a non-scalar loss and unknown parameters", () => {
    assertThrows(() => gradModel(affine(), { loss: "y", params: ["W"] }), GradError);
    const model = meanSquaredErrorLoss(affine(), "y");
    assertThrows(() => gradModel(model, { params: ["nope"] }), /neither a floating-point initializer/);
  });
});

describe("onnx/grad: unsupported operators are named, never silently wrong", () => {
  const withOp = (build: (g: GraphBuilder, x: string, w: string) => string) => {
    const g = new GraphBuilder("bad");
    const x = g.input("x", "float32", [1, 2, 4, 4]);
    const w = g.initializer("w", Float32Array.from({ length: 2 * 2 * 9 }, (_, i) => i / 10), [2, 2, 3, 3]);
    const [loss] = g.node("ReduceSum", [build(g, x, w)], ["loss"], { keepdims: 0 });
    g.output(loss, "float32", []);
    return g.model();
  };

  it("MaxPool and Einsum on a path from a parameter to the loss", () => {
    const model = withOp((g, x, w) => {
      const h = g.op("MaxPool", [g.op("Conv", [x, w], { pads: [1, 1, 1, 1] })], { kernel_shape: [2, 2] });
      return g.op("Einsum", [h, h], { equation: "nchw,nchw->nc" });
    });
    try {
      gradModel(model, { params: ["w"] });
      throw new Error("expected a GradError");
    } catch (err) {
      assert(err instanceof GradError, String(err));
      assertEquals(err.operators.sort(), ["Einsum", "MaxPool"]);
      assert(/MaxPool \(node '/.test(err.message), err.message);
    }
  });

  it("an unsupported use of a supported operator (Slice with step 2, linear Resize)", () => {
    for (
      const [op, build] of [
        ["Slice", (g: GraphBuilder, h: string) =>
          g.op("Slice", [
            h,
            g.constant([0], [1], "int64"),
            g.constant([4], [1], "int64"),
            g.constant([2], [1], "int64"),
            g.constant([2], [1], "int64"),
          ])],
        [
          "Resize",
          (g: GraphBuilder, h: string) =>
            g.op("Resize", [h, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "linear" }),
        ],
      ] as const
    ) {
      const model = withOp((g, x, w) => build(g, g.op("Conv", [x, w], { pads: [1, 1, 1, 1] })));
      try {
        gradModel(model, { params: ["w"] });
        throw new Error("expected a GradError");
      } catch (err) {
        assert(err instanceof GradError, String(err));
        assertEquals(err.operators, [op]);
      }
    }
  });

  it("unsupported operators off the path to the loss are fine", () => {
    const model = withOp((g, x, w) => {
      const side = g.op("MaxPool", [x], { kernel_shape: [2, 2] }); // data only
      g.output(side, "float32");
      return g.op("Conv", [x, w]);
    });
    const t = gradModel(model, { loss: "loss", params: ["w"] });
    assertEquals(t.model.graph!.output!.map((o) => o.name), ["loss", "grad.w"]);
  });

  it("lists the operators it supports", () => {
    for (
      const op of [
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Resize",
        "AveragePool",
        "Gather",
        "Softmax",
        "Where",
        "InstanceNormalization",
      ]
    ) assert(SUPPORTED_OPERATORS.includes(op), op);
  });
});

describe("onnx/grad on the U-Net-shaped ε-model", () => {
  it("matches finite differences for every weight (conv, GN, attention, embeddings, resize)", async () => {
    const model = buildUNet();
    const { batch: B, channels: C, size: S } = UNET;
    const params = floatInitializers(model).filter((n) => !n.startsWith("const"));
    assert(params.length > 30, `${params.length} parameters`);
    const r = await checkGrad(model, {
      x: feed([B, C, S, S], 1),
      t: { type: "float32", dims: [B], values: [0.3, 0.8] },
      class: { type: "int64", dims: [B], values: [1, 3] },
    }, { params, directions: 1, h: 3e-3, tol: 2e-2, atol: 2e-3 });
    const table = r.grads[params.find((p) => p.startsWith("class_table"))!];
    const E = table.length / UNET.classes;
    const rowNorm = (k: number) =>
      Array.from(table.slice(k * E, (k + 1) * E)).reduce((a, v) => a + Math.abs(v), 0);
    assert(rowNorm(0) === 0 && rowNorm(2) === 0, "unused classes get no gradient");
    assert(rowNorm(1) > 0 && rowNorm(3) > 0);
  });
});

describe("onnx/unet: the trainable ε-prediction U-Net", () => {
  it("has only differentiable operators and matches finite differences", async () => {
    const unet = buildTrainableUNet({
      size: 8,
      width: 8,
      mults: [1, 2],
      groups: 4,
      embed: 16,
      classes: 3,
      zeroOutput: false,
    });
    assert(
      unet.count > 5000 && unet.params.every((p) => /\.(w|b|scale|bias|table)$/.test(p)),
      unet.params.join(),
    );
    const some = unet.params.filter((_, i) => i % 5 === 0);
    await checkGrad(unet.model, {
      x: feed([2, 1, 8, 8], 3),
      t: { type: "float32", dims: [2], values: [0.2, 0.7] },
      class: { type: "int64", dims: [2], values: [2, 0] },
    }, { params: some, directions: 1, h: 3e-3, tol: 2e-2, atol: 2e-3 });
  });

  it("builds its 28×28 training graph with parameters as inputs", () => {
    const unet = buildTrainableUNet();
    const t = gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params });
    assertEquals(t.inputs, ["x", "t", "eps_target"]);
    assertEquals(t.params.length, unet.params.length);
    assert(!t.model.graph!.initializer!.some((i) => unet.params.includes(i.name!)));
  });
});

/**
 * The composite gradients of onnx/grad_composites.ts fire on the patterns the model builders write
 * (SiLU as x·Sigmoid(x), GroupNorm's standardisation, training/layers.ts) and give the backward pass fewer
 * elementwise nodes. Their values are checked against finite differences with every other rule in
 * grad_ops.test.ts, and here against the node-by-node gradient of the same graph (formulation 1).
 */
import { assert, assertEquals, describe, it, maxAbsDiff } from "../testing.ts";
import { encodeModel, GraphBuilder } from "../../onnx/proto.ts";
import { gradModel, meanSquaredErrorLoss } from "../../onnx/grad.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { Layers } from "../../training/layers.ts";

const ELEMENTWISE = new Set(["Add", "Sub", "Mul", "Div", "Neg", "Sum", "Sigmoid", "Expand"]);
const SHAPE = [2, 4, 3, 3];
type Body = (g: GraphBuilder, h: string) => string;

/** y = f(x·w) for a parameter w; the loss is the mean squared error to a target. */
function model(body: Body) {
  const g = new GraphBuilder("composite", { opset: 17 });
  const x = g.input("x", "float32", SHAPE);
  const w = g.initializer("w", Float32Array.from({ length: 36 }, (_, i) => 0.5 + Math.sin(i)), [4, 3, 3]);
  g.output(body(g, g.op("Mul", [x, w])), "float32", SHAPE);
  return meanSquaredErrorLoss(g.model(), g.model().graph!.output![0].name!, { target: "target" });
}

/** Elementwise nodes the backward pass of f adds, beyond those of the loss and of x·w. */
function backwardElementwise(body: Body, composites: boolean): number {
  const count = (m: ReturnType<typeof model>) => {
    const forward = m.graph!.node!.length;
    const training = gradModel(m, { params: ["w"], formulation: composites ? 2 : 1 }).model;
    return training.graph!.node!.slice(forward).filter((n) => ELEMENTWISE.has(n.opType!)).length;
  };
  return count(model(body)) - count(model((g, h) => g.op("Identity", [h])));
}

/** The gradient of w, computed by ORT. */
async function gradW(body: Body, composites: boolean): Promise<Float32Array> {
  const t = gradModel(model(body), { params: ["w"], formulation: composites ? 2 : 1 });
  const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
  const values = (f: (i: number) => number) => Float32Array.from({ length: 72 }, (_, i) => f(i));
  const out = await runSession(session, {
    x: { type: "float32", data: values((i) => Math.cos(0.7 * i)), dims: SHAPE },
    target: { type: "float32", data: values((i) => Math.sin(1.3 * i)), dims: SHAPE },
    w: { type: "float32", data: t.params[0].init as Float32Array, dims: [4, 3, 3] },
  });
  return out[t.params[0].grad].data as Float32Array;
}

async function assertSameGradient(body: Body): Promise<void> {
  const [a, b] = [await gradW(body, true), await gradW(body, false)];
  const scale = Math.max(...Array.from(b, Math.abs));
  assert(scale > 0 && maxAbsDiff(a, b) <= 1e-5 * scale, `max |Δ| ${maxAbsDiff(a, b)} at scale ${scale}`);
}

const silu: Body = (g, h) => new Layers(g, 1, 2).silu(h);
const groupNorm: Body = (g, h) => new Layers(g, 1, 2).groupNorm(h, 4, "gn");

describe("gradient formulations and composite gradients", () => {
  it("SiLU (training/layers.ts): 4 elementwise backward nodes instead of 6, the same gradient", async () => {
    assertEquals([backwardElementwise(silu, true), backwardElementwise(silu, false)], [4, 6]);
    await assertSameGradient(silu);
  });

  it("GroupNorm (training/layers.ts): its standardisation in 5 elementwise backward nodes, the same gradient", async () => {
    const [fused, apart] = [backwardElementwise(groupNorm, true), backwardElementwise(groupNorm, false)];
    // the standardisation's 5, plus dy·scale (the scale and bias are constants here)
    assertEquals(fused, 5 + 1);
    assert(apart >= fused + 4, `${apart} node by node against ${fused}`);
    await assertSameGradient(groupNorm);
  });

  it("a near miss (the square reads another value) is differentiated node by node", () => {
    const apart: Body = (g, h) => {
      const xc = g.op("Sub", [h, g.op("ReduceMean", [h], { axes: [1] })]);
      const variance = g.op("ReduceMean", [g.op("Mul", [xc, g.op("Identity", [xc])])], { axes: [1] });
      return g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [variance, g.constant(1e-5, [], "float32")])])]);
    };
    assertEquals(backwardElementwise(apart, true), backwardElementwise(apart, false));
  });

  it("formulations 1 and 2 give the same weight gradients: padded, strided, dilated, grouped and transposed convolutions", async () => {
    const conv: Body = (g, h) => {
      const w1 = g.initializer("w1", Float32Array.from({ length: 4 * 2 * 9 }, (_, i) => Math.sin(0.3 * i)), [
        4,
        2,
        3,
        3,
      ]);
      const a = g.op("Conv", [h, w1], { pads: [1, 1, 1, 1], group: 2 });
      const w2 = g.initializer("w2", Float32Array.from({ length: 4 * 4 * 4 }, (_, i) => Math.cos(0.2 * i)), [
        4,
        4,
        2,
        2,
      ]);
      const b = g.op("Conv", [a, w2], { pads: [1, 1, 1, 1], strides: [2, 1], dilations: [1, 2] });
      const w3 = g.initializer("w3", Float32Array.from({ length: 4 * 4 * 2 }, (_, i) => Math.sin(0.1 * i)), [
        4,
        4,
        2,
        1,
      ]);
      // [2, 4, 2, 3] back to [2, 4, 3, 3]
      return g.op("ConvTranspose", [b, w3], { strides: [2, 1], pads: [0, 0, 1, 0] });
    };
    const m = model(conv);
    const names = ["w", "w1", "w2", "w3"];
    const grads = async (formulation: 1 | 2) => {
      const t = gradModel(m, { params: names, formulation });
      const { session } = await createSession(encodeModel(t.model), { providers: ["cpu"], threads: 1 });
      const values = (f: (i: number) => number) => Float32Array.from({ length: 72 }, (_, i) => f(i));
      const feeds: Record<string, { type: "float32"; data: Float32Array; dims: number[] }> = {
        x: { type: "float32", data: values((i) => Math.cos(0.7 * i)), dims: SHAPE },
        target: { type: "float32", data: values((i) => Math.sin(1.3 * i)), dims: SHAPE },
      };
      for (const p of t.params) {
        feeds[p.name] = { type: "float32", data: p.init as Float32Array, dims: p.dims };
      }
      const out = await runSession(session, feeds);
      return t.params.map((p) => out[p.grad].data as Float32Array);
    };
    const [two, one] = [await grads(2), await grads(1)];
    assertEquals(two.length, 4);
    two.forEach((a, i) => {
      const scale = Math.max(...Array.from(one[i], Math.abs));
      assert(
        scale > 0 && maxAbsDiff(a, one[i]) <= 1e-5 * scale,
        `weight ${i}: max |Δ| ${maxAbsDiff(a, one[i])}`,
      );
    });
  });
});

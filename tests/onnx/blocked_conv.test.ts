/**
 * onnx/blocked_conv.ts: eligible convolutions move to ONNX Runtime's blocked kernels with the weight laid
 * out in the graph, ineligible ones stay, and the rewritten graph computes the same values — a forward
 * graph and a training graph whose input gradients are convolutions with weights known only at run time.
 */
import { assert, assertEquals, describe, it, maxAbsDiff } from "../testing.ts";
import { encodeModel, GraphBuilder, type IModelProto } from "../../onnx/proto.ts";
import { blockedConvolutions, NCHWC_DOMAIN, probeBlockSize } from "../../onnx/blocked_conv.ts";
import { gradModel, meanSquaredErrorLoss } from "../../onnx/grad.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";

const values = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(s * (i + 1)));

/** x [2, 16, 6, 6] → Conv 16→16 → Conv 16→32 (dilation 2) → grouped Conv → Conv 32→1. */
function net(): IModelProto {
  const g = new GraphBuilder("net", { opset: 17 });
  const x = g.input("x", "float32", [2, 16, 6, 6]);
  const w = (name: string, dims: number[], s: number) =>
    g.initializer(name, values(dims.reduce((a, b) => a * b), s), dims);
  const a = g.op("Conv", [x, w("w1", [16, 16, 3, 3], 0.1), w("b1", [16], 0.3)], { pads: [1, 1, 1, 1] });
  const b = g.op("Conv", [g.op("Sigmoid", [a]), w("w2", [32, 16, 3, 3], 0.2)], {
    pads: [2, 2, 2, 2],
    dilations: [2, 2],
  });
  const c = g.op("Conv", [b, w("w3", [32, 16, 1, 1], 0.05)], { group: 2 });
  const y = g.op("Conv", [c, w("w4", [1, 32, 3, 3], 0.07)], { pads: [1, 1, 1, 1] });
  g.output(y, "float32", [2, 1, 6, 6]);
  return g.model();
}

async function run(model: IModelProto, feeds: Record<string, TensorInit>, outputs?: string[]) {
  const { session } = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
  const out = await runSession(session, feeds, outputs);
  await session.release();
  return out;
}

function assertSame(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  const scale = Math.max(...Array.from(b, Math.abs));
  assert(
    scale > 0 && maxAbsDiff(a, b) <= 1e-5 * scale,
    `${what}: max |Δ| ${maxAbsDiff(a, b)} at scale ${scale}`,
  );
}

describe("blocked convolutions", () => {
  it("moves the 2-D, one-group convolutions whose channels fill whole blocks, and no other", () => {
    const { model, converted } = blockedConvolutions(net(), 16);
    // w1 (16→16) and w2 (16→32); the grouped one and the one with a single output channel stay
    assertEquals(converted, 2);
    const nodes = model.graph!.node!;
    assertEquals(nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === "Conv").length, 2);
    assertEquals(nodes.filter((n) => !n.domain && n.opType === "Conv").length, 2);
    assertEquals(model.opsetImport!.some((o) => o.domain === NCHWC_DOMAIN), true);
    assertEquals(blockedConvolutions(net(), 32).converted, 0);
  });

  it("computes the same values, forward and gradients, on this CPU's block size", async () => {
    const block = await probeBlockSize();
    assert(block === undefined || block === 8 || block === 16, `block ${block}`);
    if (block === undefined) return; // this CPU has no blocked kernels: formulation 3 runs as 2
    const x = { type: "float32" as const, data: values(2 * 16 * 36, 0.37), dims: [2, 16, 6, 6] };
    const plain = net(), blocked = blockedConvolutions(plain, block).model;
    const y = Object.keys(await run(plain, { x }))[0];
    assertSame(
      (await run(blocked, { x }))[y].data as Float32Array,
      (await run(plain, { x }))[y].data as Float32Array,
      "y",
    );

    // the training graph: forward w1, w2 and w2's input gradient, a convolution with the flipped weight
    // (its kernel shape known only at run time)
    const t = gradModel(meanSquaredErrorLoss(plain, y, { target: "target" }), {
      params: ["w1", "w2", "w3", "w4"],
    });
    const { model: tb, converted } = blockedConvolutions(t.model, block);
    assert(converted >= 3, `${converted} convolutions moved in the training graph`);
    const feeds: Record<string, TensorInit> = {
      x,
      target: { type: "float32", data: values(72, 0.9), dims: [2, 1, 6, 6] },
    };
    for (const p of t.params) feeds[p.name] = { type: "float32", data: p.init as Float32Array, dims: p.dims };
    const grads = t.params.map((p) => p.grad);
    const [want, got] = [await run(t.model, feeds, grads), await run(tb, feeds, grads)];
    for (const g of grads) assertSame(got[g].data as Float32Array, want[g].data as Float32Array, g);
  });
});

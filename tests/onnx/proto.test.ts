import { assert, assertEquals, assertThrows, describe, it } from "../testing.ts";
import {
  attributeValue,
  decodeModel,
  encodeModel,
  float,
  fromFloat16Bits,
  getAttribute,
  GraphBuilder,
  modelOpset,
  tensorDims,
  tensorValues,
  toFloat16Bits,
  valueInfoType,
} from "../../onnx/proto.ts";
import { createSession, runSession } from "../../onnx/ort.ts";

describe("onnx/proto", () => {
  it("builds y = sigmoid(x·W + b) that ORT runs, matching a hand computation", async () => {
    const g = new GraphBuilder("affine_sigmoid");
    const x = g.input("x", "float32", ["B", 3]);
    const W = Float32Array.from([0.5, -1, 0.25, 2, -0.75, 0.1]); // [3, 2]
    const b = Float32Array.from([0.3, -0.2]);
    const w = g.initializer("W", W, [3, 2]);
    const bias = g.initializer("b", b, [2]);
    const [h] = g.node("MatMul", [x, w]);
    const z = g.op("Add", [h, bias]);
    g.node("Sigmoid", [z], ["y"]);
    g.output("y", "float32", ["B", 2]);
    const bytes = encodeModel(g.model());

    const { session, provider } = await createSession(bytes, { providers: ["cpu"], threads: 1 });
    assertEquals(provider, "cpu");
    const xs = Float32Array.from([1, 2, 3, -1, 0.5, 0]);
    const out = await runSession(session, { x: { type: "float32", data: xs, dims: [2, 3] } });
    assertEquals(out.y.dims, [2, 2]);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 2; j++) {
        let s = b[j];
        for (let k = 0; k < 3; k++) s += xs[i * 3 + k] * W[k * 2 + j];
        const want = 1 / (1 + Math.exp(-s));
        assert(Math.abs((out.y.data[i * 2 + j] as number) - want) < 1e-6, `y[${i},${j}]`);
      }
    }
  });

  it("falls back from CUDA to CPU and reports the provider used", async () => {
    const g = new GraphBuilder("id");
    g.input("x", "float32", [2]);
    g.node("Identity", ["x"], ["y"]);
    g.output("y", "float32", [2]);
    const { provider, skipped } = await createSession(g.bytes());
    assert(provider === "cuda" || (provider === "cpu" && typeof skipped.cuda === "string"));
  });

  it("round-trips models, attributes, constants and opsets", () => {
    const g = new GraphBuilder("rt", { opset: 13, irVersion: 8 });
    const x = g.input("x", "float64", ["N", 4]);
    const c1 = g.constant([1, 2, 3], [3], "int64");
    const c2 = g.constant(0.5, [], "float64");
    const c3 = g.constant(new BigInt64Array([7n]), [1]);
    const c4 = g.constant([1.5], [1], "float16");
    const y = g.op("LeakyRelu", [x], { alpha: 1 });
    const z = g.op("Mul", [y, c2]);
    const [a, b] = g.node("Split", [z], 2, { axis: 1, mode: "x", scales: float([1, 2]) });
    g.output(a, "float64", ["N", 2]);
    g.output(b, "float64");
    const m = decodeModel(encodeModel(g.model()));
    assertEquals(modelOpset(m), 13);
    assertEquals(Number(m.irVersion), 8);
    const inits = Object.fromEntries(m.graph!.initializer!.map((t) => [t.name, t]));
    assertEquals(tensorValues(inits[c1]), [1, 2, 3]);
    assertEquals(tensorDims(inits[c2]), []);
    assertEquals(tensorValues(inits[c2]), [0.5]);
    assertEquals(tensorValues(inits[c3]), [7]);
    assertEquals(tensorValues(inits[c4]), [1.5]);
    const [leaky, , split] = m.graph!.node!;
    assertEquals(getAttribute(leaky, "alpha"), 1); // float by name although whole
    assertEquals(leaky.attribute![0].type, 1);
    assertEquals(getAttribute(split, "axis"), 1);
    assertEquals(getAttribute(split, "mode"), "x");
    assertEquals(attributeValue(split.attribute![2]), [1, 2]);
    assertEquals(valueInfoType(m.graph!.input![0]), { elemType: 11, shape: ["N", 4] });
    assertEquals(valueInfoType(m.graph!.output![1]), { elemType: 11 });
    assertEquals(new Set(m.graph!.node!.map((n) => n.name)).size, 3);
    assertThrows(() => g.input("x", "float32", [1]), /already used/);
  });

  it("converts float16 bits both ways", () => {
    for (const v of [0, 1, -2, 0.5, 65504, 1e-5, -0.333251953125]) {
      const back = fromFloat16Bits(toFloat16Bits(v));
      assert(Math.abs(back - v) <= Math.abs(v) * 1e-3 + 1e-7, `${v} → ${back}`);
    }
    assertEquals(fromFloat16Bits(toFloat16Bits(Infinity)), Infinity);
  });
});

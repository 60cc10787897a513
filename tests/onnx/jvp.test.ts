import { assert, assertEquals, assertThrows, describe, it } from "../testing.ts";
import {
  jvpBytes,
  JvpError,
  jvpModel,
  NON_DIFFERENTIABLE_OPERATORS,
  SUPPORTED_OPERATORS,
} from "../../onnx/jvp.ts";
import { decodeModel, encodeModel, GraphBuilder } from "../../onnx/proto.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { checkJvp, type Feed, feed } from "./jvp_check.ts";
import { buildUNet, UNET } from "../../bench/unet_fixture.ts";

const { batch: B, channels: C, size: S } = UNET;
const unetFeeds = (): Record<string, Feed> => ({
  x: feed([B, C, S, S], 1),
  t: { type: "float32", dims: [B], values: [0.3, 0.8] },
  class: { type: "int64", dims: [B], values: [1, 3] },
});

describe("onnx/jvp on a U-Net-shaped ε-model", () => {
  const model = buildUNet();

  it("has inputs (x, t, class, dx, dt), outputs (eps, jvp) and shares the weights", () => {
    const jvp = jvpModel(model);
    assertEquals(jvp.graph!.input!.map((i) => i.name), ["x", "t", "class", "dx", "dt"]);
    assertEquals(jvp.graph!.output!.map((o) => o.name), ["eps", "jvp"]);
    const before = model.graph!.initializer!.map((t) => t.name);
    const after = new Set(jvp.graph!.initializer!.map((t) => t.name));
    assert(before.every((n) => after.has(n)));
    const weightBytes = (m: typeof model) =>
      m.graph!.initializer!.reduce((s, t) => s + (t.rawData?.length ?? 0), 0);
    assert(weightBytes(jvp) - weightBytes(model) < 256, "only small constants are added");
  });

  it("matches finite differences along (dx, dt), along dt alone and along dx alone", async () => {
    const feeds = unetFeeds();
    const n = B * C * S * S;
    const dx = feed([B, C, S, S], 77).values;
    const dt = [1, -0.5];
    const both = await checkJvp(model, feeds, { tangents: { x: dx, t: dt } });
    const onlyT = await checkJvp(model, feeds, { tangents: { x: new Array(n).fill(0), t: dt } });
    const onlyX = await checkJvp(model, feeds, { tangents: { x: dx, t: [0, 0] } });
    for (const r of [both, onlyT, onlyX]) assert(r.outputs.eps.scale > 1e-2, "a non-trivial derivative");
    // linearity in the tangent: jvp(dx, dt) = jvp(dx, 0) + jvp(0, dt)
    const [a, b, c] = [both, onlyX, onlyT].map((r) => r.jvp.eps);
    for (let i = 0; i < n; i++) {
      assert(Math.abs(a[i] - b[i] - c[i]) < 1e-4 * (1 + Math.abs(a[i])), `jvp[${i}]`);
    }
  });

  it("computes the same eps as the original graph", async () => {
    const feeds = unetFeeds();
    const ins = {
      x: { type: "float32" as const, data: Float32Array.from(feeds.x.values), dims: feeds.x.dims },
      t: { type: "float32" as const, data: Float32Array.from(feeds.t.values), dims: [B] },
      class: { type: "int64" as const, data: BigInt64Array.from([1n, 3n]), dims: [B] },
    };
    const plain = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
    const withJvp = await createSession(jvpBytes(encodeModel(model)), { providers: ["cpu"], threads: 1 });
    const a = (await runSession(plain.session, ins)).eps.data as Float32Array;
    const out = await runSession(withJvp.session, {
      ...ins,
      dx: { type: "float32", data: new Float32Array(a.length), dims: feeds.x.dims },
      dt: { type: "float32", data: new Float32Array(B), dims: [B] },
    });
    const b = out.eps.data as Float32Array;
    for (let i = 0; i < a.length; i++) assert(Math.abs(a[i] - b[i]) < 1e-5);
    assert((out.jvp.data as Float32Array).every((v) => v === 0), "zero tangent, zero jvp");
  });

  it("differentiates with respect to a chosen subset and names tangents as asked", () => {
    const jvp = jvpModel(model, { wrt: ["x"], tangentInputs: { x: "u" }, tangentOutputs: { eps: "deps" } });
    assertEquals(jvp.graph!.input!.map((i) => i.name), ["x", "t", "class", "u"]);
    assertEquals(jvp.graph!.output!.map((o) => o.name), ["eps", "deps"]);
    assertThrows(() => jvpModel(model, { wrt: ["class"] }), /not floating-point/);
    assertThrows(() => jvpModel(model, { wrt: ["nope"] }), /not an input/);
  });
});

describe("onnx/jvp errors and graph hygiene", () => {
  const graphWith = (build: (g: GraphBuilder, x: string) => string, opset = 17) => {
    const g = new GraphBuilder("g", { opset, domains: { "com.microsoft": 1 } });
    const x = g.input("x", "float32", [2, 3]);
    g.output(build(g, x), "float32");
    return g.model();
  };

  it("names an unsupported operator on the differentiated path", () => {
    const m = graphWith((g, x) =>
      g.op("Relu", [g.op("Acos", [g.op("Mul", [x, g.constant(0.5, [], "float32")])])])
    );
    const e = assertThrowsJvp(() => jvpModel(m));
    assertEquals(e.operators, ["Acos"]);
    assert(e.message.includes("Acos"));
  });

  it("names every unsupported operator, custom domains included", () => {
    const m = graphWith((g, x) => {
      const a =
        g.node("BiasGelu", [x, g.constant([0, 0, 0], [3], "float32")], 1, {}, { domain: "com.microsoft" })[0];
      return g.op("Add", [a, g.op("Asin", [x])]);
    });
    const e = assertThrowsJvp(() => jvpModel(m));
    assertEquals(e.operators.sort(), ["Asin", "com.microsoft::BiasGelu"]);
  });

  it("names a supported operator used in a way it cannot differentiate", () => {
    const m = graphWith((g, x) => g.op("Clip", [x, g.op("ReduceMean", [x], { keepdims: 0, axes: [0, 1] })]));
    assertEquals(assertThrowsJvp(() => jvpModel(m)).operators, ["Clip"]);
    const ln = graphWith((g, x) => {
      const [y, mean] = g.node("LayerNormalization", [x, g.constant([1, 1, 1], [3], "float32")], 2);
      return g.op("Add", [y, mean]);
    });
    const e = assertThrowsJvp(() => jvpModel(ln));
    assertEquals(e.operators, ["LayerNormalization"]);
    assert(e.message.includes("Mean"));
  });

  it("names a control-flow operator whose subgraph captures a differentiated value", () => {
    const branch = (op: string) => {
      const b = new GraphBuilder(`${op}_branch`);
      b.node(op, ["x"], [`${op}_out`]);
      b.output(`${op}_out`, "float32");
      return b.graph();
    };
    const m = graphWith((g) => {
      const cond = g.constant([1], [], "bool");
      return g.op("If", [cond], { then_branch: branch("Sin"), else_branch: branch("Cos") });
    });
    const e = assertThrowsJvp(() => jvpModel(m));
    assertEquals(e.operators, ["If"]);
    assert(e.message.includes("subgraph"));
  });

  it("accepts unsupported operators off the differentiated path", async () => {
    const m = graphWith((g, x) =>
      g.op("Mul", [x, g.op("Acos", [g.constant([0.1, 0.2, 0.3], [3], "float32")])])
    );
    await checkJvp(m, { x: feed([2, 3], 5) });
  });

  it("gives a zero jvp for an output that does not depend on the inputs", async () => {
    const g = new GraphBuilder("g");
    const x = g.input("x", "float32", [2, 3]);
    g.output(g.op("Sigmoid", [x]), "float32");
    g.output(g.op("Shape", [x]), "int64");
    g.output(g.op("Cos", [g.constant([1, 2], [2], "float32")]), "float32");
    const jvp = jvpModel(g.model());
    assertEquals(jvp.graph!.output!.map((o) => o.name), [
      "sigmoid",
      "shape",
      "cos",
      "sigmoid_jvp",
      "cos_jvp",
    ]);
    const { session } = await createSession(encodeModel(jvp), { providers: ["cpu"] });
    const out = await runSession(session, {
      x: { type: "float32", data: new Float32Array(6), dims: [2, 3] },
      dx: { type: "float32", data: new Float32Array(6).fill(1), dims: [2, 3] },
    });
    assertEquals([...out.sigmoid_jvp.data as Float32Array], new Array(6).fill(0.25));
    assertEquals([...out.cos_jvp.data as Float32Array], [0, 0]);
  });

  it("expands a tangent only where broadcasting would change its shape", () => {
    const count = (m: ReturnType<typeof jvpModel>, op: string) =>
      m.graph!.node!.filter((n) => n.opType === op).length;
    const bias = graphWith((g, x) => g.op("Add", [x, g.constant([1, 2, 3], [3], "float32")]));
    assertEquals(count(jvpModel(bias), "Expand"), 0);
    const widen = graphWith((g, x) =>
      g.op("Add", [x, g.constant(new Array(12).fill(1), [2, 2, 3], "float32")])
    );
    assertEquals(count(jvpModel(widen), "Expand"), 1);
  });

  it("keeps no tangent nodes that no output needs", () => {
    const m = graphWith((g, x) => {
      g.op("Exp", [g.op("Sin", [x])]); // dead branch
      return g.op("Tanh", [x]);
    });
    const jvp = jvpModel(m);
    assertEquals(jvp.graph!.node!.filter((n) => n.name!.startsWith("jvp/")).map((n) => n.opType).sort(), [
      "Identity",
      "Mul",
      "Mul",
      "Sub",
    ]);
  });

  it("round-trips through bytes and lists its operators", () => {
    const bytes = jvpBytes(encodeModel(graphWith((g, x) => g.op("Tanh", [x]))));
    assertEquals(decodeModel(bytes).graph!.output!.length, 2);
    for (const op of ["Conv", "GroupNormalization", "Softmax", "Resize", "Einsum", "MaxPool"]) {
      assert(SUPPORTED_OPERATORS.includes(op), op);
    }
    assert(NON_DIFFERENTIABLE_OPERATORS.includes("Shape"));
  });
});

function assertThrowsJvp(f: () => unknown): JvpError {
  try {
    f();
  } catch (e) {
    if (e instanceof JvpError) return e;
    throw e;
  }
  throw new Error("expected a JvpError");
}

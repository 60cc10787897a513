/**
 * onnx/ode_jvp.ts: the JVP graph that also makes its tangent of x from its own output. On a U-Net-shaped
 * ε-model (bench/unet_fixture.ts): one call with dx = 0 and coefficients (a, b) gives what the JVP graph
 * gives along dx = a ε + b x after a separate ε call, rows with a given tangent (a = b = 0) are unchanged,
 * and graphs that are not JVP graphs are refused with the reason. The comparison with closed-form
 * derivatives of the analytic models is in tests/gpu-worker/jvp_graphs.test.ts.
 */
import { assert, assertEquals, assertThrows, describe, it } from "../testing.ts";
import { jvpModel } from "../../onnx/jvp.ts";
import { ODE_TANGENT_INPUTS, OdeJvpError, odeJvpModel } from "../../onnx/ode_jvp.ts";
import { encodeModel, GraphBuilder } from "../../onnx/proto.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { buildUNet, UNET } from "../../bench/unet_fixture.ts";

const { channels: C, size: S } = UNET;
const B = 3, D = C * S * S;
const NAMES = { x: "x", out: "eps", dx: "dx" };

const f32 = (data: Float32Array, dims: number[]): TensorInit => ({ type: "float32", data, dims });

describe("onnx/ode_jvp on a U-Net-shaped ε-model", () => {
  const jvp = jvpModel(buildUNet());

  it("adds the coefficient inputs and keeps the outputs", () => {
    const ode = odeJvpModel(jvp, NAMES);
    assertEquals(ode.graph!.input!.map((i) => i.name), [
      ...jvp.graph!.input!.map((i) => i.name),
      ODE_TANGENT_INPUTS.out,
      ODE_TANGENT_INPUTS.x,
    ]);
    assertEquals(ode.graph!.output!.map((o) => o.name), ["eps", "jvp"]);
  });

  it("one call equals an ε call then the JVP along dx = a ε + b x; a given tangent still works", async () => {
    const open = async (bytes: Uint8Array) =>
      (await createSession(bytes, { providers: ["cpu"], threads: 1 })).session;
    const plain = await open(encodeModel(jvp));
    const ode = await open(encodeModel(odeJvpModel(jvp, NAMES)));
    try {
      const x = Float32Array.from({ length: B * D }, (_, i) => Math.sin(0.37 * i));
      const base = {
        x: f32(x, [B, C, S, S]),
        t: f32(Float32Array.of(0.2, 0.5, 0.9), [B]),
        class: { type: "int64" as const, data: BigInt64Array.of(1n, 3n, 0n), dims: [B] },
      };
      const dt = f32(Float32Array.of(0.3, -0.7, 1.1), [B]);
      const a = Float32Array.of(0.9, 0.4, -1.3), b = Float32Array.of(-0.2, 0.6, 0.05);
      // the separate calls: ε at dx = 0, then the JVP along the tangent made from it
      const first = await runSession(plain, { ...base, dx: f32(new Float32Array(B * D), [B, C, S, S]), dt });
      const eps = first.eps.data as Float32Array;
      const dx = Float32Array.from(eps, (e, i) => a[Math.floor(i / D)] * e + b[Math.floor(i / D)] * x[i]);
      const ref = await runSession(plain, { ...base, dx: f32(dx, [B, C, S, S]), dt });
      const fused = await runSession(ode, {
        ...base,
        dx: f32(new Float32Array(B * D), [B, C, S, S]),
        dt,
        [ODE_TANGENT_INPUTS.out]: f32(a, [B]),
        [ODE_TANGENT_INPUTS.x]: f32(b, [B]),
      });
      assertEquals(Array.from(fused.eps.data as Float32Array), Array.from(eps));
      const want = ref.jvp.data as Float32Array, got = fused.jvp.data as Float32Array;
      const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert(scale > 0.1, "the JVP is not trivially zero");
      const err = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
      assert(err <= 1e-5 * scale, `max error ${err} of ${scale}`);

      // a given tangent with zero coefficients: the plain JVP graph's answer
      const given = Float32Array.from({ length: B * D }, (_, i) => Math.cos(0.91 * i));
      const plainGiven = await runSession(plain, { ...base, dx: f32(given, [B, C, S, S]), dt });
      const odeGiven = await runSession(ode, {
        ...base,
        dx: f32(given, [B, C, S, S]),
        dt,
        [ODE_TANGENT_INPUTS.out]: f32(new Float32Array(B), [B]),
        [ODE_TANGENT_INPUTS.x]: f32(new Float32Array(B), [B]),
      });
      assertEquals(
        Array.from(odeGiven.jvp.data as Float32Array),
        Array.from(plainGiven.jvp.data as Float32Array),
      );
    } finally {
      await plain.release();
      await ode.release();
    }
  });
});

describe("onnx/ode_jvp refuses what it cannot transform", () => {
  /** x → y = x + dx (an output that reads the tangent input: not a JVP graph). */
  const notJvp = () => {
    const g = new GraphBuilder("not-jvp");
    const x = g.input("x", "float32", ["B", 2]);
    const dx = g.input("dx", "float32", ["B", 2]);
    g.output(g.node("Add", [x, dx], ["eps"])[0], "float32", ["B", 2]);
    g.output(g.node("Identity", [dx], ["jvp"])[0], "float32", ["B", 2]);
    return g.model();
  };

  it("an output that depends on dx", () => {
    assertThrows(() => odeJvpModel(notJvp(), NAMES), OdeJvpError, "depends on the tangent input");
  });

  it("missing inputs and outputs, named", () => {
    assertThrows(() => odeJvpModel(notJvp(), { ...NAMES, dx: "dz" }), OdeJvpError, "'dz'");
    assertThrows(() => odeJvpModel(notJvp(), { ...NAMES, x: "sample" }), OdeJvpError, "'sample'");
    assertThrows(() => odeJvpModel(notJvp(), { ...NAMES, out: "out" }), OdeJvpError, "'out'");
  });
});

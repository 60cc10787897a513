import { assert, assertEquals, assertThrows, describe, it } from "../testing.ts";
import { exposeTensors, tensorNames } from "../../onnx/features.ts";
import { jvpModel } from "../../onnx/jvp.ts";
import { encodeModel, valueInfoType } from "../../onnx/proto.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { feed } from "./jvp_check.ts";
import { buildUNet, UNET } from "../../bench/unet_fixture.ts";

const { batch: B, channels: C, size: S, width, embed } = UNET;
const inputs = (): Record<string, TensorInit> => ({
  x: { type: "float32", data: Float32Array.from(feed([B, C, S, S], 9).values), dims: [B, C, S, S] },
  t: { type: "float32", data: Float32Array.from([0.2, 0.9]), dims: [B] },
  class: { type: "int64", data: BigInt64Array.from([0n, 2n]), dims: [B] },
});

describe("onnx/features", () => {
  const model = buildUNet();

  it("adds the named tensors as typed outputs after the original ones", async () => {
    const m = exposeTensors(model, ["features", "temb", "eps"]);
    const outs = m.graph!.output!;
    assertEquals(outs.map((o) => o.name), ["eps", "features", "temb"]);
    assertEquals(valueInfoType(outs[1]).elemType, 1);
    const { session } = await createSession(encodeModel(m), { providers: ["cpu"], threads: 1 });
    const r = await runSession(session, inputs());
    assertEquals(r.features.dims, [B, width, S, S]);
    assertEquals(r.temb.dims, [B, embed]);
    const plain = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
    const eps = (await runSession(plain.session, inputs())).eps.data as Float32Array;
    assertEquals([...(r.eps.data as Float32Array)], [...eps]);
  });

  it("renames through aliases and composes with the JVP transform", async () => {
    const m = jvpModel(exposeTensors(model, ["features"], { aliases: { features: "h" } }), {
      outputs: ["eps"],
    });
    assertEquals(m.graph!.output!.map((o) => o.name), ["eps", "h", "jvp"]);
    const { session } = await createSession(encodeModel(m), { providers: ["cpu"], threads: 1 });
    const r = await runSession(session, {
      ...inputs(),
      dx: { type: "float32", data: new Float32Array(B * C * S * S).fill(0.1), dims: [B, C, S, S] },
      dt: { type: "float32", data: Float32Array.from([1, 1]), dims: [B] },
    });
    assertEquals(r.h.dims, [B, width, S, S]);
    assert((r.jvp.data as Float32Array).some((v) => v !== 0));
  });

  it("rejects unknown tensor names, naming them", () => {
    assertThrows(() => exposeTensors(model, ["features", "nope"]), /'nope'/);
    assert(tensorNames(model).includes("temb"));
  });
});

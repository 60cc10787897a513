/**
 * Distillation targets (training/targets.ts) on the shipped mnist-unet: τ equals the JVP graph of
 * eps.onnx along the ODE tangent built independently (core/solvers/genie.ts odeTangent, from x̄), and a
 * central finite difference of eps.onnx along that tangent to float32 tolerance.
 */
import { assert, describe, it } from "../testing.ts";
import { rngStream } from "../../core/rng.ts";
import { odeTangent } from "../../core/solvers/genie.ts";
import { jvpBytes } from "../../onnx/jvp.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { loadDigits, PIXELS } from "../../training/common.ts";
import { drawNoisy, headData, loadScoreGraphs, schedule } from "../../training/targets.ts";

const DIR = Deno.env.get("GENIE_TEST_UNET") ?? new URL("../../models/mnist-unet", import.meta.url).pathname;
const TS = [0.02, 0.3, 0.85];

function relErr(a: ArrayLike<number>, b: ArrayLike<number>, from: number, to: number): number {
  let num = 0, den = 0;
  for (let i = from; i < to; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

describe("head distillation targets", () => {
  it("τ = the JVP graph along (v, dt/dγ) with the network's own ε̂, and = a central difference of eps.onnx", async () => {
    const digits = await loadDigits();
    const graphs = await loadScoreGraphs(`${DIR}/eps.onnx`);
    const B = TS.length;
    const { x, t, cls } = drawNoisy(digits, B, rngStream(11, 2), 0.1, undefined, TS);
    const d = await headData(graphs, x, t, cls);
    const epsBytes = await Deno.readFile(`${DIR}/eps.onnx`);
    const jvp = (await createSession(jvpBytes(epsBytes), { providers: ["cpu"], threads: 1 })).session;
    const eps = (await createSession(epsBytes, { providers: ["cpu"], threads: 1 })).session;
    for (let b = 0; b < B; b++) {
      const row = (v: Float32Array) => v.slice(b * PIXELS, (b + 1) * PIXELS);
      const xb = row(x), tb = t[b], alpha = schedule.alpha(tb);
      const base = {
        t: { type: "float32" as const, data: Float32Array.of(tb), dims: [1] },
        class: { type: "int64" as const, data: BigInt64Array.of(cls[b]), dims: [1] },
      };
      const e = (await runSession(eps, { ...base, x: { type: "float32", data: xb, dims: [1, 1, 28, 28] } }))
        .eps.data as Float32Array;
      // the network's own ε̂ (never the training noise)
      assert(relErr(e, row(d.eps), 0, PIXELS) === 0, "ε̂ of the features graph differs from eps.onnx");
      const xbar = Float64Array.from(xb, (v) => v / alpha);
      const tangent = odeTangent(schedule, xbar, e, tb, 1);
      const ref = (await runSession(jvp, {
        ...base,
        x: { type: "float32", data: xb, dims: [1, 1, 28, 28] },
        dx: { type: "float32", data: Float32Array.from(tangent.x), dims: [1, 1, 28, 28] },
        dt: { type: "float32", data: Float32Array.from(tangent.t), dims: [1] },
      })).jvp.data as Float32Array;
      const jvpErr = relErr(row(d.target), ref, 0, PIXELS);
      assert(jvpErr < 1e-5, `t=${tb}: target vs JVP graph relative error ${jvpErr}`);
      // central difference along the tangent: ε(x ± δv, t ± δ dt/dγ), δ a small fraction of γ. At large γ, τ
      // is a small residual of terms many times its size, so float32 rounding of ε over 2δ sets the floor
      // there: δ = γ/100 keeps it below the tolerance while the O((δ/γ)²) truncation stays near 1e−4.
      const delta = 1e-2 * schedule.gamma(tb);
      const at = async (s: number) =>
        (await runSession(eps, {
          class: base.class,
          x: {
            type: "float32",
            data: Float32Array.from(xb, (v, i) => v + s * delta * tangent.x[i]),
            dims: [1, 1, 28, 28],
          },
          t: { type: "float32", data: Float32Array.of(tb + s * delta * tangent.t[0]), dims: [1] },
        })).eps.data as Float32Array;
      const [ep, em] = [await at(1), await at(-1)];
      const fd = Float64Array.from(ep, (v, i) => (v - em[i]) / (2 * delta));
      const fdErr = relErr(row(d.target), fd, 0, PIXELS);
      assert(fdErr < 2e-2, `t=${tb}: target vs central difference relative error ${fdErr}`);
    }
  });
});

/**
 * The ONNX graphs of the analytic models equal core's exact mixture (gmmEvaluator) to float32
 * precision: ε, the closed-form head (total derivative dε/dγ) and the JVP along an (x, t) tangent, at
 * per-sample times from t_min to 1 and per-sample classes including the null class.
 */
import { gmmEvaluator } from "../../core/gmm.ts";
import { rngStream } from "../../core/rng.ts";
import { createSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { mixtureFromSource } from "../../gpu-worker/analytic.ts";
import { JVP_INPUTS, mixtureGraph } from "../../gpu-worker/graphs.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { readFileSync } from "node:fs";
import { assert, assertEquals } from "../testing.ts";

/** |onnx − ref| ≤ 2⁻²² |ref| + 1e-7 max|ref| elementwise (float32 rounding of a float64 result). */
function assertFloat32Close(what: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  assertEquals(got.length, ref.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]));
  let worst = 0, at = -1;
  for (let i = 0; i < ref.length; i++) {
    const tol = 2 ** -22 * Math.abs(ref[i]) + 1e-7 * scale;
    const excess = Math.abs(got[i] - ref[i]) / tol;
    if (excess > worst) [worst, at] = [excess, i];
  }
  assert(
    worst <= 1,
    `${what}: element ${at} is ${got[at]}, exact ${ref[at]} (${worst.toFixed(1)}× the tolerance)`,
  );
}

for (const name of ["gmm2d", "mnist-mix"]) {
  Deno.test(`${name}: ONNX eps, head and jvp graphs equal gmmEvaluator to float32 precision`, async () => {
    const registry = await loadRegistry(defaultModelsDir(), { only: [name] });
    const info = registry.models.get(name)!;
    assert(info, `model ${name} loads: ${JSON.stringify(registry.errors)}`);
    const mix = { ...(await mixtureFromSource(info.manifest.analytic!)), schedule: info.schedule };
    const ev = gmmEvaluator(mix);
    const d = info.dim, B = 12, C = mix.classes!;
    const rng = rngStream(7);
    const x = new Float32Array(B * d), t = new Float32Array(B), cls = new BigInt64Array(B);
    const tx = new Float32Array(B * d), tt = new Float32Array(B);
    for (let b = 0; b < B; b++) {
      t[b] = b === 0 ? 1e-3 : b === 1 ? 1 : Math.fround(1e-3 + 0.999 * rng.uniform() ** 2);
      cls[b] = BigInt(b % (C + 1));
      tt[b] = rng.normal();
      // Near the data (a noisy component mean) so that the responsibilities are far from uniform.
      const k = Math.floor(rng.uniform() * mix.count) % mix.count;
      const a = info.schedule.alpha(t[b]), s = info.schedule.sigma(t[b]);
      for (let i = 0; i < d; i++) {
        x[b * d + i] = a * mix.means[k * d + i] + s * rng.normal();
        tx[b * d + i] = rng.normal();
      }
    }
    const shape = [B, ...info.manifest.shape];
    const feeds: Record<string, TensorInit> = {
      x: { type: "float32", data: x, dims: shape },
      t: { type: "float32", data: t, dims: [B] },
      class: { type: "int64", data: cls, dims: [B] },
    };
    const req = {
      x: Float64Array.from(x),
      t: Float64Array.from(t),
      classes: Int32Array.from(cls, Number),
      want: "eps+deriv" as const,
      step: 0,
      steps: 1,
    };
    const exact = ev(req);
    const jvpExact = ev({ ...req, tangent: { x: Float64Array.from(tx), t: Float64Array.from(tt) } });
    const session = async (kind: "eps" | "head" | "jvp") =>
      (await createSession(readFileSync(info.graphPaths[kind]!), { providers: ["cpu"], threads: 2 })).session;

    const eps = await runSession(await session("eps"), feeds);
    assertEquals(eps.eps.dims, shape);
    assertFloat32Close("eps graph: eps", eps.eps.data as Float32Array, exact.eps);
    const head = await runSession(await session("head"), feeds);
    assertFloat32Close("head graph: eps", head.eps.data as Float32Array, exact.eps);
    assertFloat32Close("head graph: deriv (exact dε/dγ)", head.deriv.data as Float32Array, exact.deriv!);
    const jvp = await runSession(await session("jvp"), {
      ...feeds,
      [JVP_INPUTS.x]: { type: "float32", data: tx, dims: shape },
      [JVP_INPUTS.t]: { type: "float32", data: tt, dims: [B] },
    });
    assertFloat32Close("jvp graph: jvp", jvp.jvp.data as Float32Array, jvpExact.deriv!);
  });
}

Deno.test("analytic graphs are built deterministically", async () => {
  const registry = await loadRegistry(defaultModelsDir(), { only: ["gmm2d"] });
  const info = registry.models.get("gmm2d")!;
  const mix = { ...(await mixtureFromSource(info.manifest.analytic!)), schedule: info.schedule };
  for (const kind of ["eps", "head", "jvp"] as const) {
    const a = new Uint8Array(mixtureGraph(mix, { kind, shape: [2], name: `gmm2d-${kind}` }));
    const b = new Uint8Array(mixtureGraph(mix, { kind, shape: [2], name: `gmm2d-${kind}` }));
    assertEquals(a, b);
    assertEquals(
      a,
      new Uint8Array(readFileSync(info.graphPaths[kind]!)),
      `${kind}.onnx matches a fresh build`,
    );
  }
});

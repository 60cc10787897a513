/**
 * The forward-mode transform (onnx/jvp.ts, through the worker's jvp_cache.transformEps) on whole model
 * graphs: the eps graphs of the analytic models gmm2d and mnist-mix, as the worker builds them (float64
 * inside: schedule, MatMul against the means, class mask by Gather, Softmax, Cast, Reshape). The
 * transformed graph's JVP is compared with core's exact derivative (gmmEvaluator) at the same
 * float32-rounded inputs:
 *
 * - along random tangents (dx, dt), along dt alone and along dx alone;
 * - along the probability-flow ODE's own tangent (dx/dγ, dt/dγ), i.e. the total derivative dε/dγ that
 *   GENIE needs, assembled from the JVP exactly as core's genie does (odeTangent);
 * - along the ODE's tangent made inside the graph from its own ε (onnx/ode_jvp.ts, one call per point);
 * - end to end: GENIE (jvp) driven by the transformed graph against GENIE (exact) on the float64 mixture,
 *   with an ε call and a JVP call per step and with the one call of the graph that makes the tangent.
 *
 * Tolerance: |onnx − exact| ≤ 1e-6 × max |exact| per sample: the outputs are float32 roundings of a float64
 * computation (observed worst 8e-8).
 */
import { gmmAt, gmmEvaluator } from "../../core/gmm.ts";
import { makeGrid } from "../../core/grid.ts";
import { rngStream } from "../../core/rng.ts";
import { runSolver, runSolverAsync } from "../../core/solvers/drive.ts";
import { odeTangent } from "../../core/solvers/genie.ts";
import { getSolver } from "../../core/solvers/registry.ts";
import type { EvalRequest, EvalResult } from "../../core/solvers/types.ts";
import { mixtureFromSource } from "../../gpu-worker/analytic.ts";
import { JVP_INPUTS } from "../../gpu-worker/graphs.ts";
import { transformEps } from "../../gpu-worker/jvp_cache.ts";
import type { LoadedModel } from "../../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { createSession, type InferenceSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { readFileSync } from "node:fs";
import { ODE_TANGENT_INPUTS, odeJvpBytes } from "../../onnx/ode_jvp.ts";
import { assert, assertEquals } from "../testing.ts";

const TOL = 1e-6;

/**
 * Per sample: max |got − ref| ≤ tol × max(|ref|, |scaleOf|) over that sample. Returns the worst ratio.
 */
function assertClosePerSample(
  what: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  dim: number,
  scaleOf: ArrayLike<number> = ref,
  tol = TOL,
): number {
  assertEquals(got.length, ref.length, `${what}: length`);
  let worst = 0;
  for (let b = 0; b < ref.length / dim; b++) {
    let err = 0, scale = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) {
      err = Math.max(err, Math.abs(got[i] - ref[i]));
      scale = Math.max(scale, Math.abs(scaleOf[i]), Math.abs(ref[i]));
    }
    assert(scale > 0, `${what}: sample ${b} has a zero derivative (nothing tested)`);
    assert(
      err <= tol * scale,
      `${what}: sample ${b}: max error ${err} is ${(err / scale).toExponential(2)} of ${scale}`,
    );
    worst = Math.max(worst, err / scale);
  }
  return worst;
}

interface Setup {
  info: LoadedModel;
  jvp: InferenceSession;
  /** The JVP graph that also makes the ODE's tangent from its own ε (onnx/ode_jvp.ts). */
  ode: InferenceSession;
  eps: InferenceSession;
  exact: ReturnType<typeof gmmEvaluator>;
  mix: Awaited<ReturnType<typeof mixtureFromSource>>;
}

async function setup(name: string): Promise<Setup> {
  const registry = await loadRegistry(defaultModelsDir(), { only: [name] });
  const info = registry.models.get(name)!;
  assert(info, `model ${name} loads: ${JSON.stringify(registry.errors)}`);
  const transformed = transformEps(readFileSync(info.graphPaths.eps!));
  assert("bytes" in transformed, JSON.stringify(transformed));
  const open = async (bytes: Uint8Array) =>
    (await createSession(bytes, { providers: ["cpu"], threads: 2 })).session;
  const mix = { ...(await mixtureFromSource(info.manifest.analytic!)), schedule: info.schedule };
  return {
    info,
    jvp: await open(transformed.bytes),
    ode: await open(
      odeJvpBytes(transformed.bytes, { x: "x", out: "eps", dx: "dx" }),
    ),
    eps: await open(readFileSync(info.graphPaths.eps!)),
    exact: gmmEvaluator(mix),
    mix,
  };
}

/** Feeds of the transformed graph for float64 rows (rounded to float32; classes as int64). */
function feeds(
  info: LoadedModel,
  x: Float64Array,
  t: Float64Array,
  classes: Int32Array,
  tangent?: { x: Float64Array; t: Float64Array },
): Record<string, TensorInit> {
  const B = t.length, dims = [B, ...info.manifest.shape];
  const f: Record<string, TensorInit> = {
    x: { type: "float32", data: Float32Array.from(x), dims },
    t: { type: "float32", data: Float32Array.from(t), dims: [B] },
    class: { type: "int64", data: BigInt64Array.from(classes, (c) => BigInt(c)), dims: [B] },
  };
  if (tangent) {
    f[JVP_INPUTS.x] = { type: "float32", data: Float32Array.from(tangent.x), dims };
    f[JVP_INPUTS.t] = { type: "float32", data: Float32Array.from(tangent.t), dims: [B] };
  }
  return f;
}

for (const name of ["gmm2d", "mnist-mix"]) {
  Deno.test({
    name: `${name}: the transformed eps graph's JVP equals core's exact derivative`,
    sanitizeResources: false,
    async fn(t) {
      const s = await setup(name);
      const { info, mix } = s;
      const d = info.dim, B = 12, C = mix.classes!;
      const rng = rngStream(11);
      // float32 inputs, so that the graph and the float64 reference see the same numbers
      const x = new Float64Array(B * d), times = new Float64Array(B), classes = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        times[b] = b === 0 ? 1e-3 : b === 1 ? 1 : Math.fround(1e-3 + 0.999 * rng.uniform() ** 2);
        classes[b] = b % (C + 1);
        const k = Math.floor(rng.uniform() * mix.count) % mix.count;
        const a = info.schedule.alpha(times[b]), sg = info.schedule.sigma(times[b]);
        for (let i = 0; i < d; i++) x[b * d + i] = Math.fround(a * mix.means[k * d + i] + sg * rng.normal());
      }
      const random = (n: number) => Float64Array.from({ length: n }, () => Math.fround(rng.normal()));
      const req = (tangent?: { x: Float64Array; t: Float64Array }): EvalRequest => ({
        x,
        t: times,
        classes,
        want: "eps+deriv",
        tangent,
        step: 0,
        steps: 1,
      });
      const run = async (tangent: { x: Float64Array; t: Float64Array }) =>
        await runSession(s.jvp, feeds(info, x, times, classes, tangent));

      await t.step("along random tangents (dx, dt), dt alone and dx alone", async () => {
        const tangents = {
          "(dx, dt)": { x: random(B * d), t: random(B) },
          "dt alone": { x: new Float64Array(B * d), t: random(B) },
          "dx alone": { x: random(B * d), t: new Float64Array(B) },
        };
        for (const [what, tangent] of Object.entries(tangents)) {
          const out = await run(tangent);
          const exact = s.exact(req(tangent));
          assertClosePerSample(`${name} eps`, out.eps.data as Float32Array, exact.eps, d);
          assertClosePerSample(
            `${name} jvp ${what}`,
            out.jvp.data as Float32Array,
            exact.deriv!,
            d,
          );
        }
      });

      await t.step("along the ODE's tangent: the total derivative dε/dγ", async () => {
        const eps = (await runSession(s.eps, feeds(info, x, times, classes))).eps.data as Float32Array;
        // core's genie builds this tangent from ε and the point (per sample: its own t)
        const tangent = { x: new Float64Array(B * d), t: new Float64Array(B) };
        for (let b = 0; b < B; b++) {
          const xbar = x.subarray(b * d, (b + 1) * d).map((v) => v / info.schedule.alpha(times[b]));
          const one = odeTangent(info.schedule, xbar, eps.subarray(b * d, (b + 1) * d), times[b], 1);
          tangent.x.set(one.x.map(Math.fround), b * d); // as the graph sees it
          tangent.t[b] = Math.fround(one.t[0]);
        }
        const out = await run(tangent);
        const jvp = out.jvp.data as Float32Array;
        // the transform: exact along this very tangent (built from the graph's float32 ε)
        const along = s.exact(req(tangent)).deriv!;
        assertClosePerSample(`${name} jvp along the ODE's tangent`, jvp, along, d);
        // the assembly: the closed-form D = ∂_γ ε + (∇_x̄ ε)·ε (x̄ coordinates). Where the ODE is slow its
        // two terms cancel (to ~1e-5 of their size at t = 1), and there the x-space tangent
        // dx/dγ = α(ε − γ α² x̄) is itself a cancellation that the graph's float32 ε perturbs: D is
        // compared at 2e-6 of the size of its terms (observed worst 2e-7).
        const total = s.exact(req()).deriv!;
        const terms = new Float64Array(B * d);
        for (let b = 0; b < B; b++) {
          const xbar = x.subarray(b * d, (b + 1) * d).map((v) => v / info.schedule.alpha(times[b]));
          const at = gmmAt(mix, xbar, info.schedule.gamma(times[b]), classes[b]);
          terms.set(at.jvp(at.eps), b * d);
        }
        assertClosePerSample(`${name} dε/dγ`, jvp, total, d, terms, 2e-6);

        // the same in one call: the graph makes dx = α ε − γ α² x from its own ε (dx input 0)
        const rows = (f: (alpha: number, gamma: number, tb: number) => number) =>
          Float32Array.from(times, (tb) => f(info.schedule.alpha(tb), info.schedule.gamma(tb), tb));
        const one = await runSession(s.ode, {
          ...feeds(info, x, times, classes, { x: new Float64Array(B * d), t: tangent.t }),
          [ODE_TANGENT_INPUTS.out]: { type: "float32", data: rows((a) => a), dims: [B] },
          [ODE_TANGENT_INPUTS.x]: { type: "float32", data: rows((a, g) => -g * a * a), dims: [B] },
        });
        assertEquals(Array.from(one.eps.data as Float32Array), Array.from(eps));
        assertClosePerSample(
          `${name} dε/dγ in one call`,
          one.jvp.data as Float32Array,
          total,
          d,
          terms,
          2e-6,
        );
      });

      await t.step("GENIE (jvp) on the transformed graph equals GENIE (exact) on the mixture", async () => {
        const n = 4;
        const start = random(n * d);
        const grid = makeGrid(info.schedule, { kind: "quadratic", steps: 8 });
        const input = (derivative: "jvp" | "exact", odeJvp = false) => ({
          schedule: info.schedule,
          grid,
          x: start,
          batch: n,
          dim: d,
          derivative,
          odeJvp,
        });
        const onnx = async (r: EvalRequest): Promise<EvalResult> => {
          const cls = new Int32Array(r.t.length).fill(C);
          if (r.odeTangent) {
            const out = await runSession(s.ode, {
              ...feeds(info, r.x, r.t, cls, { x: new Float64Array(r.x.length), t: r.odeTangent.t }),
              [ODE_TANGENT_INPUTS.out]: {
                type: "float32",
                data: Float32Array.from(r.odeTangent.eps),
                dims: [r.t.length],
              },
              [ODE_TANGENT_INPUTS.x]: {
                type: "float32",
                data: Float32Array.from(r.odeTangent.x),
                dims: [r.t.length],
              },
            });
            return { eps: out.eps.data as Float32Array, deriv: out.jvp.data as Float32Array };
          }
          if (!r.tangent) {
            const out = await runSession(s.eps, feeds(info, r.x, r.t, cls));
            return { eps: out.eps.data as Float32Array };
          }
          const out = await runSession(s.jvp, feeds(info, r.x, r.t, cls, r.tangent));
          return { eps: out.eps.data as Float32Array, deriv: out.jvp.data as Float32Array };
        };
        const got = await runSolverAsync(getSolver("genie").fn(input("jvp")), onnx);
        const ref = runSolver(getSolver("genie").fn(input("exact")), s.exact);
        assertEquals(got.stats.nfe, ref.stats.nfe);
        assertEquals(got.stats.calls, 2 * ref.stats.calls);
        assertClosePerSample(`${name} genie endpoint`, got.x, ref.x, d);
        // one call per step: ε and its derivative along the tangent the graph makes
        const fused = await runSolverAsync(getSolver("genie").fn(input("jvp", true)), onnx);
        assertEquals([fused.stats.nfe, fused.stats.calls], [ref.stats.nfe, ref.stats.calls]);
        assertEquals(fused.stats.graphCalls, { eps: 0, head: 0, jvp: ref.stats.calls });
        assertClosePerSample(`${name} genie endpoint, one call per step`, fused.x, ref.x, d);
      });
      await s.jvp.release();
      await s.ode.release();
      await s.eps.release();
    },
  });
}

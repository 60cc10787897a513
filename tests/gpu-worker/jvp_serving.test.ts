/**
 * Exact GENIE for a model that ships only eps.onnx: the worker derives the JVP graph at load (onnx/jvp.ts),
 * caches it in `<model>/cache/` keyed by the SHA-256 of eps.onnx, and serves `genie_derivative: "jvp"`.
 *
 * The model is a tiny U-Net-shaped ε-network (bench/unet_fixture.ts: sinusoidal time embedding, class
 * embedding, GroupNorm, SiLU, residual blocks, attention, down/up-sampling, skip) on 1×8×8 with random
 * weights, seen by the worker at t × 3 (time.scale 3). The worker's answers are compared with an in-process
 * GENIE solve whose derivative is a central finite difference of the same eps.onnx along the solver's own
 * tangent, computed in float64 (ONNX Runtime's CPU Conv is float32-only, so the network itself runs in
 * float32; the perturbation, the difference quotient and the solver state are float64). A second model
 * whose graph holds an operator without a derivative rule (Elu) loads and serves fd, and reports jvp as
 * unavailable naming the operator.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeGrid } from "../../core/grid.ts";
import { guidedSolveInput, withConditioning } from "../../core/guidance.ts";
import { gaussianBatch } from "../../core/rng.ts";
import { scheduleFromSpec } from "../../core/schedule.ts";
import { runSolverAsync } from "../../core/solvers/drive.ts";
import { getSolver, stepsForNfe } from "../../core/solvers/registry.ts";
import type { EvalRequest, EvalResult } from "../../core/solvers/types.ts";
import { loadRegistry } from "../../gpu-worker/models.ts";
import { createSession, type InferenceSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { encodeModel, GraphBuilder, type ModelProto, onnx, tensorFromNumbers } from "../../onnx/proto.ts";
import { buildUNet } from "../../bench/unet_fixture.ts";
import { assert, assertEquals, assertMatch } from "../testing.ts";
import { errorOf, floats, post, startApp } from "./helpers.ts";

const NAME = "tiny-unet";
const SHAPE = [1, 8, 8];
const DIM = 64;
const CLASSES = 4; // labels 0–3, null class 4 (the fixture's table has 5 rows)
const TIME_SCALE = 3;
/** Largest input perturbation of the finite difference (and twice that for Richardson's coarse one). */
const STEP = 1e-2;
const SCHEDULE = { type: "vp-linear", beta_min: 0.1, beta_max: 20 };

function manifest(name: string, extra: Record<string, unknown>): string {
  return JSON.stringify({
    name,
    version: "1",
    prediction: "eps",
    schedule: SCHEDULE,
    graphs: { eps: "eps.onnx" },
    limits: { max_batch: 16 },
    ...extra,
  });
}

/**
 * The fixture's U-Net as the residual of the exact denoiser of N(0, I) data: eps = σ(t) x + 0.3 net(x, t),
 * σ = sqrt(1 − e^{−B(t/3)}) computed in the graph. Random weights alone give an ODE that runs off to
 * |x| ~ 10³, where float32 inputs cannot carry a finite-difference step; this keeps x of order 1.
 */
function denoiserLike(model: ModelProto): ModelProto {
  const graph = model.graph!;
  const last = graph.node!.find((n) => n.output!.includes("eps"))!;
  last.output = last.output!.map((o) => (o === "eps" ? "net" : o));
  const k = (name: string, v: number[], dims: number[], dtype: "float32" | "int64" = "float32") => {
    graph.initializer!.push(tensorFromNumbers(name, v, dims, dtype));
    return name;
  };
  const node = (op: string, inputs: string[], output: string) =>
    graph.node!.push(
      onnx.NodeProto.create({ opType: op, name: `wrap/${output}`, input: inputs, output: [output] }),
    );
  node("Mul", ["t", k("wrap/inv_scale", [1 / TIME_SCALE], [])], "wrap/ts");
  node("Mul", ["wrap/ts", k("wrap/half_bd", [9.95], [])], "wrap/a");
  node("Add", ["wrap/a", k("wrap/bmin", [0.1], [])], "wrap/b");
  node("Mul", ["wrap/b", "wrap/ts"], "wrap/B");
  node("Neg", ["wrap/B"], "wrap/negB");
  node("Exp", ["wrap/negB"], "wrap/alpha2");
  node("Sub", [k("wrap/one", [1], []), "wrap/alpha2"], "wrap/sigma2");
  node("Sqrt", ["wrap/sigma2"], "wrap/sigma");
  node("Reshape", ["wrap/sigma", k("wrap/col", [-1, 1, 1, 1], [4], "int64")], "wrap/sigma4");
  node("Mul", ["wrap/sigma4", "x"], "wrap/prior");
  node("Mul", ["net", k("wrap/net_scale", [0.3], [])], "wrap/residual");
  node("Add", ["wrap/prior", "wrap/residual"], "eps");
  return model;
}

/** A models folder with the U-Net (eps only) and a model whose graph has Elu on the path from x to eps. */
function modelsFolder(): string {
  const dir = Deno.makeTempDirSync({ prefix: "genie-jvp-serving-" });
  const unet = join(dir, NAME);
  mkdirSync(unet);
  const model = denoiserLike(buildUNet({ channels: 1, size: 8, classes: CLASSES + 1 }));
  writeFileSync(join(unet, "eps.onnx"), encodeModel(model));
  writeFileSync(
    join(unet, "model.json"),
    manifest(NAME, {
      shape: SHAPE,
      time: { kind: "continuous", scale: TIME_SCALE },
      classes: { count: CLASSES, null_class: CLASSES },
    }),
  );

  const elu = join(dir, "elu-net");
  mkdirSync(elu);
  const g = new GraphBuilder("elu-net", { opset: 17 });
  const x = g.input("x", "float32", ["B", 4]);
  const t = g.input("t", "float32", ["B"]);
  const w = g.initializer("w", Float32Array.from({ length: 16 }, (_, i) => Math.sin(i + 1) / 2), [4, 4]);
  const h = g.op("Elu", [g.op("MatMul", [x, w])]);
  const scale = g.op("Unsqueeze", [t, g.constant([1], [1], "int64")]);
  g.node("Mul", [h, scale], ["eps"]);
  g.output("eps", "float32", ["B", 4]);
  writeFileSync(join(elu, "eps.onnx"), encodeModel(g.model()));
  writeFileSync(
    join(elu, "model.json"),
    manifest("elu-net", { shape: [4], time: { kind: "continuous", scale: 1 } }),
  );
  return dir;
}

/** The feeds of eps.onnx for a request's rows (model time t × 3; rows without a label get the null class). */
function epsFeeds(x: Float64Array, t: Float64Array, classes?: Int32Array): Record<string, TensorInit> {
  const rows = t.length;
  return {
    x: { type: "float32", data: Float32Array.from(x), dims: [rows, ...SHAPE] },
    t: { type: "float32", data: Float32Array.from(t, (v) => v * TIME_SCALE), dims: [rows] },
    class: {
      type: "int64",
      data: BigInt64Array.from({ length: rows }, (_, i) => BigInt(classes ? classes[i] : CLASSES)),
      dims: [rows],
    },
  };
}

/**
 * GENIE's reference evaluator: ε from eps.onnx, and for a tangent (dx, dt) a central difference of
 * eps.onnx along it in float64, with Richardson extrapolation (4 D(s) − D(2s))/3, which cancels the s²
 * term so that the step s can be large enough (largest input change 1e-2) for float32 input rounding to
 * cost little: about 1e-5 relative in the derivative.
 */
function fdEvaluator(session: InferenceSession) {
  const eps = async (x: Float64Array, t: Float64Array, classes?: Int32Array): Promise<Float64Array> =>
    Float64Array.from((await runSession(session, epsFeeds(x, t, classes))).eps.data as Float32Array);
  /** (ε(x + s·dx, t + s·dt) − ε(x − s·dx, t − s·dt))/2s per sample, s = step / max(|dx|, |dt|). */
  const central = async (req: EvalRequest, step: number): Promise<Float64Array> => {
    const rows = req.t.length, { x: dx, t: dt } = req.tangent!;
    const h = new Float64Array(rows);
    const [xp, xm] = [new Float64Array(req.x.length), new Float64Array(req.x.length)];
    const [tp, tm] = [new Float64Array(rows), new Float64Array(rows)];
    for (let r = 0; r < rows; r++) {
      let m = Math.abs(dt[r]);
      for (let i = r * DIM; i < (r + 1) * DIM; i++) m = Math.max(m, Math.abs(dx[i]));
      // never step to t ≤ 0
      h[r] = Math.min(m > 0 ? step / m : 1, dt[r] !== 0 ? (0.5 * req.t[r]) / Math.abs(dt[r]) : Infinity);
      tp[r] = req.t[r] + h[r] * dt[r];
      tm[r] = req.t[r] - h[r] * dt[r];
      for (let i = r * DIM; i < (r + 1) * DIM; i++) {
        xp[i] = req.x[i] + h[r] * dx[i];
        xm[i] = req.x[i] - h[r] * dx[i];
      }
    }
    const [ep, em] = [await eps(xp, tp, req.classes), await eps(xm, tm, req.classes)];
    const d = new Float64Array(req.x.length);
    for (let i = 0; i < d.length; i++) d[i] = (ep[i] - em[i]) / (2 * h[Math.floor(i / DIM)]);
    return d;
  };
  return async (req: EvalRequest): Promise<EvalResult> => {
    const e = await eps(req.x, req.t, req.classes);
    if (req.want === "eps") return { eps: e };
    if (!req.tangent) throw new Error("the reference answers derivatives along a tangent only");
    const [fine, coarse] = [await central(req, STEP), await central(req, 2 * STEP)];
    return { eps: e, deriv: fine.map((v, i) => (4 * v - coarse[i]) / 3) };
  };
}

/** The same solve in-process with the cached JVP graph itself (isolates the serving path from FD noise). */
function graphEvaluator(epsSession: InferenceSession, jvpSession: InferenceSession) {
  return async (req: EvalRequest): Promise<EvalResult> => {
    const feeds = epsFeeds(req.x, req.t, req.classes);
    if (req.want === "eps") {
      return { eps: Float64Array.from((await runSession(epsSession, feeds)).eps.data as Float32Array) };
    }
    const rows = req.t.length;
    const out = await runSession(jvpSession, {
      ...feeds,
      dx: { type: "float32", data: Float32Array.from(req.tangent!.x), dims: [rows, ...SHAPE] },
      dt: { type: "float32", data: Float32Array.from(req.tangent!.t, (v) => v * TIME_SCALE), dims: [rows] },
    });
    return {
      eps: Float64Array.from(out.eps.data as Float32Array),
      deriv: Float64Array.from(out.jvp.data as Float32Array),
    };
  };
}

/** max |a − b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

Deno.test({
  name: "a model with only eps.onnx serves exact GENIE (jvp) through a derived, cached JVP graph",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = modelsFolder();
    const lines: string[] = [];
    const config = { modelsDir: dir, models: [NAME, "elu-net"], log: (l: string) => lines.push(l) };
    const cachePath = join(dir, NAME, "cache", "jvp.onnx");
    const stampPath = join(dir, NAME, "cache", "jvp.json");
    const epsPath = join(dir, NAME, "eps.onnx");
    const { session } = await createSession(readFileSync(epsPath), { providers: ["cpu"], threads: 1 });
    const reference = fdEvaluator(session);
    const seeds = [3, 1, 4];
    const nfe = 6;
    const steps = stepsForNfe("genie", nfe, { derivative: "jvp" });
    const schedule = scheduleFromSpec(SCHEDULE);
    const grid = makeGrid(schedule, { kind: "quadratic", steps });
    let firstAnswer: Float32Array | undefined;
    let jvpSession: InferenceSession | undefined;
    const app = await startApp(config);
    try {
      await t.step("the JVP graph is built once at load and cached next to the model", async () => {
        assert(existsSync(cachePath) && existsSync(stampPath), "cache/jvp.onnx and cache/jvp.json");
        const stamp = JSON.parse(readFileSync(stampPath, "utf8"));
        assertEquals(stamp.eps_sha256, sha256(epsPath));
        assertEquals(stamp.bytes, statSync(cachePath).size);
        assert(
          lines.some((l) => l.startsWith(`${NAME}: jvp graph derived from eps (built`)),
          lines.join("\n"),
        );
        assertEquals(app.models.get(NAME)!.info.graphPaths.jvp, cachePath);
        jvpSession =
          (await createSession(readFileSync(cachePath), { providers: ["cpu"], threads: 1 })).session;
      });

      await t.step(
        "GET /v1/models lists jvp (derived) and names the operator where it is unavailable",
        async () => {
          const models = await (await app.request("/v1/models")).json() as Record<string, unknown>[];
          const unet = models.find((m) => m.name === NAME)!;
          assertEquals(unet.derivatives, ["jvp", "fd"]);
          assertEquals(unet.derived_graphs, ["jvp"]);
          // no head graph: distilling one is the way to it
          assertEquals(Object.keys(unet.unavailable_derivatives as object), ["head"]);
          const elu = models.find((m) => m.name === "elu-net")!;
          assertEquals(elu.derivatives, ["fd"]);
          const why =
            (elu.unavailable_derivatives as Record<string, { reason: string; operators: string[] }>).jvp;
          assertEquals(why.operators, ["Elu"]);
          assertMatch(why.reason, /cannot differentiate operator\(s\) Elu/);
        },
      );

      const cases = [
        { what: "unconditional (null class)", extra: {}, classes: undefined, scale: 0 },
        { what: "class 1", extra: { class: 1 }, classes: 1, scale: 0 },
        {
          what: "class 2, guidance 1.5 (exact guided derivative)",
          extra: { class: 2, guidance: 1.5 },
          classes: 2,
          scale: 1.5,
        },
      ];
      for (const c of cases) {
        await t.step(`genie jvp equals GENIE with a float64 central difference: ${c.what}`, async () => {
          const r = await post(app, "/v1/batch", {
            v: 1,
            id: "j",
            model: NAME,
            solver: "genie",
            genie_derivative: "jvp",
            nfe,
            seeds,
            ...c.extra,
          });
          assertEquals(r.status, 200, JSON.stringify(r.body));
          assertEquals(r.body.genie_derivative, "jvp");
          assertEquals(r.body.nfe, nfe);
          assertEquals(r.body.deriv_evals, steps);
          const got = floats(r.body.data);
          if (c.what.startsWith("class 1")) firstAnswer = got;

          // genie with the jvp source, through the same guidance settings as the worker (guidedSolveInput)
          const input = guidedSolveInput({
            schedule,
            grid,
            x: gaussianBatch(seeds, DIM),
            batch: seeds.length,
            dim: DIM,
            derivative: "jvp",
          }, c.scale);
          const cond = {
            classes: c.classes === undefined ? undefined : new Int32Array(seeds.length).fill(c.classes),
            nullClass: CLASSES,
            scale: c.scale,
          };
          const run = (solver: string, evaluate: typeof reference) =>
            runSolverAsync(withConditioning(getSolver(solver).fn(input), cond), evaluate);
          const fd = await run("genie", reference);
          const viaGraph = await run("genie", graphEvaluator(session, jvpSession!));
          const ddim = await runSolverAsync(
            withConditioning(getSolver("ddim").fn({ ...input, derivative: undefined }), cond),
            reference,
          );
          const vsFd = relErr(got, fd.x), vsGraph = relErr(got, viaGraph.x), second = relErr(ddim.x, fd.x);
          assert(vsFd <= 2e-4, `${c.what}: worker vs GENIE with FD derivative: ${vsFd} of max |x|`);
          assert(vsGraph <= 1e-6, `${c.what}: worker vs in-process solve with the JVP graph: ${vsGraph}`);
          // The second-order term matters: GENIE and DDIM differ by far more than the tolerance.
          assert(second > 100 * 2e-4, `${c.what}: genie − ddim = ${second} of max |x|, too small to test`);
        });
      }

      await t.step(
        "jvp on a model whose graph cannot be differentiated: a 422 naming the operator",
        async () => {
          const body = { v: 1, id: "e", model: "elu-net", solver: "genie", nfe: 4, seeds: [1] };
          const bad = await post(app, "/v1/batch", { ...body, genie_derivative: "jvp" });
          assertEquals(bad.status, 422, JSON.stringify(bad.body));
          assertEquals(errorOf(bad).field, "genie_derivative");
          assertMatch(
            errorOf(bad).message,
            /jvp is unavailable for elu-net: cannot differentiate operator\(s\) Elu/,
          );
          const good = await post(app, "/v1/batch", body);
          assertEquals(good.status, 200, JSON.stringify(good.body));
          assertEquals(good.body.genie_derivative, "fd");
        },
      );
    } finally {
      await app.shutdown();
    }

    await t.step("a second start reuses the cache; a changed eps.onnx rebuilds it", async () => {
      const before = statSync(cachePath);
      lines.length = 0;
      const again = await startApp(config);
      try {
        assert(
          lines.some((l) => l.startsWith(`${NAME}: jvp graph derived from eps (from the cache`)),
          lines.join("\n"),
        );
        assert(lines.some((l) => l.startsWith("elu-net: jvp unavailable (from the cache")), lines.join("\n"));
        const after = statSync(cachePath);
        assertEquals([after.mtimeMs, after.ino, after.size], [before.mtimeMs, before.ino, before.size]);
        // no genie_derivative: a model without a head defaults to jvp
        const r = await post(again, "/v1/batch", {
          v: 1,
          id: "j",
          model: NAME,
          solver: "genie",
          nfe,
          seeds,
          class: 1,
        });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        assertEquals(r.body.genie_derivative, "jvp");
        assertEquals(floats(r.body.data), firstAnswer, "the cached graph answers bit for bit alike");
      } finally {
        await again.shutdown();
      }

      writeFileSync(
        epsPath,
        encodeModel(denoiserLike(buildUNet({ channels: 1, size: 8, classes: CLASSES + 1, width: 8 }))),
      );
      lines.length = 0;
      const registry = await loadRegistry(dir, { only: [NAME], log: (l) => lines.push(l) });
      assert(registry.models.get(NAME)!.graphPaths.jvp === cachePath);
      assert(lines.some((l) => l.startsWith(`${NAME}: jvp graph derived from eps (built`)), lines.join("\n"));
      assertEquals(JSON.parse(readFileSync(stampPath, "utf8")).eps_sha256, sha256(epsPath));
      assert(statSync(cachePath).size !== before.size, "a new graph for the new weights");
    });
    await session.release();
    await jvpSession?.release();
    rmSync(dir, { recursive: true, force: true });
  },
});

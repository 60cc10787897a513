/**
 * The shipped models: models/mnist-unet loads in the worker's engine with its head (one call gives eps
 * and deriv), GENIE samples with `genie_derivative: "head"`, and models/mnist-classifier classifies.
 */
import { assert, assertEquals, describe, it, maxAbsDiff } from "../testing.ts";
import { openModel } from "../../gpu-worker/engine.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { readManifest } from "../../gpu-worker/manifest.ts";
import { gaussianNoise } from "../../core/rng.ts";
import { makeGrid } from "../../core/grid.ts";
import { genie } from "../../core/solvers/genie.ts";
import { runSolverAsync } from "../../core/solvers/drive.ts";
import { withClasses } from "../../core/guidance.ts";
import { classify, loadClassifier } from "../../training/classifier.ts";
import { floats, post, startApp } from "../gpu-worker/helpers.ts";
import { loadDigits, PIXELS, splitIndices } from "../../training/common.ts";
import { loadCheckpoint } from "../../training/checkpoint.ts";
import { withParams } from "../../training/trainer.ts";
import { decodeModel, encodeModel, tensorValues } from "../../onnx/proto.ts";
import { buildMnistUNet } from "../../training/train.ts";

const MODELS = new URL("../../models", import.meta.url).pathname;

describe("shipped models", () => {
  it("mnist-unet: features.onnx is eps.onnx with the head's inputs (features, temb) as extra outputs", async () => {
    const info = readManifest(`${MODELS}/mnist-unet`);
    assertEquals(info.manifest.graphs.features, "features.onnx");
    const open = async (f: string) =>
      (await createSession(await Deno.readFile(`${MODELS}/mnist-unet/${f}`), {
        providers: ["cpu"],
        threads: 1,
      }))
        .session;
    const [eps, features] = [await open("eps.onnx"), await open("features.onnx")];
    const B = 2, x = Float32Array.from(gaussianNoise(5, 0, B * PIXELS));
    const feeds = {
      x: { type: "float32" as const, data: x, dims: [B, 1, 28, 28] },
      t: { type: "float32" as const, data: Float32Array.of(0.2, 0.8), dims: [B] },
      class: { type: "int64" as const, data: BigInt64Array.of(4n, 10n), dims: [B] },
    };
    const a = await runSession(eps, feeds), b = await runSession(features, feeds);
    assertEquals(maxAbsDiff(a.eps.data as Float32Array, b.eps.data as Float32Array), 0);
    assertEquals(b.features.dims, [B, 32, 28, 28]);
    assertEquals(b.temb.dims, [B, 128]);
    await eps.release();
    await features.release();
  });

  it("mnist-unet: manifest, head graph in one call (eps identical to eps.onnx), GENIE with its head", async () => {
    const info = readManifest(`${MODELS}/mnist-unet`);
    assertEquals(info.manifest.shape, [1, 28, 28]);
    assertEquals(info.manifest.classes, { count: 10, null_class: 10 });
    assert(info.manifest.graphs.head, "model.json names no head graph");
    const model = await openModel("mnist-unet", MODELS, { providers: ["cpu"], threads: 1 });
    try {
      assertEquals(model.derivatives[0], "head");
      const B = 2, x = new Float64Array(B * PIXELS);
      for (let b = 0; b < B; b++) x.set(gaussianNoise(b, 0, PIXELS).map((v) => 0.5 * v), b * PIXELS);
      const req = { x, t: Float64Array.of(0.3, 0.7), classes: Int32Array.of(3, 10), step: 0, steps: 1 };
      const withDeriv = await model.evaluate({ ...req, want: "eps+deriv" });
      const epsOnly = await model.evaluate({ ...req, want: "eps" });
      assert(withDeriv.deriv && withDeriv.deriv.length === B * PIXELS);
      assert(withDeriv.deriv.every(Number.isFinite) && withDeriv.deriv.some((v) => v !== 0));
      assertEquals(maxAbsDiff(withDeriv.eps, epsOnly.eps), 0);
      const before = model.ortStats.calls;
      const grid = makeGrid(model.schedule, { kind: "quadratic", steps: 4 });
      const x0 = new Float64Array(B * PIXELS);
      for (let b = 0; b < B; b++) x0.set(gaussianNoise(100 + b, 0, PIXELS), b * PIXELS);
      const run = withClasses(
        genie({
          schedule: model.schedule,
          grid,
          x: x0,
          batch: B,
          dim: PIXELS,
          afs: true,
          derivative: "head",
        }),
        Int32Array.of(1, 7),
      );
      const { x: out, stats } = await runSolverAsync(run, model.evaluate);
      assertEquals(stats.nfe, 3);
      assertEquals(model.ortStats.calls - before, 3, "one ORT call per GENIE step with the head");
      assert(out.every(Number.isFinite));
    } finally {
      await model.close();
    }
  });

  it('the worker serves mnist-unet with genie_derivative "head" (one deriv call per step, guided too)', async () => {
    const app = await startApp({ modelsDir: MODELS, models: ["mnist-unet"] });
    try {
      for (const extra of [{ class: 4 }, { class: 4, guidance: 2 }]) {
        const r = await post(app, "/v1/batch", {
          v: 1,
          id: "h",
          model: "mnist-unet",
          solver: "genie",
          genie_derivative: "head",
          nfe: 4,
          seeds: [1, 2],
          ...extra,
        });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        assertEquals(r.body.genie_derivative, "head");
        assertEquals(r.body.nfe, 4);
        assertEquals(r.body.deriv_evals, 4);
        const data = floats(r.body.data);
        assertEquals(data.length, 2 * PIXELS);
        assert(data.every(Number.isFinite));
      }
    } finally {
      await app.shutdown();
    }
  });

  it("mnist-unet: eps.onnx is the committed checkpoint's weight average, exported (same bytes); training.json covers every step", async () => {
    const ROOT = new URL("../..", import.meta.url).pathname;
    const saved = await loadCheckpoint(`${ROOT}/training/checkpoints/mnist-unet`);
    assert(saved?.ema, "the committed checkpoint holds no weight average");
    const exported = encodeModel(withParams(buildMnistUNet({ served: true }).model, saved.ema));
    const shipped = await Deno.readFile(`${MODELS}/mnist-unet/eps.onnx`);
    assert(
      exported.length === shipped.length && exported.every((b, i) => b === shipped[i]),
      "eps.onnx differs",
    );
    const record = JSON.parse(await Deno.readTextFile(`${MODELS}/mnist-unet/training.json`));
    assertEquals(record.steps_done, saved.step);
    assertEquals(record.exported, "ema");
    // the segments run tile [0, steps_done] without gaps
    let at = 0;
    for (const s of record.segments) {
      assertEquals(s.from_step, at);
      at = s.to_step;
    }
    assertEquals(at, saved.step);
  });

  it("mnist-unet: head.onnx carries the committed head checkpoint's weight average", async () => {
    const ROOT = new URL("../..", import.meta.url).pathname;
    const saved = await loadCheckpoint(`${ROOT}/training/checkpoints/mnist-unet-head`);
    assert(saved?.ema, "the committed head checkpoint holds no weight average");
    const head = decodeModel(await Deno.readFile(`${MODELS}/mnist-unet/head.onnx`));
    const values = new Map(head.graph!.initializer!.map((t) => [t.name!, tensorValues(t)]));
    for (const [name, v] of Object.entries(saved.ema)) {
      const got = values.get(name);
      assert(got, `head.onnx has no ${name}`);
      assertEquals(maxAbsDiff(got, v), 0, name);
    }
    const distill = JSON.parse(await Deno.readTextFile(`${MODELS}/mnist-unet/distill.json`));
    assertEquals(distill.steps_done, saved.step);
  });

  it("mnist-classifier: held-out digits are classified (≥ 95% on 300)", async () => {
    const digits = await loadDigits();
    const [, held] = splitIndices(digits.count, 1);
    const pick = held.slice(0, 300);
    const images = new Float32Array(pick.length * PIXELS);
    pick.forEach((k, i) => images.set(digits.pixels.subarray(k * PIXELS, (k + 1) * PIXELS), i * PIXELS));
    const { labels, features } = await classify(await loadClassifier(`${MODELS}/mnist-classifier`), images);
    assertEquals(features.length, pick.length * 128);
    const acc = labels.reduce((n, l, i) => n + (l === digits.labels[pick[i]] ? 1 : 0), 0) / pick.length;
    assert(acc >= 0.95, `accuracy ${acc}`);
  });
});

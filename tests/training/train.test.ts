/**
 * Short training runs of the programs' pieces: the mnist-unet diffusion loss on real digits and the
 * GENIE head's distillation loss fall in a few steps, and a run is a function of its seed (bit for bit).
 */
import { assert, assertEquals, assertSameBits, describe, it, mean } from "../testing.ts";
import { gradModel, meanSquaredErrorLoss } from "../../onnx/grad.ts";
import { buildTrainableUNet } from "../../training/unet.ts";
import { lrSchedule } from "../../training/optimizer.ts";
import { Trainer } from "../../training/trainer.ts";
import { loadDigits, SIZE } from "../../training/common.ts";
import { PRECONDITION, TIME_SAMPLING } from "../../training/train.ts";
import { preconditionedBatch } from "../../training/precondition.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { headFeeds, headTrainingGraph, relativeWeights } from "../../training/distill.ts";
import type { HeadData } from "../../training/targets.ts";
import { rngStream } from "../../core/rng.ts";

describe("training", () => {
  it("a tiny U-Net on noisy MNIST digits: the preconditioned loss falls; same seed → identical parameters", async () => {
    const digits = await loadDigits();
    const unet = buildTrainableUNet({
      width: 8,
      mults: [1, 2],
      groups: 2,
      embed: 16,
      classes: 11,
      attention: false,
    });
    const graph = gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params });
    const go = async () => {
      const trainer = await Trainer.create(graph, {
        seed: 4,
        lr: lrSchedule({ lr: 3e-3, warmup: 2 }),
        clipNorm: 1,
        batch: preconditionedBatch(digits, 4, 0.1, vpLinearSchedule(), PRECONDITION, TIME_SAMPLING),
      });
      const losses: number[] = [];
      for (let i = 0; i < 24; i++) losses.push((await trainer.step()).loss);
      await trainer.release();
      return { losses, params: trainer.params };
    };
    const a = await go(), b = await go();
    assert(
      mean(a.losses.slice(-6)) < 0.8 * mean(a.losses.slice(0, 3)),
      `loss did not fall: ${a.losses.map((l) => l.toFixed(3))}`,
    );
    assertEquals(a.losses, b.losses);
    assertSameBits(a.params, b.params);
  });

  it("the GENIE head's relative loss Σ (k − τ)²/‖τ‖² falls on a fixed batch; same seed → same run", async () => {
    const { graph } = headTrainingGraph();
    const B = 2, n = SIZE * SIZE, r = rngStream(5, 1);
    const randn = (len: number) => Float32Array.from({ length: len }, () => r.normal());
    const eps = randn(B * n), gamma = Float32Array.of(0.5, 3);
    // a learnable target: the Gaussian derivative ε/(γ(1+γ²)) (k³ = ε)
    const target = Float32Array.from(eps, (e, i) => {
      const g = gamma[Math.floor(i / n)];
      return e / (g * (1 + g * g));
    });
    const data: HeadData = {
      x: randn(B * n),
      t: Float32Array.of(0.3, 0.6),
      cls: BigInt64Array.of(1n, 10n),
      gamma,
      eps,
      features: randn(B * 32 * n),
      temb: randn(B * 128),
      target,
      batch: B,
      featureChannels: 32,
      embed: 128,
    };
    const feeds = headFeeds(data);
    const go = async () => {
      const trainer = await Trainer.create(graph, { seed: 2, lr: 3e-3, clipNorm: 1, batch: () => feeds });
      const losses: number[] = [];
      for (let i = 0; i < 20; i++) losses.push((await trainer.step()).loss);
      await trainer.release();
      return { losses, params: trainer.params };
    };
    const a = await go(), b = await go();
    assert(
      a.losses.at(-1)! < 0.5 * a.losses[0],
      `head loss did not fall: ${a.losses.map((l) => l.toFixed(2))}`,
    );
    assertEquals(a.losses, b.losses);
    assertSameBits(a.params, b.params);
  });

  it("the head's loss weights are 1/max(‖τ‖², P·floor²): relative error, absolute where τ is negligible", () => {
    const P = 4, floor = 1e-3;
    const target = Float32Array.of(1, 2, 2, 0, /* tiny */ 1e-5, 0, 0, 0, /* zero */ 0, 0, 0, 0);
    const w = relativeWeights(target, 3, floor);
    assertEquals(w[0], Math.fround(1 / 9));
    assertEquals(w[1], Math.fround(1 / (P * floor * floor)));
    assertEquals(w[2], Math.fround(1 / (P * floor * floor)));
  });
});

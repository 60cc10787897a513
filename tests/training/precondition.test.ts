/**
 * mnist-unet's EDM-style preconditioning (training/precondition.ts, training/unet.ts): the coefficients and
 * the target against their closed forms, the served graph against the trained network F wrapped by hand,
 * and the training-time draw.
 */
import { assert, assertClose, assertEquals, describe, it, maxAbsDiff } from "../testing.ts";
import {
  coefficients,
  drawTime,
  preconditionedBatch,
  targetF,
  type TimeSampling,
} from "../../training/precondition.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { rngStream } from "../../core/rng.ts";
import { buildTrainableUNet, type VpPrecondition } from "../../training/unet.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import { loadDigits, PIXELS } from "../../training/common.ts";
import { recipeMismatch, TRAIN_DEFAULTS } from "../../training/train.ts";

const schedule = vpLinearSchedule();
const P: VpPrecondition = { sigmaData: 0.5, betaMin: 0.1, betaMax: 20 };

describe("training/precondition", () => {
  it("coefficients: c_in = 1/√D, a = σ/D, b = σ_d α/√D with D = σ² + σ_d² α², α from log α = −¼β_d t² − ½β_min t", () => {
    for (const t of [1e-3, 0.05, 0.3, 0.7, 1]) {
      const alpha = Math.exp(-0.25 * 19.9 * t * t - 0.05 * t), sigma = Math.sqrt(1 - alpha * alpha);
      const D = sigma ** 2 + 0.25 * alpha ** 2;
      const c = coefficients(schedule, 0.5, t);
      assertClose(c.alpha, alpha, 1e-15, `α(${t})`);
      assertClose(c.sigma, sigma, 1e-12, `σ(${t})`);
      assertClose(c.cIn, 1 / Math.sqrt(D), 1e-12, `c_in(${t})`);
      assertClose(c.a, sigma / D, 1e-12, `a(${t})`);
      assertClose(c.b, (0.5 * alpha) / Math.sqrt(D), 1e-12, `b(${t})`);
    }
  });

  it("the target F* makes ε̂ = a x_t − b F* equal the noise exactly; F* → x₀/σ_d at t = 1, → −ε as t → 0", () => {
    const r = rngStream(11, 0);
    for (const t of [1e-3, 0.02, 0.2, 0.5, 0.9, 1]) {
      const c = coefficients(schedule, P.sigmaData, t);
      for (let k = 0; k < 20; k++) {
        const x0 = 2 * r.uniform() - 1, eps = r.normal();
        const xt = c.alpha * x0 + c.sigma * eps;
        assertClose(c.a * xt - c.b * targetF(c, P.sigmaData, x0, eps), eps, 1e-12, `ε at t=${t}`);
      }
    }
    const [x0, eps] = [0.7, -1.3];
    const end = coefficients(schedule, P.sigmaData, 1);
    assertClose(targetF(end, P.sigmaData, x0, eps), x0 / P.sigmaData, 1e-2, "F*(t=1)");
    const start = coefficients(schedule, P.sigmaData, 1e-5);
    assertClose(targetF(start, P.sigmaData, x0, eps), -eps, 1e-2, "F*(t→0)");
  });

  it("the served graph is a·x_t − b·F(c_in·x_t, t) of the trained F, with the same parameters", async () => {
    const arch = {
      width: 8,
      mults: [1, 2],
      groups: 2,
      embed: 16,
      classes: 11,
      attention: false,
      zeroOutput: false,
    };
    const plain = buildTrainableUNet(arch), served = buildTrainableUNet({ ...arch, precondition: P });
    assertEquals(served.params, plain.params);
    const B = 4, r = rngStream(3, 1);
    const xt = Float32Array.from({ length: B * PIXELS }, () => r.normal());
    const t = Float32Array.of(1e-3, 0.2, 0.6, 1);
    const cls = BigInt64Array.of(0n, 3n, 7n, 10n);
    const cs = Array.from(t, (tb) => coefficients(schedule, P.sigmaData, tb));
    const scaled = Float32Array.from(xt, (v, i) => cs[Math.floor(i / PIXELS)].cIn * v);
    const run = async (model: typeof plain.model, x: Float32Array) => {
      const { session } = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
      const dims = [B, 1, 28, 28];
      const out = await runSession(session, {
        x: { type: "float32", data: x, dims },
        t: { type: "float32", data: t, dims: [B] },
        class: { type: "int64", data: cls, dims: [B] },
      });
      await session.release();
      return out.eps.data as Float32Array;
    };
    const F = await run(plain.model, scaled), eps = await run(served.model, xt);
    const expected = Float64Array.from(xt, (v, i) => {
      const c = cs[Math.floor(i / PIXELS)];
      return c.a * v - c.b * F[i];
    });
    // float32 arithmetic in the graph (σ² = 1 − α² loses digits at t = 10⁻³): a few ulps of ε's scale
    assert(maxAbsDiff(eps, expected) < 2e-5, `served vs wrapped: ${maxAbsDiff(eps, expected)}`);
  });

  it("training times: within [t_min, 1], about half uniform, the rest log-normal in σ/α around e^−1.2", () => {
    const ts: TimeSampling = { uniform: 0.5, pMean: -1.2, pStd: 1.2 };
    const r = rngStream(5, 0), n = 4000;
    const times = Array.from({ length: n }, () => drawTime(schedule, ts, r));
    assert(times.every((t) => t >= schedule.tMin && t <= schedule.tMax));
    // P(γ < e^−1.2) = ½·P_uniform(γ(t) < e^−1.2) + ½·½
    const tMid = schedule.tFromGamma(Math.exp(-1.2));
    const expected = 0.5 * (tMid - schedule.tMin) / (schedule.tMax - schedule.tMin) + 0.25;
    const below = times.filter((t) => t < tMid).length / n;
    assertClose(below, expected, 0.03, "fraction below the log-normal median");
  });

  it("a step's batch is a function of its random stream: x = c_in x_t and F*, same stream → same bits", async () => {
    const digits = await loadDigits();
    const batch = preconditionedBatch(digits, 3, 0.1, schedule, P, { uniform: 0.5, pMean: -1.2, pStd: 1.2 });
    const a = batch(0, rngStream(9, 4)), b = batch(0, rngStream(9, 4));
    assertEquals(a.x.data, b.x.data);
    assertEquals(a.eps_target.data, b.eps_target.data);
    assertEquals(a.x.dims, [3, 1, 28, 28]);
    // the F* per pixel reconstructs ε from x: a x_t − b F* = (x_t − α x₀)/σ with x_t = x/c_in
    const t = a.t.data as Float32Array, x = a.x.data as Float32Array, f = a.eps_target.data as Float32Array;
    for (let i = 0; i < 3; i++) {
      const c = coefficients(schedule, P.sigmaData, t[i]);
      for (let j = 0; j < PIXELS; j += 97) {
        const xt = x[i * PIXELS + j] / c.cIn, e = c.a * xt - c.b * f[i * PIXELS + j];
        const x0 = (xt - c.sigma * e) / c.alpha;
        assert(x0 > -1.01 && x0 < 1.01, `recovered x₀ ${x0} outside the pixel range`);
      }
    }
  });

  it("a checkpoint is continued only by a run of the same recipe flags", () => {
    const f = { ...TRAIN_DEFAULTS };
    const saved = {
      recipe: {
        steps: 20000,
        batch: 64,
        lr: 5e-4,
        minLr: 2e-5,
        warmup: 500,
        clip: 1,
        ema: 0.9995,
        drop: 0.1,
        seed: 1,
      },
    };
    assertEquals(recipeMismatch(saved, f), undefined);
    assertEquals(recipeMismatch(undefined, f), undefined);
    const message = recipeMismatch(saved, { ...f, batch: 32, minLr: 1e-5 });
    assert(
      message?.includes("--batch") && message.includes("--min-lr") && message.includes("batch 64"),
      message,
    );
    assertEquals(recipeMismatch(saved, { ...f, threads: 1, out: "elsewhere" }), undefined);
  });
});

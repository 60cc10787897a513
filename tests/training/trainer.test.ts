import {
  assert,
  assertClose,
  assertEquals,
  assertRejects,
  assertSameBits,
  describe,
  it,
  mean,
} from "../testing.ts";
import { gradModel, meanSquaredErrorLoss, type TrainingGraph } from "../../onnx/grad.ts";
import { loadCheckpoint, saveCheckpoint } from "../../training/checkpoint.ts";
import { Adam, clipFactor, globalNorm, lrSchedule } from "../../training/optimizer.ts";
import { type Batch, type Progress, Trainer, TrainError, withParams } from "../../training/trainer.ts";
import { encodeModel, GraphBuilder, type ModelProto } from "../../onnx/proto.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { type RngStream, rngStream } from "../../core/rng.ts";
import { rng } from "../onnx/jvp_check.ts";

const B = 32;

/** An MLP 4 → 32 → 32 → 1 (tanh, SiLU) with deterministic initial weights. */
function mlp(): ModelProto {
  const g = new GraphBuilder("mlp");
  const random = rng(5);
  const w = (name: string, din: number, dout: number) =>
    g.initializer(
      name,
      Float32Array.from({ length: din * dout }, () => (2 * random() - 1) * Math.sqrt(3 / din)),
      [
        din,
        dout,
      ],
    );
  const b = (name: string, n: number) => g.initializer(name, new Float32Array(n), [n]);
  const x = g.input("x", "float32", ["B", 4]);
  const h1 = g.op("Tanh", [g.op("Gemm", [x, w("w1", 4, 32), b("b1", 32)])]);
  const a2 = g.op("Gemm", [h1, w("w2", 32, 32), b("b2", 32)]);
  const h2 = g.op("Mul", [a2, g.op("Sigmoid", [a2])]);
  const [y] = g.node("Gemm", [h2, w("w3", 32, 1), b("b3", 1)], ["y"]);
  g.output(y, "float32", ["B", 1]);
  return g.model();
}

/** y = sin(2 x₀) + x₁·x₂ − 0.5 x₃ on x uniform in [−1, 1]⁴. */
function regressionBatch(_step: number, r: RngStream): Batch {
  const x = Float32Array.from({ length: B * 4 }, () => 2 * r.uniform() - 1);
  const y = Float32Array.from({ length: B }, (_, i) => {
    const [a, b, c, d] = x.subarray(4 * i, 4 * i + 4);
    return Math.sin(2 * a) + b * c - 0.5 * d;
  });
  return {
    x: { type: "float32", data: x, dims: [B, 4] },
    y_target: { type: "float32", data: y, dims: [B, 1] },
  };
}

/**
 * A small conv net on [B, 1, 8, 8]: conv → GroupNorm (decomposed) → SiLU → AveragePool ↓2 → conv →
 * Resize ↑2 → concat skip → conv; learns a fixed blur-and-shift of its input.
 */
function convNet(): ModelProto {
  const g = new GraphBuilder("convnet");
  const random = rng(9);
  const conv = (h: string, cin: number, cout: number, name: string) =>
    g.op("Conv", [
      h,
      g.initializer(
        `${name}.w`,
        Float32Array.from({ length: cout * cin * 9 }, () => (2 * random() - 1) * Math.sqrt(3 / (cin * 9))),
        [cout, cin, 3, 3],
      ),
      g.initializer(`${name}.b`, new Float32Array(cout), [cout]),
    ], { pads: [1, 1, 1, 1] });
  const groupNorm = (h: string, c: number, name: string) => {
    const grouped = g.op("Reshape", [h, g.constant([0, 2, -1], [3], "int64")]);
    const xc = g.op("Sub", [grouped, g.op("ReduceMean", [grouped], { axes: [2] })]);
    const variance = g.op("ReduceMean", [g.op("Mul", [xc, xc])], { axes: [2] });
    const normed = g.op("Div", [
      xc,
      g.op("Sqrt", [g.op("Add", [variance, g.constant(1e-5, [], "float32")])]),
    ]);
    const back = g.op("Reshape", [normed, g.op("Shape", [h])]);
    const scale = g.initializer(`${name}.scale`, new Float32Array(c).fill(1), [c, 1, 1]);
    return g.op("Add", [
      g.op("Mul", [back, scale]),
      g.initializer(`${name}.bias`, new Float32Array(c), [c, 1, 1]),
    ]);
  };
  const silu = (h: string) => g.op("Mul", [h, g.op("Sigmoid", [h])]);
  const x = g.input("x", "float32", ["B", 1, 8, 8]);
  const h = silu(groupNorm(conv(x, 1, 8, "in"), 8, "gn"));
  const down = conv(g.op("AveragePool", [h], { kernel_shape: [2, 2], strides: [2, 2] }), 8, 8, "mid");
  const up = g.op("Resize", [silu(down), "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" });
  const [y] = g.node(
    "Conv",
    [
      g.op("Concat", [up, h], { axis: 1 }),
      g.initializer("out.w", new Float32Array(16 * 9).map(() => 0.05 * (2 * random() - 1)), [1, 16, 3, 3]),
    ],
    ["y"],
    { pads: [1, 1, 1, 1] },
  );
  g.output(y, "float32", ["B", 1, 8, 8]);
  return g.model();
}

function convBatch(_step: number, r: RngStream): Batch {
  const n = 8, x = Float32Array.from({ length: 8 * n * n }, () => 2 * r.uniform() - 1);
  const y = new Float32Array(x.length);
  for (let b = 0; b < 8; b++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (const [di, dj] of [[0, 0], [0, 1], [1, 0], [-1, 0]]) {
          const [p, q] = [i + di, j + dj];
          if (p >= 0 && p < n && q >= 0 && q < n) s += x[b * 64 + p * n + q];
        }
        y[b * 64 + i * n + j] = Math.tanh(s / 2);
      }
    }
  }
  return {
    x: { type: "float32", data: x, dims: [8, 1, n, n] },
    y_target: { type: "float32", data: y, dims: [8, 1, n, n] },
  };
}

const mlpGraph = (): TrainingGraph => gradModel(meanSquaredErrorLoss(mlp(), "y"));
const convGraph = (): TrainingGraph => gradModel(meanSquaredErrorLoss(convNet(), "y"));

async function trainLosses(graph: TrainingGraph, batch: typeof regressionBatch, steps: number, lr: number) {
  const trainer = await Trainer.create(graph, {
    seed: 42,
    lr: lrSchedule({ lr, warmup: 5, decay: "cosine", total: steps, minLr: lr / 10 }),
    clipNorm: 1,
    batch,
  });
  const losses: number[] = [];
  await trainer.run({ steps, onProgress: (p) => losses.push(p.loss) });
  await trainer.release();
  return { losses, params: trainer.params };
}

describe("onnx/train: training on ONNX Runtime", () => {
  it("an MLP on a toy regression: the loss falls several-fold in 50 steps, the same for the same seed", async () => {
    const graph = mlpGraph();
    assertEquals(graph.params.map((p) => p.name), ["w1", "b1", "w2", "b2", "w3", "b3"]);
    const a = await trainLosses(graph, regressionBatch, 50, 3e-2);
    const b = await trainLosses(graph, regressionBatch, 50, 3e-2);
    assertEquals(a.losses, b.losses);
    assertSameBits(a.params, b.params);
    const [first, last] = [mean(a.losses.slice(0, 5)), mean(a.losses.slice(-5))];
    assert(last < first / 4, `loss ${first.toFixed(4)} → ${last.toFixed(4)}`);
  });

  it("a conv net (GroupNorm, SiLU, AveragePool, Resize, skip) learns a blur: the loss falls", async () => {
    const { losses } = await trainLosses(convGraph(), convBatch, 40, 2e-2);
    const [first, last] = [mean(losses.slice(0, 3)), mean(losses.slice(-3))];
    assert(last < first / 3, `loss ${first.toFixed(4)} → ${last.toFixed(4)}`);
  });

  it("checkpoint → resume continues bit for bit like the uninterrupted run (parameters, Adam, average)", async () => {
    const graph = convGraph();
    const options = {
      seed: 7,
      lr: lrSchedule({ lr: 1e-2, warmup: 3, decay: "cosine" as const, total: 12 }),
      clipNorm: 1,
      ema: 0.9,
      batch: convBatch,
    };
    const whole = await Trainer.create(graph, options);
    const wholeLosses: number[] = [];
    await whole.run({ steps: 12, onProgress: (p) => wholeLosses.push(p.loss) });

    const dir = await Deno.makeTempDir({ prefix: "train-test-" });
    try {
      const first = await Trainer.create(graph, options);
      assert(!(await first.resume(dir)), "nothing to resume yet");
      await first.run({ steps: 5, checkpointDir: dir, checkpointEvery: 2 });
      await first.release();
      const second = await Trainer.create(graph, options);
      assert(await second.resume(dir));
      assertEquals(second.state.step, 5);
      const resumed: number[] = [];
      await second.run({ steps: 12, checkpointDir: dir, onProgress: (p) => resumed.push(p.loss) });
      assertEquals(resumed, wholeLosses.slice(5));
      assertSameBits(second.params, whole.params);
      assertSameBits(second.state.adam.m, whole.state.adam.m);
      assertSameBits(second.state.adam.v, whole.state.adam.v);
      assertSameBits(second.state.ema!, whole.state.ema!);
      assertEquals(second.state.adam.t, 12);
      await second.release();
    } finally {
      await whole.release();
      await Deno.remove(dir, { recursive: true });
    }
  });

  it("the moving average follows ema ← d·ema + (1 − d)·p with d = min(decay, (1 + n)/(10 + n))", async () => {
    const decay = 0.5;
    const trainer = await Trainer.create(mlpGraph(), {
      seed: 3,
      lr: 1e-2,
      ema: decay,
      batch: regressionBatch,
    });
    try {
      const expected = Object.fromEntries(
        Object.entries(trainer.params).map(([k, v]) => [k, Float64Array.from(v)]),
      );
      for (let n = 1; n <= 4; n++) {
        await trainer.step();
        const d = Math.min(decay, (1 + n) / (10 + n));
        for (const [name, p] of Object.entries(trainer.params)) {
          const e = expected[name];
          for (let i = 0; i < p.length; i++) e[i] = Math.fround(d * e[i] + (1 - d) * p[i]);
        }
      }
      // n = 1, 2: d = 2/11, 3/12; n = 3, 4: d = decay
      assertSameBits(
        trainer.state.ema!,
        Object.fromEntries(
          Object.entries(expected).map(([k, v]) => [k, Float32Array.from(v)]),
        ),
      );
    } finally {
      await trainer.release();
    }
  });

  it("reports progress with steps/s and an ETA", async () => {
    const trainer = await Trainer.create(mlpGraph(), { seed: 1, lr: 1e-2, batch: regressionBatch });
    const seen: Progress[] = [];
    await trainer.run({ steps: 6, progressEvery: 2, onProgress: (p) => seen.push(p) });
    assertEquals(seen.map((p) => p.step), [1, 3, 5]);
    for (const p of seen) {
      assert(p.stepsPerSecond > 0 && p.etaSeconds >= 0 && p.elapsedSeconds > 0 && p.totalSteps === 6);
      assert(Number.isFinite(p.loss) && p.gradNorm > 0 && p.lr === 1e-2);
    }
    assertEquals(seen[2].etaSeconds, 0);
    assertEquals(trainer.timings.steps, 6);
    await trainer.release();
  });

  it("stops on a non-finite loss without touching the state", async () => {
    const trainer = await Trainer.create(mlpGraph(), {
      seed: 1,
      lr: 1e-2,
      batch: (s, r) => {
        const b = regressionBatch(s, r);
        if (s === 2) (b.x.data as Float32Array)[0] = NaN;
        return b;
      },
    });
    await trainer.run({ steps: 2 });
    const before = Float32Array.from(trainer.params.w1 as Float32Array);
    await assertRejects(() => trainer.step(), TrainError);
    assertEquals(trainer.state.step, 2);
    assertEquals([...trainer.params.w1], [...before]);
    await trainer.release();
  });

  it("exports the trained weights into the forward model (same loss as the training graph)", async () => {
    const trainer = await Trainer.create(mlpGraph(), { seed: 3, lr: 1e-2, batch: regressionBatch });
    await trainer.run({ steps: 3 });
    const trained = withParams(mlp(), trainer.params);
    const { session } = await createSession(encodeModel(trained), { providers: ["cpu"], threads: 1 });
    const batch = regressionBatch(3, rngStream(3, 3));
    const y = (await runSession(session, { x: batch.x }))["y"].data as Float32Array;
    const target = batch.y_target.data as Float32Array;
    const mse = y.reduce((s, v, i) => s + (v - target[i]) ** 2, 0) / B;
    const { loss } = await trainer.evaluate(3);
    assertClose(mse, loss, 1e-5 * loss, "loss of the exported model");
    await trainer.release();
  });
});

describe("onnx/train: optimiser, schedules, checkpoints", () => {
  it("Adam's first steps match the bias-corrected formula (with decoupled weight decay)", () => {
    const p = { w: Float64Array.from([1, -2]) };
    const adam = new Adam(p, { weightDecay: 0.1 });
    adam.step(p, { w: [0.5, -0.25] }, 0.1);
    // step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + ε) = ±lr (after decay p·(1 − lr·wd))
    assertClose(p.w[0], 1 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15, "w0");
    assertClose(p.w[1], -2 * 0.99 + 0.1 * 0.25 / (0.25 + 1e-8), 1e-15, "w1");
    adam.step(p, { w: [1, 0] }, 0.1);
    const m = 0.9 * 0.1 * 0.5 + 0.1 * 1, v = 0.999 * 0.001 * 0.25 + 0.001 * 1;
    const expected = (1 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)) * 0.99 -
      (0.1 * m / (1 - 0.81)) / (Math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8);
    assertClose(p.w[0], expected, 1e-12, "w0 after 2 steps");
    assertEquals(adam.t, 2);
  });

  it("global-norm clipping", () => {
    const n = globalNorm([[3], [4]]);
    assertEquals(n, 5);
    assertClose(n * clipFactor(n, 1), 1, 1e-6);
    assertEquals(clipFactor(0.5, 1), 1);
  });

  it("learning-rate schedules: warm-up, cosine and linear decay", () => {
    const cos = lrSchedule({ lr: 1, warmup: 4, decay: "cosine", total: 14, minLr: 0.1 });
    assertEquals([0, 1, 2, 3].map(cos), [0.25, 0.5, 0.75, 1]);
    assertClose(cos(9), 0.55, 1e-12);
    assertClose(cos(14), 0.1, 1e-12);
    assertClose(cos(100), 0.1, 1e-12);
    const lin = lrSchedule({ lr: 2, decay: "linear", total: 10 });
    assertEquals([0, 5, 10].map(lin), [2, 1, 0]);
    assertEquals(lrSchedule({ lr: 3 })(1000), 3);
  });

  it("checkpoints are written atomically: latest.json names a complete one; old ones are pruned", async () => {
    const dir = await Deno.makeTempDir({ prefix: "ckpt-test-" });
    try {
      assertEquals(await loadCheckpoint(dir), undefined);
      const state = (step: number) => ({
        step,
        seed: 9,
        params: { a: Float32Array.from([step, 2]), b: Float64Array.from([Math.PI]) },
        adam: {
          t: step,
          m: { a: new Float32Array(2), b: Float64Array.from([1]) },
          v: { a: Float32Array.from([1, 1]), b: new Float64Array(1) },
        },
        loss: 0.5,
      });
      for (const s of [1, 2, 3]) await saveCheckpoint(dir, state(s), 2);
      // an interrupted write leaves only a temporary directory behind
      await Deno.mkdir(`${dir}/.tmp-step-000000004-x`);
      const loaded = await loadCheckpoint(dir);
      assertEquals(loaded!.step, 3);
      assertEquals([...loaded!.params.a], [3, 2]);
      assert(loaded!.params.b instanceof Float64Array && loaded!.params.b[0] === Math.PI);
      assertEquals([...loaded!.adam.v.a], [1, 1]);
      await saveCheckpoint(dir, state(4), 2);
      const names: string[] = [];
      for await (const e of Deno.readDir(dir)) names.push(e.name);
      assertEquals(names.sort(), ["latest.json", "step-000000003", "step-000000004"]);
      const meta = JSON.parse(await Deno.readTextFile(`${dir}/step-000000004/state.json`));
      assertEquals(meta.rng, { generator: "philox4x32-10 rngStream", seed: 9, nextStream: 4 });
      // a resumed run must use the same seed
      const trainer = await Trainer.create(mlpGraph(), { seed: 1, lr: 1e-2, batch: regressionBatch });
      await assertRejects(() => trainer.resume(dir), TrainError);
      await trainer.release();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

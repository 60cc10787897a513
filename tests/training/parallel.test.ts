/**
 * training/parallel.ts through the Trainer (`parallel` > 1): the batch split over worker sessions gives
 * the whole batch's loss and gradients, a run is deterministic and resumes bit for bit, and what cannot be
 * split or averaged is refused with the reason.
 */
import {
  assert,
  assertEquals,
  assertRejects,
  assertSameBits,
  assertThrows,
  describe,
  it,
} from "../testing.ts";
import { gradModel, meanSquaredErrorLoss, type TrainingGraph } from "../../onnx/grad.ts";
import { GraphBuilder, type ModelProto } from "../../onnx/proto.ts";
import { type RngStream, rngStream } from "../../core/rng.ts";
import { type Batch, Trainer, TrainError } from "../../training/trainer.ts";
import { parallelSetup, Segments } from "../../training/common.ts";
import { UsageError } from "../../core/flags.ts";

const B = 16;

/** x [B, 6] → Gemm → SiLU → Gemm → y [B, 2], weights drawn from a seeded stream. */
function net(): ModelProto {
  const g = new GraphBuilder("net");
  const r = rngStream(3, 0);
  const w = (name: string, din: number, dout: number) =>
    g.initializer(name, Float32Array.from({ length: din * dout }, () => (2 * r.uniform() - 1) * 0.6), [
      din,
      dout,
    ]);
  const b = (name: string, n: number) =>
    g.initializer(name, Float32Array.from({ length: n }, () => 0.1 * r.normal()), [n]);
  const x = g.input("x", "float32", ["B", 6]);
  const a = g.op("Gemm", [x, w("w1", 6, 16), b("b1", 16)]);
  const h = g.op("Mul", [a, g.op("Sigmoid", [a])]);
  const [y] = g.node("Gemm", [h, w("w2", 16, 2), b("b2", 2)], ["y"]);
  g.output(y, "float32", ["B", 2]);
  return g.model();
}

function batch(rows: number) {
  return (_step: number, r: RngStream): Batch => {
    const x = Float32Array.from({ length: rows * 6 }, () => r.normal());
    const y = Float32Array.from({ length: rows * 2 }, (_, i) => Math.sin(x[3 * i] + x[3 * i + 1]));
    return {
      x: { type: "float32", data: x, dims: [rows, 6] },
      y_target: { type: "float32", data: y, dims: [rows, 2] },
    };
  };
}

const graph = (): TrainingGraph =>
  gradModel(meanSquaredErrorLoss(net(), "y"), { params: ["w1", "b1", "w2", "b2"] });

function trainer(parallel: number, rows = B, g = graph()): Promise<Trainer> {
  return Trainer.create(g, {
    seed: 4,
    lr: 1e-2,
    clipNorm: 1,
    ema: 0.9,
    threads: 1,
    parallel,
    batch: batch(rows),
  });
}

describe("data-parallel training", () => {
  it("gives the whole batch's loss and gradients, split over 2 or 4 workers", async () => {
    const one = await trainer(1);
    const whole = await one.evaluate(0);
    await one.release();
    for (const parallel of [2, 4]) {
      const t = await trainer(parallel);
      try {
        const parts = await t.evaluate(0);
        assert(Math.abs(parts.loss - whole.loss) <= 1e-6 * whole.loss, `${parts.loss} vs ${whole.loss}`);
        for (const [name, g] of Object.entries(whole.grads)) {
          let diff = 0, norm = 0;
          for (let i = 0; i < g.length; i++) {
            diff += (parts.grads[name][i] - g[i]) ** 2;
            norm += g[i] ** 2;
          }
          assert(norm > 0 && Math.sqrt(diff / norm) < 1e-5, `${name}: ${Math.sqrt(diff / norm)}`);
        }
      } finally {
        await t.release();
      }
    }
  });

  it("is deterministic, and a run resumed from a checkpoint continues bit for bit", async () => {
    const dir = await Deno.makeTempDir();
    const straight = await trainer(2), first = await trainer(2);
    try {
      for (let s = 0; s < 6; s++) await straight.step();
      for (let s = 0; s < 3; s++) await first.step();
      await first.checkpoint(dir);
      const resumed = await trainer(2);
      try {
        assert(await resumed.resume(dir));
        for (let s = 0; s < 3; s++) await resumed.step();
        assertSameBits(resumed.params, straight.params);
        assertSameBits(resumed.state.ema!, straight.state.ema!);
      } finally {
        await resumed.release();
      }
    } finally {
      await straight.release();
      await first.release();
      await Deno.remove(dir, { recursive: true });
    }
  });

  it("drawing the next batch while the workers compute changes nothing", async () => {
    const plain = await trainer(2);
    const ahead = await Trainer.create(graph(), {
      seed: 4,
      lr: 1e-2,
      clipNorm: 1,
      ema: 0.9,
      threads: 1,
      parallel: 2,
      prefetch: true,
      batch: batch(B),
    });
    try {
      for (let s = 0; s < 4; s++) {
        await plain.step();
        await ahead.step();
      }
      assertSameBits(ahead.params, plain.params);
      assertSameBits(ahead.state.ema!, plain.state.ema!);
    } finally {
      await plain.release();
      await ahead.release();
    }
  });

  it("refuses a batch that does not split evenly, and says so at the step", async () => {
    const t = await trainer(2, 15);
    try {
      await assertRejects(() => t.step(), TrainError, "a batch of 15 does not split into 2 equal parts");
      assertEquals(t.state.step, 0);
    } finally {
      await t.release();
    }
  });

  it("refuses a loss that is not a mean over the batch", async () => {
    const g = graph();
    const lossNode = g.model.graph!.node!.find((n) => n.output!.includes(g.loss))!;
    lossNode.opType = "ReduceSum";
    await assertRejects(() => trainer(2, B, g), TrainError, "is not a mean over the batch");
  });

  it("reports a worker's failure as the step's error", async () => {
    const t = await Trainer.create(graph(), {
      seed: 4,
      lr: 1e-2,
      threads: 1,
      parallel: 2,
      batch: (_s, r) => ({
        ...batch(B)(0, r),
        x: { type: "float32", data: new Float32Array(B * 5), dims: [B, 5] },
      }),
    });
    try {
      await assertRejects(() => t.step(), TrainError, "worker 0:");
    } finally {
      await t.release();
    }
  });

  it("--parallel shares --threads and the batch equally (0 chooses), naming the flag when it cannot", () => {
    assertEquals(parallelSetup(2, 2, 64), { threads: 1, parallel: 2 });
    assertEquals(parallelSetup(4, 2), { threads: 2, parallel: 2 });
    assertEquals(parallelSetup(2, 0, 64), { threads: 1, parallel: 2 });
    assertEquals(parallelSetup(2, 0, 63), { threads: 2, parallel: 1 });
    assertEquals(parallelSetup(1, 0, 64), { threads: 1, parallel: 1 });
    assertThrows(() => parallelSetup(2, -1), UsageError, "--parallel: -1 is not a number of sessions");
    assertThrows(() => parallelSetup(2, 3), UsageError, "--parallel: 3 sessions do not share --threads 2");
    assertThrows(() => parallelSetup(2, 2, 63), UsageError, "--parallel: a batch of 63 does not split");
  });

  it("a segment records its sessions when there are several", () => {
    assertEquals(new Segments(undefined, 0, 2, 3, 2).upTo(5)[0].parallel, 2);
    assertEquals(new Segments(undefined, 0, 2, 3).upTo(5)[0].parallel, undefined);
  });
});

/**
 * Training-step benchmark on ONNX Runtime (CPU by default): the ε-prediction U-Net of onnx/unet.ts under
 * the mean-squared ε loss, trained with Adam and gradient clipping by `Trainer`.
 *
 *     deno run -A onnx/bench_train.ts [--batch 16] [--size 28] [--width 32] [--steps 8] [--threads 1,4]
 *
 * Prints, per thread count: the median milliseconds per step, the mean time per step of each phase (ORT
 * forward+backward, Adam, batch synthesis), and whether two runs of the same seed gave bit-identical
 * parameters. The data are
 * synthetic (smooth random images): the timing does not depend on them.
 */
import { vpLinearSchedule } from "../core/schedule.ts";
import type { RngStream } from "../core/rng.ts";
import { gradModel, meanSquaredErrorLoss } from "./grad.ts";
import { createSession, runSession } from "./ort.ts";
import { encodeModel } from "./proto.ts";
import { type Batch, type FloatArray, lrSchedule, Trainer } from "./train.ts";
import { buildTrainableUNet } from "./unet.ts";

interface Args {
  batch: number;
  size: number;
  width: number;
  steps: number;
  threads: number[];
}

function parse(argv: string[]): Args {
  const a: Args = {
    batch: 16,
    size: 28,
    width: 32,
    steps: 8,
    threads: [1, navigator.hardwareConcurrency ?? 1],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--threads") a.threads = value.split(",").map(Number);
    else if (flag === "--batch" || flag === "--size" || flag === "--width" || flag === "--steps") {
      a[flag.slice(2) as "batch"] = Number(value);
    } else throw new Error(`unknown flag ${flag}`);
  }
  a.threads = [...new Set(a.threads)];
  return a;
}

/** x_t = α x₀ + σ ε for smooth random x₀ in [−1, 1] and t ~ U[t_min, 1]; the target is ε. */
function diffusionBatch(batch: number, size: number) {
  const schedule = vpLinearSchedule();
  return (_step: number, r: RngStream): Batch => {
    const n = size * size;
    const x = new Float32Array(batch * n), eps = new Float32Array(batch * n), t = new Float32Array(batch);
    for (let b = 0; b < batch; b++) {
      t[b] = schedule.tMin + (1 - schedule.tMin) * r.uniform();
      const [alpha, sigma] = [schedule.alpha(t[b]), schedule.sigma(t[b])];
      const [fx, fy, phase] = [1 + 3 * r.uniform(), 1 + 3 * r.uniform(), 2 * Math.PI * r.uniform()];
      for (let i = 0; i < n; i++) {
        const x0 = Math.sin((fx * (i % size)) / size * Math.PI + phase) *
          Math.cos((fy * Math.floor(i / size)) / size * Math.PI);
        const e = r.normal();
        eps[b * n + i] = e;
        x[b * n + i] = alpha * x0 + sigma * e;
      }
    }
    const dims = [batch, 1, size, size];
    return {
      x: { type: "float32", data: x, dims },
      t: { type: "float32", data: t, dims: [batch] },
      eps_target: { type: "float32", data: eps, dims },
    };
  };
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function sameBits(a: Record<string, FloatArray>, b: Record<string, FloatArray>): boolean {
  return Object.keys(a).every((k) => {
    const [x, y] = [new Uint8Array(a[k].buffer), new Uint8Array(b[k].buffer)];
    return x.length === y.length && x.every((v, i) => v === y[i]);
  });
}

if (import.meta.main) {
  const args = parse(Deno.args);
  const unet = buildTrainableUNet({ size: args.size, width: args.width });
  const t0 = performance.now();
  const graph = gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params });
  const buildMs = performance.now() - t0;
  console.log(
    `U-Net ${args.size}×${args.size}, width ${args.width}: ${unet.count} parameters in ${unet.params.length} tensors; ` +
      `forward ${unet.model.graph!.node!.length} nodes, training graph ${
        graph.model.graph!.node!.length
      } nodes ` +
      `(built in ${buildMs.toFixed(0)} ms)`,
  );
  const batch = diffusionBatch(args.batch, args.size);
  const results = [];
  for (const threads of args.threads) {
    const runs: Record<string, FloatArray>[] = [];
    let perStep: number[] = [], split = { ort: 0, optimizer: 0, batch: 0 };
    for (let rep = 0; rep < 2; rep++) {
      const trainer = await Trainer.create(graph, {
        seed: 1,
        lr: lrSchedule({ lr: 2e-4, warmup: 10 }),
        clipNorm: 1,
        threads,
        batch,
      });
      await trainer.step(); // warm-up (first run allocates)
      const before = { ...trainer.timings };
      const times: number[] = [];
      for (let s = 1; s < args.steps; s++) {
        const a = performance.now();
        await trainer.step();
        times.push(performance.now() - a);
      }
      const n = args.steps - 1;
      if (rep === 0) {
        perStep = times;
        split = {
          ort: (trainer.timings.ort - before.ort) / n,
          optimizer: (trainer.timings.optimizer - before.optimizer) / n,
          batch: (trainer.timings.batch - before.batch) / n,
        };
      }
      runs.push(trainer.params);
      await trainer.release();
    }
    const row = {
      threads,
      batch: args.batch,
      msPerStep: median(perStep),
      ortMs: split.ort,
      adamMs: split.optimizer,
      batchMs: split.batch,
      deterministic: sameBits(runs[0], runs[1]),
    };
    results.push(row);
    console.log(
      `threads ${threads}: median ${row.msPerStep.toFixed(1)} ms/step; means: ORT ${
        row.ortMs.toFixed(1)
      }, Adam ${row.adamMs.toFixed(1)}, batch ${
        row.batchMs.toFixed(1)
      } ms; same seed → identical parameters: ${row.deterministic}`,
    );
  }
  // forward only, for scale
  const { session } = await createSession(encodeModel(unet.model), {
    providers: ["cpu"],
    threads: args.threads[0],
  });
  const feeds = batch(0, { uniform: Math.random, normal: Math.random, u32: () => 0 });
  const fwd: number[] = [];
  for (let i = 0; i < 5; i++) {
    const a = performance.now();
    await runSession(session, { x: feeds.x, t: feeds.t });
    fwd.push(performance.now() - a);
  }
  console.log(`forward only (threads ${args.threads[0]}): ${median(fwd).toFixed(1)} ms`);
  console.log(JSON.stringify({ parameters: unet.count, results, forwardMs: median(fwd) }));
}

/**
 * `deno task bench:train`: what a training step of mnist-unet costs, against a forward pass of the same
 * batch, on this machine's CPU through ONNX Runtime. Writes docs/training.md and docs/training.json.
 *
 *     deno task bench:train [--batches 16,64,128] [--threads 2] [--steps 6] [--profile-batch 64]
 *                           [--parallel 0] [--torch] [--python /usr/bin/python3] [--out docs/training]
 *
 * Per batch: the median of `--steps` timed training steps of `deno task train`'s graph (loss and gradients
 * of the preconditioned U-Net F in ORT, split over `--parallel` sessions as the trainer does, then Adam
 * with clipping and the weight average, on the same data pipeline), split into ORT / optimiser / batch
 * preparation, and the same step in one session; the median of as many forward runs
 * of F alone; their ratio; and GFLOP/s of both from the matrix work ORT's profiler records (onnx/profile.ts).
 * At `--profile-batch`, the milliseconds per op type of the training graph and of the forward graph, and
 * the training graph's ORT time in each gradient formulation (training/common.ts), side by side.
 * With `--torch`, the same step and forward pass in PyTorch on the same graph, weights and batches
 * (bench/train/torch.ts; needs PyTorch for Python 3, e.g. Debian's python3-torch): the reference for
 * what a mature autograd pays for a step on this machine.
 *
 * Timings are only comparable within one run on an otherwise idle machine: the report records the
 * 1-minute load average when it started.
 */
import { median } from "../core/stats.ts";
import { gradModel, meanSquaredErrorLoss } from "../onnx/grad.ts";
import { createSession, runSession, type TensorInit } from "../onnx/ort.ts";
import { type OpTotal, readProfile, totalsByOp } from "../onnx/profile.ts";
import { encodeModel } from "../onnx/proto.ts";
import { lrSchedule } from "../training/optimizer.ts";
import { Trainer } from "../training/trainer.ts";
import type { TrainingGraph } from "../onnx/grad.ts";
import { rngStream } from "../core/rng.ts";
import { vpLinearSchedule } from "../core/schedule.ts";
import {
  type GradientSetup,
  gradientSetup,
  loadDigits,
  log,
  onSetup,
  parallelSetup,
  parseTrainingFlags,
  type TrainingFormulation,
  writeAtomic,
} from "../training/common.ts";
import { preconditionedBatch } from "../training/precondition.ts";
import { buildMnistUNet, PRECONDITION, TIME_SAMPLING, TRAIN_DEFAULTS } from "../training/train.ts";
import {
  randomizeWeights,
  type TorchBatch,
  torchReference,
  type TorchResult,
  type TorchRow,
  type TorchVariant,
} from "./train/torch.ts";
import { exists, torchVersion } from "./peer/torch.ts";

const DEFAULTS = {
  batches: "16,64,128",
  threads: TRAIN_DEFAULTS.threads,
  steps: 6,
  profileBatch: 64,
  parallel: TRAIN_DEFAULTS.parallel,
  torch: false,
  python: "",
  out: "docs/training",
};

interface Row {
  batch: number;
  stepMs: number;
  /** The step in one session of all the threads (the same as stepMs when --parallel is 1). */
  oneSessionMs: number;
  ortMs: number;
  optimizerMs: number;
  batchMs: number;
  forwardMs: number;
  ratio: number;
  trainGflop: number;
  forwardGflop: number;
  trainGflops: number;
  forwardGflops: number;
}

type Feeds = Record<string, TensorInit>;

/** Kernel runs of `repeats` profiled runs of `model` on `feeds` (after one unprofiled-equivalent warm-up). */
async function profileRuns(
  model: Uint8Array,
  feeds: Feeds,
  threads: number,
  repeats: number,
  outputs?: string[],
) {
  const prefix = `${await Deno.makeTempDir({ prefix: "genie-profile-" })}/ort`;
  const { session } = await createSession(model, { providers: ["cpu"], threads, profile: prefix });
  for (let i = 0; i <= repeats; i++) await runSession(session, feeds, outputs);
  (session as unknown as { endProfiling(): void }).endProfiling();
  await session.release();
  const runs = await readProfile(prefix);
  await Deno.remove(prefix.slice(0, prefix.lastIndexOf("/")), { recursive: true });
  // the first run (allocation, warm-up) is left out
  return runs.slice(runs.length / (repeats + 1));
}

async function timeRuns(model: Uint8Array, feeds: Feeds, threads: number, n: number, outputs?: string[]) {
  const { session } = await createSession(model, { providers: ["cpu"], threads });
  await runSession(session, feeds, outputs);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = performance.now();
    await runSession(session, feeds, outputs);
    times.push(performance.now() - a);
  }
  await session.release();
  return median(times);
}

function trainingFeeds(graph: TrainingGraph, batch: Feeds, params: Record<string, Float32Array>): Feeds {
  const feeds: Feeds = { ...batch };
  for (const p of graph.params) feeds[p.name] = { type: "float32", data: params[p.name], dims: p.dims };
  return feeds;
}

const f1 = (v: number) => v.toFixed(1), f2 = (v: number) => v.toFixed(2);

function opTable(train: OpTotal[], forward: OpTotal[]): string[] {
  const fwd = new Map(forward.map((o) => [o.op, o]));
  const total = train.reduce((a, o) => a + o.ms, 0), fTotal = forward.reduce((a, o) => a + o.ms, 0);
  const ops = [...new Set([...train.map((o) => o.op), ...forward.map((o) => o.op)])];
  const byOp = new Map(train.map((o) => [o.op, o]));
  ops.sort((a, b) => (byOp.get(b)?.ms ?? 0) - (byOp.get(a)?.ms ?? 0));
  const lines = [
    "| op type | training ms | share | calls | GFLOP/s | forward ms | forward calls | forward GFLOP/s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const op of ops) {
    const t = byOp.get(op), f = fwd.get(op);
    lines.push(
      `| ${op} | ${t ? f2(t.ms) : "–"} | ${t ? f1((100 * t.ms) / total) + "%" : "–"} | ${
        t ? Math.round(t.calls) : "–"
      } | ${t && t.gflop > 0 ? f1(t.gflop / (t.ms / 1000)) : "–"} | ${f ? f2(f.ms) : "–"} | ${
        f ? Math.round(f.calls) : "–"
      } | ${f && f.gflop > 0 ? f1(f.gflop / (f.ms / 1000)) : "–"} |`,
    );
  }
  lines.push(`| **all kernels** | **${f1(total)}** | 100% | | | **${f1(fTotal)}** | |`);
  return lines;
}

/**
 * What PyTorch's step on the same network says about the target (after the target's paragraph): its step
 * in units of ONNX Runtime's forward pass, and the two runtimes' steps and forward passes against each other.
 */
function torchTargetLines(torch: TorchResult | undefined, big: readonly Row[]): string[] {
  const rows = torch?.rows.filter((r) => big.some((b) => b.batch === r.batch)) ?? [];
  if (!rows.length) return [];
  const by = new Map(big.map((r) => [r.batch, r]));
  const each = (f: (r: TorchRow, o: Row) => number) =>
    rows.map((r) => `${f2(f(r, by.get(r.batch)!))} at batch ${r.batch}`).join(", ");
  return [
    "",
    "PyTorch on the same network and machine (section below, its native variant) takes for a step",
    `${each((r, o) => r.variants.native.stepMs / o.forwardMs)} times ONNX Runtime's forward pass: the`,
    "target asks for about PyTorch's own step time. Against it, ONNX Runtime's step takes",
    `${each((r, o) => o.stepMs / r.variants.native.stepMs)} times as long and its forward pass`,
    `${each((r, o) => o.forwardMs / r.variants.native.forwardMs)} times as long.`,
  ];
}

/** The report's section on PyTorch: its step and forward pass beside ONNX Runtime's, batch by batch. */
function torchSection(torch: TorchResult, rows: readonly Row[], threads: number): string[] {
  const ort = new Map(rows.map((r) => [r.batch, r]));
  const agree = (k: TorchVariant) =>
    Math.max(...torch.rows.map((r) => Math.abs(r.variants[k].loss - r.ortLoss) / Math.abs(r.ortLoss)))
      .toExponential(1);
  const line = (r: TorchRow, k: TorchVariant) => {
    const o = ort.get(r.batch)!, v = r.variants[k];
    return `| ${r.batch} | ${k} | ${f1(v.stepMs)} | ${f1(v.forwardMs)} | ${f2(v.stepMs / v.forwardMs)} | ${
      f1(o.stepMs)
    } | ${f1(o.forwardMs)} | ${f2(o.ratio)} | ${f2(o.stepMs / v.stepMs)} | ${
      f2(o.forwardMs / v.forwardMs)
    } |`;
  };
  return [
    "## PyTorch on the same network",
    "",
    `The same step in PyTorch ${torch.torch} on the same machine (${torch.threads} threads; ${threads} for ONNX`,
    "Runtime), as the reference for what a mature autograd pays here (bench/train/torch.ts,",
    "bench/train/torch_step.py). It runs the training graph's forward part node by node with PyTorch",
    "operators, on the same batches, with the weights drawn at random (values do not change the work;",
    "random weights make the loss depend on every layer, where the initial output convolution is zero);",
    "PyTorch's autograd computes the gradients, and torch.optim.Adam, gradient clipping and the weight",
    "average complete the step. Two variants, timed in turn: *graph* runs the nodes as they are",
    `(${torch.nodes.graph} nodes: GroupNorm decomposed, SiLU as x·σ(x)); *native* replaces those by`,
    `PyTorch's group_norm and silu (${torch.nodes.native} nodes), as a PyTorch model would be written.`,
    "Forward: the same operators up to ε, without gradients. With those weights, every batch's loss agreed",
    `with ONNX Runtime's to ${agree("graph")} (graph) and ${agree("native")} (native), relative;`,
    "tests/bench/train_torch.test.ts also checks PyTorch's gradients against onnx/grad.ts's.",
    "Medians of the same number of steps as above, run after them.",
    "",
    "| batch | PyTorch | step ms | forward ms | step ÷ forward | ORT step ms | ORT forward ms | ORT step ÷ forward | ORT step ÷ PyTorch step | ORT forward ÷ PyTorch forward |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...torch.rows.flatMap((r) => [line(r, "graph"), line(r, "native")]),
    "",
  ];
}

if (import.meta.main) {
  const f = parseTrainingFlags(Deno.args, DEFAULTS, { threads: 1, steps: 1, profileBatch: 1, parallel: 0 });
  f.parallel = parallelSetup(f.threads, f.parallel).parallel;
  const batches = String(f.batches).split(",").map(Number);
  if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new Error(`--batches: ${f.batches}`);
  const python = f.python || (await exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
  if (f.torch && !(await torchVersion(python))) {
    console.error(
      `bench:train --torch needs PyTorch for ${python} (import torch failed): install it (Debian: ` +
        "`sudo apt-get install -y python3-torch`, about 300 MB) or name another interpreter with --python.",
    );
    Deno.exit(2);
  }
  const load = Deno.loadavg()[0];
  const digits = await loadDigits();
  const unet = buildMnistUNet();
  // the training graph `deno task train` runs: the default formulation, as it runs on this machine
  const setup = await gradientSetup(TRAIN_DEFAULTS.formulation);
  const trainingGraph = (s: GradientSetup) =>
    onSetup(
      gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params, formulation: s.grad }),
      s,
    );
  const graph = trainingGraph(setup);
  const trainBytes = encodeModel(graph.model), forwardBytes = encodeModel(unet.model);
  log(
    `bench:train: ${unet.count} parameters; training graph ${
      graph.model.graph!.node!.length
    } nodes; load ${load}`,
  );
  const rows: Row[] = [];
  const torchBatches: TorchBatch[] = [];
  // PyTorch's copy: the same graph with its weights drawn at random, so that the losses the two compute
  // depend on every layer (timing does not depend on the values)
  const lossModel = f.torch
    ? randomizeWeights(meanSquaredErrorLoss(buildMnistUNet().model, "eps"), unet.params, 11)
    : undefined;
  // ONNX Runtime's loss on each batch with those weights, for PyTorch's to be compared with
  const lossSession = lossModel
    ? (await createSession(encodeModel(lossModel), { providers: ["cpu"], threads: 1 })).session
    : undefined;
  let ops: { train: OpTotal[]; forward: OpTotal[] } | undefined;
  let formulations:
    | { batch: number; block?: number; ms: Partial<Record<TrainingFormulation, number>> }
    | undefined;
  for (const batch of batches) {
    const data = preconditionedBatch(digits, batch, 0.1, vpLinearSchedule(), PRECONDITION, TIME_SAMPLING);
    // the step as `deno task train` takes it (its --parallel default), then in one session for comparison
    const steps = async (parallel: number) => {
      const trainer = await Trainer.create(graph, {
        seed: 1,
        lr: lrSchedule({ lr: 1e-4, warmup: 10 }),
        clipNorm: 1,
        ema: TRAIN_DEFAULTS.ema,
        ...parallelSetup(f.threads, parallel, batch),
        prefetch: true,
        batch: data,
      });
      await trainer.step(); // the first run allocates
      const before = { ...trainer.timings }, times: number[] = [];
      for (let s = 0; s < f.steps; s++) {
        const a = performance.now();
        await trainer.step();
        times.push(performance.now() - a);
      }
      const per = (k: "ort" | "optimizer" | "batch") => (trainer.timings[k] - before[k]) / f.steps;
      const params = Object.fromEntries(
        Object.entries(trainer.params).map(([k, v]) => [k, Float32Array.from(v)]),
      );
      await trainer.release();
      return { ms: median(times), per, params };
    };
    const { ms: stepMs, per, params } = await steps(f.parallel);
    const oneSessionMs = f.parallel > 1 ? (await steps(1)).ms : stepMs;

    const feeds = data(0, rngStream(1, 0));
    const forwardFeeds: Feeds = { x: feeds.x, t: feeds.t, class: feeds.class };
    if (lossSession) {
      const ortLoss = Number((await runSession(lossSession, feeds, ["loss"])).loss.data[0]);
      torchBatches.push({ batch, feeds, ortLoss });
    }
    const forwardMs = await timeRuns(forwardBytes, forwardFeeds, f.threads, Math.max(f.steps, 5));
    const tFeeds = trainingFeeds(graph, feeds, params),
      outputs = [graph.loss, ...graph.params.map((p) => p.grad)];
    const trainRuns = await profileRuns(trainBytes, tFeeds, f.threads, 2, outputs);
    const forwardRuns = await profileRuns(forwardBytes, forwardFeeds, f.threads, 3);
    const train = totalsByOp(trainRuns, 2), forward = totalsByOp(forwardRuns, 3);
    if (batch === f.profileBatch) {
      ops = { train, forward };
      // the same training graph in every formulation this machine runs, timed in turn
      const kinds = (setup.formulation === 3 ? [3, 2, 1] : [2, 1]) as TrainingFormulation[];
      const bytes = new Map<TrainingFormulation, Uint8Array>();
      for (const k of kinds) {
        bytes.set(
          k,
          k === setup.formulation ? trainBytes : encodeModel(trainingGraph(await gradientSetup(k)).model),
        );
      }
      const times = new Map(kinds.map((k) => [k, [] as number[]]));
      for (let round = 0; round < 3; round++) {
        for (const k of kinds) {
          times.get(k)!.push(await timeRuns(bytes.get(k)!, tFeeds, f.threads, f.steps, outputs));
        }
      }
      formulations = {
        batch,
        block: setup.block,
        ms: Object.fromEntries(kinds.map((k) => [k, median(times.get(k)!)])),
      };
      log(
        `gradient formulations at batch ${batch}: ${
          kinds.map((k) => `${k}: ${f1(formulations!.ms[k]!)} ms`).join(", ")
        }`,
      );
    }
    const gflop = (t: OpTotal[]) => t.reduce((a, o) => a + o.gflop, 0);
    const row: Row = {
      batch,
      stepMs,
      oneSessionMs,
      ortMs: per("ort"),
      optimizerMs: per("optimizer"),
      batchMs: per("batch"),
      forwardMs,
      ratio: stepMs / forwardMs,
      trainGflop: gflop(train),
      forwardGflop: gflop(forward),
      trainGflops: gflop(train) / (per("ort") / 1000),
      forwardGflops: gflop(forward) / (forwardMs / 1000),
    };
    rows.push(row);
    log(
      `batch ${batch}: step ${f1(row.stepMs)} ms (ORT ${f1(row.ortMs)}, optimiser ${
        f1(row.optimizerMs)
      }, batch ${f1(row.batchMs)}); forward ${f1(forwardMs)} ms; ratio ${f2(row.ratio)}; ${
        f1(row.trainGflops)
      } / ${f1(row.forwardGflops)} GFLOP/s; one session ${f1(oneSessionMs)} ms`,
    );
  }

  await lossSession?.release();
  let torch: TorchResult | undefined;
  if (lossModel) {
    log(`PyTorch on the same graph (${python}) …`);
    torch = await torchReference({
      python,
      model: lossModel,
      params: unet.params,
      eps: "eps",
      loss: "loss",
      batches: torchBatches,
      threads: f.threads,
      steps: f.steps,
      optimizer: {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        clip: 1,
        average: TRAIN_DEFAULTS.ema,
      },
    });
    for (const r of torch.rows) {
      for (const [k, v] of Object.entries(r.variants)) {
        log(
          `PyTorch (${k}) batch ${r.batch}: step ${f1(v.stepMs)} ms, forward ${f1(v.forwardMs)} ms, ratio ${
            f2(v.stepMs / v.forwardMs)
          }; loss ${v.loss} (ORT ${r.ortLoss})`,
        );
      }
    }
  }

  const md = [
    "# Training throughput (mnist-unet)",
    "",
    `Generated by \`deno task bench:train${
      f.torch ? " --torch" : ""
    }\` (bench/train.ts); do not edit by hand.`,
    `Machine: ${navigator.hardwareConcurrency} cores, ONNX Runtime CPU, ${f.threads} intra-op threads; ` +
    `1-minute load average when the run started: ${load.toFixed(2)} (no training run shared the cores).`,
    `Date: ${
      new Date().toISOString().slice(0, 10)
    }. Model: ${unet.count} parameters (training/unet.ts, training/train.ts).`,
    "",
    "A training step is `deno task train`'s: the loss and all gradients of the preconditioned network F (the",
    `training graph built by onnx/grad.ts) in ORT — as \`--parallel ${f.parallel}\` runs it${
      f.parallel > 1
        ? `: the batch split over ${f.parallel} sessions of ${
          f.threads / f.parallel
        } thread(s) each, on their own threads, their gradients averaged (training/parallel.ts)`
        : ": one session"
    } —`,
    "then Adam, gradient clipping and the weight average in JavaScript, and the batch drawn from the digits",
    "(with `--parallel`, the next step's batch is drawn while the workers compute; the ORT, optimiser and",
    "batch columns are means per step, the others medians).",
    `Forward: one ORT run of F alone on the same batch, ${f.threads} threads. ${f.steps} steps / runs after a`,
    "warm-up. GFLOP/s count Conv, ConvTranspose, MatMul and Gemm work (2 FLOPs per multiply-add) from the",
    "shapes ORT's profiler records (one session), over the ORT time of the step.",
    ...(f.parallel > 1
      ? [
        `The last two columns: the same step in one session of ${f.threads} threads (\`--parallel 1\`, the shipped`,
        "runs' setting), timed after it.",
      ]
      : []),
    "",
    "| batch | step ms | ORT ms | optimiser ms | batch ms | forward ms | step ÷ forward | training GFLOP | training GFLOP/s | forward GFLOP/s | one session: step ms | one session: step ÷ forward |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.batch} | ${f1(r.stepMs)} | ${f1(r.ortMs)} | ${f1(r.optimizerMs)} | ${f1(r.batchMs)} | ${
        f1(r.forwardMs)
      } | ${f2(r.ratio)} | ${f2(r.trainGflop)} | ${f1(r.trainGflops)} | ${f1(r.forwardGflops)} | ${
        f1(r.oneSessionMs)
      } | ${f2(r.oneSessionMs / r.forwardMs)} |`
    ),
    "",
    ...(() => {
      const big = rows.filter((r) => r.batch >= 64);
      if (!big.length) return [];
      const worst = Math.max(...big.map((r) => r.ratio));
      return [
        "",
        `Target: a training step ≤ 4× a forward pass at batch ≥ 64. Measured: ${
          big.map((r) => `${f2(r.ratio)}× at batch ${r.batch}`).join(", ")
        } — ${
          worst <= 4 ? "met" : `missed by ${f2(worst / 4)}×`
        }. Where the time goes is in the table below:`,
        "the matrix kernels (Conv, MatMul) against the memory-bound nodes of the gradient graph (the slices of",
        "the weight gradients' kernel taps, the elementwise products and sums of the backward pass). ONNX",
        "Runtime runs a convolution on its fast blocked (NCHWc) kernels by itself only when the weights are",
        "constants, as in the forward graph; formulation 3 (below) moves the training graph's convolutions",
        "there (compare the Conv row's two GFLOP/s). The weight gradients stay matrix products of copied",
        "windows (FusedMatMul, Slice, Transpose). Those many small and memory-bound nodes spread over ORT's",
        "intra-op threads less well than a forward pass's few large ones, which is why sessions of one thread",
        "on parts of the batch (`--parallel`, the default of `deno task train`) step faster than one session",
        "of all the threads (the table's last columns).",
        ...torchTargetLines(torch, big),
        "",
      ];
    })(),
    ...(formulations
      ? [
        "## Gradient formulations",
        "",
        "The same gradients, computed three ways (training/common.ts `--formulation`). 1: onnx/grad.ts",
        "differentiates every node by itself, the weight gradients' windows batch-second; the shipped mnist-unet,",
        "its head and the classifier were trained so. 2: SiLU (x·σ(x)) and GroupNorm's standardisation",
        "differentiated as one function each (onnx/grad_composites.ts), the windows batch-last (longer",
        "contiguous runs for the slices to copy). 3 (the default): 2 with the convolutions moved to ONNX Runtime's",
        `blocked kernels, the weights laid out in the graph (onnx/blocked_conv.ts; block size ${
          formulations.block ?? "none: this CPU has no blocked kernels, so 3 runs as 2"
        }). One ORT run of the training graph at batch ${formulations.batch}, median of 3 rounds that`,
        `alternate the graphs (${f.steps} runs each):`,
        "",
        "| formulation | ORT ms per run | ÷ the default |",
        "|---|---:|---:|",
        ...([3, 2, 1] as TrainingFormulation[]).filter((k) => formulations!.ms[k] !== undefined).map((
          k,
          _,
          all,
        ) =>
          `| ${k}${k === all[0] ? " (the default)" : ""} | ${f1(formulations!.ms[k]!)} | ${
            f2(formulations!.ms[k]! / formulations!.ms[all[0]]!)
          } |`
        ),
        "",
      ]
      : []),
  ];
  if (torch) md.push(...torchSection(torch, rows, f.threads));
  if (ops) {
    md.push(
      `## Where the time goes (batch ${f.profileBatch}, ORT's profiler, ms per run)`,
      "",
      "Kernel time per op type (profiling adds a little per node; the totals are below the wall-clock times above).",
      "",
      ...opTable(ops.train, ops.forward),
      "",
    );
  }
  await writeAtomic(`${f.out}.md`, md.join("\n"));
  await writeAtomic(
    `${f.out}.json`,
    JSON.stringify(
      { date: new Date().toISOString(), threads: f.threads, load, rows, ops, formulations, torch },
      null,
      2,
    ) + "\n",
  );
  log(`wrote ${f.out}.md and ${f.out}.json`);
}

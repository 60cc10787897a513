/**
 * `deno task distill`: distils the GENIE derivative head of mnist-unet (GENIE.md §5) and ships it as
 * `models/mnist-unet/head.onnx`, the graph the worker runs in ONE call per GENIE step (x, t, class → eps,
 * deriv): the score network exposing its features, then the head.
 *
 *     deno task distill [--steps 16000] [--batch 16] [--lr 1e-3] [--width 8] [--seed 1] [--threads 2]
 *                       [--model models/mnist-unet] [--ckpt training/logs/head-ckpt] [--max-minutes 0]
 *                       [--stop-at 0]
 *
 * Per step (all random numbers from rngStream(seed, step)): x₀ from the digits, class (null class 10 with
 * probability 0.1), t ~ U[t_min, 1], x_t = α x₀ + σ ε; the frozen network gives ε̂, features and temb
 * (ORT), its JVP graph the target τ = dε̂/dγ along the ODE (training/targets.ts). The loss is
 * mean_batch γ² Σ_pixels (k − τ)²; Adam, global gradient-norm clip 1.0, fp32; only the head trains
 * (onnx/head.ts; its second block conv and output conv start near zero, so it starts as DDIM).
 *
 * Budget: GENIE.md §5's typical runs are 15k–40k steps at lr 5e−5–1e−4 on GPUs; on 2 CPU cores the default
 * is 16k steps (≈ 35–45 minutes with two ORT threads) at a larger lr, 1e−3 with warm-up and cosine decay
 * to 1e−5. The served head.onnx writes GroupNorm as InstanceNormalization over the groups (onnx/head.ts:
 * the same values, fewer kernels), which keeps eps + head within about 1.1× eps alone.
 *
 * Progress on stderr; checkpoints in `--ckpt` (resumable); a held-out evaluation batch (other digits'
 * stream, stratified t) reports the median relative error ‖k − τ‖/‖τ‖ at the start and the end.
 * Writes head.onnx, adds `head` to model.json's graphs and records distill.json.
 */
import { rngStream } from "../core/rng.ts";
import { median } from "../bench/stats.ts";
import { gradModel, meanSquaredErrorLoss } from "../onnx/grad.ts";
import { buildHeadModel, combinedHeadModel, HEAD_DEFAULTS, type HeadOptions } from "../onnx/head.ts";
import { createSession, runSession } from "../onnx/ort.ts";
import { encodeModel } from "../onnx/proto.ts";
import { type Batch, type FloatArray, Trainer } from "../onnx/train.ts";
import {
  type Digits,
  formatSeconds,
  loadDigits,
  log,
  parseFlags,
  SIZE,
  warmupCosine,
  writeAtomic,
} from "./common.ts";
import {
  drawNoisy,
  type HeadData,
  headData,
  loadScoreGraphs,
  schedule,
  type ScoreGraphs,
} from "./targets.ts";

export const DISTILL_DEFAULTS = {
  steps: 16000,
  batch: 16,
  lr: 1e-3,
  minLr: 1e-5,
  warmup: 50,
  drop: 0.1,
  width: HEAD_DEFAULTS.width,
  seed: 1,
  threads: 2,
  model: "models/mnist-unet",
  ckpt: "training/logs/head-ckpt",
  every: 100,
  progress: 20,
  evalBatch: 48,
  maxMinutes: 0,
  stopAt: 0,
};

/** The head's training-graph feeds from distillation data. */
export function headFeeds(d: HeadData): Batch {
  const img = [d.batch, 1, SIZE, SIZE];
  return {
    x: { type: "float32", data: d.x, dims: img },
    eps: { type: "float32", data: d.eps, dims: img },
    features: { type: "float32", data: d.features, dims: [d.batch, d.featureChannels, SIZE, SIZE] },
    temb: { type: "float32", data: d.temb, dims: [d.batch, d.embed] },
    gamma: { type: "float32", data: d.gamma, dims: [d.batch] },
    k_target: { type: "float32", data: d.target, dims: img },
    w: { type: "float32", data: Float32Array.from(d.gamma, (g) => g * g), dims: [d.batch] },
  };
}

/** The head's training graph: loss = mean_b γ_b² Σ (k − τ)². */
export function headTrainingGraph(options: Partial<HeadOptions> = {}) {
  const head = buildHeadModel(SIZE, options);
  const graph = gradModel(meanSquaredErrorLoss(head.model, "k", { weight: "w", perSample: "sum" }), {
    params: head.params,
  });
  return { head, graph };
}

/** k of the head with parameter values `params` on distillation data. */
export async function runHead(
  params: Readonly<Record<string, FloatArray>>,
  d: HeadData,
  options: Partial<HeadOptions> = {},
): Promise<Float32Array> {
  const head = buildHeadModel(SIZE, options, (name) => Float32Array.from(params[name]));
  const { session } = await createSession(encodeModel(head.model), { providers: ["cpu"], threads: 1 });
  const feeds = headFeeds(d);
  delete feeds.k_target;
  delete feeds.w;
  const out = await runSession(session, feeds, ["k"]);
  await session.release?.();
  return out.k.data as Float32Array;
}

/** Per-sample relative error ‖k − τ‖/‖τ‖. */
export function relativeErrors(k: ArrayLike<number>, target: ArrayLike<number>, batch: number): number[] {
  const per = target.length / batch;
  return Array.from({ length: batch }, (_, b) => {
    let num = 0, den = 0;
    for (let i = b * per; i < (b + 1) * per; i++) {
      num += (k[i] - target[i]) ** 2;
      den += target[i] ** 2;
    }
    return Math.sqrt(num / den);
  });
}

/** A fixed evaluation batch: stratified t over [t_min, 1], its own random stream. */
export async function evalData(g: ScoreGraphs, digits: Digits, n: number, seed: number): Promise<HeadData> {
  const ts = Array.from({ length: n }, (_, b) => schedule.tMin + (1 - schedule.tMin) * (b + 0.5) / n);
  const { x, t, cls } = drawNoisy(digits, n, rngStream(seed + 7919, 0xe7a1), 0.1, undefined, ts);
  return await headData(g, x, t, cls);
}

function summary(errors: number[], d: HeadData): string {
  const buckets: [number, number][] = [[0, 0.1], [0.1, 0.3], [0.3, 0.6], [0.6, 1.01]];
  return buckets.map(([a, b]) => {
    const sel = errors.filter((_, i) => d.t[i] >= a && d.t[i] < b);
    return `t∈[${a},${Math.min(b, 1)}): ${sel.length ? median(sel).toFixed(3) : "-"}`;
  }).join("  ");
}

if (import.meta.main) {
  const f = parseFlags(Deno.args, DISTILL_DEFAULTS, {
    steps: 1,
    batch: 1,
    warmup: 0,
    width: 1,
    seed: 0,
    threads: 1,
    every: 1,
    progress: 1,
    evalBatch: 1,
    stopAt: 0,
  });
  if (f.width % HEAD_DEFAULTS.groups !== 0) {
    throw new Error(`--width: expected a multiple of ${HEAD_DEFAULTS.groups} (the head's GroupNorm groups)`);
  }
  const headOptions: Partial<HeadOptions> = { width: f.width };
  const digits = await loadDigits();
  const graphs = await loadScoreGraphs(`${f.model}/eps.onnx`, f.threads);
  const { head, graph } = headTrainingGraph(headOptions);
  log(`GENIE head: ${head.count} parameters (width ${f.width}); flags ${JSON.stringify(f)}`);
  let current: Batch | undefined;
  const trainer = await Trainer.create(graph, {
    seed: f.seed,
    lr: warmupCosine(f),
    clipNorm: 1,
    threads: f.threads,
    batch: () => {
      if (!current) throw new Error("no batch prepared");
      return current;
    },
  });
  if (await trainer.resume(f.ckpt)) log(`resumed from ${f.ckpt} at step ${trainer.state.step}`);
  const evalSet = await evalData(graphs, digits, f.evalBatch, f.seed);
  const before = relativeErrors(
    await runHead(trainer.params, evalSet, headOptions),
    evalSet.target,
    evalSet.batch,
  );
  log(`held-out relative error before: median ${median(before).toFixed(3)}  ${summary(before, evalSet)}`);

  const start = performance.now(), first = trainer.state.step;
  const deadline = f.maxMinutes > 0 ? Date.now() + f.maxMinutes * 60_000 : Infinity;
  let smooth = NaN, windowSum = 0, windowN = 0;
  const history: { step: number; loss: number }[] = [];
  const last = f.stopAt > 0 ? Math.min(f.stopAt, f.steps) : f.steps;
  while (trainer.state.step < last) {
    const step = trainer.state.step;
    const r = rngStream(f.seed, step);
    const { x, t, cls } = drawNoisy(digits, f.batch, r, f.drop);
    current = headFeeds(await headData(graphs, x, t, cls));
    const res = await trainer.step();
    current = undefined;
    const done = trainer.state.step;
    smooth = Number.isNaN(smooth) ? res.loss : 0.98 * smooth + 0.02 * res.loss;
    windowSum += res.loss;
    windowN++;
    const stopping = done === last || Date.now() > deadline;
    if (done % f.every === 0 || stopping) await trainer.checkpoint(f.ckpt);
    if (done % f.progress === 0 || stopping) {
      const elapsed = (performance.now() - start) / 1000, rate = (done - first) / elapsed;
      history.push({ step: done, loss: windowSum / windowN });
      log(
        `step ${done}/${f.steps}  loss ${res.loss.toFixed(3)}  avg${windowN} ${
          (windowSum / windowN).toFixed(3)
        }  ` +
          `ema ${smooth.toFixed(3)}  |g| ${res.gradNorm.toFixed(2)}  lr ${res.lr.toExponential(2)}  ${
            rate.toFixed(2)
          } it/s  elapsed ${formatSeconds(elapsed)}  ETA ${formatSeconds((f.steps - done) / rate)}`,
      );
      windowSum = 0;
      windowN = 0;
    }
    if (stopping && done < last) {
      log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
      break;
    }
  }
  const after = relativeErrors(
    await runHead(trainer.params, evalSet, headOptions),
    evalSet.target,
    evalSet.batch,
  );
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet)}`);

  // the served graph: eps + features → head → deriv, in one run
  const params: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(trainer.params)) params[k] = Float32Array.from(v);
  const combined = combinedHeadModel(graphs.eps, params, { ...headOptions, norm: "instance" });
  await writeAtomic(`${f.model}/head.onnx`, encodeModel(combined));
  // check: the combined graph reproduces eps.onnx's ε and the standalone head's k
  const { session } = await createSession(encodeModel(combined), { providers: ["cpu"], threads: 1 });
  const out = await runSession(session, {
    x: { type: "float32", data: evalSet.x, dims: [evalSet.batch, 1, SIZE, SIZE] },
    t: { type: "float32", data: evalSet.t, dims: [evalSet.batch] },
    class: { type: "int64", data: evalSet.cls, dims: [evalSet.batch] },
  });
  const served = relativeErrors(out.deriv.data as Float32Array, evalSet.target, evalSet.batch);
  let epsDiff = 0;
  for (let i = 0; i < evalSet.eps.length; i++) {
    epsDiff = Math.max(epsDiff, Math.abs((out.eps.data as Float32Array)[i] - evalSet.eps[i]));
  }
  log(
    `head.onnx: median relative error ${median(served).toFixed(3)}; max |Δε| vs eps.onnx ${
      epsDiff.toExponential(2)
    }`,
  );

  // A resumed run keeps the record of the steps before it (same flags): loss history and time.
  const earlier = await Deno.readTextFile(`${f.model}/distill.json`).then(JSON.parse).catch(() => undefined);
  const continues = earlier && first > 0 && earlier.steps_done === first &&
    JSON.stringify({ ...earlier.flags, steps: f.steps }) === JSON.stringify(f);
  const fullHistory = continues ? [...(earlier.loss_history ?? []), ...history] : history;
  const seconds = (performance.now() - start) / 1000 +
    (continues ? earlier.seconds_total ?? earlier.seconds_this_run ?? 0 : 0);

  const manifestPath = `${f.model}/model.json`;
  const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  manifest.graphs = { ...manifest.graphs, head: "head.onnx" };
  await writeAtomic(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  await writeAtomic(
    `${f.model}/distill.json`,
    JSON.stringify(
      {
        flags: f,
        head: { ...HEAD_DEFAULTS, ...headOptions, parameters: head.count },
        steps_done: trainer.state.step,
        final_loss_ema: smooth,
        heldout_relative_error: {
          before_median: continues
            ? earlier.heldout_relative_error?.before_median ?? median(before)
            : median(before),
          after_median: median(after),
          served_median: median(served),
          per_sample_t: Array.from(evalSet.t),
          after: after,
        },
        loss_history: fullHistory,
        seconds_this_run: (performance.now() - start) / 1000,
        seconds_total: seconds,
        finished: new Date().toISOString(),
      },
      null,
      2,
    ) + "\n",
  );
  log(`done: ${trainer.state.step} steps; wrote ${f.model}/head.onnx`);
  await trainer.release();
}

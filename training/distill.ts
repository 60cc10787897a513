/**
 * `deno task distill`: distils the GENIE derivative head of mnist-unet and ships it as
 * `models/mnist-unet/head.onnx`, the graph the worker runs in ONE call per GENIE step (x, t, class → eps,
 * deriv): the score network exposing its features, then the head (training/head.ts).
 *
 *     deno task distill [--steps 20000] [--batch 32] [--lr 1e-3] [--min-lr 1e-5] [--warmup 200]
 *                       [--ema 0.999] [--width 32] [--seed 1] [--threads 2] [--model models/mnist-unet]
 *                       [--ckpt training/checkpoints/mnist-unet-head] [--eval-every 1000] [--max-minutes 0]
 *                       [--stop-at 0]
 *
 * Per step (all random numbers from rngStream(seed, step)): x₀ from the digits, class (null class 10 with
 * probability 0.1), t ~ U[t_min, 1], x_t = α x₀ + σ ε; the frozen network gives ε̂, features and temb
 * (ORT), its JVP graph the exact target τ = dε̂/dγ along the probability-flow ODE (training/targets.ts).
 * The loss is the mean squared relative error mean_b ‖k_b − τ_b‖²/‖τ_b‖² (the measure the head is judged
 * by), with ‖τ_b‖² floored where τ is negligible ({@link relativeWeights}); Adam, warm-up and cosine
 * decay, global gradient-norm clip 1.0, fp32; only the head trains (its output conv starts near zero, so
 * it starts as DDIM). An exponential moving average of the head's weights (`--ema`) is what is evaluated
 * and shipped.
 *
 * Progress on stderr; checkpoints (atomic, the newest kept) in `--ckpt`, with distill.json (flags, every
 * segment run, loss and held-out histories) beside them, continued automatically by a run with the same
 * flags; `--max-minutes`/`--stop-at` stop early with a checkpoint. A held-out evaluation batch
 * (its own random stream, t stratified over [t_min, 1]) reports the median relative error ‖k − τ‖/‖τ‖ at the
 * start and the end, overall and per range of t. Writes head.onnx, adds `head` to model.json's graphs and
 * records distill.json (flags, error, loss history, time).
 */
import { rngStream } from "../core/rng.ts";
import { median } from "../core/stats.ts";
import { gradModel, meanSquaredErrorLoss } from "../onnx/grad.ts";
import { buildHeadModel, combinedHeadModel, HEAD_DEFAULTS, type HeadOptions } from "./head.ts";
import { createSession, runSession } from "../onnx/ort.ts";
import { encodeModel } from "../onnx/proto.ts";
import { type Batch, type FloatArray, Trainer } from "./trainer.ts";
import {
  type Digits,
  formatSeconds,
  loadDigits,
  log,
  parseFlags,
  readJsonIfExists,
  type Segment,
  Segments,
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
  steps: 20000,
  batch: 32,
  lr: 1e-3,
  minLr: 1e-5,
  warmup: 200,
  ema: 0.999,
  drop: 0.1,
  width: HEAD_DEFAULTS.width,
  seed: 1,
  threads: 2,
  model: "models/mnist-unet",
  ckpt: "training/checkpoints/mnist-unet-head",
  every: 250,
  progress: 20,
  evalBatch: 48,
  evalEvery: 1000,
  maxMinutes: 0,
  stopAt: 0,
};

/** What distill.json holds (the parts a resumed run reads back). */
interface DistillRecord {
  final_loss_ema?: number;
  segments?: Segment[];
  loss_history?: { step: number; loss: number }[];
  eval_history?: { step: number; median: number; below06: number }[];
  heldout_relative_error?: { before_median?: number };
}

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
    w: { type: "float32", data: relativeWeights(d.target, d.batch), dims: [d.batch] },
  };
}

/**
 * Per-sample loss weights 1/max(‖τ_b‖², P·τ_floor²) (P values per sample): the weighted loss
 * Σ_b w_b ‖k_b − τ_b‖² / B is then the mean squared relative error, the measure the head is judged by,
 * wherever the target's RMS exceeds `floor`. ‖τ‖ falls from about 0.1/γ at small γ to about 0.03/γ² at
 * large γ (1e−6 at t = 1), where a step's Taylor term ½h²k is negligible next to x̄; without the floor
 * those samples' relative error, hypersensitive to any output at all, dominates the loss.
 */
export function relativeWeights(target: ArrayLike<number>, batch: number, floor = TAU_FLOOR): Float32Array {
  const per = target.length / batch, w = new Float32Array(batch);
  for (let b = 0; b < batch; b++) {
    let sum = 0;
    for (let i = b * per; i < (b + 1) * per; i++) sum += target[i] * target[i];
    w[b] = 1 / Math.max(sum, per * floor * floor);
  }
  return w;
}

/** The RMS of τ below which the loss counts absolute rather than relative error (about t = 0.65). */
export const TAU_FLOOR = 1e-3;

/** The head's training graph: loss = mean_b w_b Σ (k − τ)² with w from {@link relativeWeights}. */
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
    evalEvery: 0,
    stopAt: 0,
  });
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
    ema: f.ema,
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
  // the record of the run so far, kept beside the checkpoint: a resumed run continues it
  const earlier = first > 0 ? await readJsonIfExists<DistillRecord>(`${f.ckpt}/distill.json`) : undefined;
  const upTo = <T extends { step: number }>(v: T[] | undefined) => (v ?? []).filter((h) => h.step <= first);
  const history: { step: number; loss: number }[] = upTo(earlier?.loss_history);
  const evalHistory: { step: number; median: number; below06: number }[] = upTo(earlier?.eval_history);
  const segments = new Segments(earlier?.segments, first, f.threads);
  const record = (extra: Record<string, unknown> = {}) => {
    return JSON.stringify(
      {
        flags: f,
        head: { ...HEAD_DEFAULTS, ...headOptions, parameters: head.count },
        steps_done: trainer.state.step,
        final_loss_ema: Number.isNaN(smooth) ? earlier?.final_loss_ema : smooth,
        segments: segments.upTo(trainer.state.step),
        loss_history: history,
        eval_history: evalHistory,
        ...extra,
      },
      null,
      2,
    ) + "\n";
  };
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
    if (done % f.every === 0 || stopping) {
      await trainer.checkpoint(f.ckpt, 1);
      await writeAtomic(`${f.ckpt}/distill.json`, record());
    }
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
    if (f.evalEvery > 0 && done % f.evalEvery === 0) {
      const errors = relativeErrors(
        await runHead(trainer.state.ema ?? trainer.params, evalSet, headOptions),
        evalSet.target,
        evalSet.batch,
      );
      const below = median(errors.filter((_, i) => evalSet.t[i] < 0.6));
      evalHistory.push({ step: done, median: median(errors), below06: below });
      log(
        `held-out relative error at step ${done}: median ${median(errors).toFixed(3)}  ${
          summary(errors, evalSet)
        }`,
      );
    }
    if (stopping && done < last) {
      log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
      break;
    }
  }
  const trained = trainer.state.ema ?? trainer.params;
  const after = relativeErrors(
    await runHead(trained, evalSet, headOptions),
    evalSet.target,
    evalSet.batch,
  );
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet)}`);

  // the served graph: eps + features → head → deriv, in one run
  const params: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(trained)) params[k] = Float32Array.from(v);
  const combined = combinedHeadModel(graphs.eps, params, headOptions);
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

  const manifestPath = `${f.model}/model.json`;
  const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  manifest.graphs = { ...manifest.graphs, head: "head.onnx" };
  await writeAtomic(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  const text = record({
    heldout_relative_error: {
      before_median: earlier?.heldout_relative_error?.before_median ?? median(before),
      after_median: median(after),
      served_median: median(served),
      per_sample_t: Array.from(evalSet.t),
      after,
    },
  });
  await writeAtomic(`${f.ckpt}/distill.json`, text);
  await writeAtomic(`${f.model}/distill.json`, text);
  log(`done: ${trainer.state.step} steps; wrote ${f.model}/head.onnx`);
  await trainer.release();
}

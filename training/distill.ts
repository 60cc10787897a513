/**
 * `deno task distill`: distils the GENIE derivative head of a model and ships it as `<model>/head.onnx`,
 * the graph the worker runs in ONE call per GENIE step (x, t, class → eps, deriv): the score network
 * exposing its features, then the head (training/head.ts). Without `--model`, or with `--model mnist-unet`,
 * it distils mnist-unet's head on the digits, as below; any other model folder is the second program at the
 * end of this comment.
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
 *
 * Any other model folder (`--model NAME` in GENIE_MODELS_DIR or models/, or a path), e.g. one made by
 * `deno task import`, whose JVP can be derived (training/model_folder.ts):
 *
 *     deno task distill --model NAME [--features TENSOR] [--temb TENSOR|none] [--data X0.npy [--labels L.npy]]
 *                       [--pool 256] [--pool-nfe 20] [--steps 2000] [--batch 16] [--ckpt <model>/distill] …
 *
 * The head reads the input of the last convolution before the output and the network's time embedding
 * when one is found (onnx/features.ts; `--features`/`--temb` name them, `--temb none` makes the head embed
 * γ itself); the facts are printed. The data are `--data` (x₀ in model space, [N, C, H, W]; classes from
 * `--labels`, else the null class, or a random class where the model has none) or the model's own samples (`--pool` of them from DPM-Solver++(2M) at
 * `--pool-nfe`, made once and kept in the checkpoint folder as pool.npy). The same loss, optimiser,
 * checkpoints, progress and held-out evaluation as above, with defaults that finish in minutes on a small
 * model ({@link FOLDER_DISTILL_DEFAULTS}). At the end head.onnx (inputs x, t, class under the standard
 * names; outputs eps and deriv) is checked against eps.onnx and named in model.json (`graphs.head`, and
 * `head_space: "eps"` for x₀ and v models), so the worker serves `genie_derivative: "head"` for it.
 */
import { basename, join } from "node:path";
import { decodeNpy, encodeNpy } from "../core/npy.ts";
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
  parseTrainingFlags,
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
import {
  combinedFolderHead,
  type DataPool,
  drawFromPool,
  FolderError,
  type FolderGraphs,
  folderHeadData,
  loadFolderGraphs,
  readModelFolder,
  resolveModelDir,
  samplePool,
} from "./model_folder.ts";

const DISTILL_DEFAULTS = {
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

/** The head's training-graph feeds from distillation data (mnist-unet's digits). */
export function headFeeds(d: HeadData): Batch {
  return headFeedsFor(d, [1, SIZE, SIZE]);
}

/** The head's training-graph feeds from distillation data of images `shape` [C, H, W] (no temb when E = 0). */
function headFeedsFor(d: HeadData, shape: readonly number[]): Batch {
  const img = [d.batch, ...shape];
  return {
    x: { type: "float32", data: d.x, dims: img },
    eps: { type: "float32", data: d.eps, dims: img },
    features: { type: "float32", data: d.features, dims: [d.batch, d.featureChannels, shape[1], shape[2]] },
    ...(d.embed > 0 ? { temb: { type: "float32" as const, data: d.temb, dims: [d.batch, d.embed] } } : {}),
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
const TAU_FLOOR = 1e-3;

/**
 * The head's training graph: loss = mean_b w_b Σ (k − τ)² with w from {@link relativeWeights}; `size` is
 * the image's side, or [H, W].
 */
export function headTrainingGraph(
  options: Partial<HeadOptions> = {},
  size: number | readonly [number, number] = SIZE,
) {
  const head = buildHeadModel(size, options);
  const graph = gradModel(meanSquaredErrorLoss(head.model, "k", { weight: "w", perSample: "sum" }), {
    params: head.params,
  });
  return { head, graph };
}

/** k of the head with parameter values `params` on distillation data (of images `shape`, default MNIST's). */
async function runHead(
  params: Readonly<Record<string, FloatArray>>,
  d: HeadData,
  options: Partial<HeadOptions> = {},
  shape: readonly number[] = [1, SIZE, SIZE],
): Promise<Float32Array> {
  const size = shape[1] === SIZE && shape[2] === SIZE ? SIZE : [shape[1], shape[2]] as const;
  const head = buildHeadModel(size, options, (name) => Float32Array.from(params[name]));
  const { session } = await createSession(encodeModel(head.model), { providers: ["cpu"], threads: 1 });
  const feeds = headFeedsFor(d, shape);
  delete feeds.k_target;
  delete feeds.w;
  const out = await runSession(session, feeds, ["k"]);
  await session.release?.();
  return out.k.data as Float32Array;
}

/** Per-sample relative error ‖k − τ‖/‖τ‖. */
function relativeErrors(k: ArrayLike<number>, target: ArrayLike<number>, batch: number): number[] {
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
async function evalData(g: ScoreGraphs, digits: Digits, n: number, seed: number): Promise<HeadData> {
  const ts = Array.from({ length: n }, (_, b) => schedule.tMin + (1 - schedule.tMin) * (b + 0.5) / n);
  const { x, t, cls } = drawNoisy(digits, n, rngStream(seed + 7919, 0xe7a1), 0.1, undefined, ts);
  return await headData(g, x, t, cls);
}

/** Median errors per range of t (`t[i]` is sample i's time). */
function summary(errors: number[], t: ArrayLike<number>): string {
  const buckets: [number, number][] = [[0, 0.1], [0.1, 0.3], [0.3, 0.6], [0.6, 1.01]];
  return buckets.map(([a, b]) => {
    const sel = errors.filter((_, i) => t[i] >= a && t[i] < b);
    return `t∈[${a},${Math.min(b, 1)}): ${sel.length ? median(sel).toFixed(3) : "-"}`;
  }).join("  ");
}

/** The flags the training loop reads (both programs). */
type LoopFlags = Pick<
  typeof DISTILL_DEFAULTS,
  "steps" | "every" | "progress" | "evalEvery" | "maxMinutes" | "stopAt" | "ckpt" | "threads"
>;

/**
 * The training loop with its record: steps, atomic checkpoints with distill.json beside them (a resumed
 * run continues the record), progress lines with the ETA, held-out evaluations.
 */
class DistillRun {
  readonly history: { step: number; loss: number }[];
  readonly evalHistory: { step: number; median: number; below06: number }[];
  readonly segments: Segments;
  smooth = NaN;

  private constructor(
    readonly f: LoopFlags & Record<string, unknown>,
    readonly trainer: Trainer,
    readonly head: Record<string, unknown>,
    readonly earlier: DistillRecord | undefined,
    readonly first: number,
  ) {
    const upTo = <T extends { step: number }>(v: T[] | undefined) => (v ?? []).filter((h) => h.step <= first);
    this.history = upTo(earlier?.loss_history);
    this.evalHistory = upTo(earlier?.eval_history);
    this.segments = new Segments(earlier?.segments, first, f.threads);
  }

  /** The record of the run so far, kept beside the checkpoint: a resumed run continues it. */
  static async start(
    f: LoopFlags & Record<string, unknown>,
    trainer: Trainer,
    head: Record<string, unknown>,
  ): Promise<DistillRun> {
    const first = trainer.state.step;
    const earlier = first > 0 ? await readJsonIfExists<DistillRecord>(`${f.ckpt}/distill.json`) : undefined;
    return new DistillRun(f, trainer, head, earlier, first);
  }

  record(extra: Record<string, unknown> = {}): string {
    return JSON.stringify(
      {
        flags: this.f,
        head: this.head,
        steps_done: this.trainer.state.step,
        final_loss_ema: Number.isNaN(this.smooth) ? this.earlier?.final_loss_ema : this.smooth,
        segments: this.segments.upTo(this.trainer.state.step),
        loss_history: this.history,
        eval_history: this.evalHistory,
        ...extra,
      },
      null,
      2,
    ) + "\n";
  }

  /**
   * Steps until `--steps` (or `--stop-at`, or `--max-minutes`): `prepare(step)` readies the step's batch,
   * `heldOut(params)` gives the held-out relative errors at the times `evalT`.
   */
  async loop(
    prepare: (step: number) => Promise<void>,
    heldOut: (params: Readonly<Record<string, FloatArray>>) => Promise<number[]>,
    evalT: ArrayLike<number>,
    extra: () => Record<string, unknown> = () => ({}),
  ): Promise<void> {
    const { f, trainer } = this;
    const start = performance.now(), first = this.first;
    const deadline = f.maxMinutes > 0 ? Date.now() + f.maxMinutes * 60_000 : Infinity;
    let windowSum = 0, windowN = 0;
    const last = f.stopAt > 0 ? Math.min(f.stopAt, f.steps) : f.steps;
    while (trainer.state.step < last) {
      await prepare(trainer.state.step);
      const res = await trainer.step();
      const done = trainer.state.step;
      this.smooth = Number.isNaN(this.smooth) ? res.loss : 0.98 * this.smooth + 0.02 * res.loss;
      windowSum += res.loss;
      windowN++;
      const stopping = done === last || Date.now() > deadline;
      if (done % f.every === 0 || stopping) {
        await trainer.checkpoint(f.ckpt, 1);
        await writeAtomic(`${f.ckpt}/distill.json`, this.record(extra()));
      }
      if (done % f.progress === 0 || stopping) {
        const elapsed = (performance.now() - start) / 1000, rate = (done - first) / elapsed;
        this.history.push({ step: done, loss: windowSum / windowN });
        log(
          `step ${done}/${f.steps}  loss ${res.loss.toFixed(3)}  avg${windowN} ${
            (windowSum / windowN).toFixed(3)
          }  ` +
            `ema ${this.smooth.toFixed(3)}  |g| ${res.gradNorm.toFixed(2)}  lr ${res.lr.toExponential(2)}  ${
              rate.toFixed(2)
            } it/s  elapsed ${formatSeconds(elapsed)}  ETA ${formatSeconds((f.steps - done) / rate)}`,
        );
        windowSum = 0;
        windowN = 0;
      }
      if (f.evalEvery > 0 && done % f.evalEvery === 0) {
        const errors = await heldOut(trainer.state.ema ?? trainer.params);
        const below = median(errors.filter((_, i) => evalT[i] < 0.6));
        this.evalHistory.push({ step: done, median: median(errors), below06: below });
        log(
          `held-out relative error at step ${done}: median ${median(errors).toFixed(3)}  ${
            summary(errors, evalT)
          }`,
        );
      }
      if (stopping && done < last) {
        log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
        break;
      }
    }
  }
}

/** `deno task distill` on mnist-unet: the digits are the data (see the module's comment). */
async function distillMnist(argv: string[]): Promise<void> {
  const f = parseTrainingFlags(argv, DISTILL_DEFAULTS, INTEGER_FLAGS);
  f.model = resolveModelDir(f.model);
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
  const heldOut = async (params: Readonly<Record<string, FloatArray>>) =>
    relativeErrors(await runHead(params, evalSet, headOptions), evalSet.target, evalSet.batch);
  const before = await heldOut(trainer.params);
  log(`held-out relative error before: median ${median(before).toFixed(3)}  ${summary(before, evalSet.t)}`);

  const run = await DistillRun.start(f, trainer, {
    ...HEAD_DEFAULTS,
    ...headOptions,
    parameters: head.count,
  });
  await run.loop(
    async (step) => {
      const r = rngStream(f.seed, step);
      const { x, t, cls } = drawNoisy(digits, f.batch, r, f.drop);
      current = headFeeds(await headData(graphs, x, t, cls));
    },
    heldOut,
    evalSet.t,
  );
  current = undefined;
  const trained = trainer.state.ema ?? trainer.params;
  const after = await heldOut(trained);
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet.t)}`);

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
  const text = run.record({
    heldout_relative_error: {
      before_median: run.earlier?.heldout_relative_error?.before_median ?? median(before),
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

/**
 * The defaults of `deno task distill --model NAME` for a model other than mnist-unet: a short run
 * (2000 steps at batch 16: minutes on a small model) with a faster weight average, and the data flags.
 */
const FOLDER_DISTILL_DEFAULTS = {
  ...DISTILL_DEFAULTS,
  steps: 2000,
  batch: 16,
  warmup: 100,
  ema: 0.995,
  model: "",
  ckpt: "",
  every: 100,
  evalBatch: 32,
  evalEvery: 500,
  features: "",
  temb: "",
  data: "",
  labels: "",
  pool: 256,
  poolNfe: 20,
};

/** The flags only the model-folder path has: given for mnist-unet, they select it there too. */
const FOLDER_ONLY = ["--features", "--temb", "--data", "--labels", "--pool", "--pool-nfe"];

const INTEGER_FLAGS = {
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
};

/** The data the head is distilled on: `--data` (x₀ in model space, .npy) or the model's own samples. */
async function folderData(
  f: typeof FOLDER_DISTILL_DEFAULTS,
  g: FolderGraphs,
): Promise<{ pool: DataPool; facts: Record<string, unknown> }> {
  const m = g.model;
  if (f.data) {
    const a = decodeNpy(await Deno.readFile(f.data));
    if (a.shape.length !== 4 || a.shape.slice(1).join() !== m.shape.join()) {
      throw new FolderError(
        `--data ${f.data}: shape [${a.shape.join(", ")}], expected [N, ${m.shape.join(", ")}]`,
      );
    }
    const count = a.shape[0];
    let labels = new Int32Array(count).fill(-1);
    if (f.labels) {
      const l = decodeNpy(await Deno.readFile(f.labels));
      if (l.data.length !== count) {
        throw new FolderError(`--labels ${f.labels}: ${l.data.length} labels for ${count} samples`);
      }
      labels = Int32Array.from(l.data, (v) => Math.round(v));
    }
    log(`data: ${count} samples from ${f.data}${f.labels ? ` with labels from ${f.labels}` : ""}`);
    return {
      pool: { x: Float32Array.from(a.data), labels, count },
      facts: { source: f.data, labels: f.labels || undefined, count },
    };
  }
  // the model's own samples, made once and kept beside the checkpoint
  const stamp = { source: "model", solver: "dpmpp-2m", nfe: f.poolNfe, count: f.pool, seed: f.seed };
  const saved = await readJsonIfExists<typeof stamp & { labels: number[] }>(`${f.ckpt}/pool.json`);
  if (
    saved &&
    JSON.stringify({ ...saved, labels: undefined }) === JSON.stringify({ ...stamp, labels: undefined })
  ) {
    const a = decodeNpy(await Deno.readFile(`${f.ckpt}/pool.npy`));
    log(`data: ${f.pool} samples of the model from ${f.ckpt}/pool.npy`);
    return {
      pool: { x: Float32Array.from(a.data), labels: Int32Array.from(saved.labels), count: f.pool },
      facts: stamp,
    };
  }
  log(`data: sampling ${f.pool} x₀ from the model (dpmpp-2m, NFE ${f.poolNfe}) …`);
  const t0 = performance.now();
  const pool = await samplePool(g, {
    n: f.pool,
    nfe: f.poolNfe,
    seed: f.seed,
    onProgress: (done) => {
      const s = (performance.now() - t0) / 1000;
      log(
        `data: ${done}/${f.pool} samples  elapsed ${formatSeconds(s)}  ETA ${
          formatSeconds((s / done) * (f.pool - done))
        }`,
      );
    },
  });
  await Deno.mkdir(f.ckpt, { recursive: true });
  await writeAtomic(`${f.ckpt}/pool.npy`, encodeNpy(pool.x, [pool.count, ...m.shape]));
  await writeAtomic(
    `${f.ckpt}/pool.json`,
    JSON.stringify({ ...stamp, labels: Array.from(pool.labels) }) + "\n",
  );
  return { pool, facts: stamp };
}

/** `deno task distill --model NAME` for any model folder whose JVP can be derived. */
async function distillFolder(argv: string[], dir: string): Promise<void> {
  const f = parseTrainingFlags(argv, FOLDER_DISTILL_DEFAULTS, { ...INTEGER_FLAGS, pool: 1, poolNfe: 2 });
  f.model = dir;
  f.ckpt ||= join(dir, "distill");
  const model = readModelFolder(dir);
  const graphs = await loadFolderGraphs(model, {
    features: f.features || undefined,
    temb: f.temb === "none" ? null : f.temb || undefined,
    threads: f.threads,
  });
  for (const line of graphs.facts) log(`${model.name}: ${line}`);
  const [C, H, W] = model.shape;
  const headOptions: Partial<HeadOptions> = {
    channels: C,
    featureChannels: graphs.featureChannels,
    embed: graphs.embed,
    width: f.width,
  };
  const { pool, facts: dataFacts } = await folderData(f, graphs);
  const { head, graph } = headTrainingGraph(headOptions, [H, W]);
  log(
    `GENIE head for ${model.name}: ${head.count} parameters (width ${f.width}, ${graphs.featureChannels} ` +
      `feature channels, ${graphs.embed ? `time embedding of ${graphs.embed}` : "γ embedding"}); flags ${
        JSON.stringify(f)
      }`,
  );
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
  const { tMin } = model.schedule;
  const ts = Array.from({ length: f.evalBatch }, (_, b) => tMin + (1 - tMin) * (b + 0.5) / f.evalBatch);
  const held = drawFromPool(model, pool, f.evalBatch, rngStream(f.seed + 7919, 0xe7a1), f.drop, ts);
  const evalSet = await folderHeadData(graphs, held.x, held.t, held.cls);
  const heldOut = async (params: Readonly<Record<string, FloatArray>>) =>
    relativeErrors(await runHead(params, evalSet, headOptions, model.shape), evalSet.target, evalSet.batch);
  const before = await heldOut(trainer.params);
  log(`held-out relative error before: median ${median(before).toFixed(3)}  ${summary(before, evalSet.t)}`);

  const describe = {
    ...HEAD_DEFAULTS,
    ...headOptions,
    parameters: head.count,
    tensors: graphs.tensors,
    found: graphs.facts,
  };
  const run = await DistillRun.start(f, trainer, describe);
  const extra = () => ({ model: model.name, data: dataFacts });
  await run.loop(
    async (step) => {
      const { x, t, cls } = drawFromPool(model, pool, f.batch, rngStream(f.seed, step), f.drop);
      current = headFeedsFor(await folderHeadData(graphs, x, t, cls), model.shape);
    },
    heldOut,
    evalSet.t,
    extra,
  );
  current = undefined;
  const trained = trainer.state.ema ?? trainer.params;
  const after = await heldOut(trained);
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet.t)}`);

  // the served graph, checked against eps.onnx and the standalone head before the manifest names it
  const params: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(trained)) params[k] = Float32Array.from(v);
  const combined = encodeModel(combinedFolderHead(model, graphs.tensors, params, headOptions));
  const { session } = await createSession(combined, { providers: ["cpu"], threads: 1 });
  const B = evalSet.batch,
    time = Float32Array.from(evalSet.t, (v) => v * model.time.scale + model.time.offset);
  const out = await runSession(session, {
    x: { type: "float32", data: evalSet.x, dims: [B, ...model.shape] },
    t: { type: "float32", data: time, dims: [B] },
    ...(model.takesClass ? { class: { type: "int64" as const, data: evalSet.cls, dims: [B] } } : {}),
  });
  await session.release();
  const raw = await runSession(graphs.features, {
    [model.names.x]: { type: "float32", data: evalSet.x, dims: [B, ...model.shape] },
    [model.names.t]: { type: "float32", data: time, dims: [B] },
    ...(model.takesClass
      ? { [model.names.class]: { type: "int64" as const, data: evalSet.cls, dims: [B] } }
      : {}),
  }, [model.names.eps]);
  const served = relativeErrors(out.deriv.data as Float32Array, evalSet.target, B);
  const a = out.eps.data as Float32Array, b = raw[model.names.eps].data as Float32Array;
  let epsDiff = 0;
  for (let i = 0; i < a.length; i++) epsDiff = Math.max(epsDiff, Math.abs(a[i] - b[i]));
  log(
    `head.onnx: median relative error ${median(served).toFixed(3)}; max |Δε| vs eps.onnx ${
      epsDiff.toExponential(2)
    }`,
  );
  if (!(epsDiff <= 1e-4 * Math.max(1, ...Array.from(b, Math.abs)))) {
    throw new FolderError(`${model.name}: the head graph's eps differs from eps.onnx's by ${epsDiff}`);
  }
  await writeAtomic(join(dir, "head.onnx"), combined);
  const manifestPath = join(dir, "model.json");
  const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  manifest.graphs = { ...manifest.graphs, head: "head.onnx" };
  // the head's deriv is dε/dγ whatever the model predicts
  if (model.prediction !== "eps") manifest.head_space = "eps";
  await writeAtomic(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  const text = run.record({
    ...extra(),
    heldout_relative_error: {
      before_median: run.earlier?.heldout_relative_error?.before_median ?? median(before),
      after_median: median(after),
      served_median: median(served),
      per_sample_t: Array.from(evalSet.t),
      after,
    },
  });
  await writeAtomic(`${f.ckpt}/distill.json`, text);
  await writeAtomic(join(dir, "distill.json"), text);
  log(
    `done: ${trainer.state.step} steps; wrote ${join(dir, "head.onnx")}; model.json serves derivative "head"`,
  );
  await trainer.release();
  await graphs.release();
}

/** Which program `argv` asks for: mnist-unet's (the digits) unless another model or a data flag is named. */
export function distillTarget(argv: readonly string[]): { dir: string; mnist: boolean } {
  const at = argv.indexOf("--model");
  const named = argv.find((a) => a.startsWith("--model="))?.slice("--model=".length) ??
    (at >= 0 ? argv[at + 1] : undefined);
  const dir = named !== undefined ? resolveModelDir(named) : DISTILL_DEFAULTS.model;
  // a flag is named as `--flag value` or `--flag=value` (core/flags.ts)
  const mnist = basename(dir) === "mnist-unet" && !argv.some((a) => FOLDER_ONLY.includes(a.split("=")[0]));
  return { dir, mnist };
}

if (import.meta.main) {
  const { dir, mnist } = distillTarget(Deno.args);
  try {
    if (mnist) await distillMnist(Deno.args);
    else await distillFolder(Deno.args, dir);
  } catch (e) {
    if (!(e instanceof FolderError)) throw e;
    log(`distill: ${e.message}`);
    Deno.exit(1);
  }
}

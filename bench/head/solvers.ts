/**
 * Section 3 of `deno task bench:head` (bench/head.ts), and the runs of its sections 0 and 4: every solver
 * on the model at each NFE against a converged reference (Heun, many steps) — at equal NFE, at equal cost,
 * without AFS, and with guidance on mnist-unet — scored by the classifier where there is one.
 */
import { dirname } from "node:path";
import { runCost } from "../../core/cost.ts";
import { makeGrid } from "../../core/grid.ts";
import { guidedSolveInput, withConditioning } from "../../core/guidance.ts";
import { gaussianNoise } from "../../core/rng.ts";
import { type AsyncEvaluator, runSolverAsync, type RunStats } from "../../core/solvers/drive.ts";
import { getSolver, nfeFor, stepsForNfe } from "../../core/solvers/registry.ts";
import { median } from "../../core/stats.ts";
import { type OpenedModel, openModel } from "../../gpu-worker/engine.ts";
import { log } from "../../training/common.ts";
import { rmsePerSample } from "../reference.ts";
import type { CostRatios } from "./cost.ts";
import { type Scorer, scorer } from "./score.ts";
import { whereItMatters, type WhereRow } from "./where.ts";
import { type Config, CONFIGS, fmt, type HeadBench, SOLVERS } from "./settings.ts";

export interface Sampled {
  x: Float64Array;
  nfe: number;
  /** The run's accounts (calls per graph). */
  stats: RunStats;
  seconds: number;
}

/** The model and the batch every run of section 3 samples. */
export interface SampleSetup {
  model: OpenedModel;
  /** Samples, and numbers per sample. */
  n: number;
  dim: number;
  /** The null class (mnist-unet's 10; another model's from its manifest). */
  nullClass?: number;
  denoise: boolean;
  /** Answers the runs' requests (default: the model's own evaluator). */
  evaluate?: AsyncEvaluator;
}

export async function sample(
  { model, n: N, dim: DIM, nullClass: NULL_CLASS, denoise, evaluate }: SampleSetup,
  c: Config,
  steps: number,
  latents: Float64Array,
  classes: Int32Array | undefined,
  guidance = 0,
  afs = true,
): Promise<Sampled> {
  const info = getSolver(c.solver);
  const grid = makeGrid(model.schedule, { kind: c.grid.kind, steps, rho: c.grid.rho });
  const input = guidedSolveInput({
    schedule: model.schedule,
    grid,
    x: latents,
    batch: N,
    dim: DIM,
    afs,
    denoise,
    derivative: c.derivative,
    // as the worker and the command line run it: GENIE (jvp) in one call of the JVP graph per step
    odeJvp: model.odeJvp,
  }, guidance);
  const run = withConditioning(info.fn(input), { classes, nullClass: NULL_CLASS, scale: guidance });
  const a = performance.now();
  const { x, stats } = await runSolverAsync(run, evaluate ?? model.evaluate);
  return {
    x,
    nfe: stats.nfe,
    stats,
    seconds: (performance.now() - a) / 1000,
  };
}

/** One run's measures at an NFE (the NFE alone where no step count gives it). */
export type Cell = {
  nfe: number;
  steps?: number;
  /** Forward-pass equivalents: ε calls + head calls × head ratio + JVP calls × JVP ratio. */
  cost?: number;
  err?: number;
  fd?: number;
  acc?: number;
  seconds?: number;
};

/** A solver configuration's cells, one per NFE. */
export interface Row {
  config: Config;
  cells: Cell[];
}

/** Geometric mean of a row's errors at `nfes`, where it has one (lower = better). */
export const geoErr = (r: { cells: Cell[] }, nfes: number[]) => {
  const v = nfes.map((n) => r.cells.find((c) => c.nfe === n)?.err).filter((e): e is number =>
    e !== undefined
  );
  return v.length ? Math.exp(v.reduce((a, e) => a + Math.log(e), 0) / v.length) : Infinity;
};

/** What section 3 measured, for the report. */
export interface SolverResults {
  n: number;
  dim: number;
  classes?: Int32Array;
  /** The model's class count, when it has classes. */
  classCount?: number;
  score?: Scorer;
  ref: Sampled;
  refCheck: number;
  refScore?: { fd: number; acc: number };
  refRange: { outside: number; min: number; max: number };
  results: Row[];
  /** The NFEs ≤ 10, over which the best grid is chosen. */
  low: number[];
  bestGrid: { family: string; best: Row; others: Row[]; geo: number }[];
  equalCost: { family: string; config: Config; cells: (Cell & { budget: number })[] }[];
  afsOffNfes: number[];
  afsOff: { config: Config; cells: { nfe: number; err: number }[] }[];
  guided: { config: Config; w: number; fd: number; acc: number }[];
  /** Where the head's derivative matters (bench/head/where.ts), when the model has a head and a JVP. */
  where?: WhereRow[];
}

/** Section 3's runs on the model (opened here and closed at the end), priced with `costRatios`. */
export async function runSolvers(bench: HeadBench, costRatios: CostRatios): Promise<SolverResults> {
  const { f, mnist: MNIST, modelName: MODEL_NAME, nfes: NFES } = bench;
  const model = await openModel(MODEL_NAME, dirname(f.model), {
    providers: ["cpu"],
    threads: f.threads,
  });
  const N = f.n;
  /** Numbers per sample. */
  const DIM = model.shape.reduce((a, b) => a * b, 1);
  /** mnist-unet's null class; another model's from its manifest. */
  const NULL_CLASS = MNIST ? 10 : model.classes?.nullClass;
  const setup: SampleSetup = { model, n: N, dim: DIM, nullClass: NULL_CLASS, denoise: f.denoise };
  const latents = new Float64Array(N * DIM);
  for (let i = 0; i < N; i++) latents.set(gaussianNoise(f.seed + i, 0, DIM), i * DIM);
  // class i mod 10 (mnist-unet), i mod count (another class-conditional model), none (unconditional)
  const classes = MNIST
    ? Int32Array.from({ length: N }, (_, i) => i % 10)
    : model.classes
    ? Int32Array.from({ length: N }, (_, i) => i % model.classes!.count)
    : undefined;
  const score = MNIST ? await scorer(f.classifier, classes!) : undefined;
  // the solvers and derivative sources the model offers (all of them on mnist-unet)
  const ACTIVE = CONFIGS.filter((c) => !c.derivative || model.derivatives.includes(c.derivative));
  const ACTIVE_SOLVERS = SOLVERS.filter((s) => !s.derivative || model.derivatives.includes(s.derivative));

  const heun = CONFIGS.find((c) => c.solver === "heun")!;
  const ref = await sample(setup, heun, f.refSteps, latents, classes);
  const refHalf = await sample(setup, heun, f.refSteps / 2, latents, classes);
  const refCheck = median(rmsePerSample(refHalf.x, ref.x, N, DIM));
  const refScore = score ? await score.fd(ref.x) : undefined;
  const refRange = rangeReport(ref.x, N, DIM);
  log(
    `reference: heun ${f.refSteps} steps (NFE ${ref.nfe}), vs ${f.refSteps / 2} steps: ${
      refCheck.toExponential(2)
    }${
      refScore && score
        ? `; accuracy ${(100 * refScore.acc).toFixed(1)}%, FD ${fmt(refScore.fd)} (floor ${
          fmt(score.realFloor)
        })`
        : ""
    }`,
  );

  const costOf = (s: Sampled) => runCost(s.stats, costRatios).cost;
  const runCache = new Map<string, Cell>();
  /** The cell of `c` at `nfe` (sampled once), or undefined when no step count gives that NFE. */
  async function cellAt(c: Config, nfe: number): Promise<Cell | undefined> {
    const key = `${c.label}@${nfe}`;
    if (runCache.has(key)) return runCache.get(key);
    const opts = { afs: true, denoise: f.denoise, derivative: c.derivative };
    let steps: number;
    try {
      steps = stepsForNfe(c.solver, nfe, opts);
    } catch {
      return undefined;
    }
    const s = await sample(setup, c, steps, latents, classes);
    if (s.nfe !== nfe || nfeFor(c.solver, steps, opts) !== nfe) {
      throw new Error(`${c.label}: NFE ${s.nfe} ≠ ${nfe}`);
    }
    const q = score ? await score.fd(s.x) : undefined;
    const cell: Cell = {
      nfe,
      steps,
      cost: costOf(s),
      err: median(rmsePerSample(s.x, ref.x, N, DIM)),
      fd: q?.fd,
      acc: q?.acc,
      seconds: s.seconds,
    };
    runCache.set(key, cell);
    return cell;
  }

  const results: Row[] = [];
  for (const c of ACTIVE) {
    const cells: Cell[] = [];
    for (const nfe of NFES) cells.push(await cellAt(c, nfe) ?? { nfe });
    results.push({ config: c, cells });
    log(`  ${c.label}: ${cells.map((x) => fmt(x.err)).join(" ")}`);
  }

  /** The NFEs ≤ 10: the best grid is the one with the lower geometric-mean error where both have one. */
  const LOW = NFES.filter((n) => n <= 10);
  /** Per solver: the grid with the lower error over NFE ≤ 10 (the best grid). */
  const bestGrid = ACTIVE_SOLVERS.map((sv) => {
    const rows = results.filter((r) =>
      r.config.solver === sv.solver && r.config.derivative === sv.derivative
    );
    const common = LOW.filter((n) => rows.every((r) => r.cells.find((c) => c.nfe === n)?.err !== undefined));
    const ranked = rows.map((r) => ({ r, g: geoErr(r, common) })).sort((a, b) => a.g - b.g);
    return { family: sv.label, best: ranked[0].r, others: ranked.slice(1).map((x) => x.r), geo: ranked[0].g };
  });

  log("equal cost …");
  /** Per best-grid solver and cost budget: the most NFE whose cost stays within the budget. */
  const equalCost: { family: string; config: Config; cells: (Cell & { budget: number })[] }[] = [];
  for (const b of bestGrid) {
    const cells: (Cell & { budget: number })[] = [];
    for (const budget of NFES) {
      let found: Cell | undefined;
      for (let n = budget; n >= 2 && !found; n--) {
        const cell = await cellAt(b.best.config, n);
        if (cell?.cost !== undefined && cell.cost <= budget + 1e-9) found = cell;
      }
      cells.push({ ...(found ?? { nfe: 0 }), budget });
    }
    equalCost.push({ family: b.family, config: b.best.config, cells });
  }

  const configOf = (family: string) => bestGrid.find((b) => b.family === family)!.best.config;
  /** The families of the AFS-off and guidance sections the model offers. */
  const SIDE = ["genie (head)", "genie (jvp)", "ddim", "dpmpp-2m"].filter((fam) =>
    bestGrid.some((b) => b.family === fam)
  );
  log("AFS off …");
  const AFS_OFF_NFES = [6, 10, 20];
  const afsOff: { config: Config; cells: { nfe: number; err: number }[] }[] = [];
  for (const c of SIDE.map(configOf)) {
    const cells: { nfe: number; err: number }[] = [];
    for (const nfe of AFS_OFF_NFES) {
      const steps = stepsForNfe(c.solver, nfe, { afs: false, denoise: f.denoise, derivative: c.derivative });
      const s = await sample(setup, c, steps, latents, classes, 0, false);
      cells.push({ nfe, err: median(rmsePerSample(s.x, ref.x, N, DIM)) });
    }
    afsOff.push({ config: c, cells });
  }

  // guidance is judged by the classifier: mnist-unet only
  if (score) log("guidance …");
  const guided: { config: Config; w: number; fd: number; acc: number }[] = [];
  for (const c of score ? SIDE.map(configOf) : []) {
    for (const w of [0, 1, 3]) {
      const steps = stepsForNfe(c.solver, 10, { afs: true, denoise: f.denoise, derivative: c.derivative });
      const s = await sample(setup, c, steps, latents, classes, w);
      const q = await score!.fd(s.x);
      guided.push({ config: c, w, ...q });
    }
  }
  const withBoth = ["genie (head)", "genie (jvp)"].every((fam) => bestGrid.some((b) => b.family === fam));
  if (withBoth) log("where the derivative matters …");
  const where = withBoth
    ? await whereItMatters(setup, configOf("genie (head)"), ref, latents, classes)
    : undefined;
  await model.close();
  return {
    where,
    n: N,
    dim: DIM,
    classes,
    classCount: model.classes?.count,
    score,
    ref,
    refCheck,
    refScore,
    refRange,
    results,
    low: LOW,
    bestGrid,
    equalCost,
    afsOffNfes: AFS_OFF_NFES,
    afsOff,
    guided,
  };
}

/** Samples outside [−1.5, 1.5] and the extreme pixel values. */
function rangeReport(x: Float64Array, N: number, DIM: number): { outside: number; min: number; max: number } {
  let outside = 0, min = Infinity, max = -Infinity;
  for (let i = 0; i < N; i++) {
    let bad = false;
    for (let j = i * DIM; j < (i + 1) * DIM; j++) {
      const v = x[j];
      if (v < min) min = v;
      if (v > max) max = v;
      if (Math.abs(v) > 1.5) bad = true;
    }
    if (bad) outside++;
  }
  return { outside, min, max };
}

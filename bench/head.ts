/**
 * `deno task bench:head` → docs/head.md (+ docs/head-error.svg): the distilled GENIE head of mnist-unet;
 * `--model NAME` (a model folder with a head, e.g. one `deno task distill --model NAME` made) → by default
 * out/head-NAME.md: the same report for that model, without what needs MNIST (the digits, the classifier:
 * Fréchet distances, class accuracy, the guidance section).
 *
 *   1. Head quality: relative error ‖k − τ‖/‖τ‖ of head.onnx's derivative against the exact JVP τ of
 *      eps.onnx along the ODE, per t bucket (held-out noise draws), with DDIM (k = 0) and the Gaussian
 *      guess ε/(γ(1+γ²)) for scale.
 *   2. Cost: ms per call of eps.onnx, head.onnx (eps + head in one call) and the JVP graph at batch 1, 16
 *      and 64, interleaved in one run (one ORT thread); ratios are medians of per-round ratios.
 *   3. Solvers on mnist-unet at NFE 3–20 (every solver on its registry grid and on EDM ρ = 7, the better
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
 */
import { gaussianNoise, rngStream } from "../core/rng.ts";
import { type GridKind, makeGrid } from "../core/grid.ts";
import { guidedSolveInput, withConditioning } from "../core/guidance.ts";
import { runSolverAsync, type RunStats } from "../core/solvers/drive.ts";
import { runCost } from "../core/cost.ts";
import { getSolver, nfeFor, stepsForNfe } from "../core/solvers/registry.ts";
import type { DerivativeSource } from "../core/solvers/types.ts";
import { type OpenedModel, openModel } from "../gpu-worker/engine.ts";
import { basename, dirname } from "node:path";
import { decodeNpy } from "../core/npy.ts";
import { jvpBytes, jvpModel } from "../onnx/jvp.ts";
import { encodeModel } from "../onnx/proto.ts";
import { createSession, type InferenceSession, runSession } from "../onnx/ort.ts";
import { classify, FEATURE_DIM, loadClassifier } from "../training/classifier.ts";
import { loadDigits, log, parseTrainingFlags, PIXELS, SIZE, writeAtomic } from "../training/common.ts";
import { frechetDistance, meanCov, sqrtPsd } from "../training/metrics.ts";
import { rmsePerSample } from "./reference.ts";
import { median } from "../core/stats.ts";
import { drawNoisy, headData, loadScoreGraphs, odeTangentX, schedule } from "../training/targets.ts";
import {
  type DataPool,
  drawFromPool,
  type FolderGraphs,
  folderHeadData,
  type FolderModel,
  loadFolderGraphs,
  readModelFolder,
  resolveModelDir,
  samplePool,
} from "../training/model_folder.ts";

const FLAGS = {
  n: 96,
  refSteps: 120,
  threads: 2,
  nfes: "3,4,5,6,8,10,15,20",
  headEval: 96,
  costRounds: 40,
  model: "models/mnist-unet",
  classifier: "models/mnist-classifier",
  /** Default: docs/head.md for mnist-unet, out/head-NAME.md for another model. */
  out: "",
  /** Another model's x₀ for section 1 (.npy, [N, …shape]); default: the model's own samples. */
  data: "",
  seed: 0,
  denoise: true,
  record: false,
};

interface Config {
  label: string;
  solver: string;
  derivative?: DerivativeSource;
  /** The grid it runs on. */
  grid: { kind: GridKind; rho?: number };
}

/** The solvers compared (each on its registry grid and on EDM ρ = 7; the better one is its "best grid"). */
const SOLVERS: { label: string; solver: string; derivative?: DerivativeSource }[] = [
  { label: "genie (head)", solver: "genie", derivative: "head" },
  { label: "genie (jvp)", solver: "genie", derivative: "jvp" },
  { label: "genie (fd)", solver: "genie", derivative: "fd" },
  { label: "ddim", solver: "ddim" },
  { label: "heun", solver: "heun" },
  { label: "dpmpp-2m", solver: "dpmpp-2m" },
  { label: "dpmpp-3m", solver: "dpmpp-3m" },
  { label: "unipc", solver: "unipc" },
  { label: "ipndm", solver: "ipndm" },
];
const EDM7 = { kind: "edm" as GridKind, rho: 7 };
const gridLabel = (g: { kind: GridKind; rho?: number }) => g.kind === "edm" ? `edm ρ=${g.rho ?? 7}` : g.kind;
const CONFIGS: Config[] = SOLVERS.flatMap((s) => {
  const own = getSolver(s.solver).grid;
  const registry: Config = {
    ...s,
    label: `${s.label}, ${gridLabel(own)}`,
    grid: { kind: own.kind, rho: own.rho },
  };
  const sameAsEdm = own.kind === "edm" && (own.rho ?? 7) === 7;
  return sameAsEdm ? [registry] : [registry, { ...s, label: `${s.label}, edm ρ=7`, grid: EDM7 }];
});

const f = parseTrainingFlags(Deno.args, FLAGS, {
  n: 1,
  refSteps: 2,
  threads: 1,
  headEval: 1,
  costRounds: 1,
  seed: 0,
});
f.model = resolveModelDir(f.model);
/** mnist-unet: the digits, the classifier and the guidance section apply. */
const MNIST = basename(f.model) === "mnist-unet";
const MODEL_NAME = basename(f.model);
f.out ||= MNIST ? "docs/head.md" : `out/head-${MODEL_NAME}.md`;
// the reference is checked against itself at half the steps
if (f.refSteps % 2 !== 0) throw new Error(`--ref-steps: expected an even number, got ${f.refSteps}`);
const NFES = f.nfes.split(",").map((s) => {
  const n = Number(s);
  if (!(Number.isSafeInteger(n) && n >= 1)) {
    throw new Error(`--nfes: expected integers ≥ 1, got ${JSON.stringify(s)}`);
  }
  return n;
});
const started = performance.now();
const lines: string[] = [];
const p = (s = "") => lines.push(s);
const fmt = (v: number | undefined, digits = 3) =>
  v === undefined
    ? "—"
    : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4
    ? v.toPrecision(digits)
    : v.toExponential(2);

// ------------------------------------------------------------------------------------------------
// 1. head quality

/** Section 1's points and what the head and the exact derivative give there. */
interface QualityInputs {
  ts: number[];
  d: Awaited<ReturnType<typeof headData>>;
  /** head.onnx's deriv. */
  k: Float32Array;
  /** ∂ε̂/∂t·dt/dγ, where measured. */
  timePart?: Float32Array;
  dim: number;
  gamma: (t: number) => number;
  buckets: [number, number][];
  per: number;
}

/** mnist-unet: noised digits. */
async function qualityInputsMnist(): Promise<QualityInputs> {
  const digits = await loadDigits();
  const graphs = await loadScoreGraphs(`${f.model}/eps.onnx`);
  const head =
    (await createSession(await Deno.readFile(`${f.model}/head.onnx`), { providers: ["cpu"], threads: 1 }))
      .session;
  const buckets: [number, number][] = [
    [0.001, 0.05],
    [0.05, 0.1],
    [0.1, 0.2],
    [0.2, 0.3],
    [0.3, 0.45],
    [
      0.45,
      0.6,
    ],
    [0.6, 0.8],
    [0.8, 1],
  ];
  const per = Math.max(2, Math.floor(f.headEval / buckets.length));
  const ts = buckets.flatMap(([a, b]) =>
    Array.from({ length: per }, (_, i) => a + (b - a) * (i + 0.5) / per)
  );
  const { x, t, cls } = drawNoisy(digits, ts.length, rngStream(f.seed + 424242, 9), 0.1, undefined, ts);
  const d = await headData(graphs, x, t, cls);
  const out = await runSession(head, {
    x: { type: "float32", data: x, dims: [ts.length, 1, SIZE, SIZE] },
    t: { type: "float32", data: t, dims: [ts.length] },
    class: { type: "int64", data: cls, dims: [ts.length] },
  });
  const k = out.deriv.data as Float32Array;
  // τ = ∂ε̂/∂x·v + ∂ε̂/∂t·dt/dγ: the time part alone, from the JVP graph with dx = 0
  const { dt } = odeTangentX(x, d.eps, t);
  const B = ts.length, img = [B, 1, SIZE, SIZE];
  const timePart = (await runSession(graphs.jvp, {
    x: { type: "float32", data: x, dims: img },
    t: { type: "float32", data: t, dims: [B] },
    class: { type: "int64", data: cls, dims: [B] },
    dx: { type: "float32", data: new Float32Array(x.length), dims: img },
    dt: { type: "float32", data: dt, dims: [B] },
  }, ["jvp"])).jvp.data as Float32Array;
  return { ts, d, k, timePart, dim: PIXELS, gamma: (v) => schedule.gamma(v), buckets, per };
}

/** Another model's folder and its distillation graphs (sections 1 and 2), loaded once. */
let folder: { model: FolderModel; graphs: FolderGraphs } | undefined;
async function folderGraphs(): Promise<{ model: FolderModel; graphs: FolderGraphs }> {
  if (!folder) {
    const model = readModelFolder(f.model);
    const distilled = JSON.parse(await Deno.readTextFile(`${f.model}/distill.json`).catch(() => "{}"));
    const named = distilled.head?.tensors as { features?: string; temb?: string } | undefined;
    const graphs = await loadFolderGraphs(model, {
      features: named?.features,
      temb: named ? named.temb ?? null : undefined,
    });
    folder = { model, graphs };
  }
  return folder;
}

/** Another model: its own samples (or `--data`) noised. */
async function qualityInputsFolder(): Promise<QualityInputs> {
  const { model, graphs } = await folderGraphs();
  const { tMin } = model.schedule;
  const buckets: [number, number][] = [
    [tMin, 0.05],
    [0.05, 0.1],
    [0.1, 0.2],
    [0.2, 0.3],
    [0.3, 0.45],
    [0.45, 0.6],
    [0.6, 0.8],
    [0.8, 1],
  ];
  const per = Math.max(2, Math.floor(f.headEval / buckets.length));
  const ts = buckets.flatMap(([a, b]) =>
    Array.from({ length: per }, (_, i) => a + (b - a) * (i + 0.5) / per)
  );
  let pool: DataPool;
  if (f.data) {
    const a = decodeNpy(await Deno.readFile(f.data));
    pool = { x: Float32Array.from(a.data), labels: new Int32Array(a.shape[0]).fill(-1), count: a.shape[0] };
  } else {
    log(`  sampling ${Math.max(8, per * 2)} x₀ from ${model.name} …`);
    pool = await samplePool(graphs, { n: Math.max(8, per * 2), nfe: 20, seed: f.seed + 4242 });
  }
  const { x, t, cls } = drawFromPool(model, pool, ts.length, rngStream(f.seed + 424242, 9), 0.1, ts);
  const d = await folderHeadData(graphs, x, t, cls);
  const head =
    (await createSession(await Deno.readFile(`${f.model}/head.onnx`), { providers: ["cpu"], threads: 1 }))
      .session;
  const B = ts.length;
  const out = await runSession(head, {
    x: { type: "float32", data: x, dims: [B, ...model.shape] },
    t: {
      type: "float32",
      data: Float32Array.from(t, (v) => v * model.time.scale + model.time.offset),
      dims: [B],
    },
    ...(head.inputNames.includes("class") ? { class: { type: "int64" as const, data: cls, dims: [B] } } : {}),
  });
  await head.release();
  return {
    ts,
    d,
    k: out.deriv.data as Float32Array,
    dim: model.dim,
    gamma: (v) => model.schedule.gamma(v),
    buckets,
    per,
  };
}

async function headQuality(): Promise<string[]> {
  const { ts, d, k, timePart, dim, gamma, buckets, per } = MNIST
    ? await qualityInputsMnist()
    : await qualityInputsFolder();
  const norm = (v: ArrayLike<number>, b: number) => {
    let s = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) s += v[i] * v[i];
    return Math.sqrt(s);
  };
  const rel = (pred: (i: number, b: number) => number, b: number) => {
    let num = 0, den = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) {
      num += (pred(i, b) - d.target[i]) ** 2;
      den += d.target[i] ** 2;
    }
    return Math.sqrt(num / den);
  };
  const rows: string[] = [];
  rows.push(
    "| t bucket | γ range | samples | head: median rel. error | head: max | Gaussian ε/(γ(1+γ²)) | DDIM (k = 0) | ‖∂ε̂/∂t part‖ ÷ ‖τ‖ |",
  );
  rows.push("|---|---|---|---|---|---|---|---|");
  const all: number[] = [];
  buckets.forEach(([a, b], j) => {
    const idx = Array.from({ length: per }, (_, i) => j * per + i);
    const errs = idx.map((s) => rel((i) => k[i], s));
    all.push(...errs);
    const gauss = idx.map((s) => rel((i, bb) => d.eps[i] / (d.gamma[bb] * (1 + d.gamma[bb] ** 2)), s));
    rows.push(
      `| [${+a.toPrecision(3)}, ${b}) | ${gamma(a).toPrecision(2)}–${gamma(b).toPrecision(3)} | ${per} | ${
        fmt(median(errs))
      } | ${fmt(Math.max(...errs))} | ${fmt(median(gauss))} | 1 | ${
        timePart ? fmt(median(idx.map((s) => norm(timePart, s) / norm(d.target, s)))) : "—"
      } |`,
    );
  });
  rows.push(`| all | | ${all.length} | ${fmt(median(all))} | ${fmt(Math.max(...all))} | | 1 | |`);
  headMedian = median(all);
  const split = (keep: (t: number) => boolean) => all.filter((_, i) => keep(ts[i]));
  headBelow = median(split((t) => t < 0.6));
  headAbove = median(split((t) => t >= 0.6));
  // the head's k projected on τ: ⟨k, τ⟩/⟨τ, τ⟩ per sample (1 = right size along τ, < 1 = too small)
  headScale = median(ts.map((_, b) => {
    let kt = 0, tt = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) kt += k[i] * d.target[i], tt += d.target[i] ** 2;
    return kt / tt;
  }));
  return rows;
}

/** Summaries of section 1 for the text of section 3. */
let headMedian = NaN, headScale = NaN, headBelow = NaN, headAbove = NaN;

// ------------------------------------------------------------------------------------------------
// 2. cost

/** Batches of the cost section; the ratios of the last are the manifest's `costs` and the "cost" column. */
const COST_BATCHES = [1, 16, 64];
let costRatios = { eps: 1, head: NaN, jvp: NaN };

async function cost(): Promise<string[]> {
  const opts = { providers: ["cpu"] as const, threads: 1 };
  const epsBytes = await Deno.readFile(`${f.model}/eps.onnx`);
  // another model: its graphs under its own names (the JVP graph as the worker derives it)
  const M = MNIST ? undefined : (await folderGraphs()).model;
  const jvpGraph = M
    ? encodeModel(jvpModel(M.eps, {
      wrt: [M.names.x, M.names.t],
      outputs: [M.names.eps],
      tangentInputs: { [M.names.x]: "dx", [M.names.t]: "dt" },
      tangentOutputs: { [M.names.eps]: "jvp" },
    }))
    : jvpBytes(epsBytes);
  const sessions: Record<string, InferenceSession> = {
    eps: (await createSession(epsBytes, opts)).session,
    head: (await createSession(await Deno.readFile(`${f.model}/head.onnx`), opts)).session,
    jvp: (await createSession(jvpGraph, opts)).session,
  };
  const rows = [
    "| batch | eps.onnx ms (median / min) | head.onnx ms (median / min) | JVP graph ms (median) | (eps + head) ÷ eps: median of rounds | (eps + head) ÷ eps: ratio of minima | JVP ÷ eps |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const B of COST_BATCHES) {
    const r = rngStream(7, B);
    const x = Float32Array.from({ length: B * PIXELS }, () => r.normal());
    const base = {
      x: { type: "float32" as const, data: x, dims: [B, 1, SIZE, SIZE] },
      t: {
        type: "float32" as const,
        data: Float32Array.from({ length: B }, (_, i) => 0.1 + 0.8 * i / B),
        dims: [B],
      },
      class: {
        type: "int64" as const,
        data: BigInt64Array.from({ length: B }, (_, i) => BigInt(i % 11)),
        dims: [B],
      },
    };
    const feeds: Record<string, Parameters<typeof runSession>[1]> = M ? folderCostFeeds(M, B) : {
      eps: base,
      head: base,
      jvp: {
        ...base,
        dx: { type: "float32", data: x, dims: [B, 1, SIZE, SIZE] },
        dt: { type: "float32", data: new Float32Array(B).fill(0.1), dims: [B] },
      },
    };
    if (M && !sessions.head.inputNames.includes("class")) delete feeds.head.class;
    const times: Record<string, number[]> = { eps: [], head: [], jvp: [] };
    for (let round = -2; round < f.costRounds; round++) {
      for (const name of ["eps", "head", "jvp"]) {
        const a = performance.now();
        await runSession(sessions[name], feeds[name]);
        if (round >= 0) times[name].push(performance.now() - a);
      }
    }
    const ratio = (n: string) => median(times[n].map((v, i) => v / times.eps[i]));
    const min = (n: string) => Math.min(...times[n]);
    if (B === COST_BATCHES.at(-1)) costRatios = { eps: 1, head: ratio("head"), jvp: ratio("jvp") };
    rows.push(
      `| ${B} | ${fmt(median(times.eps))} / ${fmt(min("eps"))} | ${fmt(median(times.head))} / ${
        fmt(min("head"))
      } | ${fmt(median(times.jvp))} | ${ratio("head").toFixed(3)} | ${
        (min("head") / min("eps")).toFixed(3)
      } | ${ratio("jvp").toFixed(2)} |`,
    );
  }
  return rows;
}

/** Another model's cost feeds at batch B: its names and time for eps and jvp, the standard ones for head. */
function folderCostFeeds(M: FolderModel, B: number): Record<string, Parameters<typeof runSession>[1]> {
  const r = rngStream(7, B), dims = [B, ...M.shape];
  const x = Float32Array.from({ length: B * M.dim }, () => r.normal());
  const t = Float32Array.from({ length: B }, (_, i) => (0.1 + 0.8 * i / B) * M.time.scale + M.time.offset);
  const labels = M.classes ? Math.max(M.classes.count, (M.classes.nullClass ?? -1) + 1) : 1;
  const cls = {
    type: "int64" as const,
    data: BigInt64Array.from({ length: B }, (_, i) => BigInt(i % labels)),
    dims: [B],
  };
  const mapped = {
    [M.names.x]: { type: "float32" as const, data: x, dims },
    [M.names.t]: { type: "float32" as const, data: t, dims: [B] },
    ...(M.takesClass ? { [M.names.class]: cls } : {}),
  };
  return {
    eps: mapped,
    head: { x: { type: "float32", data: x, dims }, t: { type: "float32", data: t, dims: [B] }, class: cls },
    jvp: {
      ...mapped,
      dx: { type: "float32", data: x, dims },
      dt: { type: "float32", data: new Float32Array(B).fill(0.1 * M.time.scale), dims: [B] },
    },
  };
}

// ------------------------------------------------------------------------------------------------
// 3. solvers

interface Sampled {
  x: Float64Array;
  nfe: number;
  /** The run's accounts (calls per graph). */
  stats: RunStats;
  seconds: number;
}

async function sample(
  model: OpenedModel,
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
    denoise: f.denoise,
    derivative: c.derivative,
  }, guidance);
  const run = withConditioning(info.fn(input), { classes, nullClass: NULL_CLASS, scale: guidance });
  const a = performance.now();
  const { x, stats } = await runSolverAsync(run, model.evaluate);
  return {
    x,
    nfe: stats.nfe,
    stats,
    seconds: (performance.now() - a) / 1000,
  };
}

interface Scorer {
  fd: (x: Float64Array) => Promise<{ fd: number; acc: number }>;
  realFloor: number;
}

async function scorer(classes: Int32Array): Promise<Scorer> {
  const digits = await loadDigits();
  const session = await loadClassifier(f.classifier);
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

function svgPlot(series: { label: string; points: [number, number][] }[], title: string): string {
  const W = 640, H = 420, L = 70, R = 170, T = 30, Bm = 50;
  const xs = series.flatMap((s) => s.points.map((q) => q[0])),
    ys = series.flatMap((s) => s.points.map((q) => q[1]));
  const [x0, x1] = [Math.log(Math.min(...xs)), Math.log(Math.max(...xs))];
  const [y0, y1] = [Math.log10(Math.min(...ys)), Math.log10(Math.max(...ys))];
  const X = (v: number) => L + ((Math.log(v) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const Y = (v: number) => H - Bm - ((Math.log10(v) - y0) / (y1 - y0 || 1)) * (H - T - Bm);
  const colors = [
    "#d62728",
    "#ff7f0e",
    "#bcbd22",
    "#7f7f7f",
    "#1f77b4",
    "#2ca02c",
    "#17becf",
    "#9467bd",
    "#8c564b",
  ];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="18" font-size="13">${title}</text>`,
    `<line x1="${L}" y1="${H - Bm}" x2="${W - R}" y2="${H - Bm}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - Bm}" stroke="black"/>`,
  ];
  for (const v of [...new Set(xs)]) {
    out.push(`<text x="${X(v)}" y="${H - Bm + 15}" text-anchor="middle">${v}</text>`);
  }
  for (let e = Math.floor(y0); e <= Math.ceil(y1); e++) {
    const v = 10 ** e;
    if (Math.log10(v) < y0 - 1e-9 || Math.log10(v) > y1 + 1e-9) continue;
    out.push(`<text x="${L - 5}" y="${Y(v) + 4}" text-anchor="end">1e${e}</text>`);
    out.push(`<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" stroke="#ddd"/>`);
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">NFE (log)</text>`);
  series.forEach((s, i) => {
    const c = colors[i % colors.length];
    out.push(
      `<polyline fill="none" stroke="${c}" stroke-width="${i === 0 ? 2.5 : 1.3}" points="${
        s.points.map(([a, b]) => `${X(a).toFixed(1)},${Y(b).toFixed(1)}`).join(" ")
      }"/>`,
    );
    out.push(`<text x="${W - R + 10}" y="${T + 14 * i + 10}" fill="${c}">${s.label}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}

// ------------------------------------------------------------------------------------------------

const manifest = JSON.parse(await Deno.readTextFile(`${f.model}/model.json`));
const training = JSON.parse(await Deno.readTextFile(`${f.model}/training.json`).catch(() => "{}"));
const distill = JSON.parse(await Deno.readTextFile(`${f.model}/distill.json`).catch(() => "{}"));
const clsInfo = JSON.parse(await Deno.readTextFile(`${f.classifier}/classifier.json`).catch(() => "{}"));

log("head quality …");
const quality = await headQuality();
log("cost …");
const costRows = await cost();

log("solvers …");
const model = await openModel(MODEL_NAME, dirname(f.model), {
  providers: ["cpu"],
  threads: f.threads,
});
const N = f.n;
/** Numbers per sample. */
const DIM = model.shape.reduce((a, b) => a * b, 1);
/** mnist-unet's null class; another model's from its manifest. */
const NULL_CLASS = MNIST ? 10 : model.classes?.nullClass;
const latents = new Float64Array(N * DIM);
for (let i = 0; i < N; i++) latents.set(gaussianNoise(f.seed + i, 0, DIM), i * DIM);
// class i mod 10 (mnist-unet), i mod count (another class-conditional model), none (unconditional)
const classes = MNIST
  ? Int32Array.from({ length: N }, (_, i) => i % 10)
  : model.classes
  ? Int32Array.from({ length: N }, (_, i) => i % model.classes!.count)
  : undefined;
const score = MNIST ? await scorer(classes!) : undefined;
// the solvers and derivative sources the model offers (all of them on mnist-unet)
const ACTIVE = CONFIGS.filter((c) => !c.derivative || model.derivatives.includes(c.derivative));
const ACTIVE_SOLVERS = SOLVERS.filter((s) => !s.derivative || model.derivatives.includes(s.derivative));

const heun = CONFIGS.find((c) => c.solver === "heun")!;
const ref = await sample(model, heun, f.refSteps, latents, classes);
const refHalf = await sample(model, heun, f.refSteps / 2, latents, classes);
const refCheck = median(rmsePerSample(refHalf.x, ref.x, N, DIM));
const refScore = score ? await score.fd(ref.x) : undefined;
const refRange = rangeReport(ref.x);
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

/** Samples outside [−1.5, 1.5] and the extreme pixel values. */
function rangeReport(x: Float64Array): { outside: number; min: number; max: number } {
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

type Cell = {
  nfe: number;
  steps?: number;
  /** Forward-pass equivalents: ε calls + head calls × head ratio + JVP calls × JVP ratio. */
  cost?: number;
  err?: number;
  fd?: number;
  acc?: number;
  seconds?: number;
};
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
  const s = await sample(model, c, steps, latents, classes);
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

const results: { config: Config; cells: Cell[] }[] = [];
for (const c of ACTIVE) {
  const cells: Cell[] = [];
  for (const nfe of NFES) cells.push(await cellAt(c, nfe) ?? { nfe });
  results.push({ config: c, cells });
  log(`  ${c.label}: ${cells.map((x) => fmt(x.err)).join(" ")}`);
}

/** Geometric mean of the errors at NFE ≤ 10 where every grid of the family has one (lower = better). */
const LOW = NFES.filter((n) => n <= 10);
const geoErr = (r: { cells: Cell[] }, nfes: number[]) => {
  const v = nfes.map((n) => r.cells.find((c) => c.nfe === n)?.err).filter((e): e is number =>
    e !== undefined
  );
  return v.length ? Math.exp(v.reduce((a, e) => a + Math.log(e), 0) / v.length) : Infinity;
};
/** Per solver: the grid with the lower error over NFE ≤ 10 (the best grid). */
const bestGrid = ACTIVE_SOLVERS.map((sv) => {
  const rows = results.filter((r) => r.config.solver === sv.solver && r.config.derivative === sv.derivative);
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
    const s = await sample(model, c, steps, latents, classes, 0, false);
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
    const s = await sample(model, c, steps, latents, classes, w);
    const q = await score!.fd(s.x);
    guided.push({ config: c, w, ...q });
  }
}
await model.close();

// ------------------------------------------------------------------------------------------------
// report

const best = (nfe: number, key: "err" | "fd", rows = results) => {
  const vals = rows.map((r) => ({ label: r.config.label, v: r.cells.find((x) => x.nfe === nfe)?.[key] }))
    .filter((x) => x.v !== undefined) as { label: string; v: number }[];
  return vals.sort((a, b) => a.v - b.v)[0];
};
const bestRows = bestGrid.map((b) => b.best);
const headFamily = bestGrid.find((b) => b.family === "genie (head)");
if (!headFamily) {
  throw new Error(`${MODEL_NAME} has no head graph: distil one with deno task distill --model`);
}
const headRow = headFamily.best;
const pass = (ok: boolean) => (ok ? "met" : "**missed**");
/** FD counts as tied within this fraction of the best (N-sample FD varies by about that between seeds). */
const FD_TIE = 0.05;

p(`# GENIE derivative head on ${MODEL_NAME}`);
p();
p(`Generated by \`deno task bench:head\` (bench/head.ts) on ${
  new Date().toISOString()
}; never edited by hand.`);
p(`Machine: ${navigator.hardwareConcurrency} CPU cores, otherwise idle (speed is only stated as ratios measured`);
p(
  "side by side in one run). Total bench time: " +
    `${((performance.now() - started) / 1000).toFixed(0)} s.`,
);
p();
p("## Models");
p();
p(`- **${MODEL_NAME}** (${manifest.description ?? ""})`);
if (training.steps_done) {
  const fl = training.flags ?? {};
  p(
    `  Training: ${training.steps_done} steps (planned ${training.steps_planned}) at batch ${fl.batch}, ` +
      `lr ${fl.lr} (warm-up ${fl.warmup}, cosine → ${fl.minLr}), weight average ${fl.ema ?? "none"} ` +
      `(${
        training.exported === "ema" ? "the average is shipped" : "raw weights shipped"
      }), seed ${fl.seed}; ` +
      `${(training.segments ?? []).length} recorded segment(s); final loss (EMA of the loss) ${
        fmt(training.final_loss_ema, 4)
      }.`,
  );
}
if (distill.steps_done) {
  p(
    `- **head** (training/head.ts, width ${distill.head?.width}, ${distill.head?.parameters} parameters): ` +
      `${distill.steps_done} distillation steps at batch ${distill.flags?.batch}, lr ${distill.flags?.lr}; held-out ` +
      `median relative error ${fmt(distill.heldout_relative_error?.after_median)} (before: ${
        fmt(distill.heldout_relative_error?.before_median)
      }).`,
  );
  if (distill.head?.tensors) {
    p(
      `  Its inputs: the feature map \`${distill.head.tensors.features}\` and ${
        distill.head.tensors.temb
          ? `the time embedding \`${distill.head.tensors.temb}\``
          : "its own embedding of γ"
      }.`,
    );
  }
}
if (MNIST) {
  p(
    `- **classifier** (models/mnist-classifier, training/classifier.ts): held-out accuracy ${
      clsInfo.heldout_accuracy ? (100 * clsInfo.heldout_accuracy).toFixed(2) + "%" : "?"
    } on ${
      clsInfo.heldout_count ?? "?"
    } digits. Fréchet distance (FD) below = the FID formula in its 128-D ` +
      "penultimate feature space, against all 10,000 digits of the `mnist` package.",
  );
}
p();
p("## Targets");
p();
{
  const winsAt = (nfe: number, rows: { config: Config; cells: Cell[] }[], key: "err" | "fd") =>
    best(nfe, key, rows);
  const headBeats = [5, 6, 8, 10].filter((n) => NFES.includes(n));
  const eqNfe = headBeats.map((n) => ({ n, w: winsAt(n, bestRows, "err") }));
  const eqCost = headBeats.map((n) => {
    const vals = equalCost.map((e) => ({
      label: e.config.label,
      v: e.cells.find((c) => c.budget === n)?.err,
    }))
      .filter((x) => x.v !== undefined) as { label: string; v: number }[];
    return { n, w: vals.sort((a, b) => a.v - b.v)[0] };
  });
  const fd10 = winsAt(10, bestRows, "fd");
  const headFd10 = headRow.cells.find((c) => c.nfe === 10)?.fd;
  const headCost = costRatios.head;
  p("| target | measured | |");
  p("|---|---|---|");
  if (refScore && score) {
    p(
      `| reference samples read as the requested class ≥ 95% | ${
        (100 * refScore.acc).toFixed(1)
      }% (N = ${N}) | ${pass(refScore.acc >= 0.95)} |`,
    );
    p(
      `| no reference sample outside [−1.5, 1.5] | ${refRange.outside} of ${N} (pixels ${
        fmt(refRange.min)
      } … ${fmt(refRange.max)}) | ${pass(refRange.outside === 0)} |`,
    );
    p(
      `| FD within 1.5× the real-data floor at equal N | ${fmt(refScore.fd)} vs floor ${
        fmt(score.realFloor)
      }: ${(refScore.fd / score.realFloor).toFixed(2)}× | ${pass(refScore.fd <= 1.5 * score.realFloor)} |`,
    );
  }
  p(
    `| head: held-out median relative error ≤ 0.25 for t < 0.6 | ${fmt(headBelow)} (t ≥ 0.6: ${
      fmt(headAbove)
    }) | ${pass(headBelow <= 0.25)} |`,
  );
  p(
    `| (eps + head) ÷ eps ≤ 1.05 (batch ${COST_BATCHES.at(-1)}, median of rounds) | ${
      headCost.toFixed(3)
    } | ${pass(headCost <= 1.05)} |`,
  );
  for (const [title, rows] of [["equal NFE", eqNfe], ["equal cost", eqCost]] as const) {
    const ok = rows.every((r) => r.w?.label === headRow.config.label);
    p(
      `| GENIE + head has the lowest endpoint error at NFE ${headBeats.join(", ")}, ${title} (best grids) | ${
        rows.map((r) => `${r.n}: ${r.w?.label ?? "—"}`).join("; ")
      } | ${pass(ok)} |`,
    );
  }
  if (score) {
    p(
      `| GENIE + head has the lowest or tied (within ${100 * FD_TIE}%) FD at NFE 10 | ${
        fmt(headFd10)
      } vs best ${fd10?.label} ${fmt(fd10?.v)} | ${
        pass(headFd10 !== undefined && headFd10 <= (1 + FD_TIE) * fd10.v)
      } |`,
    );
  }
}
p();
p("## 1. Head quality");
p();
p("Relative error ‖k − τ‖/‖τ‖ per sample, k = head.onnx's `deriv`, τ = exact dε̂/dγ along the ODE from the JVP");
if (MNIST) {
  p("graph of eps.onnx (tangent v = ε̂/sqrt(1+γ²) − γx/(1+γ²), dt/dγ). x_t = α x₀ + σ ε from digits with a seed");
  p("not used in distillation, class = label (null class with probability 0.1), t spread evenly in each bucket.");
  p("The last column is the size of τ's explicit time part ∂ε̂/∂t·dt/dγ (the JVP with dx = 0) relative to τ.");
} else {
  p("graph of eps.onnx (tangent v = ε̂/sqrt(1+γ²) − γx/(1+γ²), dt/dγ; x₀ and v predictions converted to ε by the");
  p(`product rule). x_t = α x₀ + σ ε with x₀ ${
    f.data
      ? `from ${f.data}`
      : "the model's own samples (DPM-Solver++(2M), NFE 20, seeds not used in distillation)"
  },`);
  p("its class where it has one (null class with probability 0.1), t spread evenly in each bucket.");
}
p();
quality.forEach((r) => p(r));
p();
p("## 2. Cost");
p();
p(`ms per ORT call, one intra-op thread, ${f.costRounds} interleaved rounds (eps, head, jvp) after 2 warm-up`);
p("rounds. head.onnx computes ε and k in ONE call. Two estimates of its cost: the median of the per-round ratios,");
p("and the ratio of the fastest calls. The ratios at the largest batch are recorded in the manifest (`costs`) and");
p("give the `cost` of a sampling run: ε calls + head calls × head ratio + JVP calls × JVP ratio.");
p();
costRows.forEach((r) => p(r));
p();
p(`## 3. Solvers on ${MODEL_NAME}`);
p();
p(`Settings: N = ${N} samples, seeds ${f.seed}…${f.seed + N - 1} (x_T = gaussianNoise(seed, 0, ${DIM})), ${
  MNIST ? "class i mod 10" : classes ? `class i mod ${model.classes!.count}` : "unconditional"
},`);
p(
  `no guidance; AFS on for every solver; ${
    f.denoise
      ? "final denoising on (x̂₀ = x̄_N − γ_N ε, +1 NFE, for every solver and the reference)"
      : "no final denoising"
  }; every solver on its registry grid and on EDM ρ = 7 (heun's registry grid is EDM ρ = 7); steps = the count`,
);
p(`whose NFE equals the column's (\`stepsForNfe\`), "—" where none does. ORT threads ${f.threads}, max batch 64.`);
p("NFE counts evaluations of ε: a head call is one (it returns ε and k together), a JVP call is none (genie (jvp)");
p("makes one per step besides ε), genie (fd) spends 2 NFE per step. The cost column of the equal-cost table counts");
p("everything.");
p();
p(
  `Reference: heun with ${f.refSteps} steps (NFE ${ref.nfe}); against ${
    f.refSteps / 2
  } steps its median RMSE is ` +
    `${refCheck.toExponential(2)} (${refVerdict()}).` +
    (refScore && score
      ? ` Reference samples: FD ${fmt(refScore.fd)}, ` +
        `accuracy ${(100 * refScore.acc).toFixed(1)}%. FD of ${N} real digits against all 10,000: ${
          fmt(score.realFloor)
        } ` +
        `(the small-sample floor: with N = ${N} in 128-D, FD is biased upwards; compare rows, not with published FIDs).`
      : ""),
);
p();
function refVerdict(): string {
  const smallest = Math.min(...results.flatMap((r) => r.cells.map((c) => c.err ?? Infinity)));
  return refCheck < 0.1 * smallest
    ? `below a tenth of the smallest solver error, ${fmt(smallest)}: converged for this comparison`
    : `NOT below a tenth of the smallest solver error, ${
      fmt(smallest)
    }: errors near it are reference-limited`;
}
const table = (title: string, key: "err" | "fd" | "acc", rows = results, digits = 3) => {
  p(`### ${title}`);
  p();
  p(`| solver | ${NFES.map((n) => `NFE ${n}`).join(" | ")} |`);
  p(`|---|${NFES.map(() => "---").join("|")}|`);
  for (const r of rows) {
    p(
      `| ${r.config.label} | ${
        r.cells.map((c) => {
          const v = c[key];
          if (v === undefined) return "—";
          const s = key === "acc" ? (100 * v).toFixed(0) + "%" : fmt(v, digits);
          const b = key !== "acc" && best(c.nfe, key, rows)?.label === r.config.label;
          return b ? `**${s}**` : s;
        }).join(" | ")
      } |`,
    );
  }
  p();
};
table(
  "Integration error at equal NFE, each solver on its best grid; best per column in bold",
  "err",
  bestRows,
);
p(`Best grid = the grid with the lower geometric-mean error over NFE ${LOW.join(", ")}:`);
p();
p("| solver | best grid | geometric-mean error | other grid |");
p("|---|---|---|---|");
for (const b of bestGrid) {
  p(
    `| ${b.family} | ${gridLabel(b.best.config.grid)} | ${fmt(b.geo)} | ${
      b.others.map((o) => `${gridLabel(o.config.grid)} ${fmt(geoErr(o, LOW))}`).join(", ") || "—"
    } |`,
  );
}
p();
p("### Integration error at equal cost (best grids)");
p();
p("Each column is a budget of forward-pass equivalents; each solver runs the most NFE whose cost fits it");
p(`(head ratio ${costRatios.head.toFixed(3)}, JVP ratio ${
  costRatios.jvp.toFixed(2)
}, section 2). Cells: error (NFE).`);
p();
p(`| solver | ${NFES.map((n) => `cost ≤ ${n}`).join(" | ")} |`);
p(`|---|${NFES.map(() => "---").join("|")}|`);
for (const e of equalCost) {
  p(
    `| ${e.config.label} | ${
      e.cells.map((c) => {
        if (c.err === undefined) return "—";
        const column = equalCost.map((o) => o.cells.find((x) => x.budget === c.budget)?.err ?? Infinity);
        const s = `${fmt(c.err)} (${c.nfe})`;
        return c.err <= Math.min(...column) ? `**${s}**` : s;
      }).join(" | ")
    } |`,
  );
}
p();
table("Integration error: every solver and grid; median per-sample RMSE vs the reference", "err");
if (score) {
  table("Fréchet distance (classifier features) vs NFE; best per column in bold", "fd");
  table("Class accuracy of the conditional samples (classifier's label = requested class)", "acc");
}

p("### Where GENIE with its head stands (integration error, best grids)");
p();
for (const nfe of LOW) {
  const b = best(nfe, "err", bestRows);
  const h = headRow.cells.find((c) => c.nfe === nfe)?.err;
  if (!b || h === undefined) continue;
  p(
    `- NFE ${nfe}: best ${b.label} (${fmt(b.v)}); ${headRow.config.label} ${fmt(h)}${
      b.label === headRow.config.label ? " (best)" : ` (${(h / b.v).toFixed(2)}× the best)`
    }`,
  );
}
p();
p(
  `Head summary: median relative error ${
    fmt(headMedian)
  } over all t (section 1); its component along the exact ` +
    `derivative is ${fmt(headScale)} of it (median ⟨k, τ⟩/⟨τ, τ⟩; 1 = the right size along τ).`,
);
p();
p("### The same without AFS (first step evaluates the network)");
p();
p("Median per-sample RMSE vs the same reference; AFS off, everything else as above (best grids).");
p();
p(`| solver | ${AFS_OFF_NFES.map((n) => `NFE ${n}`).join(" | ")} |`);
p(`|---|${AFS_OFF_NFES.map(() => "---").join("|")}|`);
for (const r of afsOff) p(`| ${r.config.label} | ${r.cells.map((c) => fmt(c.err)).join(" | ")} |`);
p();
if (score) {
  p("## 4. Classifier-free guidance at NFE 10");
  p();
  p("ε̃ = (1+w) ε_c − w ε_u; the head's k̃ = (1+w) k_c − w k_u (the guided derivative is linear in the two");
  p("derivatives); genie (jvp) uses the exact derivative of the guided ODE. Same latents and classes as section 3.");
  p();
  p("| solver | w | accuracy | FD |");
  p("|---|---|---|---|");
  for (const g of guided) p(`| ${g.config.label} | ${g.w} | ${(100 * g.acc).toFixed(0)}% | ${fmt(g.fd)} |`);
  p();
}

const svg = svgPlot(
  bestRows.map((r) => ({
    label: r.config.label,
    points: r.cells.filter((c) => c.err !== undefined).map((c) => [c.nfe, c.err!] as [number, number]),
  })),
  `${MODEL_NAME}: median RMSE vs reference (N = ${N}, AFS on, best grids)`,
);
const svgPath = f.out.replace(/\.md$/, "-error.svg");
await Deno.mkdir(dirname(svgPath), { recursive: true });
await writeAtomic(svgPath, svg);
p(`![integration error vs NFE](${svgPath.split("/").pop()})`);
p();
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

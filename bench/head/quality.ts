/**
 * Section 1 of `deno task bench:head` (bench/head.ts): the head's relative error ‖k − τ‖/‖τ‖ against the
 * exact JVP τ of eps.onnx along the ODE, per t bucket, on noised digits (mnist-unet) or on the model's own
 * samples (another model folder).
 */
import { rngStream } from "../../core/rng.ts";
import { decodeNpy } from "../../core/npy.ts";
import { median } from "../../core/stats.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { loadDigits, log, PIXELS, SIZE } from "../../training/common.ts";
import { type DataPool, drawFromPool, folderHeadData, samplePool } from "../../training/model_folder.ts";
import { drawNoisy, headData, loadScoreGraphs, odeTangentX, schedule } from "../../training/targets.ts";
import { fmt, type HeadBench } from "./settings.ts";

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
async function qualityInputsMnist({ f }: HeadBench): Promise<QualityInputs> {
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

/** Another model: its own samples (or `--data`) noised. */
async function qualityInputsFolder(bench: HeadBench): Promise<QualityInputs> {
  const { f } = bench;
  const { model, graphs } = await bench.folder();
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

/** Summaries of section 1 for the text of section 3: medians of the relative error, and of k's size along τ. */
export interface HeadSummary {
  /** Over all t, below t = 0.6, from t = 0.6. */
  median: number;
  below: number;
  above: number;
  /** ⟨k, τ⟩/⟨τ, τ⟩ (1 = the right size along τ). */
  scale: number;
}

/** Section 1's table rows, and its summary. */
export async function headQuality(bench: HeadBench): Promise<{ rows: string[]; summary: HeadSummary }> {
  const { ts, d, k, timePart, dim, gamma, buckets, per } = bench.mnist
    ? await qualityInputsMnist(bench)
    : await qualityInputsFolder(bench);
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
  const headMedian = median(all);
  const split = (keep: (t: number) => boolean) => all.filter((_, i) => keep(ts[i]));
  const headBelow = median(split((t) => t < 0.6));
  const headAbove = median(split((t) => t >= 0.6));
  // the head's k projected on τ: ⟨k, τ⟩/⟨τ, τ⟩ per sample (1 = right size along τ, < 1 = too small)
  const headScale = median(ts.map((_, b) => {
    let kt = 0, tt = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) kt += k[i] * d.target[i], tt += d.target[i] ** 2;
    return kt / tt;
  }));
  return { rows, summary: { median: headMedian, below: headBelow, above: headAbove, scale: headScale } };
}

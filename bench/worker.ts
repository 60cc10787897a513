/**
 * `deno task bench:worker [--soak-seconds 10] [--reps 9] [--threads 2] [--models mnist-unet,mnist-mix]
 *   [--load-model mnist-mix] [--fair-big-model mnist-unet] [--fair-big-steps 60] [--out docs/worker.md]`
 *
 * Measures the worker in-process (the exported fetch handler, msgpack bodies, the scheduler and the
 * inference thread; no sockets) and writes a report:
 *
 * - overhead: sampling wall time ÷ (the run's calls × forward time at the same batch), batch 1, 8, 32, on each of
 *   --models, where the forward time is the run's own calls replayed one by one through the
 *   inference thread with the same inputs, measured in the same run; and the worker's own time per
 *   request and per step against a stand-in inference that answers at once;
 * - batching: throughput of 32 concurrent single-sample clients ÷ throughput of one 32-sample request,
 *   on each of --models;
 * - latency percentiles of single-sample requests under that load, on --load-model;
 * - fairness: p50/p99 of small requests on --load-model while a maximal request (max_batch samples of
 *   --fair-big-model, ddim, --fair-big-steps steps) runs, against alone, with the scheduler's quantum and
 *   without its cut (--fair-only runs this section alone);
 * - RSS over a soak of concurrent clients (length set by --soak-seconds), on --load-model;
 * - the spin policy of the inference thread's sessions (GENIE_WORKER_SPIN auto, on, off side by side, each in
 *   its own inference thread): GENIE with the JVP graph and DPM-Solver++(2M) at batch 1 on --spin-model,
 *   against their floor, the same calls grouped by graph and made back to back (--spin-only runs this
 *   section alone).
 *
 * Every number is a median over --reps repetitions measured side by side in one run. Requests pin the grid
 * (quadratic) so that a model's own default grid does not change what is compared; the tables report
 * each run's NFE (ε evaluations), calls (graph calls of every kind) and cost (forward-pass equivalents
 * with the model's cost ratios) as the worker replies them.
 */
import process from "node:process";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { decode, encode } from "@msgpack/msgpack";
import { createWorkerApp, type WorkerApp } from "../gpu-worker/app.ts";
import { InferenceThread, type WireTensor } from "../gpu-worker/inference.ts";
import type { GraphKind } from "../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry } from "../gpu-worker/models.ts";
import { parseFlags } from "../core/flags.ts";
import { median, quantileFloor as quantile } from "../core/stats.ts";

const { values: flags } = parseFlags(process.argv.slice(2), [
  { flag: "--soak-seconds", kind: "number", min: 0, positive: true, default: 10 },
  { flag: "--reps", kind: "int", min: 1, default: 9 },
  { flag: "--threads", kind: "int", min: 0, default: 2 },
  { flag: "--models", kind: "list", default: ["mnist-unet", "mnist-mix"] },
  { flag: "--load-model", kind: "string", default: "mnist-mix" },
  { flag: "--nfe", kind: "int", min: 1, default: 10 },
  { flag: "--spin-model", kind: "string", default: "mnist-unet" },
  { flag: "--spin-only", kind: "bool", default: false },
  { flag: "--fair-only", kind: "bool", default: false },
  { flag: "--fair-big-model", kind: "string", default: "mnist-unet" },
  { flag: "--fair-big-steps", kind: "int", min: 1, default: 60 },
  { flag: "--out", kind: "string", default: "docs/worker.md" },
], { help: false });
const SOAK_S = flags.soakSeconds;
const REPS = flags.reps;
const THREADS = flags.threads;
const MODEL = flags.loadModel;
const OVERHEAD_MODELS = flags.models;
const SPIN_MODEL = flags.spinModel;
const SPIN_ONLY = flags.spinOnly;
const FAIR_BIG_MODEL = flags.fairBigModel;
const FAIR_BIG_STEPS = flags.fairBigSteps;
const FAIR_ALONE = 40;
const FAIR_ONLY = flags.fairOnly;
const ALL_MODELS = [...new Set([MODEL, ...OVERHEAD_MODELS, SPIN_MODEL, FAIR_BIG_MODEL])];
const NFE = flags.nfe;

const fmt = (x: number, digits = 2) => x.toFixed(digits);
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

const registry = await loadRegistry(defaultModelsDir(), { only: ALL_MODELS });
for (const name of ALL_MODELS) {
  if (!registry.models.has(name)) throw new Error(`model ${name}: ${JSON.stringify(registry.errors)}`);
}
const info = registry.models.get(MODEL)!;
const thread = await InferenceThread.start(ALL_MODELS.map((m) => registry.models.get(m)!), {
  providers: ["cuda", "cpu"],
  intraOpThreads: THREADS,
});
const provider = thread.models.get(MODEL)!.provider;
let calls = 0;
/** While set, a copy of every call's inputs (their buffers are transferred away by the call). */
let recording: { graph: GraphKind; feeds: Record<string, WireTensor> }[] | undefined;
const copyFeeds = (feeds: Record<string, WireTensor>) =>
  Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, { ...t, data: t.data.slice(0) }]));
const inference = {
  run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
    calls++;
    recording?.push({ graph, feeds: copyFeeds(feeds) });
    return thread.run(model, graph, feeds);
  },
  // Two apps share the thread; it is closed once at the end.
  close: () => Promise.resolve(),
};
const app: WorkerApp = await createWorkerApp({
  models: ALL_MODELS,
  inference,
  maxQueue: 1024,
  log: () => {},
});
const shape = info.manifest.shape;
const conditional = info.manifest.classes !== undefined;

/** One forward call of `graph` of `model` at batch B through the inference thread; returns wall ms. */
async function forward(model: string, graph: GraphKind, B: number): Promise<number> {
  const m = registry.models.get(model)!, mdim = m.dim, mshape = m.manifest.shape;
  const x = new Float32Array(B * mdim).map((_, i) => Math.sin(i)), t = new Float32Array(B).fill(0.3);
  const feeds: Record<string, WireTensor> = {
    x: { type: "float32", data: x.buffer, dims: [B, ...mshape] },
    t: { type: "float32", data: t.buffer, dims: [B] },
  };
  if (m.manifest.classes) {
    feeds.class = {
      type: "int64",
      data: new BigInt64Array(B).fill(BigInt(m.manifest.classes.null_class ?? 0)).buffer,
      dims: [B],
    };
  }
  const t0 = performance.now();
  await thread.run(model, graph, feeds);
  return performance.now() - t0;
}

/**
 * The calls one sampling run made, replayed one by one through the inference thread with the same
 * inputs: Σ of their wall times is "NFE × forward time" measured on exactly the samples, times and
 * classes of that run (a graph's cost can depend on its inputs).
 */
async function replay(model: string, calls: NonNullable<typeof recording>): Promise<number> {
  let total = 0;
  for (const { graph, feeds } of calls) {
    const copy = copyFeeds(feeds);
    const t0 = performance.now();
    await thread.run(model, graph, copy);
    total += performance.now() - t0;
  }
  return total;
}

async function forwardMedian(model: string, graph: GraphKind, B: number, n = 15): Promise<number> {
  await forward(model, graph, B);
  const times: number[] = [];
  for (let i = 0; i < n; i++) times.push(await forward(model, graph, B));
  return median(times);
}

interface Sampled {
  ms: number;
  nfe: number;
  /** Graph calls of every kind, per sample trajectory. */
  calls: number;
  /** Forward-pass equivalents, and whether a fallback ratio priced them. */
  cost: number;
  costEstimated: boolean;
  steps: number;
}

let seedBase = 1;
async function sample(
  n: number,
  solver: string,
  extra: Record<string, unknown> = {},
  target: WorkerApp = app,
  model: string = MODEL,
  seeds: number[] = Array.from({ length: n }, () => seedBase++ % 2 ** 32),
): Promise<Sampled> {
  const body = encode({
    v: 1,
    id: `b${seedBase}`,
    model,
    solver,
    nfe: NFE,
    grid: "quadratic",
    seeds,
    ...extra,
  });
  const t0 = performance.now();
  const res = await target.request("/v1/batch", {
    method: "POST",
    body,
    headers: { "content-type": "application/msgpack" },
  });
  const out = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`batch failed: ${JSON.stringify(out)}`);
  return {
    ms,
    nfe: out.nfe as number,
    calls: out.calls as number,
    cost: out.cost as number,
    costEstimated: out.cost_estimated === true,
    steps: out.steps as number,
  };
}

/** A run's cost for the tables, † when a fallback ratio priced it. */
const costText = (r: Sampled) => `${Number(r.cost.toFixed(2))}${r.costEstimated ? "†" : ""}`;

const lines: string[] = [];
const out = (s = "") => lines.push(s);
const started = new Date().toISOString();
out("# GPU worker benchmark");
out();
out(
  `Generated by \`deno task bench:worker\` (${started}); do not edit by hand. How the worker works: gpu-worker/README.md.`,
);
out();
out(
  `Machine: ${navigator.hardwareConcurrency} logical CPUs, ${process.platform}/${process.arch}; ` +
    `provider **${provider}**, ORT intra-op threads ${THREADS}, GENIE_WORKER_SPIN auto (the sessions' ` +
    `policy: ${thread.models.get(MODEL)!.spin}) except in "Spin policy"; Deno ${
      (globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno ?? "?"
    }.`,
);
out(
  `Models: overhead and batching on ${
    OVERHEAD_MODELS.map((m) => `\`${m}\``).join(" and ")
  }; the worker's own time, latency and memory on \`${MODEL}\` ` +
    `(shape [${shape.join(", ")}]${
      MODEL === "mnist-mix" ? ", an exact 1000-component mixture, float64 inside the graph" : ""
    }). \`mnist-unet\` is the trained U-Net (its \`head\` graph is eps + the distilled derivative head). ` +
    `Requests go through the in-process fetch handler (msgpack encode/decode, validation, scheduler, inference ` +
    `thread), not through sockets. Medians over ${REPS} repetitions unless noted.`,
);
out(
  `Load average at start (1/5/15 min): ${
    loadavg().map((l) => l.toFixed(2)).join(" / ")
  }; other processes on a ` +
    `shared machine inflate and scatter these timings, so compare rows of one run only.`,
);
out();

/**
 * The spin policy, side by side: one inference thread per GENIE_WORKER_SPIN setting (auto, on, off), each
 * holding every graph of SPIN_MODEL as the worker would (eps, head, the JVP graph), behind its own worker app.
 * Per repetition and setting, in rotating order: a timed sampling run, the same run again recorded, then its
 * calls replayed one by one in their order and grouped by graph (all eps calls back to back, then all JVP
 * calls): the grouped replay is the run's floor, what its calls cost when no session ever follows another.
 */
async function spinSection(): Promise<void> {
  const info = registry.models.get(SPIN_MODEL)!;
  const B = 1;
  out(`## Spin policy: alternating sessions at batch ${B}`);
  out();
  if (!info.graphPaths.jvp) {
    out(`Skipped: \`${SPIN_MODEL}\` has no JVP graph (${info.unavailable?.jvp?.reason ?? "none"}).`);
    out();
    return;
  }
  type Call = { graph: GraphKind; feeds: Record<string, WireTensor> };
  const settings = [["auto", undefined], ["on", true], ["off", false]] as const;
  const setups: {
    label: string;
    policy: string;
    thread: InferenceThread;
    app: WorkerApp;
    recorded?: Call[];
  }[] = [];
  for (const [label, spinning] of settings) {
    const t = await InferenceThread.start([info], {
      providers: ["cuda", "cpu"],
      intraOpThreads: THREADS,
      spinning,
    });
    const setup = { label, policy: t.models.get(SPIN_MODEL)!.spin, thread: t } as (typeof setups)[number];
    const recordingRun = {
      run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
        setup.recorded?.push({ graph, feeds: copyFeeds(feeds) });
        return t.run(model, graph, feeds);
      },
      close: () => Promise.resolve(),
    };
    setup.app = await createWorkerApp({
      models: [SPIN_MODEL],
      inference: recordingRun,
      maxQueue: 64,
      log: () => {},
    });
    setups.push(setup);
  }
  const pause = () => new Promise((r) => setTimeout(r, 100));
  /** Σ of the wall times of `calls` made one by one through `t`, in the given order. */
  const replayOn = async (t: InferenceThread, calls: Call[]) => {
    let total = 0;
    for (const { graph, feeds } of calls) {
      const copy = copyFeeds(feeds);
      const t0 = performance.now();
      await t.run(SPIN_MODEL, graph, copy);
      total += performance.now() - t0;
    }
    return total;
  };
  const runs = [
    ["genie", "jvp", { genie_derivative: "jvp" }],
    ["dpmpp-2m", "—", {}],
  ] as const;
  type Row = { walls: number[]; inOrder: number[]; floors: number[]; last?: Sampled };
  const rows = new Map<string, Row>();
  for (const [solver, , extra] of runs) {
    for (const s of setups) await sample(B, solver, extra, s.app, SPIN_MODEL);
  }
  for (let r = 0; r < REPS; r++) {
    const order = setups.map((_, i) => setups[(i + r) % setups.length]);
    for (const [solver, , extra] of runs) {
      for (const s of order) {
        const row = rows.get(`${solver} ${s.label}`) ?? { walls: [], inOrder: [], floors: [] };
        rows.set(`${solver} ${s.label}`, row);
        const seeds = Array.from({ length: B }, () => seedBase++ % 2 ** 32);
        await pause();
        row.last = await sample(B, solver, extra, s.app, SPIN_MODEL, seeds);
        row.walls.push(row.last.ms);
        s.recorded = [];
        await sample(B, solver, extra, s.app, SPIN_MODEL, seeds);
        const made = s.recorded;
        s.recorded = undefined;
        await pause();
        row.inOrder.push(await replayOn(s.thread, made));
        const graphs = [...new Set(made.map((c) => c.graph))];
        await pause();
        row.floors.push(await replayOn(s.thread, graphs.flatMap((g) => made.filter((c) => c.graph === g))));
      }
    }
  }
  out(
    `Settings: \`${SPIN_MODEL}\`, batch ${B}, NFE ${NFE}, grid quadratic, unconditional; GENIE with the JVP ` +
      "graph (one eps and one JVP call per step, alternating) and DPM-Solver++(2M) (eps calls only). Each " +
      "setting of `GENIE_WORKER_SPIN` has its own inference thread holding every graph of the model " +
      `(${
        Object.keys(info.graphPaths).filter((g) => g !== "features").join(", ")
      }), as the worker loads it, ` +
      "and its own worker app; the settings take turns in rotating order with 100 ms pauses between " +
      `measurements, ${REPS} repetitions, medians. **policy** is what each session got (onnx/ort.ts ` +
      "`SpinPolicy`: on spins also between calls, run only while a call runs, off never). **in order** replays " +
      "the run's own calls one by one in their order; **floor** replays the same calls grouped by graph (all " +
      "eps calls back to back, then all JVP calls), so that no session ever follows another: what the calls " +
      "cost without alternation.",
  );
  out();
  out(
    "| solver | derivative | calls | setting | policy | sampling ms | in order ms | floor ms | sampling ÷ floor | sampling ÷ auto's |",
  );
  out("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |");
  const summary: string[] = [];
  for (const [solver, derivative] of runs) {
    const auto = median(rows.get(`${solver} auto`)!.walls);
    const parts: string[] = [];
    for (const s of setups) {
      const row = rows.get(`${solver} ${s.label}`)!;
      const wall = median(row.walls), floor = median(row.floors);
      const ratio = median(row.walls.map((w, i) => w / row.floors[i]));
      out(
        `| ${solver} | ${derivative} | ${row.last!.calls} | ${s.label} | ${s.policy} | ${fmt(wall, 1)} | ${
          fmt(median(row.inOrder), 1)
        } | ${fmt(floor, 1)} | ${fmt(ratio)} | ${fmt(wall / auto)} |`,
      );
      parts.push(`${s.label} ${fmt(wall, 1)} ms (${fmt(ratio)}× its floor)`);
    }
    summary.push(`${solver}${derivative === "jvp" ? " (jvp)" : ""}: ${parts.join(", ")}`);
  }
  out();
  out(`At batch ${B}: ${summary.join("; ")}.`);
  out();
  out(
    "Each session has its own intra-op thread pool (onnxruntime-node creates no shared one). Spinning " +
      "between calls pays where one session runs every call; where calls alternate between sessions, the " +
      "threads of the one that just ran keep spinning through the next one's call and take its cores. " +
      "Auto (gpu-worker/inference.ts `spinPolicy`) spins between calls only when the thread holds a single " +
      "session, and otherwise spins only while a call runs.",
  );
  out();
  for (const s of setups) {
    await s.app.shutdown();
    await s.thread.close();
  }
}

if (SPIN_ONLY || FAIR_ONLY) {
  if (SPIN_ONLY) await spinSection();
  if (FAIR_ONLY) await fairnessSection();
  await app.shutdown();
  await thread.close();
  writeFileSync(flags.out, lines.join("\n") + "\n");
  console.log(lines.join("\n"));
  process.exit(0);
}

// 1. Overhead.
out("## Overhead: sampling wall time ÷ (calls × forward time at the same batch)");
out();
out(
  `Settings: grid quadratic (ρ 2), no AFS, no denoising, NFE ${NFE}, unconditional, seeds consecutive per request, one request at a time.`,
);
out(
  "GENIE with the `head` derivative makes one `head`-graph call per step; DDIM one `eps`-graph call. The ideal is 1.0. " +
    "**NFE** counts ε evaluations, **calls** graph calls of every kind and **cost** their forward-pass equivalents " +
    "(each call × its graph's cost ratio to one eps call from the model's manifest, † where a ratio is the " +
    "fallback estimate), all per sample trajectory as the worker reports them.",
);
out(
  "Forward times are wall times of single calls through the inference thread (message round trip included), " +
    "measured in the same run: **replayed** = the sampling run's own calls sent again one by one with the same " +
    "inputs (Σ over its calls; this is the denominator of the overhead), **fixed input** = calls × the median " +
    "of a call at t = 0.3 on a fixed x (shown because a graph's cost can depend on its inputs). " +
    "The overhead is what the worker adds around the model: request decoding and validation, noise, solver " +
    "steps, batching, scheduling and the response.",
);
out();
out(
  "| model | solver | graph | batch | steps | NFE | calls | cost | calls × forward ms, fixed input | Σ forward ms, replayed | sampling ms | overhead | overhead by minima |",
);
out("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
/** The two solvers compared: GENIE with its head graph, DDIM with eps. */
const SOLVERS = [["genie", "head", { genie_derivative: "head" }], ["ddim", "eps", {}]] as const;
const overheads: Record<string, number> = {}, overheadsByMinima: Record<string, number> = {};
/** Median over repetitions of sampling ms − replayed Σ forward ms, by "model solver B". */
const excessMs: Record<string, number> = {};
for (const model of OVERHEAD_MODELS) {
  for (const [solver, graph, extra] of SOLVERS) {
    for (const B of [1, 8, 32]) {
      await sample(B, solver, extra, app, model);
      const fw: number[] = [], walls: number[] = [], replays: number[] = [], ratios: number[] = [];
      let last: Sampled | undefined;
      for (let r = 0; r < REPS; r++) {
        fw.push(await forwardMedian(model, graph, B, 7));
        // timed without recording; then the same seeds again, recorded, for the replay
        const seeds = Array.from({ length: B }, () => seedBase++ % 2 ** 32);
        last = await sample(B, solver, extra, app, model, seeds);
        recording = [];
        await sample(B, solver, extra, app, model, seeds);
        const made = recording;
        recording = undefined;
        const replayed = await replay(model, made);
        walls.push(last.ms);
        replays.push(replayed);
        ratios.push(last.ms / replayed);
      }
      const overhead = median(ratios), byMinima = Math.min(...walls) / Math.min(...replays);
      overheads[`${model} ${solver} batch ${B}`] = overhead;
      overheadsByMinima[`${model} ${solver} batch ${B}`] = byMinima;
      excessMs[`${model} ${solver} ${B}`] = median(walls.map((w, i) => w - replays[i]));
      out(
        `| ${model} | ${solver} | ${graph} | ${B} | ${last!.steps} | ${last!.nfe} | ${last!.calls} | ${
          costText(last!)
        } | ${fmt(last!.calls * median(fw), 1)} | ${fmt(median(replays), 1)} | ${fmt(median(walls), 1)} | ${
          fmt(overhead)
        } | ${fmt(byMinima)} |`,
      );
    }
  }
}
out();
const targetStatus = (values: Record<string, number>) =>
  Object.entries(values).filter(([k]) => !k.endsWith(" 1")).map(([k, v]) =>
    `${k} ${fmt(v)}${v <= 1.05 ? " (met)" : " (missed)"}`
  ).join(", ");
out(
  `**Overhead** is the median over ${REPS} repetitions of (sampling ms ÷ replayed Σ forward ms) of each ` +
    "repetition; **by minima** is the fastest sampling run ÷ the fastest replay, the estimate least " +
    "inflated by other processes (both can only be slowed down by them, never sped up).",
);
out();
out(`Target ≤ 1.05 at batch ≥ 8, by medians: ${targetStatus(overheads)}.`);
out();
out(`By minima: ${targetStatus(overheadsByMinima)}.`);
out();
out(
  "The worker's own work per request is about the same for both models (it depends on the batch and the image " +
    "size, not on the network), so the ratio is larger where the network is cheap: `mnist-mix`'s analytic graph " +
    "takes a few ms per call here, `mnist-unet`'s U-Net several times more.",
);
out();

// 1b. The worker's own time, with a stand-in inference that answers at once (zeros).
{
  const standIn = {
    run(_model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
      const size = feeds.x.data.byteLength / 4;
      const outputs: Record<string, Float32Array> = { eps: new Float32Array(size) };
      if (graph !== "eps") outputs[graph === "jvp" ? "jvp" : "deriv"] = new Float32Array(size);
      return Promise.resolve({ outputs, ms: 0 });
    },
    close: () => Promise.resolve(),
  };
  const instant = await createWorkerApp({
    models: [MODEL],
    inference: standIn,
    maxQueue: 1024,
    log: () => {},
  });
  const timeAt = async (B: number, solver: string, extra: Record<string, unknown>, nfe: number) => {
    const request = { ...extra, nfe };
    for (let i = 0; i < 5; i++) await sample(B, solver, request, instant);
    const ms: number[] = [];
    for (let i = 0; i < 31; i++) ms.push((await sample(B, solver, request, instant)).ms);
    return median(ms);
  };
  out("### The worker's own time per request");
  out();
  out(
    `The same requests on \`${MODEL}\` against a stand-in inference that answers every call at once with zeros: ` +
      "what remains is the worker's own work on the main thread (request decoding and validation, noise, solver " +
      "steps, batching, the response). Fitted as fixed + NFE × per step from NFE 5 and NFE 40 (medians of 31). " +
      "The last two columns compare it with the overhead table: **sampling − replayed** is what sampling took " +
      "beyond the model's calls there (median over repetitions), and the part of it that is not the worker's own " +
      "work, per inference call, comes from pausing between calls: the two threads hand over a message and wake " +
      "each other, and an ORT call that follows a pause can take longer than the same call made back to back, " +
      "as in the replay. Per call it is about the same for every batch size, so it weighs most on a cheap network.",
  );
  out();
  out(
    "| solver | batch | ms at NFE 10 | fixed ms | per step µs | per step ÷ forward at that batch | sampling − replayed ms | not the worker's own work, µs per call |",
  );
  out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [solver, graph, extra] of SOLVERS) {
    for (const B of [1, 8, 32]) {
      const a = await timeAt(B, solver, extra, 5), b = await timeAt(B, solver, extra, 40);
      const at10 = await timeAt(B, solver, extra, 10);
      const step = (b - a) / 35, fixed = a - 5 * step;
      const fwd = await forwardMedian(MODEL, graph, B, 7);
      const excess = excessMs[`${MODEL} ${solver} ${B}`];
      const rest = excess === undefined ? "–" : fmt(((excess - at10) / NFE) * 1000, 0);
      out(
        `| ${solver} | ${B} | ${fmt(at10)} | ${fmt(fixed)} | ${fmt(step * 1000, 0)} | ${
          fmt(step / fwd, 3)
        } | ${excess === undefined ? "–" : fmt(excess)} | ${rest} |`,
      );
    }
  }
  out();
  await instant.shutdown();
}

// 1c. The spin policy.
await spinSection();

// 2. Batching: 32 concurrent single-sample clients vs one 32-sample request, on each model.
/**
 * Small requests (1 sample of --load-model, genie NFE --nfe) alone, then in a closed loop while one maximal
 * request runs (max_batch samples of --fair-big-model, ddim, --fair-big-steps steps): their p50/p99 against
 * alone, and what the maximal request pays. Side by side: the default quantum, and an unbounded one
 * (the rotation alone: each call of the big request takes a whole batch).
 */
async function fairnessSection(): Promise<void> {
  const big = FAIR_BIG_MODEL, bigN = registry.models.get(big)!.manifest.limits.max_batch;
  out("## Fairness: small requests beside a maximal one");
  out();
  out(
    `Settings: small = 1-sample ${MODEL} genie NFE ${NFE}, one closed-loop client; maximal = ${bigN}-sample ` +
      `${big} ddim ${FAIR_BIG_STEPS} steps (its max_batch). "alone" = the small requests with nothing else ` +
      `running (${FAIR_ALONE} requests). Quantum: the scheduler's per-turn inference time (` +
      '`--quantum-ms`, gpu-worker/README.md "Scheduling"); ∞ = no cut, the rotation alone.',
  );
  out();
  out(
    "| quantum | small alone p50 ms | p99 ms | small beside maximal p50 ms | p99 ms | p50 ÷ alone | " +
      "small requests served | maximal request s | maximal alone s |",
  );
  out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const bigSteps = { nfe: FAIR_BIG_STEPS };
  for (const quantum of [20, 1e9]) {
    const fairApp = await createWorkerApp({
      models: ALL_MODELS,
      inference,
      maxQueue: 1024,
      quantumMs: quantum,
      log: () => {},
    });
    await sample(1, "genie", {}, fairApp);
    await sample(bigN, "ddim", { nfe: 2 }, fairApp, big);
    const alone: number[] = [];
    for (let i = 0; i < FAIR_ALONE; i++) alone.push((await sample(1, "genie", {}, fairApp)).ms);
    const bigAlone = (await sample(bigN, "ddim", bigSteps, fairApp, big)).ms;
    const beside: number[] = [];
    let done = false;
    const bigRun = sample(bigN, "ddim", bigSteps, fairApp, big).then((r) => (done = true, r));
    await new Promise((r) => setTimeout(r, 50));
    while (!done) beside.push((await sample(1, "genie", {}, fairApp)).ms);
    const bigMs = (await bigRun).ms;
    await fairApp.shutdown();
    const p50 = quantile(beside, 0.5), a50 = quantile(alone, 0.5);
    out(
      `| ${quantum >= 1e9 ? "∞" : `${quantum} ms`} | ${fmt(a50, 1)} | ${fmt(quantile(alone, 0.99), 1)} | ` +
        `${fmt(p50, 1)} | ${fmt(quantile(beside, 0.99), 1)} | ${fmt(p50 / a50, 1)} | ${beside.length} | ` +
        `${fmt(bigMs / 1000, 2)} | ${fmt(bigAlone / 1000, 2)} |`,
    );
  }
  out();
}

const C = 32;
out(`## Batching: ${C} concurrent single-sample clients vs one ${C}-sample request`);
out();
out(
  `Settings: genie, head, grid quadratic, NFE ${NFE}, unconditional. Each client sends one 1-sample request; ` +
    `all ${C} start together. Throughput = samples ÷ wall time until the last finishes. ` +
    `Medians over ${Math.max(REPS, 9)} repetitions, modes interleaved.`,
);
out();
const waitApp = await createWorkerApp({
  models: ALL_MODELS,
  inference,
  maxQueue: 1024,
  maxWaitMs: 2,
  log: () => {},
});
const BATCH_REPS = Math.max(REPS, 9);
const batchRatios: Record<string, number> = {};
out("| model | mode | wall ms (median) | samples/s | mean samples per call |");
out("| --- | --- | ---: | ---: | ---: |");
for (const model of OVERHEAD_MODELS) {
  const runs = { concurrent: [] as number[], waiting: [] as number[], single: [] as number[] };
  const perCall = { concurrent: [] as number[], waiting: [] as number[] };
  const clients = (target: WorkerApp) =>
    Promise.all(Array.from({ length: C }, () => sample(1, "genie", {}, target, model)));
  await clients(app);
  await clients(waitApp);
  let callsPerRequest = (await sample(C, "genie", {}, app, model)).calls;
  for (let r = 0; r < BATCH_REPS; r++) {
    // Alternate the order so that drifts of a noisy machine hit every mode alike.
    const modes = r % 2
      ? ["single", "concurrent", "waiting"] as const
      : ["concurrent", "waiting", "single"] as const;
    for (const mode of modes) {
      const c0 = calls, t0 = performance.now();
      if (mode === "single") callsPerRequest = (await sample(C, "genie", {}, app, model)).calls;
      else await clients(mode === "waiting" ? waitApp : app);
      runs[mode].push(performance.now() - t0);
      // Samples per inference call: C trajectories of `calls` calls each, over the calls made.
      if (mode !== "single") perCall[mode].push((C * callsPerRequest) / (calls - c0));
    }
  }
  const concurrent = median(runs.concurrent), waiting = median(runs.waiting), single = median(runs.single);
  batchRatios[model] = single / concurrent;
  batchRatios[`${model} (max wait 2 ms)`] = single / waiting;
  const row = (mode: string, ms: number, perCallSamples: string) =>
    out(`| ${model} | ${mode} | ${fmt(ms, 1)} | ${fmt((C / ms) * 1000, 1)} | ${perCallSamples} |`);
  row(`${C} clients × 1 sample (max wait 0)`, concurrent, fmt(median(perCall.concurrent), 1));
  row(`${C} clients × 1 sample (max wait 2 ms)`, waiting, fmt(median(perCall.waiting), 1));
  row(`1 request × ${C} samples`, single, String(C));
}
out();
out(
  `**Ratio (concurrent ÷ single-request throughput), target ≥ 0.85:** ${
    OVERHEAD_MODELS.map((m) =>
      `${m} ${fmt(batchRatios[m], 3)}${batchRatios[m] >= 0.85 ? " (met)" : " (missed)"}, ${
        fmt(batchRatios[`${m} (max wait 2 ms)`], 3)
      } with max wait 2 ms`
    ).join("; ")
  } (1.0 = batching recovers all of it).`,
);
out(
  "Requests that arrive together share their first call (the scheduler dispatches at the end of the event " +
    "loop's turn), so every call carries all 32 samples. What remains is the work done once per request " +
    "instead of once per batch (decoding, validation, the response, each coroutine's step), which weighs " +
    "more where the network is cheap. A max wait only delays calls here: no other request is coming to fill them.",
);
out();
await waitApp.shutdown();

// 3. Latency under load: closed loop, C clients, each sending requests back to back.
const LOAD_S = Math.min(10, Math.max(3, SOAK_S / 2));
out("## Latency under load");
out();
out(
  `Settings: ${C} closed-loop clients, each sending 1-sample genie/head NFE ${NFE} requests back to back for ` +
    `${LOAD_S} s; latency from request to decoded response.`,
);
out();
const latencies: number[] = [];
{
  const stopAt = performance.now() + LOAD_S * 1000;
  await Promise.all(Array.from({ length: C }, async () => {
    while (performance.now() < stopAt) latencies.push((await sample(1, "genie")).ms);
  }));
}
out("| requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms |");
out("| ---: | ---: | ---: | ---: | ---: | ---: |");
out(
  `| ${latencies.length} | ${fmt(latencies.length / LOAD_S, 1)} | ${fmt(quantile(latencies, 0.5), 1)} | ` +
    `${fmt(quantile(latencies, 0.95), 1)} | ${fmt(quantile(latencies, 0.99), 1)} | ${
      fmt(Math.max(...latencies), 1)
    } |`,
);
out();

// 3b. Fairness: small requests beside a maximal one, with the scheduler's quantum and without its cut.
await fairnessSection();

// 4. Memory over a soak.
out("## Memory over a soak");
out();
out(
  `Settings: ${C} closed-loop clients mixing batch sizes 1–8, genie/ddim, classes and guidance, for ${SOAK_S} s ` +
    `(\`--soak-seconds\`); RSS of the whole process (main thread + inference thread) sampled every second.`,
);
out();
const rss: [number, number][] = [];
let soakRequests = 0;
{
  const t0 = performance.now();
  const stopAt = t0 + SOAK_S * 1000;
  const timer = setInterval(
    () => rss.push([(performance.now() - t0) / 1000, process.memoryUsage().rss]),
    1000,
  );
  rss.push([0, process.memoryUsage().rss]);
  await Promise.all(Array.from({ length: C }, async (_, k) => {
    let i = 0;
    while (performance.now() < stopAt) {
      const n = 1 + ((i + k) % 8);
      const extra = conditional && i % 3 === 0 ? { class: (i + k) % 10, guidance: 1 } : {};
      await sample(n, (i + k) % 4 === 0 ? "ddim" : "genie", extra);
      soakRequests++;
      i++;
    }
  }));
  clearInterval(timer);
  rss.push([(performance.now() - t0) / 1000, process.memoryUsage().rss]);
}
const first = rss[0][1], peak = Math.max(...rss.map((r) => r[1])), last = rss[rss.length - 1][1];
// Growth over the second half (after warm-up), per minute.
const half = rss.filter(([s]) => s >= SOAK_S / 2);
const slope = half.length >= 2
  ? ((half[half.length - 1][1] - half[0][1]) / (half[half.length - 1][0] - half[0][0])) * 60
  : 0;
out("| requests | RSS start MiB | RSS peak MiB | RSS end MiB | growth over 2nd half (MiB/min) |");
out("| ---: | ---: | ---: | ---: | ---: |");
out(`| ${soakRequests} | ${mb(first)} | ${mb(peak)} | ${mb(last)} | ${fmt(slope / 2 ** 20, 1)} |`);
out();
const every = Math.max(1, Math.round(SOAK_S / 40));
out(
  `RSS every ${every} s (s: MiB): ${
    rss.filter((_, i) => i % every === 0 || i === rss.length - 1).map(([s, b]) => `${s.toFixed(0)}: ${mb(b)}`)
      .join(", ")
  }`,
);
out();
out(`Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(" / ")}.`);
out();
if (SOAK_S < 600) {
  out(
    "Run a longer soak with `deno task bench:worker --soak-seconds 600` before trusting the growth figure.",
  );
}

await app.shutdown();
await thread.close();
writeFileSync(flags.out, lines.join("\n") + "\n");
console.log(lines.join("\n"));

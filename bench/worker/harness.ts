/**
 * What every section of `deno task bench:worker` (bench/worker.ts) uses: its settings, the models in one
 * inference thread behind a worker app (every call counted, and recorded while asked), forward calls and
 * replays through that thread, a sampling request, and the report's lines.
 */
import { decode, encode } from "@msgpack/msgpack";
import { createWorkerApp, type WorkerApp } from "../../gpu-worker/app.ts";
import { type Inference, InferenceThread, type WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry, type ModelRegistry } from "../../gpu-worker/models.ts";
import { parseFlags } from "../../core/flags.ts";
import { median } from "../../core/stats.ts";
import { parseProviders, type Provider } from "../../onnx/ort.ts";

export const fmt = (x: number, digits = 2) => x.toFixed(digits);
export const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/** A graph call as the inference thread received it. */
export type Call = { graph: GraphKind; feeds: Record<string, WireTensor> };

/** A copy of a call's inputs (their buffers are transferred away by the call). */
export const copyFeeds = (feeds: Record<string, WireTensor>) =>
  Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, { ...t, data: t.data.slice(0) }]));

export interface Sampled {
  ms: number;
  nfe: number;
  /** Graph calls of every kind, per sample trajectory. */
  calls: number;
  /** Forward-pass equivalents, and whether a fallback ratio priced them. */
  cost: number;
  costEstimated: boolean;
  steps: number;
}

/** A run's cost for the tables, † when a fallback ratio priced it. */
export const costText = (r: Sampled) => `${Number(r.cost.toFixed(2))}${r.costEstimated ? "†" : ""}`;

/** The run: its settings, the shared inference thread and app, and the report so far. */
export interface WorkerBench {
  soakS: number;
  reps: number;
  threads: number;
  /** --load-model: the worker's own time, latency, fairness and memory are measured on it. */
  model: string;
  overheadModels: string[];
  spinModel: string;
  spinOnly: boolean;
  fairBigModel: string;
  fairBigSteps: number;
  /** Small requests timed alone in the fairness section. */
  fairAlone: number;
  fairOnly: boolean;
  allModels: string[];
  nfe: number;
  /** --out: the report's path. */
  outPath: string;
  registry: ModelRegistry;
  thread: InferenceThread;
  /** The provider --load-model runs on. */
  provider: string;
  /** --load-model's sample shape, and whether it is class-conditional. */
  shape: number[];
  conditional: boolean;
  /** The thread as the apps' inference: counts every call, and copies its inputs while `recording` is set. */
  inference: Inference;
  /** The worker app on every model, in front of `inference`. */
  app: WorkerApp;
  /** Calls made through `inference` so far. */
  readonly calls: number;
  /** While set, a copy of every call's inputs. */
  recording: Call[] | undefined;
  /** The next request seed. */
  nextSeed(): number;
  /** One forward call of `graph` of `model` at batch B through the inference thread; returns wall ms. */
  forward(model: string, graph: GraphKind, B: number): Promise<number>;
  /** Σ of the wall times of `calls` replayed one by one through the inference thread. */
  replay(model: string, calls: Call[]): Promise<number>;
  /** The median of `n` forward calls after one warm-up call. */
  forwardMedian(model: string, graph: GraphKind, B: number, n?: number): Promise<number>;
  /** A sampling request of `n` samples (default: on `app`, --load-model, the next seeds). */
  sample(
    n: number,
    solver: string,
    extra?: Record<string, unknown>,
    target?: WorkerApp,
    model?: string,
    seeds?: number[],
  ): Promise<Sampled>;
  /** The report's lines, and a function adding one. */
  lines: string[];
  out(s?: string): void;
}

/** Reads the flags in `argv`, loads the models into one inference thread and starts the app. */
export async function startWorkerBench(argv: string[]): Promise<WorkerBench> {
  const { values: flags } = parseFlags(argv, [
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
  const registry = await loadRegistry(defaultModelsDir(), { only: ALL_MODELS });
  for (const name of ALL_MODELS) {
    if (!registry.models.has(name)) throw new Error(`model ${name}: ${JSON.stringify(registry.errors)}`);
  }
  const info = registry.models.get(MODEL)!;
  const thread = await InferenceThread.start(ALL_MODELS.map((m) => registry.models.get(m)!), {
    providers: benchProviders(),
    intraOpThreads: THREADS,
  });
  const provider = thread.models.get(MODEL)!.provider;
  let calls = 0;
  let recording: Call[] | undefined;
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

  let seedBase = 1;
  const nextSeed = () => seedBase++ % 2 ** 32;
  async function sample(
    n: number,
    solver: string,
    extra: Record<string, unknown> = {},
    target: WorkerApp = app,
    model: string = MODEL,
    seeds: number[] = Array.from({ length: n }, nextSeed),
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

  const lines: string[] = [];
  return {
    soakS: SOAK_S,
    reps: REPS,
    threads: THREADS,
    model: MODEL,
    overheadModels: OVERHEAD_MODELS,
    spinModel: SPIN_MODEL,
    spinOnly: SPIN_ONLY,
    fairBigModel: FAIR_BIG_MODEL,
    fairBigSteps: FAIR_BIG_STEPS,
    fairAlone: FAIR_ALONE,
    fairOnly: FAIR_ONLY,
    allModels: ALL_MODELS,
    nfe: NFE,
    outPath: flags.out,
    registry,
    thread,
    provider,
    shape,
    conditional,
    inference,
    app,
    get calls() {
      return calls;
    },
    get recording() {
      return recording;
    },
    set recording(r: Call[] | undefined) {
      recording = r;
    },
    nextSeed,
    forward,
    replay,
    forwardMedian,
    sample,
    lines,
    out: (s = "") => {
      lines.push(s);
    },
  };
}

/** The providers the benchmark's inference threads try: `GENIE_PROVIDERS` when set, else `cuda`, then `cpu`. */
export function benchProviders(): Provider[] {
  return parseProviders("GENIE_PROVIDERS", Deno.env.get("GENIE_PROVIDERS")) ?? ["cuda", "cpu"];
}

/**
 * The in-process engine: one model's ONNX graphs behind an asynchronous evaluator, for the command
 * line and benchmarks (no HTTP, no scheduler). Sessions live in the inference thread as in the worker.
 *
 *     const model = await openModel("mnist-mix");
 *     const { x, stats } = await runSolverAsync(run, model.evaluate);
 *     await model.close();
 *
 * The returned object also has the fields of the CLI's ResolvedModel (shape, schedule, evaluator,
 * classes, derivatives, defaults, costs, close), so `--model mnist-mix` can resolve to it directly.
 *
 * The edge runs small models itself through this module (functions/local.ts, docs/backends.md): it asks
 * {@link inspectModel} whether a folder may run there, opens it on WebAssembly, and has worker-protocol
 * messages answered in-process ({@link OpenedModel.answer}, in_process.ts).
 */
import { existsSync, statSync } from "node:fs";
import process from "node:process";
import type { CostRatios } from "../core/cost.ts";
import type { Schedule } from "../core/schedule.ts";
import type { GridDefaults } from "../core/solvers/registry.ts";
import type { AsyncEvaluator } from "../core/solvers/drive.ts";
import type { DerivativeSource, EvalRequest, EvalResult } from "../core/solvers/types.ts";
import type { Provider, SpinPolicy } from "../onnx/ort.ts";
import { type Answer, answerMessage, type AnswerOptions, type SolvePath } from "./in_process.ts";
import { InferenceThread, type LoadedModelReport } from "./inference.ts";
import { type GraphKind, type ModelManifest, readManifest, servesOdeTangent } from "./manifest.ts";
import { defaultModelsDir, loadRegistry } from "./models.ts";
import { derivativesOf } from "./requests.ts";
import { batchFeeds, graphFor, type ServedModel, toEpsResult } from "./served.ts";

export interface OpenOptions {
  /** Execution providers to try in order (default cuda, then cpu). */
  providers?: Provider[];
  /** ORT intra-op threads. */
  threads?: number;
  /**
   * Whether ORT's threads spin-wait: true always (ORT's default), false never, undefined (default) auto,
   * chosen per session from the call pattern (`spinPolicy` in inference.ts).
   */
  spinning?: boolean;
  /** Samples per ORT call (default: the manifest's limits.max_batch); larger requests are split. */
  maxBatch?: number;
  /** Build the model's graphs if they are missing (default true). */
  build?: boolean;
  /** Write the built-in manifests into the models directory when missing (default true). */
  builtins?: boolean;
  /** Load only these graphs (default all); a call to another one restarts the thread with all. */
  graphs?: GraphKind[];
  /**
   * Start the inference thread on the first {@link OpenedModel.prepare} or evaluation instead of now, so
   * a caller that knows its graphs and batch sizes loads and warms only those.
   */
  defer?: boolean;
}

export interface OpenedModel {
  name: string;
  manifest: ModelManifest;
  shape: number[];
  schedule: Schedule;
  /** The execution provider ORT accepted. */
  provider: string;
  /** How the sessions' intra-op threads wait for work (`spinPolicy` in inference.ts). */
  spin: SpinPolicy;
  classes?: { count: number; nullClass?: number };
  /** GENIE derivative sources this model serves ("head" first when it has one; "exact" for analytic models). */
  derivatives: DerivativeSource[];
  /** Its JVP graph also answers along the ODE's tangent in one call (manifest.ts `servesOdeTangent`). */
  odeJvp: boolean;
  /** The manifest's preferred grids (`defaults`), if any. */
  defaults?: GridDefaults;
  /** The manifest's measured cost ratios (`costs`), if any. */
  costs?: CostRatios;
  /** Answers a solver's evaluation request with ORT (one call per max_batch samples). */
  evaluate: AsyncEvaluator;
  /** The same function, under the CLI's name. */
  evaluator: AsyncEvaluator;
  /**
   * Starts the thread with `graphs` (if not started yet) and warms them up at the call sizes a run of
   * `rows` rows makes, so that the run's first calls are not the slow first calls at a new size.
   */
  prepare(graphs: readonly GraphKind[], rows: number): Promise<void>;
  /** ORT time of the calls so far (ms) and their count. */
  readonly ortStats: { calls: number; ms: number };
  /**
   * Answers a worker-protocol message (`POST /v1/batch` or `/v1/encode`, docs/contracts.md §3) for this
   * model in-process, as a worker would (in_process.ts); starts the thread with every graph if needed.
   */
  answer(path: SolvePath, message: Record<string, unknown>, opts?: AnswerOptions): Promise<Answer>;
  close(): Promise<void>;
}

/** What a model folder says about running on the edge, read without opening it. */
export interface EdgeFacts {
  /** The manifest's `edge` flag (false when absent). */
  edge: boolean;
  /** Size of the eps graph in bytes, or undefined when the file is missing (not built yet). */
  epsBytes?: number;
}

/**
 * The `edge` flag and eps graph size of `<modelsDir>/<name>` (manifest validated, nothing built or
 * loaded), or undefined when there is no such folder. Throws the manifest's error, naming the field.
 */
export function inspectModel(
  name: string,
  modelsDir: string = process.env.GENIE_MODELS_DIR || defaultModelsDir(),
): EdgeFacts | undefined {
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name) || !existsSync(`${modelsDir}/${name}/model.json`)) {
    return undefined;
  }
  const info = readManifest(`${modelsDir}/${name}`, { checkFiles: false });
  let epsBytes: number | undefined;
  try {
    epsBytes = statSync(info.graphPaths.eps!).size;
  } catch {
    epsBytes = undefined;
  }
  return { edge: info.manifest.edge === true, epsBytes };
}

/**
 * Opens a model folder `<modelsDir>/<name>` (default GENIE_MODELS_DIR, else the repository's `models/`),
 * building analytic graphs on first use.
 */
export async function openModel(
  name: string,
  modelsDir: string = process.env.GENIE_MODELS_DIR || defaultModelsDir(),
  opts: OpenOptions = {},
): Promise<OpenedModel> {
  const registry = await loadRegistry(modelsDir, {
    only: [name],
    build: opts.build,
    builtins: opts.builtins,
  });
  const info = registry.models.get(name);
  if (!info) {
    const why = registry.errors.find((e) => e.folder === name)?.message ??
      `no model folder ${name} in ${modelsDir}`;
    throw new Error(why);
  }
  const m = info.manifest;
  const maxBatch = Math.min(opts.maxBatch ?? m.limits.max_batch, m.limits.max_batch);
  const ortStats = { calls: 0, ms: 0 };
  const dim = info.dim;

  /** The inference thread, started with some or all of the model's graphs. */
  interface Running {
    thread: InferenceThread;
    report: LoadedModelReport;
    model: ServedModel;
    graphs: Set<GraphKind>;
  }
  let running: Promise<Running> | undefined;
  /** The thread once started (for the provider and spin policy it reports). */
  let settled: Running | undefined;
  const start = (graphs?: readonly GraphKind[]): Promise<Running> =>
    running ??= (async () => {
      const all = Object.keys(info.graphPaths) as GraphKind[];
      const only = new Set(graphs ? all.filter((g) => graphs.includes(g)) : all);
      const load = {
        ...info,
        graphPaths: Object.fromEntries(all.filter((g) => only.has(g)).map((g) => [g, info.graphPaths[g]])),
      };
      const thread = await InferenceThread.start([load], {
        providers: opts.providers ?? ["cuda", "cpu"],
        intraOpThreads: opts.threads,
        spinning: opts.spinning,
      });
      const report = thread.models.get(name)!;
      const model: ServedModel = {
        info,
        inputs: report.inputs as Partial<Record<GraphKind, string[]>>,
        maxBatch,
      };
      return settled = { thread, report, model, graphs: only };
    })();
  /** Starts the thread again with every graph (a graph was needed that {@link prepare} did not load). */
  const widen = async (): Promise<Running> => {
    const old = await running!;
    await old.thread.close();
    running = undefined;
    return await start();
  };
  if (!opts.defer) await start(opts.graphs);
  const current = async (graph: GraphKind): Promise<Running> => {
    const r = await start();
    return r.graphs.has(graph) ? r : await widen();
  };

  const evaluate = async (req: EvalRequest): Promise<EvalResult> => {
    const graph = graphFor(req);
    if (!info.graphPaths[graph]) throw new Error(`model ${name} has no ${graph} graph`);
    const { thread, model } = await current(graph);
    const rows = req.t.length;
    const outputs: Record<string, Float32Array> = {};
    for (let from = 0; from < rows; from += model.maxBatch) {
      const count = Math.min(model.maxBatch, rows - from);
      const res = await thread.run(name, graph, batchFeeds(model, graph, [{ req, from, count }]));
      ortStats.calls++;
      ortStats.ms += res.ms;
      for (const [key, data] of Object.entries(res.outputs)) {
        if (count === rows) outputs[key] = data;
        else (outputs[key] ??= new Float32Array(rows * dim)).set(data, from * dim);
      }
    }
    return toEpsResult(info, req, graph, outputs);
  };

  const prepare = async (graphs: readonly GraphKind[], rows: number): Promise<void> => {
    const { thread, model, graphs: loaded } = await start(graphs);
    // The call sizes a run of `rows` rows makes: whole batches and the remainder. Batch 1 was warmed at load.
    const sizes = new Set([Math.min(rows, model.maxBatch), rows % model.maxBatch].filter((b) => b > 1));
    for (const graph of graphs) {
      if (!loaded.has(graph)) continue;
      for (const b of sizes) {
        await thread.run(
          name,
          graph,
          batchFeeds(model, graph, [{ req: warmupRequest(graph, b, dim), from: 0, count: b }]),
        );
      }
    }
  };

  const described = (r?: Running) => ({
    name,
    manifest: m,
    shape: m.shape,
    schedule: info.schedule,
    classes: m.classes ? { count: m.classes.count, nullClass: m.classes.null_class } : undefined,
    derivatives: derivativesOf({ info, inputs: r?.model.inputs ?? {}, maxBatch }),
    odeJvp: servesOdeTangent(info),
    defaults: m.defaults,
    costs: m.costs,
  });
  return {
    ...described(settled),
    get provider() {
      return settled?.report.provider ?? "not started";
    },
    get spin() {
      return settled?.report.spin ?? "on";
    },
    evaluate,
    evaluator: evaluate,
    prepare,
    ortStats,
    answer: async (path, message, answerOpts) => {
      const { model } = await current("eps");
      return await answerMessage(model, evaluate, path, message, answerOpts);
    },
    close: async () => {
      if (running) await (await running).thread.close();
    },
  };
}

/** A request of `rows` rows for `graph` with neutral inputs, to warm a batch size up. */
function warmupRequest(graph: GraphKind, rows: number, dim: number): EvalRequest {
  const req: EvalRequest = {
    x: new Float64Array(rows * dim),
    t: new Float64Array(rows).fill(0.5),
    want: graph === "eps" ? "eps" : "eps+deriv",
    step: 0,
    steps: 1,
  };
  if (graph === "jvp") req.tangent = { x: new Float64Array(rows * dim), t: new Float64Array(rows) };
  return req;
}

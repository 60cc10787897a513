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
 */
import process from "node:process";
import type { CostRatios } from "../core/cost.ts";
import type { Schedule } from "../core/schedule.ts";
import type { GridDefaults } from "../core/solvers/registry.ts";
import type { AsyncEvaluator } from "../core/solvers/drive.ts";
import type { DerivativeSource, EvalRequest, EvalResult } from "../core/solvers/types.ts";
import type { Provider } from "../onnx/ort.ts";
import { InferenceThread } from "./inference.ts";
import type { GraphKind, ModelManifest } from "./manifest.ts";
import { defaultModelsDir, loadRegistry } from "./models.ts";
import { derivativesOf } from "./requests.ts";
import { batchFeeds, graphFor, type ServedModel, toEpsResult } from "./scheduler.ts";

export interface OpenOptions {
  /** Execution providers to try in order (default cuda, then cpu). */
  providers?: Provider[];
  /** ORT intra-op threads. */
  threads?: number;
  /** Samples per ORT call (default: the manifest's limits.max_batch); larger requests are split. */
  maxBatch?: number;
  /** Build the model's graphs if they are missing (default true). */
  build?: boolean;
}

export interface OpenedModel {
  name: string;
  manifest: ModelManifest;
  shape: number[];
  schedule: Schedule;
  /** The execution provider ORT accepted. */
  provider: string;
  classes?: { count: number; nullClass?: number };
  /** GENIE derivative sources this model serves ("head" first when it has one; "exact" for analytic models). */
  derivatives: DerivativeSource[];
  /** The manifest's preferred grids (`defaults`), if any. */
  defaults?: GridDefaults;
  /** The manifest's measured cost ratios (`costs`), if any. */
  costs?: CostRatios;
  /** Answers a solver's evaluation request with ORT (one call per max_batch samples). */
  evaluate: AsyncEvaluator;
  /** The same function, under the CLI's name. */
  evaluator: AsyncEvaluator;
  /** ORT time of the calls so far (ms) and their count. */
  readonly ortStats: { calls: number; ms: number };
  close(): Promise<void>;
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
  const registry = await loadRegistry(modelsDir, { only: [name], build: opts.build });
  const info = registry.models.get(name);
  if (!info) {
    const why = registry.errors.find((e) => e.folder === name)?.message ??
      `no model folder ${name} in ${modelsDir}`;
    throw new Error(why);
  }
  const thread = await InferenceThread.start([info], {
    providers: opts.providers ?? ["cuda", "cpu"],
    intraOpThreads: opts.threads,
  });
  const report = thread.models.get(name)!;
  const model: ServedModel = {
    info,
    inputs: report.inputs as Partial<Record<GraphKind, string[]>>,
    maxBatch: Math.min(opts.maxBatch ?? info.manifest.limits.max_batch, info.manifest.limits.max_batch),
  };
  const ortStats = { calls: 0, ms: 0 };
  const dim = info.dim;

  const evaluate = async (req: EvalRequest): Promise<EvalResult> => {
    const graph = graphFor(req);
    if (!info.graphPaths[graph]) throw new Error(`model ${name} has no ${graph} graph`);
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

  const m = info.manifest;
  return {
    name,
    manifest: m,
    shape: m.shape,
    schedule: info.schedule,
    provider: report.provider,
    classes: m.classes ? { count: m.classes.count, nullClass: m.classes.null_class } : undefined,
    derivatives: derivativesOf(model),
    defaults: m.defaults,
    costs: m.costs,
    evaluate,
    evaluator: evaluate,
    ortStats,
    close: () => thread.close(),
  };
}

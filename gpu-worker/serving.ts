/**
 * The models a worker serves: loaded at start-up with their inference backend ({@link startServing}),
 * the state the worker's routes, its model listing and its reloads share ({@link WorkerState}), and that
 * listing, `GET /v1/models` ({@link describeModels}).
 */
import { solverAliases, solverNames } from "../core/solvers/registry.ts";
import type { WorkerConfig } from "./config.ts";
import type { Inference, LoadedModelReport } from "./inference.ts";
import { type GraphKind, samplingDefaults, servesOdeTangent } from "./manifest.ts";
import { ODE_TANGENT_INPUTS } from "../onnx/tangent_inputs.ts";
import { loadRegistry, type ModelRegistry } from "./models.ts";
import { derivativesOf, modelLimits } from "./requests.ts";
import type { Scheduler } from "./scheduler.ts";
import type { ServedModel } from "./served.ts";
import { SupervisedInference } from "./supervisor.ts";

/** The models and their backend as start-up leaves them; reloads change them in place. */
export interface Serving {
  registry: ModelRegistry;
  inference: Inference;
  /** The execution provider each model runs on. */
  providers: Record<string, string>;
  models: Map<string, ServedModel>;
  /** Samples per inference call at most, whatever a model allows (config.maxBatch, default 64). */
  cap: number;
}

/** What the worker's routes, its model listing and its reloads share. */
export interface WorkerState extends Serving {
  config: WorkerConfig;
  modelsDir: string;
  log: (line: string) => void;
  scheduler: Scheduler;
  /** Folders a reload is loading now (a changed model's old version serves meanwhile). */
  loading: Set<string>;
  /** Why a changed model's new version failed to load (its previous version serves). */
  reloadErrors: Map<string, string>;
  /** Whether the worker is shutting down. */
  closed(): boolean;
}

/**
 * Loads the model folders of `modelsDir` and starts the inference thread (or takes `config.inference`);
 * a model ONNX Runtime refuses is skipped like a bad folder. Throws when no model is left.
 */
export async function startServing(
  config: WorkerConfig,
  modelsDir: string,
  log: (line: string) => void,
): Promise<Serving> {
  const registry = await loadRegistry(modelsDir, { only: config.models, build: config.build, log });
  if (registry.models.size === 0) {
    const why = registry.errors.map((e) => `${e.folder}: ${e.message}`).join("; ");
    throw new Error(`no usable model in ${modelsDir}${why ? ` (${why})` : ""}`);
  }
  let infos = [...registry.models.values()];
  let inference: Inference;
  const providers: Record<string, string> = {};
  const inputs = new Map<string, Partial<Record<GraphKind, string[]>>>();
  const models = new Map<string, ServedModel>();
  if (config.inference) {
    inference = config.inference;
    for (const info of infos) {
      providers[info.manifest.name] = "test";
      const cls = info.manifest.classes ? ["class"] : [];
      // as the inference thread loads the JVP graph (inference_thread.ts)
      const ode = servesOdeTangent(info) ? [ODE_TANGENT_INPUTS.out, ODE_TANGENT_INPUTS.x] : [];
      inputs.set(info.manifest.name, {
        eps: ["x", "t", ...cls],
        head: ["x", "t", ...cls],
        jvp: ["x", "t", ...cls, ...ode],
      });
    }
  } else {
    const thread = await SupervisedInference.start(infos, {
      providers: config.providers ?? ["cuda", "cpu"],
      intraOpThreads: config.intraOpThreads,
      spinning: config.spinning,
      warmup: config.warmup,
    }, {
      ...config.restart,
      url: config.threadUrl,
      log,
      onRestart: (reports: Map<string, LoadedModelReport>) => {
        for (const [key, report] of reports) {
          // a version loaded by a reload has its own name in the thread (ServedModel.key); one being
          // retired after a reload is not listed
          const name = [...models.values()].find((m) => (m.key ?? m.info.manifest.name) === key)?.info
            .manifest.name;
          if (name === undefined) continue;
          if (providers[name] !== report.provider) {
            log(`model ${name}: ${report.provider} after the restart (was ${providers[name]})`);
            providers[name] = report.provider;
          }
        }
      },
    });
    inference = thread;
    // A model ONNX Runtime refused, or whose batch-1 warm-up failed, is skipped like a bad folder.
    for (const [name, message] of thread.failed) {
      const info = registry.models.get(name);
      const folder = info ? info.dir.split(/[\\/]/).filter(Boolean).pop() ?? name : name;
      registry.models.delete(name);
      registry.errors.push({ folder, message: `${name}: ${message}` });
      log(`skipping model folder ${folder}: ${name}: ${message}`);
    }
    infos = infos.filter((i) => !thread.failed.has(i.manifest.name));
    if (infos.length === 0) {
      await thread.close();
      const why = registry.errors.map((e) => `${e.folder}: ${e.message}`).join("; ");
      throw new Error(`no usable model in ${modelsDir} (${why})`);
    }
    for (const [name, report] of thread.models) {
      providers[name] = report.provider;
      inputs.set(name, report.inputs as Partial<Record<GraphKind, string[]>>);
      const skipped = Object.entries(report.skipped).map(([p, why]) =>
        `${p} unavailable (${why.split("\n")[0]})`
      );
      log(
        `model ${name}: ${report.provider}${skipped.length ? `; ${skipped.join("; ")}` : ""}; ` +
          `loaded in ${report.loadMs.toFixed(0)} ms, warm-up ${report.warmupMs.toFixed(0)} ms`,
      );
    }
  }
  const cap = config.maxBatch ?? 64;
  for (const info of infos) {
    models.set(info.manifest.name, {
      info,
      inputs: inputs.get(info.manifest.name) ?? {},
      maxBatch: Math.min(cap, info.manifest.limits.max_batch),
    });
  }
  return { registry, inference, providers, models, cap };
}

/**
 * `GET /v1/models`: every model served, with what requests may ask of it, then the folders a reload is
 * loading and those that could not be loaded.
 */
export function describeModels(s: WorkerState): Record<string, unknown>[] {
  const { models, providers, loading, reloadErrors, registry } = s;
  return [
    ...[...models.values()].map((m) => {
      const man = m.info.manifest;
      return {
        name: man.name,
        version: man.version,
        shape: man.shape,
        prediction: man.prediction,
        ...(man.classes ? { classes: man.classes } : {}),
        schedule: man.schedule,
        time: man.time,
        solvers: solverNames(),
        // other names requests may give a solver, e.g. {"DPM++ 2M": "dpmpp-2m", euler: "ddim"}
        solver_aliases: solverAliases(),
        derivatives: derivativesOf(m),
        // e.g. {jvp: {reason: "cannot differentiate operator(s) Elu: …", operators: ["Elu"]}}
        ...(m.info.unavailable ? { unavailable_derivatives: m.info.unavailable } : {}),
        graphs: Object.keys(man.graphs),
        // graphs the worker made itself (the JVP graph of a model that ships only eps)
        ...(m.info.derived?.length ? { derived_graphs: m.info.derived } : {}),
        limits: modelLimits(m),
        // default_grids, costs, estimated_costs
        ...samplingDefaults(m.info, solverNames()),
        provider: providers[man.name],
        ...(man.analytic ? { analytic: true, head: "exact" } : {}),
        ...(man.description ? { description: man.description } : {}),
        status: "ready",
        // a reload is loading its new version, or failed to (this version still serves)
        ...(loading.has(man.name) ? { reload: "loading" } : {}),
        ...(reloadErrors.has(man.name) ? { reload_error: reloadErrors.get(man.name) } : {}),
      };
    }),
    // new folders a reload is loading
    ...[...loading].filter((n) => !models.has(n)).map((name) => ({ name, status: "loading" })),
    // folders that could not be loaded: named, with why (clients skip entries whose status is not ready)
    ...registry.errors.filter((e) => !loading.has(e.folder)).map((e) => ({
      name: e.folder,
      status: "failed",
      error: e.message,
    })),
  ];
}

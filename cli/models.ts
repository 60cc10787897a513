/**
 * Model resolution for the command line: one function turns a `--model` value into everything a
 * solve needs. `gmm:SPEC.json` is an analytic Gaussian mixture evaluated in TypeScript; any other
 * value names a model folder (docs/contracts.md §4) in the models directory (GENIE_MODELS_DIR, else the
 * repository's `models/`), run in-process through gpu-worker/engine.ts with ONNX Runtime exactly as
 * the worker runs it (analytic models are built on first use, as the worker does).
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { CostRatios } from "../core/cost.ts";
import { gmmEvaluator, GmmSpecError, parseGmmSpec } from "../core/gmm.ts";
import type { Schedule } from "../core/schedule.ts";
import type { GridDefaults } from "../core/solvers/registry.ts";
import type { AsyncEvaluator, CallGraph, Evaluator } from "../core/solvers/drive.ts";
import type { DerivativeSource } from "../core/solvers/types.ts";
import { parseProviders, type Provider } from "../onnx/ort.ts";
import { UsageError } from "./args.ts";

/** A model ready to sample from. */
export interface ResolvedModel {
  /** The `--model` value it was resolved from. */
  name: string;
  /** Shape of one sample, e.g. [C, H, W] or [D]. */
  shape: number[];
  schedule: Schedule;
  /** Answers the solver's evaluation requests (synchronously for analytic models). */
  evaluator: Evaluator | AsyncEvaluator;
  /** Class-conditional models: the number of classes and the label of the unconditional class. */
  classes?: { count: number; nullClass?: number };
  /** The derivative sources GENIE can use with this model. */
  derivatives: DerivativeSource[];
  /** Answers ε and its JVP along the ODE's tangent in one request (core/solvers/types.ts `odeJvp`). */
  odeJvp?: boolean;
  /** The model's preferred grids (model.json `defaults`); without them each solver uses its own. */
  defaults?: GridDefaults;
  /** Measured cost of each graph's call as a ratio to one eps call (model.json `costs`). */
  costs?: CostRatios;
  /** Releases what the model holds (sessions, workers). */
  close?: () => void | Promise<void>;
  /** The execution provider of an ONNX model (e.g. "cpu" or "cuda"). */
  provider?: string;
  /**
   * Loads the graphs a run will call and warms them up at the call sizes of `rows` rows (ONNX models;
   * before the timed solve, so that its first calls are not cold).
   */
  prepare?: (graphs: readonly CallGraph[], rows: number) => Promise<void>;
}

/** How named (ONNX) models are opened; the defaults suit the command line. */
export interface ResolveOptions {
  /** The models directory (default GENIE_MODELS_DIR, else the repository's `models/`). */
  modelsDir?: string;
  /** Execution providers to try in order (default CUDA, then CPU). */
  providers?: Provider[];
  /**
   * ORT intra-op threads (default: the cores available, {@link defaultThreads}; ORT's own default can
   * leave cores idle).
   */
  threads?: number;
}

const GMM_PREFIX = "gmm:";
/** A model folder's name: no path separators, not hidden. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Resolves a `--model` value; problems with the value itself are UsageErrors naming --model. */
export async function resolveModel(name: string, opts: ResolveOptions = {}): Promise<ResolvedModel> {
  if (name.startsWith(GMM_PREFIX)) return await gmmModel(name, name.slice(GMM_PREFIX.length));
  return await onnxModel(name, opts);
}

/** The names `--model` accepts in a models directory: its model folders and the built-in models. */
async function modelNames(dir: string): Promise<string[]> {
  const { BUILTIN_MANIFESTS } = await import("../gpu-worker/models.ts");
  const names = new Set(BUILTIN_MANIFESTS.map((m) => m.name));
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && existsSync(join(dir, e.name, "model.json"))) names.add(e.name);
    }
  } catch {
    // no directory yet: the built-in models are written into it on first use
  }
  return [...names].sort();
}

/** The cores this process may use: the default number of ONNX Runtime compute threads. */
function defaultThreads(): number {
  const n = globalThis.navigator?.hardwareConcurrency;
  return Number.isInteger(n) && n > 0 ? n : 1;
}

/** GENIE_PROVIDERS, e.g. "cpu", "cuda,cpu" or "webgpu,wasm" (default: CUDA, then CPU). */
function providersFromEnv(): Provider[] | undefined {
  return parseProviders("GENIE_PROVIDERS", process.env.GENIE_PROVIDERS);
}

/** A model folder run by ONNX Runtime in-process (the worker's engine: same graphs, same feeds). */
async function onnxModel(name: string, opts: ResolveOptions): Promise<ResolvedModel> {
  const dir = opts.modelsDir ?? (process.env.GENIE_MODELS_DIR ||
    (await import("../gpu-worker/models.ts")).defaultModelsDir());
  const names = await modelNames(dir);
  if (!MODEL_NAME.test(name) || !names.includes(name)) {
    throw new UsageError(
      "--model",
      `unknown model ${JSON.stringify(name)} (models in ${dir}: ${names.join(", ")}; ` +
        `or gmm:SPEC.json for a Gaussian mixture)`,
    );
  }
  const { openModel } = await import("../gpu-worker/engine.ts");
  const model = await openModel(name, dir, {
    providers: opts.providers ?? providersFromEnv(),
    threads: opts.threads ?? defaultThreads(),
    // the thread starts in prepare(), with only the graphs the planned run calls
    defer: true,
  });
  return {
    name,
    shape: model.shape,
    schedule: model.schedule,
    evaluator: model.evaluate,
    classes: model.classes,
    derivatives: model.derivatives,
    odeJvp: model.odeJvp,
    defaults: model.defaults,
    costs: model.costs,
    close: () => model.close(),
    get provider() {
      return model.provider;
    },
    prepare: (graphs, rows) => model.prepare(graphs, rows),
  };
}

async function gmmModel(name: string, path: string): Promise<ResolvedModel> {
  if (path === "") throw new UsageError("--model", "gmm: needs the path of a JSON mixture spec");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError("--model", `cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new UsageError("--model", `${path} is not valid JSON: ${e instanceof Error ? e.message : e}`);
  }
  let mix;
  try {
    mix = parseGmmSpec(spec);
  } catch (e) {
    if (e instanceof GmmSpecError) throw new UsageError("--model", `${path}: ${e.message}`);
    throw e;
  }
  const shape = sampleShape(path, (spec as { shape?: unknown }).shape, mix.dim);
  return {
    name,
    shape,
    schedule: mix.schedule,
    evaluator: gmmEvaluator(mix, mix.schedule),
    classes: mix.classes === undefined ? undefined : { count: mix.classes, nullClass: mix.classes },
    // The mixture answers JVP requests exactly too, so "jvp" costs what it costs on a network but
    // returns the exact derivative.
    derivatives: ["exact", "jvp", "fd"],
    odeJvp: true,
  };
}

/** The optional `shape` of a mixture spec (e.g. [1, 28, 28] for images), else [dim]. */
function sampleShape(path: string, shape: unknown, dim: number): number[] {
  if (shape === undefined) return [dim];
  if (
    !Array.isArray(shape) || shape.length === 0 ||
    !shape.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 1)
  ) {
    throw new UsageError("--model", `${path}: shape must be an array of positive integers`);
  }
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if (size !== dim) {
    throw new UsageError(
      "--model",
      `${path}: shape [${shape.join(", ")}] has ${size} numbers, the means ${dim}`,
    );
  }
  return shape as number[];
}

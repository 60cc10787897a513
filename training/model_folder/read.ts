/**
 * A model folder (docs/contracts.md §4) read for the GENIE head's distillation: model.json and eps.onnx,
 * with core/ only (the worker's own validation is gpu-worker/manifest.ts; this reads the same fields), and
 * the folder `--model` names. Part of training/model_folder.ts.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parsePredictionKind, type PredictionKind } from "../../core/prediction.ts";
import { discreteTimesteps, type Schedule, scheduleFromSpec } from "../../core/schedule.ts";
import { decodeModel, modelOpset, type ModelProto, valueInfoType } from "../../onnx/proto.ts";

/** A model folder that cannot get a distilled head, with why. */
export class FolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FolderError";
  }
}

/** A model folder, read for distillation. */
export interface FolderModel {
  dir: string;
  name: string;
  /** model.json as parsed (rewritten with the head when distillation ends). */
  manifest: Record<string, unknown>;
  /** Per-sample shape [C, H, W]. */
  shape: [number, number, number];
  dim: number;
  prediction: PredictionKind;
  schedule: Schedule;
  /** The graph sees t × scale + offset. */
  time: { scale: number; offset: number };
  /** The eps graph's tensor names by role (model.json `inputs`, `outputs`). */
  names: { x: string; t: string; class: string; eps: string };
  /** Classes, when the model is class-conditional. */
  classes?: { count: number; nullClass?: number };
  /** Whether the eps graph has the class input. */
  takesClass: boolean;
  eps: ModelProto;
  /** Rows per ORT call when sampling the data pool (model.json `limits.max_batch`, at most 64). */
  maxBatch: number;
}

/** The repository's `models/`. */
function defaultModelsDir(): string {
  return join(dirname(dirname(dirname(fileURLToPath(import.meta.url)))), "models");
}

/**
 * The folder `--model` names: a path when it contains a slash or names an existing folder relative to
 * the working directory with a model.json, else a name in `modelsDir` (GENIE_MODELS_DIR, else models/).
 */
export function resolveModelDir(model: string, modelsDir?: string): string {
  if (model.includes("/") || existsSync(join(model, "model.json"))) return model.replace(/\/+$/, "");
  let env: string | undefined;
  try {
    env = Deno.env.get("GENIE_MODELS_DIR") || undefined;
  } catch {
    env = undefined;
  }
  return join(modelsDir ?? env ?? defaultModelsDir(), model);
}

type Obj = Record<string, unknown>;
const isObject = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Reads `<dir>/model.json` and its eps graph; throws a {@link FolderError} saying what cannot be done. */
export function readModelFolder(dir: string): FolderModel {
  const path = join(dir, "model.json");
  if (!existsSync(path)) throw new FolderError(`no model.json in ${dir}`);
  let m: Obj;
  try {
    m = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new FolderError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(m)) throw new FolderError(`${path}: not a JSON object`);
  const name = typeof m.name === "string" ? m.name : basename(dir);
  const fail = (msg: string): never => {
    throw new FolderError(`${name}: ${msg}`);
  };
  if (m.analytic !== undefined) fail("an analytic model: its head is the exact derivative already");
  const shape = m.shape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    fail(`shape ${JSON.stringify(shape)}: the head is convolutional and needs images [C, H, W]`);
  }
  let prediction: PredictionKind, schedule: Schedule;
  try {
    prediction = parsePredictionKind(m.prediction);
    schedule = scheduleFromSpec(m.schedule);
  } catch (e) {
    return fail((e as Error).message);
  }
  const steps = discreteTimesteps(schedule);
  const time = (m.time ?? (steps !== undefined ? { scale: steps, offset: -1 } : undefined)) as
    | Obj
    | undefined;
  if (!isObject(time) || typeof time.scale !== "number") fail("time: needs {kind, scale, offset?}");
  const roles = (v: unknown) => (isObject(v) ? v : {}) as Record<string, string | undefined>;
  const inputs = roles(m.inputs), outputs = roles(m.outputs);
  const names = {
    x: inputs.x ?? "x",
    t: inputs.t ?? "t",
    class: inputs.class ?? "class",
    eps: outputs.eps ?? "eps",
  };
  const graphs = roles(m.graphs);
  if (!graphs.eps) fail("graphs.eps: missing");
  const epsPath = join(dir, graphs.eps!);
  if (!existsSync(epsPath)) fail(`graphs.eps: file not found (${epsPath})`);
  const eps = decodeModel(readFileSync(epsPath));
  const graph = eps.graph;
  if (!graph) return fail(`${graphs.eps}: no graph`);
  if ((graph.initializer ?? []).some((t) => (t.externalData ?? []).length > 0)) {
    fail(`${graphs.eps}: weights in external data files are not supported; save the graph in one file`);
  }
  const opset = modelOpset(eps);
  if (opset < 13) fail(`${graphs.eps}: opset ${opset}; the head graph needs opset 13 or newer (re-export)`);
  const inits = new Set((graph.initializer ?? []).map((t) => t.name));
  const graphInputs = (graph.input ?? []).filter((i) => !inits.has(i.name ?? ""));
  const find = (n: string) => graphInputs.find((i) => i.name === n);
  for (const role of ["x", "t"] as const) {
    if (!find(names[role])) fail(`${graphs.eps}: no input "${names[role]}" (the ${role} of model.json)`);
  }
  if (!(graph.output ?? []).some((o) => o.name === names.eps)) {
    fail(`${graphs.eps}: no output "${names.eps}"`);
  }
  if (valueInfoType(find(names.t)!).elemType === 7) {
    fail(
      `the time input "${names.t}" is int64 (an integer timestep): the model is piecewise constant in t, ` +
        "its JVP cannot be derived and there is no exact target to distil a head from",
    );
  }
  let classes: FolderModel["classes"];
  if (isObject(m.classes) && typeof m.classes.count === "number") {
    const nc = m.classes.null_class;
    classes = { count: m.classes.count, ...(typeof nc === "number" ? { nullClass: nc } : {}) };
  }
  const limits = isObject(m.limits) ? m.limits : {};
  return {
    dir,
    name,
    manifest: m,
    shape: shape as [number, number, number],
    dim: (shape as number[]).reduce((a, b) => a * b, 1),
    prediction,
    schedule,
    time: { scale: time!.scale as number, offset: typeof time!.offset === "number" ? time!.offset : 0 },
    names,
    classes,
    takesClass: find(names.class) !== undefined,
    eps,
    maxBatch: Math.min(64, typeof limits.max_batch === "number" ? limits.max_batch : 16),
  };
}

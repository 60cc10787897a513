/**
 * Model folders (CONTRACTS.md §4): `models/<name>/model.json` and the ONNX files it names.
 *
 *     {name, version, shape:[C,H,W]|[D], prediction:"eps"|"v"|"x0", time:{kind, scale}, schedule:{…},
 *      classes?:{count, null_class?}, graphs:{eps, features?, head?, jvp?}, limits:{max_batch}}
 *
 * Extensions: `analytic` (how the graphs of an analytic model are generated, see analytic.ts; its head
 * is the exact closed-form derivative), `head_space` ("eps" or "raw": what a head of an x0/v model
 * outputs), `description`.
 *
 * Every problem is a {@link ManifestError} naming the field, e.g. `graphs.eps: file not found (…)`.
 */
import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import type { AnalyticSource } from "./analytic.ts";
import { parsePredictionKind, type PredictionKind } from "../core/prediction.ts";
import { type Schedule, scheduleFromSpec, type ScheduleSpec } from "../core/schedule.ts";

export const GRAPH_KINDS = ["eps", "features", "head", "jvp"] as const;
export type GraphKind = typeof GRAPH_KINDS[number];

export interface ModelManifest {
  name: string;
  version: string;
  shape: number[];
  prediction: PredictionKind;
  time: { kind: "continuous" | "discrete"; scale: number };
  schedule: ScheduleSpec;
  classes?: { count: number; null_class?: number };
  graphs: { eps: string; features?: string; head?: string; jvp?: string };
  limits: { max_batch: number };
  analytic?: AnalyticSource;
  head_space?: "eps" | "raw";
  description?: string;
}

/** A validated manifest with what follows from it. */
export interface ModelInfo {
  manifest: ModelManifest;
  /** The folder holding model.json. */
  dir: string;
  /** Absolute paths of the graphs present, including those the worker derived (see `derived`). */
  graphPaths: Partial<Record<GraphKind, string>>;
  /** Graphs the worker made itself, not listed in the manifest (the JVP graph of an eps-only model). */
  derived?: GraphKind[];
  /**
   * Derivative graphs the manifest lacks and the worker could not make, with why: e.g. `jvp` when the eps
   * graph has an operator the JVP transform cannot differentiate (named in `operators`).
   */
  unavailable?: Partial<Record<GraphKind, { reason: string; operators: string[] }>>;
  schedule: Schedule;
  /** Numbers per sample (product of the shape). */
  dim: number;
}

/** A manifest problem; `field` names the offending field (dotted path). */
export class ManifestError extends Error {
  constructor(readonly field: string, message: string, readonly model?: string) {
    super(`${model ? `${model}: ` : ""}${field}: ${message}`);
    this.name = "ManifestError";
  }
}

type Obj = Record<string, unknown>;

const isObject = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function positiveInt(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new ManifestError(field, `must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Validates a parsed model.json. With `dir`, the graph files must exist there (`graphs.eps: file not
 * found`), and the name must equal the folder's name.
 */
export function validateManifest(
  json: unknown,
  dir?: string,
  opts: { checkFiles?: boolean } = {},
): ModelInfo {
  if (!isObject(json)) throw new ManifestError("manifest", "must be a JSON object");
  const m = json;
  if (typeof m.name !== "string" || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(m.name)) {
    throw new ManifestError("name", "must be a lower-case name of letters, digits, '.', '_' or '-'");
  }
  const name = m.name;
  const fail = (field: string, message: string): never => {
    throw new ManifestError(field, message, name);
  };
  try {
    if (dir !== undefined) {
      const folder = dir.replace(/\/+$/, "").split("/").pop();
      if (folder !== name) fail("name", `must equal the folder name ${JSON.stringify(folder)}`);
    }
    if (typeof m.version !== "string" && typeof m.version !== "number") {
      fail("version", "must be a string or a number");
    }
    if (!Array.isArray(m.shape) || m.shape.length === 0 || m.shape.length > 4) {
      fail("shape", "must be [C, H, W] or [D]");
    }
    const shape = (m.shape as unknown[]).map((d, i) => positiveInt(`shape[${i}]`, d));
    const dim = shape.reduce((a, b) => a * b, 1);
    let prediction: PredictionKind;
    try {
      prediction = parsePredictionKind(m.prediction);
    } catch (e) {
      return fail("prediction", (e as Error).message.replace(/^prediction: /, ""));
    }
    if (!isObject(m.time)) fail("time", 'must be {kind: "continuous"|"discrete", scale}');
    const time = m.time as Obj;
    if (time.kind !== "continuous" && time.kind !== "discrete") {
      fail("time.kind", `must be "continuous" or "discrete", got ${JSON.stringify(time.kind)}`);
    }
    if (typeof time.scale !== "number" || !(time.scale > 0) || !Number.isFinite(time.scale)) {
      fail("time.scale", "must be a positive number (the model sees t × scale)");
    }
    let schedule: Schedule;
    try {
      schedule = scheduleFromSpec(m.schedule);
    } catch (e) {
      const msg = (e as Error).message;
      return fail(msg.startsWith("schedule") ? msg.split(":")[0] : "schedule", msg.replace(/^[^:]*: /, ""));
    }
    if (m.schedule === undefined) fail("schedule", "is required");
    let classes: ModelManifest["classes"];
    if (m.classes !== undefined) {
      if (!isObject(m.classes)) fail("classes", "must be {count, null_class?}");
      const c = m.classes as Obj;
      const count = positiveInt("classes.count", c.count);
      if (c.null_class !== undefined) {
        const nc = c.null_class;
        if (typeof nc !== "number" || !Number.isInteger(nc) || nc < 0 || nc > count) {
          fail("classes.null_class", `must be an integer in [0, ${count}] (usually ${count})`);
        }
      }
      classes = { count, null_class: c.null_class as number | undefined };
    }
    if (!isObject(m.graphs)) fail("graphs", "must be an object naming at least the eps graph");
    const graphs = m.graphs as Obj;
    for (const key of Object.keys(graphs)) {
      if (!(GRAPH_KINDS as readonly string[]).includes(key)) {
        fail(`graphs.${key}`, `unknown graph (one of ${GRAPH_KINDS.join(", ")})`);
      }
    }
    if (graphs.eps === undefined) fail("graphs.eps", "is required");
    const graphPaths: Partial<Record<GraphKind, string>> = {};
    for (const kind of GRAPH_KINDS) {
      const file = graphs[kind];
      if (file === undefined) continue;
      if (typeof file !== "string" || file === "" || file.includes("..") || file.startsWith("/")) {
        fail(`graphs.${kind}`, "must be a file name inside the model folder");
      }
      if (dir !== undefined) {
        const path = join(dir, file as string);
        if (opts.checkFiles !== false && !existsSync(path)) {
          fail(`graphs.${kind}`, `file not found (${path})`);
        }
        graphPaths[kind] = path;
      }
    }
    if (!isObject(m.limits)) fail("limits", "must be {max_batch}");
    const maxBatch = positiveInt("limits.max_batch", (m.limits as Obj).max_batch);
    if (m.head_space !== undefined && m.head_space !== "eps" && m.head_space !== "raw") {
      fail("head_space", `must be "eps" or "raw"`);
    }
    if (m.analytic !== undefined) {
      if (!isObject(m.analytic)) fail("analytic", "must be an object");
      const a = m.analytic as Obj;
      if (a.kind !== "gmm" && a.kind !== "mnist") fail("analytic.kind", `must be "gmm" or "mnist"`);
      if (prediction !== "eps") fail("prediction", "analytic models predict eps");
    }
    const manifest: ModelManifest = {
      ...(m as unknown as ModelManifest),
      name,
      version: String(m.version),
      shape,
      prediction,
      classes,
      limits: { ...(m.limits as Obj), max_batch: maxBatch },
    };
    return { manifest, dir: dir ?? "", graphPaths, schedule, dim };
  } catch (e) {
    if (e instanceof ManifestError && e.model === undefined) {
      throw new ManifestError(e.field, e.message, name);
    }
    throw e;
  }
}

/** Reads and validates `<dir>/model.json`. */
export function readManifest(dir: string, opts: { checkFiles?: boolean } = {}): ModelInfo {
  const path = join(dir, "model.json");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new ManifestError("model.json", `not found in ${dir}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ManifestError("model.json", `is not valid JSON: ${(e as Error).message}`);
  }
  return validateManifest(json, dir, opts);
}

/** The public description of a model (GET /v1/models). */
export function describeModel(
  info: ModelInfo,
  solvers: string[],
  provider?: string,
): Record<string, unknown> {
  const m = info.manifest;
  const derivatives: string[] = [];
  if (info.graphPaths.head ?? m.graphs.head) derivatives.push("head");
  if (info.graphPaths.jvp ?? m.graphs.jvp) derivatives.push("jvp");
  derivatives.push("fd");
  if (m.analytic && m.graphs.head) derivatives.push("exact");
  return {
    name: m.name,
    version: m.version,
    shape: m.shape,
    prediction: m.prediction,
    ...(m.classes ? { classes: m.classes } : {}),
    schedule: m.schedule,
    time: m.time,
    solvers,
    derivatives,
    ...(info.unavailable ? { unavailable_derivatives: info.unavailable } : {}),
    graphs: Object.keys(m.graphs),
    ...(info.derived?.length ? { derived_graphs: info.derived } : {}),
    limits: m.limits,
    ...(m.analytic ? { analytic: true, head: "exact" } : {}),
    ...(provider ? { provider } : {}),
  };
}

/**
 * Model folders (docs/contracts.md §4): `models/<name>/model.json` and the ONNX files it names.
 *
 *     {name, version, shape:[C,H,W]|[D], prediction:"eps"|"v"|"x0", time:{kind, scale}, schedule:{…},
 *      classes?:{count, null_class?}, graphs:{eps, features?, head?, jvp?}, limits:{max_batch}}
 *
 * Extensions: `analytic` (how the graphs of an analytic model are generated, see analytic.ts; its head
 * is the exact closed-form derivative), `head_space` ("eps" or "raw": what a head of an x0/v model
 * outputs), `description`, `edge` (a boolean: the edge may run the model itself, docs/backends.md), and
 * two optional blocks, both checked strictly (unknown keys are errors):
 *
 * - `defaults`: the model's preferred grid, `{grid?, rho?, solvers?: {<solver>: {grid, rho?}}}`. A
 *   request that names no grid gets the model's grid for its solver, else the model's `grid`, else the
 *   solver's recommended one (core/solvers/registry.ts `defaultGrid`); a request's own `grid`/`rho` win.
 * - `costs`: the measured cost of one call of each graph as a ratio to one eps call at the same batch,
 *   `{eps?: 1, head?, jvp?}` (jvp may be the JVP graph the worker derives); responses price their calls
 *   with it (core/cost.ts, which also holds the fallbacks for graphs without a ratio).
 *
 * Hand-written folders and imported exports may name their graph's tensors otherwise: `inputs` maps the
 * roles x, t and class to the eps graph's input names (e.g. `{x: "sample", t: "timestep", class:
 * "class_labels"}`) and `outputs` maps eps (e.g. `{eps: "out_sample"}`). The names apply to the eps graph
 * and to the JVP graph (shipped or derived from eps: its tangent inputs stay `dx`, `dt` and its tangent
 * output `jvp`); head and features graphs keep the standard names. `prediction` accepts diffusers' names
 * (epsilon, sample, v_prediction) and `schedule` its discrete schedules (`{type: "discrete", …}`), whose
 * models are fed the timestep N·t − 1 by default (`time` = {kind: "discrete", scale: N, offset: −1};
 * rounded to the nearest index when the graph's timestep input is int64, see {@link modelTime}).
 *
 * Every problem is a {@link ManifestError} naming the field, e.g. `graphs.eps: file not found (…)`.
 */
import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import type { AnalyticSource } from "./analytic.ts";
import { type CostRatios, effectiveCosts } from "../core/cost.ts";
import { defaultRho, GRID_KINDS, type GridKind } from "../core/grid.ts";
import { parsePredictionKind, type PredictionKind } from "../core/prediction.ts";
import { discreteTimesteps, type Schedule, scheduleFromSpec, type ScheduleSpec } from "../core/schedule.ts";
import { CALL_GRAPHS, type CallGraph } from "../core/solvers/drive.ts";
import { defaultGrid, type GridDefaults, resolveSolverName, solverNames } from "../core/solvers/registry.ts";

export const GRAPH_KINDS = ["eps", "features", "head", "jvp"] as const;
export type GraphKind = typeof GRAPH_KINDS[number];

/** The names of the tensors the worker feeds and reads by role: inputs x, t, class and output eps. */
export interface GraphNames {
  x: string;
  t: string;
  class: string;
  eps: string;
}

/** The standard names (docs/contracts.md §4). */
export const STANDARD_NAMES: Readonly<GraphNames> = { x: "x", t: "t", class: "class", eps: "eps" };

/** Names the worker gives the JVP graph's own tensors, which a mapping must not take. */
const RESERVED_NAMES = ["dx", "dt", "jvp"];

export interface ModelManifest {
  name: string;
  version: string;
  shape: number[];
  prediction: PredictionKind;
  /** The graph sees the time t × scale + offset (offset default 0). */
  time: { kind: "continuous" | "discrete"; scale: number; offset?: number };
  schedule: ScheduleSpec;
  /** The eps (and JVP) graph's input names by role, where they differ from x, t, class. */
  inputs?: { x?: string; t?: string; class?: string };
  /** The eps (and JVP) graph's output name, where it differs from eps. */
  outputs?: { eps?: string };
  classes?: { count: number; null_class?: number };
  graphs: { eps: string; features?: string; head?: string; jvp?: string };
  limits: { max_batch: number };
  analytic?: AnalyticSource;
  head_space?: "eps" | "raw";
  description?: string;
  /** The model's preferred grids (see the module's comment). */
  defaults?: GridDefaults;
  /** Measured cost of one call of each graph, as a ratio to one eps call. */
  costs?: CostRatios;
  /**
   * Whether the edge may run the model in-process on WebAssembly instead of forwarding to a worker
   * (docs/backends.md, "Edge-local inference"); default false.
   */
  edge?: boolean;
}

/**
 * A model folder as the worker loads it: its validated manifest with what follows from it. (The API's
 * listing entry of a model is core/api/models.ts's `ModelInfo`.)
 */
export interface LoadedModel {
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
  /** The eps graph's names by role (the manifest's `inputs` and `outputs` over the standard names). */
  names: GraphNames;
  /**
   * The element type of the eps graph's time input: float32 (the default) or int64, which is fed the
   * nearest integer timestep. Set by the load-time graph check (graph_check.ts).
   */
  timestep: "float32" | "int64";
}

/**
 * Whether the model answers an `odeTangent` request (core/solvers/types.ts: ε and its JVP along the ODE's tangent in one
 * call): an ε-predicting model with a JVP graph, which the inference thread loads with the tangent made
 * in the graph (onnx/ode_jvp.ts). Other predictions would need the tangent converted from their output.
 */
export function servesOdeTangent(info: LoadedModel): boolean {
  return info.manifest.prediction === "eps" && info.graphPaths.jvp !== undefined;
}

/** The names of a graph's tensors by role: the mapped ones for eps and jvp, the standard ones otherwise. */
export function graphNames(info: LoadedModel, kind: GraphKind): GraphNames {
  return kind === "eps" || kind === "jvp" ? info.names : { ...STANDARD_NAMES };
}

/**
 * The time a model's graph is fed for the solver's time t: t × scale + offset, as a float, or for an
 * int64 timestep input the nearest integer, halves to even (as numpy's round, which diffusers' schedulers
 * use for their integer timesteps), clamped to [0, scale + offset] (the timestep of t = 1).
 */
export function modelTime(info: LoadedModel, t: number): number {
  const { scale, offset = 0 } = info.manifest.time;
  const v = t * scale + offset;
  if (info.timestep !== "int64") return v;
  const r = Math.round(v), nearest = r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
  return Math.min(Math.max(nearest, 0), Math.round(scale + offset));
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

function positiveNumber(field: string, v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || !(v > 0)) {
    throw new ManifestError(field, `must be a positive finite number (${what}), got ${JSON.stringify(v)}`);
  }
  return v;
}

function onlyKeys(field: string, v: Obj, keys: readonly string[]): void {
  for (const key of Object.keys(v)) {
    if (!keys.includes(key)) {
      throw new ManifestError(`${field}.${key}`, `unknown field (one of ${keys.join(", ")})`);
    }
  }
}

/** One grid choice of `defaults`: `grid` (required when `needGrid`) and `rho`, which needs a grid that has one. */
function gridChoice(field: string, v: Obj, needGrid: boolean): { grid?: GridKind; rho?: number } {
  let grid: GridKind | undefined;
  if (v.grid !== undefined) {
    if (typeof v.grid !== "string" || !(GRID_KINDS as readonly string[]).includes(v.grid)) {
      throw new ManifestError(
        `${field}.grid`,
        `unknown grid ${JSON.stringify(v.grid)} (one of ${GRID_KINDS.join(", ")})`,
      );
    }
    grid = v.grid as GridKind;
  } else if (needGrid) throw new ManifestError(`${field}.grid`, "is required");
  if (v.rho === undefined) return { grid };
  const rho = positiveNumber(`${field}.rho`, v.rho, "the grid's exponent ρ");
  if (grid === undefined) {
    throw new ManifestError(`${field}.rho`, `needs ${field}.grid (ρ belongs to a grid)`);
  }
  if (defaultRho(grid) === undefined) {
    throw new ManifestError(`${field}.rho`, `has no effect on the ${grid} grid`);
  }
  if (grid === "quadratic" && rho !== 2) {
    throw new ManifestError(`${field}.rho`, 'the quadratic grid has ρ = 2; use grid "power" for another ρ');
  }
  return { grid, rho };
}

/** Validates `defaults`: `{grid?, rho?, solvers?: {<solver>: {grid, rho?}}}`. */
function parseDefaults(v: unknown): GridDefaults {
  if (!isObject(v)) throw new ManifestError("defaults", "must be {grid?, rho?, solvers?}");
  onlyKeys("defaults", v, ["grid", "rho", "solvers"]);
  const { grid, rho } = gridChoice("defaults", v, false);
  const out: GridDefaults = {};
  if (grid !== undefined) out.grid = grid;
  if (rho !== undefined) out.rho = rho;
  if (v.solvers !== undefined) {
    if (!isObject(v.solvers)) {
      throw new ManifestError("defaults.solvers", "must map solver names to {grid, rho?}");
    }
    const names = solverNames();
    out.solvers = {};
    for (const [key, entry] of Object.entries(v.solvers)) {
      const field = `defaults.solvers.${key}`;
      // an alias (e.g. "dpmpp_2m") stands for its solver's canonical name
      const name = resolveSolverName(key);
      if (name === undefined) {
        throw new ManifestError(field, `unknown solver (one of ${names.join(", ")})`);
      }
      if (Object.hasOwn(out.solvers, name)) {
        throw new ManifestError(field, `${name} is given twice`);
      }
      if (!isObject(entry)) throw new ManifestError(field, "must be {grid, rho?}");
      onlyKeys(field, entry, ["grid", "rho"]);
      const c = gridChoice(field, entry, true);
      out.solvers[name] = c.rho === undefined ? { grid: c.grid! } : { grid: c.grid!, rho: c.rho };
    }
  }
  return out;
}

/** Validates `costs`: graph → ratio to one eps call (eps is the unit; head needs the model's head graph). */
function parseCosts(v: unknown, graphs: Obj): CostRatios {
  if (!isObject(v)) throw new ManifestError("costs", "must map graphs to their cost ratio to one eps call");
  const out: CostRatios = {};
  for (const [key, value] of Object.entries(v)) {
    const field = `costs.${key}`;
    if (!(CALL_GRAPHS as readonly string[]).includes(key)) {
      throw new ManifestError(field, `not a graph sampling calls (one of ${CALL_GRAPHS.join(", ")})`);
    }
    const ratio = positiveNumber(field, value, "the ratio to one eps call");
    if (key === "eps" && ratio !== 1) throw new ManifestError(field, "is the unit: must be 1");
    if (key === "head" && graphs.head === undefined) {
      throw new ManifestError(field, "the model has no head graph");
    }
    out[key as CallGraph] = ratio;
  }
  return out;
}

/**
 * Validates a parsed model.json. With `dir`, the graph files must exist there (`graphs.eps: file not
 * found`), and the name must equal the folder's name.
 */
export function validateManifest(
  json: unknown,
  dir?: string,
  opts: { checkFiles?: boolean } = {},
): LoadedModel {
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
    let schedule: Schedule;
    try {
      schedule = scheduleFromSpec(m.schedule);
    } catch (e) {
      const msg = (e as Error).message;
      return fail(msg.startsWith("schedule") ? msg.split(":")[0] : "schedule", msg.replace(/^[^:]*: /, ""));
    }
    if (m.schedule === undefined) fail("schedule", "is required");
    const steps = discreteTimesteps(schedule);
    // a discrete schedule's model sees the timestep index N·t − 1 unless the manifest says otherwise
    const discreteTime = { kind: "discrete", scale: steps, offset: -1 };
    const time = (m.time === undefined && steps !== undefined ? discreteTime : m.time) as Obj;
    if (!isObject(time)) fail("time", 'must be {kind: "continuous"|"discrete", scale, offset?}');
    if (time.kind !== "continuous" && time.kind !== "discrete") {
      fail("time.kind", `must be "continuous" or "discrete", got ${JSON.stringify(time.kind)}`);
    }
    if (typeof time.scale !== "number" || !(time.scale > 0) || !Number.isFinite(time.scale)) {
      fail("time.scale", "must be a positive number (the model sees t × scale + offset)");
    }
    if (time.offset !== undefined && (typeof time.offset !== "number" || !Number.isFinite(time.offset))) {
      fail("time.offset", "must be a finite number (the model sees t × scale + offset)");
    }
    const names = { ...STANDARD_NAMES };
    for (const [field, roles] of [["inputs", ["x", "t", "class"]], ["outputs", ["eps"]]] as const) {
      const v = m[field];
      if (v === undefined) continue;
      if (!isObject(v)) fail(field, `must map ${roles.join(", ")} to the graph's names`);
      onlyKeys(field, v as Obj, roles);
      for (const [role, name] of Object.entries(v as Obj)) {
        if (typeof name !== "string" || name === "") fail(`${field}.${role}`, "must be a non-empty string");
        if (RESERVED_NAMES.includes(name as string)) {
          fail(`${field}.${role}`, `${JSON.stringify(name)} is the name of a JVP graph's tangent`);
        }
        names[role as keyof GraphNames] = name as string;
      }
    }
    if (new Set([names.x, names.t, names.class]).size !== 3) {
      fail("inputs", `x, t and class must have different names, got ${names.x}, ${names.t}, ${names.class}`);
    }
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
    if (m.edge !== undefined && typeof m.edge !== "boolean") {
      fail(
        "edge",
        `must be true or false (whether the edge may run the model itself), got ${JSON.stringify(m.edge)}`,
      );
    }
    if (m.analytic !== undefined) {
      if (!isObject(m.analytic)) fail("analytic", "must be an object");
      const a = m.analytic as Obj;
      if (a.kind !== "gmm" && a.kind !== "mnist") fail("analytic.kind", `must be "gmm" or "mnist"`);
      if (prediction !== "eps") fail("prediction", "analytic models predict eps");
    }
    const defaults = m.defaults === undefined ? undefined : parseDefaults(m.defaults);
    const costs = m.costs === undefined ? undefined : parseCosts(m.costs, graphs);
    const manifest: ModelManifest = {
      ...(m as unknown as ModelManifest),
      name,
      version: String(m.version),
      shape,
      prediction,
      time: time as ModelManifest["time"],
      classes,
      limits: { ...(m.limits as Obj), max_batch: maxBatch },
      defaults,
      costs,
    };
    if (defaults === undefined) delete manifest.defaults;
    if (costs === undefined) delete manifest.costs;
    return { manifest, dir: dir ?? "", graphPaths, schedule, dim, names, timestep: "float32" };
  } catch (e) {
    if (e instanceof ManifestError && e.model === undefined) {
      // The message without its "field: " prefix, which the new error adds back after the model's name.
      throw new ManifestError(e.field, e.message.slice(e.field.length + 2), name);
    }
    throw e;
  }
}

/** Reads and validates `<dir>/model.json`. */
export function readManifest(dir: string, opts: { checkFiles?: boolean } = {}): LoadedModel {
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

/**
 * The grid each solver uses on a model when a request names none, with ρ made explicit where the grid
 * has one, and whether it is the model's default or the solver's own.
 */
function defaultGrids(
  info: LoadedModel,
  solvers: string[],
): Record<string, { grid: GridKind; rho?: number; source: "model" | "solver" }> {
  return Object.fromEntries(solvers.map((name) => {
    const g = defaultGrid(name, info.manifest.defaults);
    const rho = g.rho ?? defaultRho(g.kind);
    return [name, { grid: g.kind, ...(rho !== undefined ? { rho } : {}), source: g.source }];
  }));
}

/**
 * What GET /v1/models says about a model's sampling defaults and prices: `default_grids` (see
 * {@link defaultGrids}), `costs` (the ratio each graph it calls is priced with) and `estimated_costs`
 * (the graphs priced with a fallback, when there are any).
 */
export function samplingDefaults(info: LoadedModel, solvers: string[]): Record<string, unknown> {
  const m = info.manifest;
  const called: CallGraph[] = ["eps"];
  if (info.graphPaths.head ?? m.graphs.head) called.push("head");
  if (info.graphPaths.jvp ?? m.graphs.jvp) called.push("jvp");
  const costs = effectiveCosts(called, m.costs);
  return {
    default_grids: defaultGrids(info, solvers),
    costs: costs.costs,
    ...(costs.estimated.length ? { estimated_costs: costs.estimated } : {}),
  };
}

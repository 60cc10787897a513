/**
 * Any model folder (docs/contracts.md §4) as the GENIE head's distillation sees it: `deno task distill
 * --model NAME` for a model other than mnist-unet (training/distill.ts), and the head graph it serves.
 *
 * - {@link readModelFolder}: model.json and eps.onnx, read with core/ only (the worker's own validation is
 *   gpu-worker/manifest.ts; this reads the same fields: names by role, prediction, schedule, time). A model
 *   whose JVP cannot be derived is refused with the reason (an integer timestep, an operator without a
 *   derivative rule), as are graphs with external data and image shapes other than [C, H, W].
 * - {@link loadFolderGraphs}: the eps graph exposing the head's inputs (onnx/features.ts `findHeadTensors`:
 *   the input of the last convolution before the output, and the time embedding when one is found) and its
 *   JVP graph (onnx/jvp.ts), as ONNX Runtime sessions; the tensors' shapes are checked on a run.
 * - {@link folderHeadData}: ε̂ (converted to ε from x₀ or v), features, temb and the exact target
 *   τ = dε̂/dγ along the probability-flow ODE, from the JVP of the raw output converted by the product rule
 *   (core/prediction.ts), for points x_t = α x₀ + σ ε.
 * - {@link samplePool}: x₀ for those points when no data are given: the model's own samples (DPM-Solver++
 *   2M on its registry grid), balanced over the classes.
 * - {@link combinedFolderHead}: the served `head` graph: inputs x, t, class (standard names, t as the model
 *   sees it, t × scale + offset), outputs eps (the raw prediction) and deriv (dε/dγ: `head_space: "eps"`
 *   for x₀ and v models), with γ(t) of the model's schedule computed in float64 inside the graph.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeGrid } from "../core/grid.ts";
import { withClasses } from "../core/guidance.ts";
import {
  epsDerivativeFromPrediction,
  epsFromPrediction,
  parsePredictionKind,
  type PredictionKind,
} from "../core/prediction.ts";
import { gaussianNoise, type RngStream } from "../core/rng.ts";
import { discreteTimesteps, type Schedule, scheduleFromSpec } from "../core/schedule.ts";
import { type AsyncEvaluator, runSolverAsync } from "../core/solvers/drive.ts";
import { getSolver, stepsForNfe } from "../core/solvers/registry.ts";
import type { EvalRequest } from "../core/solvers/types.ts";
import { exposeTensors, FeatureError, findHeadTensors } from "../onnx/features.ts";
import { JvpError, jvpModel } from "../onnx/jvp.ts";
import { createSession, type InferenceSession, runSession, type TensorInit } from "../onnx/ort.ts";
import {
  decodeModel,
  encodeModel,
  GraphBuilder,
  type IGraphProto,
  modelOpset,
  type ModelProto,
  onnx,
  valueInfo,
  valueInfoType,
} from "../onnx/proto.ts";
import { addHead, type HeadOptions } from "./head.ts";
import type { HeadData } from "./targets.ts";

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
  return join(dirname(dirname(fileURLToPath(import.meta.url))), "models");
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

/** The sessions distillation runs and the head's inputs found in the graph. */
export interface FolderGraphs {
  model: FolderModel;
  /** The feature tensor and the time embedding (absent: the head embeds γ itself). */
  tensors: { features: string; temb?: string };
  /** How they were found, one line each. */
  facts: string[];
  /** Channels of the feature map and width of the time embedding (0 without one). */
  featureChannels: number;
  embed: number;
  /** The eps graph with the head's inputs as extra outputs. */
  features: InferenceSession;
  /** The JVP graph: inputs as eps plus dx, dt; outputs eps and jvp. */
  jvp: InferenceSession;
  release(): Promise<void>;
}

/** The model time fed to the graph for solver times `t`. */
function modelTimes(model: FolderModel, t: ArrayLike<number>): Float32Array {
  return Float32Array.from(t, (v) => v * model.time.scale + model.time.offset);
}

/** The eps graph's feeds at (x, t, class) under its own names. */
function baseFeeds(
  model: FolderModel,
  x: Float32Array,
  t: ArrayLike<number>,
  cls: BigInt64Array,
): Record<string, TensorInit> {
  const B = t.length;
  const feeds: Record<string, TensorInit> = {
    [model.names.x]: { type: "float32", data: x, dims: [B, ...model.shape] },
    [model.names.t]: { type: "float32", data: modelTimes(model, t), dims: [B] },
  };
  if (model.takesClass) feeds[model.names.class] = { type: "int64", data: cls, dims: [B] };
  return feeds;
}

/**
 * Sessions for distilling a head on `model`: the head's inputs found (or named by `options`; `temb: null`
 * for none) and checked on a batch-2 run: features [B, F, H, W] at the image's H × W, temb [B, E]. When
 * the time embedding found first has another shape, the next candidates are tried.
 */
export async function loadFolderGraphs(
  model: FolderModel,
  options: { features?: string; temb?: string | null; threads?: number } = {},
): Promise<FolderGraphs> {
  let found;
  try {
    found = findHeadTensors(model.eps, model.names, options);
  } catch (e) {
    if (e instanceof FeatureError) throw new FolderError(`${model.name}: ${e.message}`);
    throw e;
  }
  const opts = { providers: ["cpu"] as const, threads: options.threads ?? 1 };
  const facts = [...found.facts];
  const [, H, W] = model.shape;
  // probe: the features and up to 4 embedding candidates on a batch of 2
  const candidates = found.temb !== undefined && found.tembCandidates.length
    ? found.tembCandidates.slice(0, 4)
    : found.temb !== undefined
    ? [found.temb]
    : [];
  const probeModel = exposeTensors(model.eps, [found.features, ...candidates]);
  const probe = (await createSession(encodeModel(probeModel), opts)).session;
  const B = 2;
  const x = Float32Array.from(gaussianNoise(1, 0, B * model.dim));
  const t = [0.3, 0.7];
  const cls = BigInt64Array.from(
    { length: B },
    (_, i) => BigInt(model.classes ? i % model.classes.count : 0),
  );
  const out = await runSession(probe, baseFeeds(model, x, t, cls), [found.features, ...candidates]);
  await probe.release();
  const fd = out[found.features].dims;
  if (fd.length !== 4 || fd[0] !== B || fd[2] !== H || fd[3] !== W) {
    throw new FolderError(
      `${model.name}: the feature tensor '${found.features}' has shape [${fd.join(", ")}] at batch ${B}, ` +
        `not [B, F, ${H}, ${W}] (the head works at the image's resolution); name another with --features`,
    );
  }
  let temb: string | undefined;
  for (const c of candidates) {
    const d = out[c].dims;
    if (d.length === 2 && d[0] === B && d[1] >= 2) {
      temb = c;
      break;
    }
    facts.push(`temb: '${c}' has shape [${d.join(", ")}], not [B, E]; ${options.temb ? "" : "skipped"}`);
    if (options.temb) throw new FolderError(`${model.name}: --temb '${c}' is not [B, E]`);
  }
  if (found.temb !== undefined && temb !== found.temb) {
    facts.push(temb ? `temb: '${temb}' (the next candidate)` : "temb: none usable: the head embeds γ itself");
  }
  const featureChannels = fd[1], embed = temb ? out[temb].dims[1] : 0;
  const exposed = exposeTensors(model.eps, temb ? [found.features, temb] : [found.features]);
  const features = (await createSession(encodeModel(exposed), opts)).session;
  let jvpGraph: ModelProto;
  try {
    jvpGraph = jvpModel(model.eps, {
      wrt: [model.names.x, model.names.t],
      outputs: [model.names.eps],
      tangentInputs: { [model.names.x]: "dx", [model.names.t]: "dt" },
      tangentOutputs: { [model.names.eps]: "jvp" },
    });
  } catch (e) {
    await features.release();
    if (e instanceof JvpError) {
      throw new FolderError(
        `${model.name}: the JVP graph cannot be derived, so there is no target: ${e.message}`,
      );
    }
    throw e;
  }
  const jvp = (await createSession(encodeModel(jvpGraph), opts)).session;
  return {
    model,
    tensors: { features: found.features, ...(temb ? { temb } : {}) },
    facts,
    featureChannels,
    embed,
    features,
    jvp,
    release: async () => {
      await features.release();
      await jvp.release();
    },
  };
}

/**
 * Distillation data at (x, t, class): ε̂ in ε terms, the head's inputs, and the exact target
 * τ = dε̂/dγ along the ODE, whose tangent per unit γ is dx = ε̂/sqrt(1+γ²) − γx/(1+γ²), dt = dt/dγ.
 */
export async function folderHeadData(
  g: FolderGraphs,
  x: Float32Array,
  t: Float32Array,
  cls: BigInt64Array,
): Promise<HeadData> {
  const m = g.model, B = t.length, dim = m.dim;
  const base = baseFeeds(m, x, t, cls);
  const wanted = [m.names.eps, g.tensors.features, ...(g.tensors.temb ? [g.tensors.temb] : [])];
  const f = await runSession(g.features, base, wanted);
  const raw = f[m.names.eps].data as Float32Array;
  const x64 = Float64Array.from(x), t64 = Float64Array.from(t);
  const eps = epsFromPrediction(m.prediction, m.schedule, raw, x64, t64);
  const dx = new Float64Array(B * dim), dt = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const gam = m.schedule.gamma(t[b]), onePlus = 1 + gam * gam, inv = 1 / Math.sqrt(onePlus);
    dt[b] = m.schedule.dtDgamma(t[b]);
    for (let i = b * dim; i < (b + 1) * dim; i++) dx[i] = eps[i] * inv - (gam * x[i]) / onePlus;
  }
  const j = await runSession(g.jvp, {
    ...base,
    dx: { type: "float32", data: Float32Array.from(dx), dims: [B, ...m.shape] },
    dt: { type: "float32", data: Float32Array.from(dt, (v) => v * m.time.scale), dims: [B] },
  }, ["jvp"]);
  const df = j.jvp.data as Float32Array;
  const target = m.prediction === "eps" ? df : Float32Array.from(
    epsDerivativeFromPrediction(m.prediction, m.schedule, raw, df, x64, t64, { x: dx, t: dt }),
  );
  return {
    x,
    t,
    cls,
    gamma: Float32Array.from(t, (v) => m.schedule.gamma(v)),
    eps: Float32Array.from(eps),
    features: f[g.tensors.features].data as Float32Array,
    temb: g.tensors.temb ? f[g.tensors.temb].data as Float32Array : new Float32Array(0),
    target,
    batch: B,
    featureChannels: g.featureChannels,
    embed: g.embed,
  };
}

/** An evaluator of ε (converted from x₀ or v) over the features session, `maxBatch` rows per call. */
function folderEvaluator(g: FolderGraphs): AsyncEvaluator {
  const m = g.model;
  return async (req: EvalRequest) => {
    const rows = req.t.length, out = new Float64Array(rows * m.dim);
    for (let from = 0; from < rows; from += m.maxBatch) {
      const n = Math.min(m.maxBatch, rows - from);
      const x = Float32Array.from(req.x.subarray(from * m.dim, (from + n) * m.dim));
      const t = req.t.subarray(from, from + n);
      const cls = BigInt64Array.from(
        { length: n },
        (_, i) => BigInt(req.classes ? req.classes[from + i] : m.classes?.nullClass ?? 0),
      );
      const r = await runSession(g.features, baseFeeds(m, x, t, cls), [m.names.eps]);
      const raw = r[m.names.eps].data as Float32Array;
      out.set(
        epsFromPrediction(m.prediction, m.schedule, raw, Float64Array.from(x), Float64Array.from(t)),
        from * m.dim,
      );
    }
    return { eps: out };
  };
}

/** x₀ samples to noise for distillation, with their class labels (−1: none). */
export interface DataPool {
  x: Float32Array;
  labels: Int32Array;
  count: number;
}

/**
 * `n` samples of the model itself: DPM-Solver++(2M) at `nfe` evaluations on its registry grid with the
 * final denoising step, from the noise of seeds seed·2²⁰ + i, sample i of class i mod count for a
 * class-conditional model. `onProgress` gets the samples done so far.
 */
export async function samplePool(
  g: FolderGraphs,
  o: { n: number; nfe: number; seed: number; onProgress?: (done: number) => void },
): Promise<DataPool> {
  const m = g.model, solver = getSolver("dpmpp-2m"), evaluate = folderEvaluator(g);
  const steps = stepsForNfe("dpmpp-2m", o.nfe, { afs: false, denoise: true });
  const grid = makeGrid(m.schedule, { kind: solver.grid.kind, rho: solver.grid.rho, steps });
  const x = new Float32Array(o.n * m.dim), labels = new Int32Array(o.n).fill(-1);
  const chunk = Math.max(1, m.maxBatch);
  for (let from = 0; from < o.n; from += chunk) {
    const n = Math.min(chunk, o.n - from);
    const noise = new Float64Array(n * m.dim);
    for (let i = 0; i < n; i++) noise.set(gaussianNoise(o.seed * 2 ** 20 + from + i, 0, m.dim), i * m.dim);
    let run = solver.fn({ schedule: m.schedule, grid, x: noise, batch: n, dim: m.dim, denoise: true });
    if (m.classes) {
      const cls = Int32Array.from({ length: n }, (_, i) => (from + i) % m.classes!.count);
      labels.set(cls, from);
      run = withClasses(run, cls);
    }
    const r = await runSolverAsync(run, evaluate);
    x.set(Float32Array.from(r.x), from * m.dim);
    o.onProgress?.(from + n);
  }
  return { x, labels, count: o.n };
}

/**
 * x_t = α x₀ + σ ε for `batch` draws from `r`: x₀ from the pool, t ~ U[t_min, 1] (or `tFixed`), the class
 * the pool sample has (the null class with probability `drop`, or always when the sample has none and
 * the model has a null class).
 */
export function drawFromPool(
  model: FolderModel,
  pool: DataPool,
  batch: number,
  r: RngStream,
  drop: number,
  tFixed?: number[],
): { x: Float32Array; t: Float32Array; cls: BigInt64Array } {
  const { dim, schedule } = model, nullClass = model.classes?.nullClass;
  const x = new Float32Array(batch * dim), t = new Float32Array(batch), cls = new BigInt64Array(batch);
  for (let b = 0; b < batch; b++) {
    const k = Math.min(pool.count - 1, Math.floor(r.uniform() * pool.count));
    const u = r.uniform();
    const tb = Math.fround(tFixed ? tFixed[b] : schedule.tMin + (1 - schedule.tMin) * u);
    t[b] = tb;
    const label = pool.labels[k], dropped = r.uniform() < drop;
    cls[b] = BigInt(
      nullClass !== undefined && (dropped || label < 0)
        ? nullClass
        : label >= 0
        ? label
        : model.classes
        ? Math.floor(r.uniform() * model.classes.count) % model.classes.count
        : 0,
    );
    const alpha = schedule.alpha(tb), sigma = schedule.sigma(tb);
    for (let i = 0; i < dim; i++) {
      x[b * dim + i] = alpha * pool.x[k * dim + i] + sigma * r.normal();
    }
  }
  return { x, t, cls };
}

/** Renames values throughout a graph and its subgraphs (inputs, outputs, initializers, node edges). */
function renameValues(graph: IGraphProto, map: ReadonlyMap<string, string>): void {
  const rename = (n: string | null | undefined) => (n ? map.get(n) ?? n : n);
  for (const list of [graph.input, graph.output, graph.valueInfo]) {
    for (const v of list ?? []) v.name = rename(v.name);
  }
  for (const t of graph.initializer ?? []) t.name = rename(t.name);
  for (const node of graph.node ?? []) {
    node.input = (node.input ?? []).map((n) => rename(n)!);
    node.output = (node.output ?? []).map((n) => rename(n)!);
    for (const a of node.attribute ?? []) {
      if (a.g) renameValues(a.g, map);
      for (const sub of a.graphs ?? []) renameValues(sub, map);
    }
  }
}

/** Every value name of a graph (inputs, outputs, initializers, node outputs). */
function valueNames(graph: IGraphProto): Set<string> {
  return new Set([
    ...(graph.input ?? []).map((v) => v.name ?? ""),
    ...(graph.output ?? []).map((v) => v.name ?? ""),
    ...(graph.valueInfo ?? []).map((v) => v.name ?? ""),
    ...(graph.initializer ?? []).map((t) => t.name ?? ""),
    ...(graph.node ?? []).flatMap((n) => n.output ?? []),
  ]);
}

/**
 * The served head graph of a model folder: its eps graph with the inputs renamed to x, t, class and the
 * output to eps (other values with those names moved aside), γ(t) in float64 (closed form for vp-linear,
 * else B = log(1+γ²) interpolated linearly between knots, exact for the piecewise-linear discrete
 * schedules), ε̂ converted to ε for x₀ and v models, then the head with the trained `params`. Outputs: eps
 * (the raw prediction, as eps.onnx gives it) and deriv (dε/dγ).
 */
export function combinedFolderHead(
  model: FolderModel,
  tensors: { features: string; temb?: string },
  params: Readonly<Record<string, Float32Array>>,
  options: Partial<HeadOptions>,
): ModelProto {
  const source = onnx.ModelProto.decode(encodeModel(model.eps)); // a copy to rename in
  const graph = source.graph!;
  const roles: [string, string][] = [
    [model.names.x, "x"],
    [model.names.t, "t"],
    [model.names.class, "class"],
    [model.names.eps, "eps"],
  ];
  const taken = valueNames(graph);
  const mine = new Set(roles.map(([from]) => from));
  const aside = new Map<string, string>();
  for (const std of ["x", "t", "class", "eps", "deriv"]) {
    if (!taken.has(std) || (mine.has(std) && roles.some(([from, to]) => from === std && to === std))) {
      continue;
    }
    let alt = `${std}__model`, n = 1;
    while (taken.has(alt)) alt = `${std}__model_${n++}`;
    aside.set(std, alt);
    taken.add(alt);
  }
  if (aside.size) renameValues(graph, aside);
  const toStd = new Map<string, string>();
  for (const [from, to] of roles) {
    const now = aside.get(from) ?? from;
    if (now !== to) toStd.set(now, to);
  }
  if (toStd.size) renameValues(graph, toStd);
  const moved = (n: string) => toStd.get(aside.get(n) ?? n) ?? aside.get(n) ?? n;
  const features = moved(tensors.features), temb = tensors.temb ? moved(tensors.temb) : undefined;

  const g = new GraphBuilder(`${graph.name ?? "model"}-genie-head`, { opset: modelOpset(source) });
  g.reserveNamesOf(graph);
  const num = (v: number) => g.constant(new Float64Array([v]), [], "float64");
  // the solver's time from the graph's: (t − offset)/scale, in float64
  const ts = g.op("Div", [
    g.op("Sub", [g.op("Cast", ["t"], { to: 11 }), num(model.time.offset)]),
    num(model.time.scale),
  ]);
  const spec = model.schedule.spec;
  let B: string;
  if (spec.type === "vp-linear") {
    const bMin = spec.beta_min ?? 0.1, bD = (spec.beta_max ?? 20) - bMin;
    B = g.op("Add", [g.op("Mul", [num(bMin), ts]), g.op("Mul", [num(0.5 * bD), g.op("Mul", [ts, ts])])]);
  } else {
    const K = spec.type === "discrete"
      ? discreteTimesteps(model.schedule)!
      : spec.type === "ddpm-discrete"
      ? spec.betas?.length ?? spec.steps ?? 1000
      : 4096;
    const knots = Float64Array.from({ length: K + 1 }, (_, k) => model.schedule.logOnePlusGamma2(k / K));
    const scaled = g.op("Mul", [ts, num(K)]);
    const index = g.op("Max", [g.op("Min", [g.op("Floor", [scaled]), num(K - 1)]), num(0)]);
    const at = g.op("Cast", [index], { to: 7 });
    const lo = g.op("Gather", [g.constant(knots.slice(0, K), [K], "float64"), at], { axis: 0 });
    const hi = g.op("Gather", [g.constant(knots.slice(1), [K], "float64"), at], { axis: 0 });
    B = g.op("Add", [lo, g.op("Mul", [g.op("Sub", [hi, lo]), g.op("Sub", [scaled, index])])]);
  }
  const gamma64 = g.op("Sqrt", [g.op("Sub", [g.op("Exp", [B]), num(1)])]);
  const gamma = g.op("Cast", [gamma64], { to: 1 });
  // ε from the raw prediction f: x0: (sqrt(1+γ²) x − f)/γ; v: (f + γ x)/sqrt(1+γ²)
  let epsIn = "eps";
  if (model.prediction !== "eps") {
    const axes = g.constant([1, 2, 3], [3], "int64");
    const perSample = (v64: string) => g.op("Unsqueeze", [g.op("Cast", [v64], { to: 1 }), axes]);
    const root = g.op("Sqrt", [g.op("Add", [num(1), g.op("Mul", [gamma64, gamma64])])]);
    const [a, b] = model.prediction === "x0"
      ? [g.op("Neg", [g.op("Reciprocal", [gamma64])]), g.op("Div", [root, gamma64])]
      : [g.op("Reciprocal", [root]), g.op("Div", [gamma64, root])];
    epsIn = g.op("Add", [g.op("Mul", ["eps", perSample(a)]), g.op("Mul", ["x", perSample(b)])]);
  }
  const { k, params: names } = addHead(
    g,
    { x: "x", eps: epsIn, features, temb, gamma },
    { ...options, embed: temb ? options.embed : 0 },
    (name) => {
      const v = params[name];
      if (!v) throw new Error(`no trained value for head parameter ${name}`);
      return v;
    },
  );
  const unknown = Object.keys(params).filter((n) => !names.includes(n));
  if (unknown.length) throw new Error(`trained values for unknown head parameters: ${unknown.join(", ")}`);
  g.node("Identity", [k], ["deriv"]);
  const eps = (graph.output ?? []).find((o) => o.name === "eps")!;
  const shape = eps.type?.tensorType?.shape;
  return onnx.ModelProto.create({
    ...source,
    graph: onnx.GraphProto.create({
      ...graph,
      name: g.name,
      node: [...(graph.node ?? []), ...g.nodes],
      initializer: [...(graph.initializer ?? []), ...g.initializers],
      output: [
        eps,
        onnx.ValueInfoProto.create({
          ...valueInfo("deriv", "float32"),
          type: { tensorType: { elemType: 1, shape } },
        }),
      ],
    }),
  });
}

/**
 * Training on ONNX Runtime, driven from TypeScript.
 *
 * One ORT session runs the training graph of `gradModel` (loss and gradients); the optimiser runs here on
 * the parameters' typed arrays, which are fed back to the session on every step:
 *
 *     const graph = gradModel(meanSquaredErrorLoss(model, "eps"), { params });
 *     const trainer = await Trainer.create(graph, {
 *       seed: 1, lr: lrSchedule({ lr: 1e-3, warmup: 100, total: 10_000 }), clipNorm: 1,
 *       batch: (step, rng) => ({ x: …, t: …, eps_target: … }),
 *     });
 *     await trainer.resume("ckpt");                  // if a checkpoint is there
 *     await trainer.run({ steps: 10_000, checkpointDir: "ckpt", checkpointEvery: 500, onProgress });
 *
 * Determinism: the data of step k are drawn from `rngStream(seed, k)` (counter-based Philox), so the
 * whole random state of a run is (seed, step); the learning rate is a function of the step (the cosine
 * schedule uses core/math.ts's portable cos); Adam uses only + − × ÷ √ in a fixed order. With ORT on one
 * intra-op thread (the default) a run is reproducible bit for bit, and a run resumed from a checkpoint
 * continues exactly as the uninterrupted one would.
 *
 * Checkpoints are directories `step-<k>` (state.json, params.bin, adam_m.bin, adam_v.bin; little-endian)
 * written under a temporary name and renamed into place, then published by rewriting `latest.json` the
 * same way: a crash leaves either the previous or the new checkpoint, never a torn one. One writer per
 * directory.
 */
import { cos } from "../core/math.ts";
import { type RngStream, rngStream } from "../core/rng.ts";
import type { TrainingGraph } from "../onnx/grad.ts";
import {
  createSession,
  type InferenceSession,
  type Provider,
  runSession,
  type TensorInit,
} from "../onnx/ort.ts";
import {
  DataType,
  encodeModel,
  type IModelProto,
  type ModelProto,
  onnx,
  tensorDims,
  tensorProto,
} from "../onnx/proto.ts";

export type FloatArray = Float32Array | Float64Array;

/** A training run cannot go on (non-finite loss, mismatched checkpoint, missing values). */
export class TrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainError";
  }
}

// ----- learning-rate schedules

/** The learning rate of step k (0-based). */
export type LrSchedule = (step: number) => number;

export interface LrScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up from lr/warmup to lr over this many steps (default 0). */
  warmup?: number;
  /** After warm-up: constant (default), or cosine/linear decay to `minLr` at step `total`. */
  decay?: "constant" | "cosine" | "linear";
  /** Total steps (needed for decay). */
  total?: number;
  /** Final learning rate of the decay (default 0). */
  minLr?: number;
}

/** A constant learning rate. */
export function constantLr(lr: number): LrSchedule {
  return () => lr;
}

/** Linear warm-up, then constant, cosine or linear decay. */
export function lrSchedule(o: LrScheduleOptions): LrSchedule {
  const warmup = o.warmup ?? 0, minLr = o.minLr ?? 0, decay = o.decay ?? "constant";
  if (decay !== "constant" && !(o.total && o.total > warmup)) {
    throw new TrainError(`lrSchedule: ${decay} decay needs total > warmup`);
  }
  return (step) => {
    if (step < warmup) return (o.lr * (step + 1)) / warmup;
    if (decay === "constant") return o.lr;
    const progress = Math.min(1, (step - warmup) / (o.total! - warmup));
    const shape = decay === "cosine" ? 0.5 * (1 + cos(Math.PI * progress)) : 1 - progress;
    return minLr + (o.lr - minLr) * shape;
  };
}

// ----- Adam

export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW): p ← p·(1 − lr·wd) before the Adam step (default 0). */
  weightDecay?: number;
}

/** b^n by squaring (only multiplications: the same bits in every runtime). */
function powInt(b: number, n: number): number {
  let result = 1, base = b;
  for (let e = n; e > 0; e = Math.floor(e / 2)) {
    if (e % 2) result *= base;
    base *= base;
  }
  return result;
}

/** Adam with bias correction (Kingma & Ba), moments stored in the parameters' element types. */
export class Adam {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** First and second moments per parameter. */
  readonly m: Record<string, FloatArray> = {};
  readonly v: Record<string, FloatArray> = {};
  /** Updates made so far. */
  t = 0;

  constructor(params: Readonly<Record<string, FloatArray>>, options: AdamOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    for (const [name, p] of Object.entries(params)) {
      this.m[name] = new (p.constructor as typeof Float32Array)(p.length);
      this.v[name] = new (p.constructor as typeof Float32Array)(p.length);
    }
  }

  /** One update of `params` in place with gradients `grads`·`gradScale` and learning rate `lr`. */
  step(
    params: Record<string, FloatArray>,
    grads: Readonly<Record<string, ArrayLike<number>>>,
    lr: number,
    gradScale = 1,
  ): void {
    this.t++;
    const { beta1: b1, beta2: b2, eps } = this;
    const c1 = 1 - powInt(b1, this.t), c2 = 1 - powInt(b2, this.t);
    const decay = 1 - lr * this.weightDecay;
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name], m = this.m[name], v = this.v[name];
      if (!g || g.length !== p.length) {
        throw new TrainError(`Adam: gradient of '${name}' missing or mis-sized`);
      }
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * gradScale;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        const pi = this.weightDecay ? p[i] * decay : p[i];
        p[i] = pi - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
      }
    }
  }
}

/** The global L2 norm of several gradients (accumulated in float64 in a fixed order). */
export function globalNorm(grads: readonly ArrayLike<number>[]): number {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** The factor that clips a gradient of norm `norm` to at most `maxNorm` (1 when already within). */
export function clipFactor(norm: number, maxNorm: number): number {
  return norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}

// ----- checkpoints

/** Everything a run needs to continue exactly where it stopped. */
export interface TrainState {
  /** Steps completed (the next step to run). */
  step: number;
  /** Seed of the data streams: step k draws from rngStream(seed, k). */
  seed: number;
  params: Record<string, FloatArray>;
  adam: { t: number; m: Record<string, FloatArray>; v: Record<string, FloatArray> };
  /** Exponential moving average of the parameters, when the run keeps one. */
  ema?: Record<string, FloatArray>;
  /** Loss of the last completed step (informational). */
  loss?: number;
}

interface StateFile {
  format: "genie-onnx-train";
  version: 1;
  step: number;
  seed: number;
  rng: { generator: "philox4x32-10 rngStream"; seed: number; nextStream: number };
  adam: { t: number };
  loss?: number;
  params: { name: string; dtype: "float32" | "float64"; length: number; offset: number }[];
  files: { params: string; m: string; v: string; ema?: string };
}

const STEP_DIGITS = 9;

function stepDirName(step: number): string {
  return `step-${String(step).padStart(STEP_DIGITS, "0")}`;
}

async function writeSynced(path: string, data: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
}

function concatBytes(arrays: readonly FloatArray[]): Uint8Array {
  const total = arrays.reduce((n, a) => n + a.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Writes a checkpoint of `state` into `dir` atomically and makes it the latest; keeps the newest `keep`
 * checkpoints (default 2). Returns the checkpoint's path.
 */
export async function saveCheckpoint(dir: string, state: TrainState, keep = 2): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const names = Object.keys(state.params);
  let offset = 0;
  const params = names.map((name) => {
    const p = state.params[name];
    const entry = {
      name,
      dtype: p instanceof Float64Array ? "float64" as const : "float32" as const,
      length: p.length,
      offset,
    };
    offset += p.byteLength;
    return entry;
  });
  const meta: StateFile = {
    format: "genie-onnx-train",
    version: 1,
    step: state.step,
    seed: state.seed,
    rng: { generator: "philox4x32-10 rngStream", seed: state.seed, nextStream: state.step },
    adam: { t: state.adam.t },
    ...(state.loss !== undefined && Number.isFinite(state.loss) ? { loss: state.loss } : {}),
    params,
    files: {
      params: "params.bin",
      m: "adam_m.bin",
      v: "adam_v.bin",
      ...(state.ema ? { ema: "ema.bin" } : {}),
    },
  };
  const final = `${dir}/${stepDirName(state.step)}`;
  const tmp = `${dir}/.tmp-${stepDirName(state.step)}-${crypto.randomUUID()}`;
  await Deno.mkdir(tmp);
  try {
    await writeSynced(`${tmp}/params.bin`, concatBytes(names.map((n) => state.params[n])));
    await writeSynced(`${tmp}/adam_m.bin`, concatBytes(names.map((n) => state.adam.m[n])));
    await writeSynced(`${tmp}/adam_v.bin`, concatBytes(names.map((n) => state.adam.v[n])));
    if (state.ema) await writeSynced(`${tmp}/ema.bin`, concatBytes(names.map((n) => state.ema![n])));
    await writeSynced(`${tmp}/state.json`, new TextEncoder().encode(JSON.stringify(meta, null, 1)));
    if (await exists(final)) await Deno.remove(final, { recursive: true });
    await Deno.rename(tmp, final);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  const latestTmp = `${dir}/.latest-${crypto.randomUUID()}.json`;
  await writeSynced(
    latestTmp,
    new TextEncoder().encode(JSON.stringify({ checkpoint: stepDirName(state.step) })),
  );
  await Deno.rename(latestTmp, `${dir}/latest.json`);
  // prune: older checkpoints beyond `keep`, and temporaries of interrupted writes
  const entries: string[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e.name);
  const steps = entries.filter((n) => /^step-\d+$/.test(n)).sort();
  for (const old of steps.slice(0, Math.max(0, steps.length - Math.max(keep, 1)))) {
    if (old !== stepDirName(state.step)) await Deno.remove(`${dir}/${old}`, { recursive: true });
  }
  for (const t of entries.filter((n) => n.startsWith(".tmp-") || n.startsWith(".latest-"))) {
    await Deno.remove(`${dir}/${t}`, { recursive: true }).catch(() => {});
  }
  return final;
}

/** Reads the latest checkpoint in `dir` (undefined when there is none). */
export async function loadCheckpoint(dir: string): Promise<TrainState | undefined> {
  if (!(await exists(`${dir}/latest.json`))) return undefined;
  const { checkpoint } = JSON.parse(await Deno.readTextFile(`${dir}/latest.json`)) as { checkpoint: string };
  const path = `${dir}/${checkpoint}`;
  const meta = JSON.parse(await Deno.readTextFile(`${path}/state.json`)) as StateFile;
  if (meta.format !== "genie-onnx-train" || meta.version !== 1) {
    throw new TrainError(`${path}: not a training checkpoint (format ${meta.format} v${meta.version})`);
  }
  const read = async (file: string) => {
    const bytes = await Deno.readFile(`${path}/${file}`);
    const expected = meta.params.reduce((n, p) => n + p.length * (p.dtype === "float64" ? 8 : 4), 0);
    if (bytes.byteLength !== expected) {
      throw new TrainError(`${path}/${file}: ${bytes.byteLength} bytes, expected ${expected}`);
    }
    const out: Record<string, FloatArray> = {};
    for (const p of meta.params) {
      const Ctor = p.dtype === "float64" ? Float64Array : Float32Array;
      const width = Ctor.BYTES_PER_ELEMENT;
      out[p.name] = new Ctor(bytes.buffer.slice(p.offset, p.offset + p.length * width));
    }
    return out;
  };
  return {
    step: meta.step,
    seed: meta.seed,
    params: await read(meta.files.params),
    adam: { t: meta.adam.t, m: await read(meta.files.m), v: await read(meta.files.v) },
    ...(meta.files.ema ? { ema: await read(meta.files.ema) } : {}),
    loss: meta.loss,
  };
}

// ----- the trainer

/** Data feeds of one step: every data input of the training graph. */
export type Batch = Record<string, TensorInit>;

export interface TrainerOptions {
  /** Feeds of step k, drawn from `rng` = rngStream(seed, k) (and nothing else, for reproducibility). */
  batch: (step: number, rng: RngStream) => Batch;
  /** Seed of the data streams. */
  seed: number;
  /** Learning rate: a number or a schedule of the step. */
  lr: number | LrSchedule;
  adam?: AdamOptions;
  /** Clip the global gradient norm to this value (default: no clipping). */
  clipNorm?: number;
  /**
   * Keep an exponential moving average of the parameters with this decay (e.g. 0.9995), updated after
   * every step as ema ← d·ema + (1 − d)·p with d = min(decay, (1 + n)/(10 + n)) after n updates, so the
   * average follows the parameters closely early on. Checkpoints carry it.
   */
  ema?: number;
  /** Initial parameter values (default: the values the forward model held). */
  init?: Readonly<Record<string, FloatArray>>;
  /** ORT intra-op threads (default 1: bit-reproducible). */
  threads?: number;
  /** Execution providers to try (default ["cpu"]). */
  providers?: readonly Provider[];
}

export interface StepResult {
  /** Index of the step just taken (0-based). */
  step: number;
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  lr: number;
}

export interface Progress extends StepResult {
  /** The step count `run` is heading for. */
  totalSteps: number;
  stepsPerSecond: number;
  /** Estimated seconds to `totalSteps` at the current rate. */
  etaSeconds: number;
  elapsedSeconds: number;
}

export interface RunOptions {
  /** Run until this many steps are complete in total. */
  steps: number;
  onProgress?: (p: Progress) => void;
  /** Call onProgress every this many steps (default 1; always on the last). */
  progressEvery?: number;
  /** Write checkpoints here (every `checkpointEvery` steps and at the end). */
  checkpointDir?: string;
  checkpointEvery?: number;
  /** Checkpoints to keep (default 2). */
  keep?: number;
  /** Stop (after the current step, with a checkpoint) when aborted. */
  signal?: AbortSignal;
}

/** Milliseconds spent, summed over steps, per phase. */
export interface Timings {
  batch: number;
  ort: number;
  optimizer: number;
  steps: number;
}

/** Trains the parameters of a training graph with Adam on ONNX Runtime. */
export class Trainer {
  readonly state: TrainState;
  readonly timings: Timings = { batch: 0, ort: 0, optimizer: 0, steps: 0 };
  readonly #adam: Adam;
  readonly #lr: LrSchedule;

  private constructor(
    readonly graph: TrainingGraph,
    readonly session: InferenceSession,
    readonly options: TrainerOptions,
    params: Record<string, FloatArray>,
  ) {
    this.#adam = new Adam(params, options.adam);
    this.#lr = typeof options.lr === "number" ? constantLr(options.lr) : options.lr;
    this.state = { step: 0, seed: options.seed, params, adam: { t: 0, m: this.#adam.m, v: this.#adam.v } };
    if (options.ema !== undefined) {
      if (!(options.ema > 0 && options.ema < 1)) {
        throw new TrainError(`ema: decay ${options.ema} not in (0, 1)`);
      }
      this.state.ema = Object.fromEntries(Object.entries(params).map(([n, p]) => [n, p.slice()]));
    }
  }

  /** Creates the ORT session of the training graph and the optimiser state. */
  static async create(graph: TrainingGraph, options: TrainerOptions): Promise<Trainer> {
    const params: Record<string, FloatArray> = {};
    for (const p of graph.params) {
      const init = options.init?.[p.name] ?? p.init;
      if (!init) throw new TrainError(`no initial value for parameter '${p.name}'`);
      const size = p.dims.reduce((a, b) => a * b, 1);
      if (init.length !== size) throw new TrainError(`'${p.name}': ${init.length} values for ${size}`);
      params[p.name] = p.dtype === "float64" ? Float64Array.from(init) : Float32Array.from(init);
    }
    const { session } = await createSession(encodeModel(graph.model), {
      providers: options.providers ?? ["cpu"],
      threads: options.threads ?? 1,
    });
    return new Trainer(graph, session, options, params);
  }

  /** The parameters (live: updated in place by every step). */
  get params(): Record<string, FloatArray> {
    return this.state.params;
  }

  /** Loads the latest checkpoint in `dir` if there is one; returns whether it did. */
  async resume(dir: string): Promise<boolean> {
    const saved = await loadCheckpoint(dir);
    if (!saved) return false;
    if (saved.seed !== this.state.seed) {
      throw new TrainError(`checkpoint seed ${saved.seed} differs from the run's seed ${this.state.seed}`);
    }
    for (const p of this.graph.params) {
      const [value, m, v] = [saved.params[p.name], saved.adam.m[p.name], saved.adam.v[p.name]];
      const mine = this.state.params[p.name];
      if (!value || !m || !v || value.length !== mine.length || value.constructor !== mine.constructor) {
        throw new TrainError(`checkpoint does not match parameter '${p.name}'`);
      }
      mine.set(value);
      this.#adam.m[p.name].set(m);
      this.#adam.v[p.name].set(v);
    }
    if (Object.keys(saved.params).length !== this.graph.params.length) {
      throw new TrainError("checkpoint holds other parameters than the training graph");
    }
    if (this.state.ema) {
      // a checkpoint without an average (written by a run that kept none) starts it at its parameters
      for (const p of this.graph.params) {
        const average = saved.ema?.[p.name] ?? saved.params[p.name];
        if (average.length !== this.state.ema[p.name].length) {
          throw new TrainError(`checkpoint average does not match parameter '${p.name}'`);
        }
        this.state.ema[p.name].set(average);
      }
    }
    this.#adam.t = saved.adam.t;
    this.state.adam.t = saved.adam.t;
    this.state.step = saved.step;
    this.state.loss = saved.loss;
    return true;
  }

  /** Writes a checkpoint of the current state. */
  checkpoint(dir: string, keep = 2): Promise<string> {
    return saveCheckpoint(dir, this.state, keep);
  }

  /** Loss and gradients at the current parameters for the batch of step `step` (no update). */
  async evaluate(step = this.state.step): Promise<{ loss: number; grads: Record<string, FloatArray> }> {
    const t0 = performance.now();
    const feeds: Record<string, TensorInit> = {
      ...this.options.batch(step, rngStream(this.state.seed, step)),
    };
    const t1 = performance.now();
    for (const name of this.graph.inputs) {
      if (!feeds[name]) throw new TrainError(`batch of step ${step} has no '${name}'`);
    }
    for (const p of this.graph.params) {
      const data = this.state.params[p.name];
      feeds[p.name] = data instanceof Float64Array
        ? { type: "float64", data, dims: p.dims }
        : { type: "float32", data, dims: p.dims };
    }
    const out = await runSession(this.session, feeds, [
      this.graph.loss,
      ...this.graph.params.map((p) => p.grad),
    ]);
    this.timings.batch += t1 - t0;
    this.timings.ort += performance.now() - t1;
    const grads: Record<string, FloatArray> = {};
    for (const p of this.graph.params) grads[p.name] = out[p.grad].data as FloatArray;
    return { loss: Number(out[this.graph.loss].data[0]), grads };
  }

  /** One optimisation step. Throws a TrainError (state unchanged) on a non-finite loss or gradient. */
  async step(): Promise<StepResult> {
    const step = this.state.step;
    const { loss, grads } = await this.evaluate(step);
    const t0 = performance.now();
    const names = this.graph.params.map((p) => p.name);
    const gradNorm = globalNorm(names.map((n) => grads[n]));
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      throw new TrainError(`step ${step}: non-finite ${Number.isFinite(loss) ? "gradient" : "loss"}`);
    }
    const scale = this.options.clipNorm === undefined ? 1 : clipFactor(gradNorm, this.options.clipNorm);
    const lr = this.#lr(step);
    this.#adam.step(this.state.params, grads, lr, scale);
    this.state.adam.t = this.#adam.t;
    if (this.state.ema) this.#average(this.state.ema);
    this.state.step = step + 1;
    this.state.loss = loss;
    this.timings.optimizer += performance.now() - t0;
    this.timings.steps++;
    return { step, loss, gradNorm, lr };
  }

  /** ema ← d·ema + (1 − d)·p, with the warm-up of {@link TrainerOptions.ema}. */
  #average(ema: Record<string, FloatArray>): void {
    const n = this.#adam.t;
    const d = Math.min(this.options.ema!, (1 + n) / (10 + n)), keep = 1 - d;
    for (const [name, p] of Object.entries(this.state.params)) {
      const e = ema[name];
      for (let i = 0; i < p.length; i++) e[i] = d * e[i] + keep * p[i];
    }
  }

  /** Steps until `steps` are complete, reporting progress and writing checkpoints. */
  async run(o: RunOptions): Promise<StepResult | undefined> {
    const start = performance.now(), first = this.state.step;
    const every = o.progressEvery ?? 1;
    let last: StepResult | undefined;
    while (this.state.step < o.steps) {
      last = await this.step();
      const done = this.state.step;
      const stopping = done === o.steps || !!o.signal?.aborted;
      if (o.checkpointDir && (stopping || (o.checkpointEvery && done % o.checkpointEvery === 0))) {
        await this.checkpoint(o.checkpointDir, o.keep);
      }
      if (o.onProgress && (stopping || done % every === 0)) {
        const elapsedSeconds = (performance.now() - start) / 1000;
        const stepsPerSecond = (done - first) / Math.max(elapsedSeconds, 1e-9);
        o.onProgress({
          ...last,
          totalSteps: o.steps,
          stepsPerSecond,
          etaSeconds: (o.steps - done) / stepsPerSecond,
          elapsedSeconds,
        });
      }
      if (o.signal?.aborted) break;
    }
    return last;
  }

  /** Releases the ORT session. */
  async release(): Promise<void> {
    await this.session.release?.();
  }
}

/** The forward model with its initializers replaced by trained values (e.g. for export). */
export function withParams(model: IModelProto, params: Readonly<Record<string, FloatArray>>): ModelProto {
  const graph = model.graph!;
  const seen = new Set<string>();
  const initializer = (graph.initializer ?? []).map((t) => {
    const value = params[t.name!];
    if (!value) return t;
    seen.add(t.name!);
    const dims = tensorDims(t);
    const dtype = value instanceof Float64Array ? DataType.DOUBLE : DataType.FLOAT;
    if (t.dataType !== dtype) {
      throw new TrainError(`'${t.name}': element type differs from the trained value`);
    }
    return tensorProto(t.name!, value, dims);
  });
  const missing = Object.keys(params).filter((n) => !seen.has(n));
  if (missing.length) throw new TrainError(`not initializers of the model: ${missing.join(", ")}`);
  return onnx.ModelProto.create({ ...model, graph: onnx.GraphProto.create({ ...graph, initializer }) });
}

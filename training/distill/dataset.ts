/**
 * A set of distillation samples (`deno task distill --targets N`): the network's ε̂, features and exact
 * JVP targets are computed once for N noisy inputs, and every step draws its batch from the set (replaced
 * by the next N samples every `--refresh` steps).
 * A step then costs only the head's own training graph (about a twentieth of computing fresh targets on
 * mnist-unet), at the price of a finite set: N should be large next to the head's parameter count. The
 * set is a pure function of its seeds, so a resumed run rebuilds it bit-identically.
 */
import { type RngStream, rngStream } from "../../core/rng.ts";
import { formatSeconds, log } from "../common.ts";
import type { HeadData } from "../targets.ts";
import { focusOf, refreshOf } from "./flags.ts";

/** The per-sample float fields of {@link HeadData}. */
const FIELDS = ["x", "t", "gamma", "eps", "features", "temb", "target"] as const;

/** Which times a batch favours: probability `p` of a sample with t in [from, to). */
export interface Focus {
  p: number;
  from: number;
  to: number;
}

export class HeadDataSet {
  private constructor(
    readonly size: number,
    /** One sample's data, for shapes and widths. */
    readonly shape: HeadData,
    readonly fields: Record<(typeof FIELDS)[number], Float32Array>,
    readonly cls: BigInt64Array,
    readonly coarse: Float32Array[],
  ) {}

  /**
   * `size` samples in chunks of `chunk`: `make(first, count)` gives the data of samples first …
   * first + count − 1 (drawn from a random stream of its own per chunk, so the set does not depend on
   * anything else). Progress with an ETA goes to stderr.
   */
  static async build(
    size: number,
    chunk: number,
    make: (first: number, count: number) => Promise<HeadData>,
  ): Promise<HeadDataSet> {
    const start = performance.now();
    let set: HeadDataSet | undefined, reported = 0;
    for (let first = 0; first < size; first += chunk) {
      const count = Math.min(chunk, size - first);
      const d = await make(first, count);
      if (d.batch !== count) throw new Error(`distillation data: ${d.batch} samples for a chunk of ${count}`);
      set ??= HeadDataSet.#allocate(size, d);
      set.#store(first, d);
      const done = first + count, s = (performance.now() - start) / 1000;
      if (done === size || s - reported >= 30) {
        reported = s;
        log(
          `distillation targets: ${done}/${size}  elapsed ${formatSeconds(s)}  ETA ${
            formatSeconds((s / done) * (size - done))
          }`,
        );
      }
    }
    if (!set) throw new Error("distillation data: an empty set");
    return set;
  }

  #focusCache?: { key: string; indices: Int32Array };

  #inRange(focus: Focus): Int32Array {
    const key = `${focus.from},${focus.to}`;
    if (this.#focusCache?.key !== key) {
      const t = this.fields.t, indices: number[] = [];
      for (let i = 0; i < this.size; i++) if (t[i] >= focus.from && t[i] < focus.to) indices.push(i);
      if (!indices.length) throw new Error(`--focus: no sample has t in [${focus.from}, ${focus.to})`);
      this.#focusCache = { key, indices: Int32Array.from(indices) };
    }
    return this.#focusCache.indices;
  }

  static #allocate(size: number, d: HeadData): HeadDataSet {
    const per = (a: ArrayLike<number>) => a.length / d.batch;
    const fields = Object.fromEntries(FIELDS.map((k) => [k, new Float32Array(size * per(d[k]))])) as Record<
      (typeof FIELDS)[number],
      Float32Array
    >;
    const coarse = (d.coarse ?? []).map((c) => new Float32Array(size * per(c.data)));
    return new HeadDataSet(size, d, fields, new BigInt64Array(size), coarse);
  }

  #store(first: number, d: HeadData): void {
    for (const k of FIELDS) {
      const per = this.fields[k].length / this.size;
      this.fields[k].set(d[k], first * per);
    }
    this.cls.set(d.cls, first);
    (d.coarse ?? []).forEach((c, j) =>
      this.coarse[j].set(c.data, first * (this.coarse[j].length / this.size))
    );
  }

  /**
   * A batch of `batch` samples drawn with `r` (with replacement): uniformly, or with probability
   * `focus.p` from the samples whose t lies in [focus.from, focus.to) (the times whose derivative
   * matters most to a few-step sampler; docs/head.md).
   */
  batch(r: RngStream, batch: number, focus?: Focus): HeadData {
    const inRange = focus && focus.p > 0 ? this.#inRange(focus) : undefined;
    const pick = (pool: ArrayLike<number> | undefined) => {
      const n = pool ? pool.length : this.size, j = Math.min(n - 1, Math.floor(r.uniform() * n));
      return pool ? pool[j] : j;
    };
    const picks = Array.from(
      { length: batch },
      () => pick(inRange && r.uniform() < focus!.p ? inRange : undefined),
    );
    const gather = (src: Float32Array) => {
      const per = src.length / this.size, out = new Float32Array(batch * per);
      picks.forEach((j, i) => out.set(src.subarray(j * per, (j + 1) * per), i * per));
      return out;
    };
    const f = Object.fromEntries(FIELDS.map((k) => [k, gather(this.fields[k])])) as Record<
      (typeof FIELDS)[number],
      Float32Array
    >;
    return {
      ...f,
      cls: BigInt64Array.from(picks, (j) => this.cls[j]),
      batch,
      featureChannels: this.shape.featureChannels,
      embed: this.shape.embed,
      coarse: (this.shape.coarse ?? []).map((c, j) => ({ data: gather(this.coarse[j]), dims: c.dims })),
    };
  }
}

/** The offset of the target set's seeds from the run's: its chunks use rngStream(seed + offset, first). */
const SET_SEED_OFFSET = 104729;

/**
 * The batch of each step of a distillation run: drawn from a target set of `f.targets` samples built here
 * (with `--focus`), or, with `--targets 0`, made fresh by `draw` from the step's own random stream. With
 * `--refresh S` the set is replaced every S steps by the next `f.targets` samples (set i holds samples
 * i·N … i·N + N − 1 of one sequence, N = `f.targets`): the head sees many more distinct samples for a
 * fraction of the cost of fresh targets every step, and memory holds one set at a time. Each chunk of a set
 * comes from a stream of its own (rngStream(seed + offset, index of its first sample)), so a resumed run
 * rebuilds the same set, and set 0 is the set of a run without `--refresh`; a run already at `f.steps`
 * (which only exports again) builds none.
 */
export function batchSource(
  f: {
    targets: number;
    refresh: number;
    seed: number;
    batch: number;
    focus: number;
    focusFrom: number;
    focusTo: number;
  },
  draw: (n: number, r: RngStream) => Promise<HeadData>,
): (step: number) => Promise<HeadData> {
  const focus = focusOf(f);
  refreshOf(f);
  let current: { index: number; set: HeadDataSet } | undefined;
  return async (step) => {
    const r = rngStream(f.seed, step);
    if (f.targets === 0) return await draw(f.batch, r);
    const index = f.refresh > 0 ? Math.floor(step / f.refresh) : 0;
    if (current?.index !== index) {
      current = undefined; // the old set can go before the new one is made
      if (f.refresh > 0) {
        log(
          `target set ${index} (steps ${index * f.refresh}–${
            (index + 1) * f.refresh - 1
          }): ${f.targets} samples`,
        );
      }
      const set = await HeadDataSet.build(
        f.targets,
        64,
        (first, n) => draw(n, rngStream(f.seed + SET_SEED_OFFSET, index * f.targets + first)),
      );
      current = { index, set };
    }
    return current.set.batch(r, f.batch, focus);
  };
}

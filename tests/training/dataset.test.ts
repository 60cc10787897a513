/**
 * The fixed set of distillation samples of `deno task distill --targets N` (training/distill/dataset.ts):
 * built in chunks, every field of a drawn batch is the stored sample's, the draws follow the step's
 * random stream, and `--refresh` replaces the set by the next samples of one sequence.
 */
import { assert, assertEquals, assertRejects, assertThrows, describe, it } from "../testing.ts";
import { rngStream } from "../../core/rng.ts";
import { batchSource, HeadDataSet } from "../../training/distill/dataset.ts";
import { UsageError } from "../../core/flags.ts";
import type { HeadData } from "../../training/targets.ts";

const P = 4, F = 2, E = 3;

/** Samples whose every value encodes (sample index, field, position), so a batch row names its source. */
function fake(first: number, n: number): HeadData {
  const fill = (per: number, field: number) =>
    Float32Array.from(
      { length: n * per },
      (_, i) => (first + Math.floor(i / per)) * 1000 + field * 100 + (i % per),
    );
  return {
    x: fill(P, 1),
    t: fill(1, 2),
    gamma: fill(1, 3),
    eps: fill(P, 4),
    features: fill(F * P, 5),
    temb: fill(E, 6),
    target: fill(P, 7),
    cls: BigInt64Array.from({ length: n }, (_, i) => BigInt(first + i)),
    batch: n,
    featureChannels: F,
    embed: E,
    coarse: [{ data: fill(F, 8), dims: [F, 1, 1] }],
  };
}

describe("distillation target set", () => {
  it("a batch holds the stored samples the step's random stream picks, every field and the coarse maps", async () => {
    const set = await HeadDataSet.build(10, 4, async (first, n) => await Promise.resolve(fake(first, n)));
    assertEquals(set.size, 10);
    const b = set.batch(rngStream(3, 7), 6);
    const r = rngStream(3, 7);
    const picks = Array.from({ length: 6 }, () => Math.floor(r.uniform() * 10));
    const expected = (per: number, field: number) =>
      Float32Array.from(
        { length: 6 * per },
        (_, i) => picks[Math.floor(i / per)] * 1000 + field * 100 + (i % per),
      );
    assertEquals(b.batch, 6);
    assertEquals(b.x, expected(P, 1));
    assertEquals(b.t, expected(1, 2));
    assertEquals(b.gamma, expected(1, 3));
    assertEquals(b.eps, expected(P, 4));
    assertEquals(b.features, expected(F * P, 5));
    assertEquals(b.temb, expected(E, 6));
    assertEquals(b.target, expected(P, 7));
    assertEquals(b.cls, BigInt64Array.from(picks, BigInt));
    assertEquals(b.coarse, [{ data: expected(F, 8), dims: [F, 1, 1] }]);
    assertEquals([b.featureChannels, b.embed], [F, E]);
  });

  it("with a focus, a sample comes from the focus range with its probability", async () => {
    // t of sample i is i·1000 + 200 (fake's encoding): samples 3 and 4 lie in [3000, 5000)
    const set = await HeadDataSet.build(10, 5, async (first, n) => await Promise.resolve(fake(first, n)));
    const all = set.batch(rngStream(5, 1), 200, { p: 1, from: 3000, to: 5000 });
    assert(Array.from(all.t).every((t) => t === 3200 || t === 4200), "focus 1: every sample in range");
    const some = set.batch(rngStream(5, 2), 2000, { p: 0.5, from: 3000, to: 5000 });
    const share = Array.from(some.t).filter((t) => t === 3200 || t === 4200).length / 2000;
    // in range: the focused half, plus a fifth of the uniform half (0.6 expected; 5σ ≈ 0.055)
    assert(Math.abs(share - 0.6) < 0.055, `share in range ${share}`);
    assertThrows(() => set.batch(rngStream(5, 3), 4, { p: 0.5, from: 20000, to: 30000 }), /no sample has t/);
  });

  it("refuses a chunk whose size is not the one asked for", async () => {
    await assertRejects(
      () => HeadDataSet.build(8, 4, async (first) => await Promise.resolve(fake(first, 3))),
      /3 samples for a chunk of 4/,
    );
  });

  it("--refresh S: set i holds samples i·N … i·N + N − 1, made once per S steps; set 0 is the plain run's", async () => {
    const flags = { targets: 8, refresh: 0, seed: 2, batch: 4, focus: 0, focusFrom: 0, focusTo: 1 };
    // record the stream of each chunk; the k-th chunk made holds samples numbered from 100·k
    const made: number[] = [];
    const draw = (n: number, r: ReturnType<typeof rngStream>) => {
      made.push(Math.round(r.uniform() * 1e9));
      return Promise.resolve(fake(100 * made.length, n));
    };
    const streamKey = (sample: number) => Math.round(rngStream(2 + 104729, sample).uniform() * 1e9);
    const plain = batchSource(flags, draw);
    const p0 = await plain(0), p9 = await plain(9);
    assertEquals(made, [streamKey(0)], "one set, one chunk of 8 (chunks are 64), built once");
    made.length = 0;
    const refreshed = batchSource({ ...flags, refresh: 5 }, draw);
    const steps = [0, 4, 5, 9, 10];
    const batches: HeadData[] = [];
    for (const s of steps) batches.push(await refreshed(s));
    assertEquals(made, [streamKey(0), streamKey(8), streamKey(16)], "sets 0, 1, 2 from samples 0, 8, 16");
    assertEquals(batches[0], p0, "set 0 and the step's draws are the plain run's");
    // steps 0 and 4 draw from the first chunk made (samples 100…), 5 and 9 from the second (200…)
    const chunkOf = (b: HeadData) => new Set(Array.from(b.t, (t) => Math.floor((t - 200) / 100000)));
    assertEquals(batches.map(chunkOf), [1, 1, 2, 2, 3].map((k) => new Set([k])));
    assert(p9.t.some((t, i) => t !== batches[3].t[i]), "step 9 differs from the plain run's");
    assertThrows(
      () => batchSource({ ...flags, targets: 0, refresh: 5 }, draw),
      UsageError,
      "--refresh: replaces the target set",
    );
  });
});

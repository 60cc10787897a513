/**
 * Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as
 * 1, 2, 3", SC 2011) and Gaussian noise built on it.
 *
 * A counter-based generator is a pure function of (counter, key): there is no hidden state, so the
 * noise of one sample is computed from its seed alone and comes out the same in any batch size, batch
 * position, worker or runtime (docs/contracts.md §2).
 *
 * Layout of the 128-bit counter and 64-bit key used here:
 *
 *     key     = (seed mod 2³², ⌊seed / 2³²⌋)            seeds are integers in [0, 2⁵³ − 1]
 *     counter = (block, sampleIndex, domain, blockHigh)
 *
 * `domain` separates independent uses of one key: 0 for {@link gaussianNoise}, 1 for
 * {@link rngStream}. `block` counts Philox blocks (4 words each) inside one draw; `blockHigh` only
 * becomes non-zero for streams longer than 2³² blocks.
 *
 * Integer arithmetic is exact (32-bit products are split into 16-bit halves). The Gaussian transform
 * does not use Math.log, Math.cos or Math.sin, whose last bits differ between JavaScript engines and
 * even between V8 versions (Deno and Node.js disagree): {@link portableLog} and
 * {@link portableSinCos2Pi} (in core/math.ts, re-exported here) use only +, −, ×, ÷ and sqrt, which
 * IEEE 754 rounds correctly everywhere, so the noise is bit-identical in every runtime.
 */

import { cos2PiOfLast, portableLog, portableSin2Pi, portableSinCos2Pi } from "./math.ts";

export { portableLog, portableSinCos2Pi };

const M0 = 0xD2511F53;
const M1 = 0xCD9E8D57;
const W0 = 0x9E3779B9;
const W1 = 0xBB67AE85;
const TWO_32 = 4294967296;

/** Domains of the counter's third word (see the module comment). */
const DOMAIN_NOISE = 0;
const DOMAIN_STREAM = 1;

/** The high 32 bits of the 64-bit product of two u32 numbers, exact (16-bit halves, integer operations). */
export function mulhi32(a: number, b: number): number {
  const aL = a & 0xffff, aH = a >>> 16, bL = b & 0xffff, bH = b >>> 16;
  const lh = aL * bH, hl = aH * bL; // each < 2³²
  // a·b = aH·bH·2³² + (aL·bH + aH·bL)·2¹⁶ + aL·bL: carry the low halves, add the high ones
  const mid = ((aL * bL) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (aH * bH + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
}

/**
 * Philox4x32-10: ten rounds of the Philox S-box keyed by (k0, k1), bumped by the Weyl constants
 * between rounds. Returns the four output words as a new Uint32Array.
 */
export function philox4x32(
  counter: ArrayLike<number>,
  key: ArrayLike<number>,
): Uint32Array {
  const out = new Uint32Array(4);
  philoxInto(out, counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  return out;
}

/** Philox4x32-10 into `out` (no allocation); all arguments are taken modulo 2³². */
function philoxInto(
  out: Uint32Array,
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
): void {
  c0 >>>= 0, c1 >>>= 0, c2 >>>= 0, c3 >>>= 0, k0 >>>= 0, k1 >>>= 0;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/** An invalid seed, index or size for the generators below. */
export class RngError extends RangeError {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "RngError";
  }
}

/** The Philox key of a seed: (low 32 bits, high 21 bits). Seeds are integers in [0, 2⁵³ − 1]. */
export function seedKey(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RngError("seed", `must be an integer in [0, 2^53 − 1], got ${seed}`);
  }
  return [seed % TWO_32, Math.floor(seed / TWO_32)];
}

/** A u32 word as a uniform number in (0, 1]: (w + 1)/2³². */
function unitInterval(w: number): number {
  return (w + 1) / TWO_32;
}

/**
 * The Box–Muller pair of two uniforms u₁, u₂ ∈ (0, 1]: r = sqrt(−2 log u₁),
 * (r cos 2πu₂, r sin 2πu₂).
 */
function boxMuller(out: Float64Array, at: number, u1: number, u2: number, count: number): void {
  const r = Math.sqrt(-2 * portableLog(u1));
  const s = portableSin2Pi(u2);
  out[at] = r * cos2PiOfLast();
  if (count > 1) out[at + 1] = r * s;
}

/**
 * `dim` independent standard normal numbers for sample `sampleIndex` of `seed`.
 *
 * Element i comes from Philox block ⌊i/4⌋ with counter (⌊i/4⌋, sampleIndex, 0, 0): its four words
 * make two uniform pairs in (0, 1] and, by Box–Muller, four normals. The result depends only on
 * (seed, sampleIndex) and element i is the same for every `dim` > i.
 */
export function gaussianNoise(seed: number, sampleIndex: number, dim: number): Float64Array {
  checkDim(dim);
  const out = new Float64Array(dim);
  noiseInto(out, 0, seed, sampleIndex, dim);
  return out;
}

function checkDim(dim: number): void {
  if (!Number.isInteger(dim) || dim < 0 || dim > 4 * TWO_32) {
    throw new RngError("dim", `must be a non-negative integer, got ${dim}`);
  }
}

/** {@link gaussianNoise} written into `out` from index `at`. */
function noiseInto(out: Float64Array, at: number, seed: number, sampleIndex: number, dim: number): void {
  const [k0, k1] = seedKey(seed);
  if (!Number.isInteger(sampleIndex) || sampleIndex < 0 || sampleIndex >= TWO_32) {
    throw new RngError("sampleIndex", `must be an integer in [0, 2^32 − 1], got ${sampleIndex}`);
  }
  const w = WORDS;
  for (let i = 0, block = 0; i < dim; i += 4, block++) {
    philoxInto(w, block, sampleIndex, DOMAIN_NOISE, 0, k0, k1);
    boxMuller(out, at + i, unitInterval(w[0]), unitInterval(w[1]), dim - i);
    if (i + 2 < dim) boxMuller(out, at + i + 2, unitInterval(w[2]), unitInterval(w[3]), dim - i - 2);
  }
}

/** Scratch words for {@link noiseInto} (single-threaded: each JS realm has its own). */
const WORDS = new Uint32Array(4);

/**
 * Noise for a batch with one seed per sample: row j is `gaussianNoise(seeds[j], sampleIndex, dim)`,
 * so a sample's noise does not depend on the batch it is drawn in. Returns `seeds.length × dim` numbers.
 */
export function gaussianBatch(seeds: ArrayLike<number>, dim: number, sampleIndex = 0): Float64Array {
  checkDim(dim);
  const out = new Float64Array(seeds.length * dim);
  for (let j = 0; j < seeds.length; j++) noiseInto(out, j * dim, seeds[j], sampleIndex, dim);
  return out;
}

/** A sequential generator over one Philox stream (see {@link rngStream}). */
export interface RngStream {
  /** The next 32-bit word. */
  u32(): number;
  /** A uniform number in (0, 1] with 53 random bits. */
  uniform(): number;
  /** A standard normal number (Box–Muller on two 53-bit uniforms; the second of a pair is kept). */
  normal(): number;
}

/**
 * A deterministic sequential generator for tests, benchmarks and data synthesis: the Philox blocks
 * (0, stream, 1, 0), (1, stream, 1, 0), … of `seed`, consumed word by word. It never overlaps
 * {@link gaussianNoise} of the same seed.
 */
export function rngStream(seed: number, stream = 0): RngStream {
  const [k0, k1] = seedKey(seed);
  if (!Number.isInteger(stream) || stream < 0 || stream >= TWO_32) {
    throw new RngError("stream", `must be an integer in [0, 2^32 − 1], got ${stream}`);
  }
  const words = new Uint32Array(4);
  let block = 0, used = 4;
  let spare: number | undefined;
  const u32 = (): number => {
    if (used === 4) {
      philoxInto(words, block % TWO_32, stream, DOMAIN_STREAM, Math.floor(block / TWO_32), k0, k1);
      block++;
      used = 0;
    }
    return words[used++];
  };
  // 53 bits: 27 from the first word and 26 from the second, mapped to {1, …, 2⁵³}/2⁵³.
  const uniform = (): number => ((u32() >>> 5) * 67108864 + (u32() >>> 6) + 1) / 9007199254740992;
  const normal = (): number => {
    if (spare !== undefined) {
      const z = spare;
      spare = undefined;
      return z;
    }
    const u1 = uniform(), u2 = uniform();
    const r = Math.sqrt(-2 * portableLog(u1));
    spare = r * portableSin2Pi(u2);
    return r * cos2PiOfLast();
  };
  return { u32, uniform, normal };
}

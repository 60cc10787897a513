/**
 * The arithmetic under the portable functions of core/math.ts: error-free transformations and
 * double-double numbers (an unevaluated sum hi + lo, Dekker/Knuth), exact powers of two and scaling, and
 * the split of a float64 into exponent and significand. Only +, −, ×, ÷, Math.sqrt and exact operations,
 * so every result is fixed by this source alone.
 *
 * Functions that produce a double-double return the high part and leave the low part in {@link LO} (a
 * second return value without allocating); read LO right after the call. Other modules set it with
 * {@link setLo} (an imported binding is read-only).
 */

/** The low part of the last double-double result. */
export let LO = 0;

/** Sets {@link LO}, for double-double results formed outside this module. */
export function setLo(lo: number): void {
  LO = lo;
}

/** s = fl(a + b), LO = a + b − s exactly (Knuth). */
export function twoSum(a: number, b: number): number {
  const s = a + b, bb = s - a;
  LO = (a - (s - bb)) + (b - bb);
  return s;
}

/** s = fl(a + b), LO = a + b − s exactly, provided |a| ≥ |b| or a = 0 (Dekker). */
export function fastTwoSum(a: number, b: number): number {
  const s = a + b;
  LO = b - (s - a);
  return s;
}

/** 2²⁷ + 1: Veltkamp's splitter for 53-bit significands. */
const SPLITTER = 134217729;

/** p = fl(a·b), LO = a·b − p exactly (Dekker; |a|, |b| < 2⁹⁹⁶ and no underflow). */
export function twoProd(a: number, b: number): number {
  const p = a * b;
  let t = SPLITTER * a;
  const ah = t - (t - a), al = a - ah;
  t = SPLITTER * b;
  const bh = t - (t - b), bl = b - bh;
  LO = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
  return p;
}

/** (ah + al)·(bh + bl) as a double-double (relative error about 2⁻¹⁰⁴). */
export function ddMul(ah: number, al: number, bh: number, bl: number): number {
  const p = twoProd(ah, bh);
  return fastTwoSum(p, LO + (ah * bl + al * bh));
}

/** (ah + al) + (bh + bl) as a double-double. */
export function ddAdd(ah: number, al: number, bh: number, bl: number): number {
  const s = twoSum(ah, bh);
  return twoSum(s, LO + al + bl);
}

/** (ah + al)/(bh + bl) as a double-double (one Newton correction of the double quotient). */
export function ddDiv(ah: number, al: number, bh: number, bl: number): number {
  const q = ah / bh;
  const p = twoProd(q, bh);
  return fastTwoSum(q, ((ah - p) - LO + al - q * bl) / bh);
}

/** Σ c_j z^j by Horner's rule. */
export function horner(c: readonly number[], z: number): number {
  let p = c[c.length - 1];
  for (let j = c.length - 2; j >= 0; j--) p = p * z + c[j];
  return p;
}

/** One float64 and its two 32-bit words (the high word's index depends on the platform's byte order). */
const BITS_F64 = new Float64Array(1);
const BITS_U32 = new Uint32Array(BITS_F64.buffer);
const HI_WORD = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/** 2^k for k = −1022 … 1023 at index k + 1022 (exact: each is twice or half its neighbour). */
const POW2 = new Float64Array(2046);
POW2[1022] = 1;
for (let k = 1; k <= 1023; k++) POW2[1022 + k] = 2 * POW2[1021 + k];
for (let k = 1; k <= 1022; k++) POW2[1022 - k] = 0.5 * POW2[1023 - k];

/** 2^k for an integer −1022 ≤ k ≤ 1023, exactly. */
export function pow2(k: number): number {
  return POW2[k + 1022];
}

const TWO_1023 = pow2(1023), TWO_M969 = pow2(-969);
/** 2⁻¹⁰²², the smallest positive normal float64. */
export const TWO_M1022 = pow2(-1022);

/** y·2^k, exact unless the result overflows or is subnormal (then rounded once). */
export function scale(y: number, k: number): number {
  if (k > 1023) {
    y *= TWO_1023, k -= 1023;
    if (k > 1023) y *= TWO_1023, k = Math.min(k - 1023, 1023);
  } else if (k < -1022) {
    y *= TWO_M969, k += 969;
    if (k < -1022) y *= TWO_M969, k = Math.max(k + 969, -1022);
  }
  return y * pow2(k);
}

/** The exponent and significand of the last {@link decompose}: x = 2^DK · DM, DM ∈ [√½, √2). */
export let DK = 0;

/** Splits a positive finite x (subnormals included) as 2^DK·m with m ∈ [√½, √2); returns m. */
export function decompose(x: number): number {
  let k = 0;
  if (x < 2.2250738585072014e-308) x *= 18014398509481984, k = -54; // subnormal: × 2⁵⁴
  BITS_F64[0] = x;
  const hi = BITS_U32[HI_WORD];
  k += (hi >>> 20) - 1023;
  BITS_U32[HI_WORD] = (hi & 0x000fffff) | 0x3ff00000;
  let m = BITS_F64[0]; // in [1, 2)
  if (m > Math.SQRT2) m *= 0.5, k++;
  DK = k;
  return m;
}

/** 1/n! for n = 0 … 25 (n! is exact up to 22!, and the later terms need no more digits). */
export const INV_FACT: number[] = [];
for (let n = 0, f = 1; n <= 25; n++, f *= n) INV_FACT.push(1 / f);

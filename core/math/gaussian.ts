/**
 * The Gaussian transform of core/rng.ts (through core/math.ts): a logarithm and (cos 2πu, sin 2πu) from
 * +, −, ×, ÷ only. These two fix the bits of every noise sample (tests pin them): do not change their
 * arithmetic, even to make them more accurate.
 */
import { decompose, DK } from "./dd.ts";

/** 1/(2j+1): the series log m = 2 atanh(s) = 2 s Σ s^{2j}/(2j+1), s = (m − 1)/(m + 1). */
const LOG_SERIES = Array.from({ length: 14 }, (_, j) => 1 / (2 * j + 1));
/** (−1)^j/(2j+1)! and (−1)^j/(2j)!: Taylor series of sin and cos, exact factorials (≤ 21! is exact). */
const SIN_SERIES: number[] = [], COS_SERIES: number[] = [];
for (let j = 0, fact = 1; j < 10; j++) {
  if (j > 0) fact *= (2 * j - 1) * (2 * j);
  COS_SERIES.push((j % 2 ? -1 : 1) / fact);
  SIN_SERIES.push((j % 2 ? -1 : 1) / (fact * (2 * j + 1)));
}

// Horner's rule written out for the three series above: the same operations in the same order as
// horner(), so the same bits, without the loop.
const [L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13] = LOG_SERIES;
const [S0, S1, S2, S3, S4, S5, S6, S7, S8, S9] = SIN_SERIES;
const [C0, C1, C2, C3, C4, C5, C6, C7, C8, C9] = COS_SERIES;
function logSeries(z: number): number {
  let p = L13;
  p = p * z + L12, p = p * z + L11, p = p * z + L10, p = p * z + L9, p = p * z + L8, p = p * z + L7;
  p = p * z + L6, p = p * z + L5, p = p * z + L4, p = p * z + L3, p = p * z + L2, p = p * z + L1;
  return p * z + L0;
}
function sinSeries(z: number): number {
  let p = S9;
  p = p * z + S8, p = p * z + S7, p = p * z + S6, p = p * z + S5, p = p * z + S4, p = p * z + S3;
  p = p * z + S2, p = p * z + S1;
  return p * z + S0;
}
function cosSeries(z: number): number {
  let p = C9;
  p = p * z + C8, p = p * z + C7, p = p * z + C6, p = p * z + C5, p = p * z + C4, p = p * z + C3;
  p = p * z + C2, p = p * z + C1;
  return p * z + C0;
}

/**
 * The natural logarithm of a positive normal float64 from +, −, ×, ÷ only (bit-identical in every
 * runtime; within a few ulp of Math.log): u = m·2^k with m ∈ [√½, √2), log u = k log 2 + 2 atanh s.
 * Used by the Gaussian noise of core/rng.ts; {@link log} is the more accurate general logarithm.
 */
export function portableLog(u: number): number {
  if (!(u > 0 && u < Infinity)) return u === 0 ? -Infinity : u === Infinity ? Infinity : NaN;
  const m = decompose(u), f = m - 1, s = f / (2 + f);
  return DK * Math.LN2 + 2 * s * logSeries(s * s);
}

/**
 * (cos 2πu, sin 2πu) from +, −, ×, ÷ only (bit-identical in every runtime; within a few ulp of
 * Math.cos/Math.sin). The reduction is exact: 4u = q + d with integer q and |d| ≤ ½, then
 * x = d·π/2 ∈ [−π/4, π/4] goes through Taylor series and the quadrant q mod 4 rotates the result.
 */
export function portableSinCos2Pi(u: number): [number, number] {
  const s = portableSin2Pi(u);
  return [COS_2PI, s];
}

/** cos 2πu of the last {@link portableSin2Pi} call (a module variable: no array per call). */
let COS_2PI = 1;

/** sin 2πu as in {@link portableSinCos2Pi}; leaves cos 2πu in {@link cos2PiOfLast}. */
export function portableSin2Pi(u: number): number {
  const v = 4 * (u - Math.floor(u));
  const q = Math.round(v), x = (v - q) * (Math.PI / 2), z = x * x;
  const s = x * sinSeries(z), c = cosSeries(z);
  switch (q & 3) {
    case 0:
      COS_2PI = c;
      return s;
    case 1:
      COS_2PI = -s;
      return c;
    case 2:
      COS_2PI = -c;
      return -s;
    default:
      COS_2PI = s;
      return -c;
  }
}

/** cos 2πu of the last {@link portableSin2Pi} call. */
export function cos2PiOfLast(): number {
  return COS_2PI;
}

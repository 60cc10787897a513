/**
 * Portable exponential, logarithm and power (core/math.ts): exp, expm1, log, log1p, pow and powi.
 * Reduction by a multiple of ln 2 (exp) or a power of two (log), then a short series on a small interval,
 * with the leading terms in double-double arithmetic (core/math/dd.ts).
 */
import {
  ddAdd,
  ddDiv,
  ddMul,
  decompose,
  DK,
  fastTwoSum,
  horner,
  INV_FACT,
  LO,
  pow2,
  scale,
  TWO_M1022,
  twoProd,
  twoSum,
} from "./dd.ts";

// ---------------------------------------------------------------------------------------------------
// exp, expm1

/** ln 2 = LN2_HI + LN2_LO; LN2_HI has 32 significant bits, so k·LN2_HI is exact for |k| < 2²¹. */
const LN2_HI = 0.6931471803691238, LN2_LO = 1.9082149292705877e-10;
const INV_LN2 = 1.4426950408889634;
/** 1/3!, 1/4!, …, 1/14!: e^r − 1 − r − r²/2 = r³ Σ r^j/(j + 3)!. */
const EXP_TAIL = INV_FACT.slice(3, 15);

/** The power of two of the last {@link expKernel}. */
let EK = 0;

/**
 * e^(x + xl) = 2^EK (1 + u) with u returned as a double-double (high part returned, low part in LO),
 * for |x| ≤ 746 and |xl| ≤ 2⁻⁴⁰. Reduction x = k ln 2 + r, |r| ≤ ½ ln 2 + tiny, with r carried as
 * r + rl; u = r + r²/2 + r³ Σ r^j/(j+3)! + rl·e^r, the first two terms exact.
 */
function expKernel(x: number, xl: number): number {
  const k = Math.round(x * INV_LN2);
  const hi = x - k * LN2_HI; // exact (Sterbenz)
  const r0 = twoSum(hi, -(k * LN2_LO));
  const r = twoSum(r0, LO + xl), rl = LO;
  const zh = twoProd(r, r), zl = LO;
  const t = r * zh * horner(EXP_TAIL, r);
  const s = twoSum(r, 0.5 * zh);
  EK = k;
  return twoSum(s, LO + 0.5 * zl + t + rl * (1 + r));
}

/** e^(h + l) for a double-double exponent. */
function expDD(h: number, l: number): number {
  if (h > 709.8) return Infinity;
  if (h < -745.2) return 0;
  const uh = expKernel(h, l), ul = LO, k = EK;
  const y = twoSum(1, uh), yl = LO + ul, v = y + yl;
  if (k > -1022 || (k === -1022 && v >= 1)) return scale(v, k);
  // Subnormal result: round w = 2^(k+1022)(y + yl) < 1 once, at the granularity 2⁻⁵² of 1 + w, so
  // that (1 + w − 1)·2⁻¹⁰²² is the correctly placed subnormal (both scalings by 2^(k+1022) are exact).
  const wh = scale(y, k + 1022), wl = scale(yl, k + 1022);
  const one = twoSum(1, wh);
  return (one + (LO + wl) - 1) * TWO_M1022;
}

/** e^x (portable Math.exp). */
export function exp(x: number): number {
  if (!(x > -745.2)) return x === x ? 0 : NaN;
  if (x > 709.8) return Infinity;
  if (Math.abs(x) < 5.551115123125783e-17) return 1 + x; // |x| < 2⁻⁵⁴
  return expDD(x, 0);
}

/** e^x − 1 without cancellation for small x (portable Math.expm1). */
export function expm1(x: number): number {
  if (!(x > -40)) return x === x ? -1 : NaN; // e^x < 2⁻⁵⁷
  if (x > 40) return exp(x); // the −1 is below a 32nd of an ulp
  if (Math.abs(x) < 5.551115123125783e-17) return x; // x²/2 is below half an ulp of x
  const uh = expKernel(x, 0), ul = LO, k = EK;
  if (k === 0) return uh;
  // 2^k (1 + u) − 1 = (2^k − 1) + 2^k u, with 2^k − 1 exact as a double-double.
  const H = pow2(k);
  const a = twoSum(H, -1), ae = LO;
  const s = twoSum(a, H * uh);
  return s + (LO + ae + H * ul);
}

// ---------------------------------------------------------------------------------------------------
// log, log1p

/** 2/(2j + 1), j = 1 … 12: log(1 + f) = f − f²/2 + s (f²/2 + R), R = Σ_j 2 s^{2j}/(2j + 1). */
const LOG_R = Array.from({ length: 12 }, (_, j) => 2 / (2 * j + 3));

/**
 * k ln 2 + log(1 + f) + extra for f ∈ [√½ − 1, √2 − 1] and a tiny `extra` (fdlibm's form: with
 * s = f/(2 + f), log(1 + f) = 2 atanh s = f − f²/2 + s (f²/2 + R(s²))); f − f²/2 is exact as a
 * double-double, so only s (f²/2 + R) ≈ f³/4 carries rounding errors of its own.
 */
function logKernel(k: number, f: number, extra: number): number {
  const hfsq = 0.5 * twoProd(f, f), hfsqLo = 0.5 * LO;
  const s = f / (2 + f), z = s * s;
  const tail = s * (hfsq + z * horner(LOG_R, z));
  const a = twoSum(f, -hfsq);
  const low = LO - hfsqLo + tail + (k * LN2_LO + extra);
  const b = twoSum(k * LN2_HI, a); // k·LN2_HI is exact
  return b + (LO + low);
}

/** log x + extra for positive finite x. */
function logOf(x: number, extra: number): number {
  const m = decompose(x);
  return logKernel(DK, m - 1, extra);
}

/** The natural logarithm (portable Math.log). */
export function log(x: number): number {
  if (!(x > 0)) return x === 0 ? -Infinity : NaN;
  if (x === Infinity) return Infinity;
  return logOf(x, 0);
}

/** log(1 + x) without cancellation for small x (portable Math.log1p). */
export function log1p(x: number): number {
  if (!(x > -1)) return x === -1 ? -Infinity : NaN;
  if (x === Infinity) return Infinity;
  if (Math.abs(x) < 5.551115123125783e-17) return x; // keeps −0
  if (x > -0.2928932188134524 && x < 0.41421356237309503) return logKernel(0, x, 0);
  // 1 + x = u + c exactly; log(u + c) = log u + c/u to within (c/u)²/2 < 2⁻¹⁰⁷.
  const u = twoSum(1, x);
  return logOf(u, LO / u);
}

/** 1/(2j + 1) as double-doubles [hi, lo], j = 0 … 16: log m = 2s Σ_j s^{2j}/(2j + 1). */
const ODD_RECIP: [number, number][] = Array.from({ length: 17 }, (_, j) => {
  const d = 2 * j + 1, h = 1 / d, p = twoProd(h, d);
  return [h, ((1 - p) - LO) / d];
});
const LOG_DD_TAIL = ODD_RECIP.slice(4).map(([h]) => h);

/**
 * log x as a double-double (high part returned, low part in LO) for positive finite x, relative error
 * below 2⁻⁷⁰: the same reduction as {@link log}, with s = f/(2 + f) and the first terms of
 * 2s Σ s^{2j}/(2j + 1) in double-double arithmetic.
 */
function logDD(x: number): number {
  const m = decompose(x), k = DK, f = m - 1;
  const dh = twoSum(2, f), dl = LO;
  const sh = ddDiv(f, 0, dh, dl), sl = LO;
  const zh = ddMul(sh, sl, sh, sl), zl = LO;
  let qh = horner(LOG_DD_TAIL, zh), ql = 0; // Σ_{j≥4} z^{j−4}/(2j + 1), about 1/9
  for (let j = 3; j >= 0; j--) {
    qh = ddMul(qh, ql, zh, zl), ql = LO;
    qh = ddAdd(qh, ql, ODD_RECIP[j][0], ODD_RECIP[j][1]), ql = LO;
  }
  const ph = ddMul(qh, ql, 2 * sh, 2 * sl), pl = LO; // log m
  const kh = twoProd(k, LN2_LO), kl = LO;
  const nh = ddAdd(k * LN2_HI, 0, kh, kl), nl = LO; // k ln 2
  return ddAdd(nh, nl, ph, pl);
}

// ---------------------------------------------------------------------------------------------------
// pow

const TWO_53 = 9007199254740992;

/**
 * x^y (portable Math.pow, with its special cases): e^{y log x} with log x as a double-double, so the
 * exponent is good to 2⁻⁶⁰ even where y log x is near ±745. y = 2, ½ and −1 give x·x, √x and 1/x.
 */
export function pow(x: number, y: number): number {
  if (y !== y) return NaN;
  if (y === 0) return 1;
  if (x !== x) return NaN;
  const ay = Math.abs(y);
  if (ay === Infinity) {
    const ax = Math.abs(x);
    if (ax === 1) return NaN;
    return (ax > 1) === (y > 0) ? Infinity : 0;
  }
  const yInt = Math.trunc(y) === y;
  const yOdd = yInt && ay < TWO_53 && y % 2 !== 0;
  if (x === 0) {
    if (y > 0) return yOdd ? x : 0;
    return yOdd && 1 / x < 0 ? -Infinity : Infinity;
  }
  if (x === Infinity) return y > 0 ? Infinity : 0;
  if (x === -Infinity) return y > 0 ? (yOdd ? -Infinity : Infinity) : (yOdd ? -0 : 0);
  if (y === 2) return x * x;
  let sign = 1;
  if (x < 0) {
    if (!yInt) return NaN;
    if (yOdd) sign = -1;
    x = -x;
  }
  if (x === 1 || y === 1) return sign * x;
  if (y === -1) return sign / x;
  if (y === 0.5) return Math.sqrt(x);
  const lh = logDD(x), ll = LO;
  const e = y * lh;
  if (e > 710) return sign * Infinity;
  if (e < -746) return sign * 0;
  const ph = twoProd(y, lh); // |y| < 2⁶⁴ here, so no overflow in the splitting
  const qh = fastTwoSum(ph, LO + y * ll), ql = LO;
  return sign * expDD(qh, ql);
}

/** x^n for a non-negative integer n by n − 1 multiplications from the left (exact for n ≤ 1). */
export function powi(x: number, n: number): number {
  let p = 1;
  for (let j = 0; j < n; j++) p *= x;
  return p;
}

/**
 * Portable elementary functions: the same float64 result, bit for bit, in every JavaScript runtime.
 *
 * ECMAScript leaves the precision of Math.exp, Math.log, Math.sin, Math.pow, … to the implementation
 * ("implementation-approximated"), and runtimes disagree in the last bits: Deno 2.9.6 and Node.js 20
 * return different values for most arguments of every one of them (docs/contracts.md §2 promises the same
 * sample for the same model, settings and seed in any runtime). The functions here use only +, −, ×,
 * ÷ and Math.sqrt, which IEEE 754 rounds correctly everywhere, plus exact operations (Math.abs,
 * Math.round, Math.trunc, comparisons, reading and writing the bits of a float64 with a DataView, and
 * BigInt integers for huge trigonometric arguments). Their results are therefore fixed by this source
 * alone; core/ uses them instead of Math.* (tests/lint/portable.test.ts enforces that).
 *
 * Accuracy: within 1 ulp of the exact result for every argument, and typically correctly rounded (the
 * measured errors are listed in tests/core/math.test.ts). The method is the classical one of fdlibm:
 * exact argument reduction by a power of two or a multiple of π/2 with constants split into pieces,
 * then a short series on a small interval. The reduced argument and the leading series terms are
 * carried as double-double numbers (an unevaluated sum hi + lo, Dekker/Knuth error-free
 * transformations), so the only sizeable error is the final rounding. Series coefficients are the
 * Taylor coefficients 1/n!, 1/(2j+1), …, computed by one IEEE division each.
 *
 * Semantics of special arguments (NaN, ±0, ±Infinity, out-of-domain) follow the ECMAScript Math.*
 * functions, including pow(±1, ±Infinity) = NaN.
 */

// ---------------------------------------------------------------------------------------------------
// Error-free transformations. Functions that produce a double-double return the high part and leave
// the low part in LO (a second return value without allocating); read LO right after the call.

/** The low part of the last double-double result. */
let LO = 0;

/** s = fl(a + b), LO = a + b − s exactly (Knuth). */
function twoSum(a: number, b: number): number {
  const s = a + b, bb = s - a;
  LO = (a - (s - bb)) + (b - bb);
  return s;
}

/** s = fl(a + b), LO = a + b − s exactly, provided |a| ≥ |b| or a = 0 (Dekker). */
function fastTwoSum(a: number, b: number): number {
  const s = a + b;
  LO = b - (s - a);
  return s;
}

/** 2²⁷ + 1: Veltkamp's splitter for 53-bit significands. */
const SPLITTER = 134217729;

/** p = fl(a·b), LO = a·b − p exactly (Dekker; |a|, |b| < 2⁹⁹⁶ and no underflow). */
function twoProd(a: number, b: number): number {
  const p = a * b;
  let t = SPLITTER * a;
  const ah = t - (t - a), al = a - ah;
  t = SPLITTER * b;
  const bh = t - (t - b), bl = b - bh;
  LO = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
  return p;
}

/** (ah + al)·(bh + bl) as a double-double (relative error about 2⁻¹⁰⁴). */
function ddMul(ah: number, al: number, bh: number, bl: number): number {
  const p = twoProd(ah, bh);
  return fastTwoSum(p, LO + (ah * bl + al * bh));
}

/** (ah + al) + (bh + bl) as a double-double. */
function ddAdd(ah: number, al: number, bh: number, bl: number): number {
  const s = twoSum(ah, bh);
  return twoSum(s, LO + al + bl);
}

/** (ah + al)/(bh + bl) as a double-double (one Newton correction of the double quotient). */
function ddDiv(ah: number, al: number, bh: number, bl: number): number {
  const q = ah / bh;
  const p = twoProd(q, bh);
  return fastTwoSum(q, ((ah - p) - LO + al - q * bl) / bh);
}

/** Σ c_j z^j by Horner's rule. */
function horner(c: readonly number[], z: number): number {
  let p = c[c.length - 1];
  for (let j = c.length - 2; j >= 0; j--) p = p * z + c[j];
  return p;
}

const VIEW = new DataView(new ArrayBuffer(8));
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
function pow2(k: number): number {
  return POW2[k + 1022];
}

const TWO_1023 = pow2(1023), TWO_M969 = pow2(-969), TWO_M1022 = pow2(-1022);

/** y·2^k, exact unless the result overflows or is subnormal (then rounded once). */
function scale(y: number, k: number): number {
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
let DK = 0;

/** Splits a positive finite x (subnormals included) as 2^DK·m with m ∈ [√½, √2); returns m. */
function decompose(x: number): number {
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
const INV_FACT: number[] = [];
for (let n = 0, f = 1; n <= 25; n++, f *= n) INV_FACT.push(1 / f);

/** (−1)^j/(2j + 1)! and (−1)^j/(2j)! from j = `from` to `to`. */
const alternating = (from: number, to: number, odd: boolean) =>
  Array.from(
    { length: to - from + 1 },
    (_, i) => ((from + i) % 2 ? -1 : 1) * INV_FACT[2 * (from + i) + (odd ? 1 : 0)],
  );

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

// ---------------------------------------------------------------------------------------------------
// sin, cos, tan

/** π/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 + O(2⁻¹⁵⁹); the first three have 33 significant bits. */
const PIO2_1 = 1.5707963267341256,
  PIO2_2 = 6.077100506303966e-11,
  PIO2_3 = 2.0222662487111665e-21,
  PIO2_4 = 8.4784276603689e-32;
const TWO_OVER_PI = 0.6366197723675814;
/** round(π/2 · 2¹²⁰⁰), for the exact reduction of huge arguments. */
const PIO2_BIG = BigInt(
  "0x1921fb54442d18469898cc51701b839a252049c1114cf98e804177d4c76273644a29410f31c6809b" +
    "bdf2a33679a748636605614dbe4be286e9fc26adadaa3848bc90b6aecc4bcfd8de89885d34c6fdad" +
    "617feb96de80d6fdbdc70d7f6b5133f4b5d3e4822f8963fcc9250cca3d9c8b67b8400f97142c77e0" +
    "b31b4906c38aba734d22c7f51fa499ebf06caba47b9475b2c38c5e6ac410b",
);
const PIO2_BIG_HALF = PIO2_BIG >> 1n;

/** π/4, π/2, π and 3π/4 as double-doubles (hi correctly rounded). */
const PI_4_HI = 0.7853981633974483, PI_4_LO = 3.061616997868383e-17;
const PI_2_HI = 1.5707963267948966, PI_2_LO = 6.123233995736766e-17;
const PI_HI = 3.141592653589793, PI_LO = 1.2246467991473532e-16;
const PI3_4_HI = 2.356194490192345;

/** The quadrant (n mod 4) of the last {@link reduce}. */
let RQ = 0;

/**
 * x = n π/2 + r with |r| ≤ π/4 (+ rounding of n): returns r as a double-double (high part; low in
 * LO) and n mod 4 in RQ. Cody–Waite with four pieces of π/2 below 1.6·10⁶ (n·PIO2_k exact for
 * |n| < 2²⁰), exact BigInt arithmetic with π/2 to 1200 bits above. The absolute error of r is below
 * 2⁻¹²⁰, far below the smallest |r| of any float64 argument (about 2⁻⁶¹).
 */
function reduce(x: number): number {
  const ax = Math.abs(x);
  if (ax <= PI_4_HI) {
    RQ = 0, LO = 0;
    return x;
  }
  if (ax < 1.6e6) {
    const n = Math.round(x * TWO_OVER_PI);
    const a = x - n * PIO2_1; // exact
    const b = twoSum(a, -(n * PIO2_2));
    let e = LO;
    const c = twoSum(b, -(n * PIO2_3));
    e += LO;
    const d = twoProd(n, PIO2_4);
    e = e - d - LO;
    RQ = n & 3;
    return twoSum(c, e);
  }
  return reduceBig(x);
}

/** {@link reduce} for |x| ≥ 1.6·10⁶: x = M·2^E exactly, n = round(x/(π/2)) and r in BigInt. */
function reduceBig(x: number): number {
  VIEW.setFloat64(0, Math.abs(x));
  const hi = VIEW.getUint32(0), lo = VIEW.getUint32(4);
  const E = (hi >>> 20) - 1075; // ≥ −32 here
  const M = (BigInt((hi & 0x000fffff) | 0x00100000) << 32n) | BigInt(lo);
  const X = M << BigInt(E + 1200);
  const n = (X + PIO2_BIG_HALF) / PIO2_BIG;
  let R = X - n * PIO2_BIG; // r·2¹²⁰⁰, |R| ≤ PIO2_BIG/2
  let q = Number(n & 3n);
  const negR = R < 0n;
  if (negR) R = -R;
  const shift = Math.max(0, R.toString(2).length - 106);
  const T = R >> BigInt(shift);
  const th = Number(T), tl = Number(T - BigInt(th));
  let rh = scale(th, shift - 1200), rl = scale(tl, shift - 1200);
  if (negR !== x < 0) rh = -rh, rl = -rl;
  if (x < 0) q = (4 - q) & 3;
  RQ = q, LO = rl;
  return rh;
}

/** (−1)^j/(2j + 1)! for j = 2 … 9: sin r = r − r³/6 + r⁵ Σ_j (−1)^j r^{2j−4}/(2j + 1)!. */
const SIN_TAIL = alternating(2, 9, true);
/** (−1)^j/(2j)! for j = 2 … 10: cos r = 1 − r²/2 + r⁴ Σ_j (−1)^j r^{2j−4}/(2j)!. */
const COS_TAIL = alternating(2, 10, false);

/** sin(r + rl) for |r| ≤ π/4 as a double-double; r − r³/6 is formed exactly. */
function sinKernel(r: number, rl: number): number {
  const zh = twoProd(r, r), zl = LO;
  const c = twoProd(zh, r), cl = LO + zl * r; // r³ = c + cl
  const q = c / 6, p = twoProd(q, 6);
  const ql = ((c - p) - LO + cl) / 6; // r³/6 = q + ql
  const t = c * zh * horner(SIN_TAIL, zh);
  const s = twoSum(r, -q);
  return twoSum(s, LO - ql + t + rl * (1 - 0.5 * zh));
}

/** cos(r + rl) for |r| ≤ π/4 as a double-double; 1 − r²/2 is formed exactly. */
function cosKernel(r: number, rl: number): number {
  const zh = twoProd(r, r), zl = LO;
  const w = twoSum(1, -0.5 * zh);
  const t = zh * zh * horner(COS_TAIL, zh);
  return twoSum(w, LO - 0.5 * zl + t - r * rl);
}

/** sin x (portable Math.sin). */
export function sin(x: number): number {
  const ax = Math.abs(x);
  if (ax < 1.4901161193847656e-8) return x; // |x| < 2⁻²⁶: x³/6 is below half an ulp
  if (!(ax < Infinity)) return NaN;
  const r = reduce(x), rl = LO;
  switch (RQ) {
    case 0:
      return sinKernel(r, rl);
    case 1:
      return cosKernel(r, rl);
    case 2:
      return -sinKernel(r, rl);
    default:
      return -cosKernel(r, rl);
  }
}

/** cos x (portable Math.cos). */
export function cos(x: number): number {
  const ax = Math.abs(x);
  if (ax < 7.450580596923828e-9) return 1; // |x| < 2⁻²⁷
  if (!(ax < Infinity)) return NaN;
  const r = reduce(x), rl = LO;
  switch (RQ) {
    case 0:
      return cosKernel(r, rl);
    case 1:
      return -sinKernel(r, rl);
    case 2:
      return -cosKernel(r, rl);
    default:
      return sinKernel(r, rl);
  }
}

/** tan x (portable Math.tan): the double-double quotient of the sine and cosine kernels. */
export function tan(x: number): number {
  const ax = Math.abs(x);
  if (ax < 7.450580596923828e-9) return x; // |x| < 2⁻²⁷
  if (!(ax < Infinity)) return NaN;
  const r = reduce(x), rl = LO, odd = RQ & 1;
  const sh = sinKernel(r, rl), sl = LO;
  const ch = cosKernel(r, rl), cl = LO;
  return odd ? -ddDiv(ch, cl, sh, sl) : ddDiv(sh, sl, ch, cl);
}

// ---------------------------------------------------------------------------------------------------
// atan, atan2, asin, acos

/** atan(j/8) as double-doubles [hi, lo, hi, lo, …], j = 0 … 8. */
// deno-fmt-ignore
const ATAN_J8 = [
  0, 0,
  0.12435499454676144, -3.1253241424539383e-18,
  0.24497866312686414, 1.0698755618734451e-17,
  0.35877067027057225, -2.4623815582638635e-17,
  0.4636476090008061, 2.2698777452961687e-17,
  0.5585993153435624, -5.4556305485916264e-18,
  0.6435011087932844, 1.5834785051444286e-17,
  0.7188299996216245, -2.1478388444456983e-17,
  PI_4_HI, PI_4_LO,
];
/** (−1)^j/(2j + 1) for j = 1 … 8: atan t = t + t z Σ_j (−1)^j z^{j−1}/(2j + 1), z = t². */
const ATAN_TAIL = Array.from({ length: 8 }, (_, i) => (i % 2 ? 1 : -1) / (2 * i + 3));

/**
 * atan(th + tl) for 0 ≤ t ≤ 1 as a double-double: with c = j/8 the nearest eighth,
 * atan t = atan c + atan τ, τ = (t − c)/(1 + t c) ∈ [−1/16, 1/16] (formed as a double-double).
 */
function atanUnit(th: number, tl: number): number {
  const j = Math.round(8 * th);
  if (j > 0) {
    const c = 0.125 * j;
    const nh = twoSum(th - c, tl), nl = LO; // th − c is exact
    const ph = twoProd(c, th), pl = LO + c * tl;
    const dh = twoSum(1, ph), dl = LO + pl;
    th = ddDiv(nh, nl, dh, dl), tl = LO;
  }
  const z = th * th;
  const k = tl / (1 + z) + th * z * horner(ATAN_TAIL, z);
  const s = twoSum(ATAN_J8[2 * j], th);
  return twoSum(s, LO + ATAN_J8[2 * j + 1] + k);
}

/** atan(n/d) ∈ [0, π/2] for double-doubles n, d ≥ 0 of moderate size, not both 0. */
function atanRatio(nh: number, nl: number, dh: number, dl: number): number {
  if (nh <= dh) return atanUnit(ddDiv(nh, nl, dh, dl), LO);
  const ah = atanUnit(ddDiv(dh, dl, nh, nl), LO), al = LO;
  const s = twoSum(PI_2_HI, -ah);
  return twoSum(s, LO + PI_2_LO - al);
}

/** π − (ah + al) rounded. */
function piMinus(ah: number, al: number): number {
  const s = twoSum(PI_HI, -ah);
  return s + (LO + PI_LO - al);
}

/** atan x (portable Math.atan). */
export function atan(x: number): number {
  const ax = Math.abs(x);
  if (!(ax >= 7.450580596923828e-9)) return x; // |x| < 2⁻²⁷, ±0, NaN
  let r: number;
  if (ax <= 1) r = atanUnit(ax, 0);
  else if (ax > 7.378697629483821e19) r = PI_2_HI; // |x| > 2⁶⁶: π/2 − 1/x rounds to π/2
  else r = atanRatio(ax, 0, 1, 0);
  return x < 0 ? -r : r;
}

/** The angle of the point (x, y) in (−π, π] (portable Math.atan2, with its signed zeros). */
export function atan2(y: number, x: number): number {
  if (x !== x || y !== y) return NaN;
  let ay = Math.abs(y), ax = Math.abs(x);
  const xNeg = x < 0 || (x === 0 && 1 / x < 0);
  let r: number;
  if (ay === 0) r = xNeg ? PI_HI : 0;
  else if (ax === 0) r = PI_2_HI;
  else if (ay === Infinity) r = ax === Infinity ? (xNeg ? PI3_4_HI : PI_4_HI) : PI_2_HI;
  else if (ax === Infinity) r = xNeg ? PI_HI : 0;
  else {
    const q = ay / ax;
    let ah: number, al: number;
    if (q > 1.152921504606847e18) ah = PI_2_HI, al = PI_2_LO - ax / ay; // > 2⁶⁰
    else if (q < 8.673617379884035e-19) ah = q, al = 0; // < 2⁻⁶⁰: atan q = q (1 − q²/3)
    else {
      // Bring both near 1 (exactly, by a power of two) so that the double-double steps cannot overflow.
      if (ax > 8.452712498170644e270) ay *= 2.409919865102884e-181, ax *= 2.409919865102884e-181;
      else if (ax < 1.1830521861667747e-271) ay *= 4.149515568880993e180, ax *= 4.149515568880993e180;
      ah = atanRatio(ay, 0, ax, 0), al = LO;
    }
    r = xNeg ? piMinus(ah, al) : ah + al;
  }
  return y < 0 || (y === 0 && 1 / y < 0) ? -r : r;
}

/** √(1 − x²) = √((1 − a)(1 + a)) for a = |x| ∈ [0, 1) as a double-double. */
function sqrtOneMinusSquare(a: number): number {
  const ah = twoSum(1, -a), al = LO;
  const bh = twoSum(1, a), bl = LO;
  const ph = ddMul(ah, al, bh, bl), pl = LO;
  const sh = Math.sqrt(ph), s2 = twoProd(sh, sh);
  LO = ((ph - s2) - LO + pl) / (2 * sh);
  return sh;
}

/** arccos x ∈ [0, π] (portable Math.acos): atan(√(1 − x²)/|x|), reflected for x < 0. */
export function acos(x: number): number {
  const ax = Math.abs(x);
  if (!(ax <= 1)) return NaN;
  if (ax < 6.938893903907228e-18) return PI_2_HI; // |x| < 2⁻⁵⁷: π/2 − x rounds to π/2
  if (x === 1) return 0;
  if (x === -1) return PI_HI;
  const sh = sqrtOneMinusSquare(ax), sl = LO;
  const ah = atanRatio(sh, sl, ax, 0), al = LO;
  return x < 0 ? piMinus(ah, al) : ah + al;
}

/** arcsin x ∈ [−π/2, π/2] (portable Math.asin): atan(|x|/√(1 − x²)) with the sign of x. */
export function asin(x: number): number {
  const ax = Math.abs(x);
  if (!(ax <= 1)) return NaN;
  if (ax < 1.4901161193847656e-8) return x; // |x| < 2⁻²⁶: x³/6 is below half an ulp
  let r: number;
  if (ax === 1) r = PI_2_HI;
  else {
    const sh = sqrtOneMinusSquare(ax), sl = LO;
    r = atanRatio(ax, 0, sh, sl);
  }
  return x < 0 ? -r : r;
}

// ---------------------------------------------------------------------------------------------------
// The Gaussian transform of core/rng.ts. These two fix the bits of every noise sample (tests pin
// them): do not change their arithmetic, even to make them more accurate.

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

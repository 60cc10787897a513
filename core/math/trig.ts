/**
 * Portable trigonometric functions (core/math.ts): sin, cos, tan, atan, atan2, asin and acos. Exact
 * argument reduction by a multiple of π/2 (constants split into pieces; BigInt for huge arguments), then
 * Taylor series on [−π/4, π/4] with the leading terms in double-double arithmetic (core/math/dd.ts).
 */
import { ddDiv, ddMul, horner, INV_FACT, LO, scale, setLo, twoProd, twoSum } from "./dd.ts";

/** Reads and writes the bits of a float64 (big-endian), for the reduction of huge arguments. */
const VIEW = new DataView(new ArrayBuffer(8));

// ---------------------------------------------------------------------------------------------------
// sin, cos, tan

/** (−1)^j/(2j + 1)! and (−1)^j/(2j)! from j = `from` to `to`. */
const alternating = (from: number, to: number, odd: boolean) =>
  Array.from(
    { length: to - from + 1 },
    (_, i) => ((from + i) % 2 ? -1 : 1) * INV_FACT[2 * (from + i) + (odd ? 1 : 0)],
  );

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
    RQ = 0, setLo(0);
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
  RQ = q, setLo(rl);
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
  setLo(((ph - s2) - LO + pl) / (2 * sh));
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

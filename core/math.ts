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
 *
 * The functions live in core/math/: the double-double arithmetic they share (`dd.ts`), exp, expm1, log,
 * log1p and pow (`exp_log.ts`), the trigonometric functions (`trig.ts`) and the Gaussian transform of
 * core/rng.ts (`gaussian.ts`). This module is their entry: import from here.
 */
export { exp, expm1, log, log1p, pow, powi } from "./math/exp_log.ts";
export { acos, asin, atan, atan2, cos, sin, tan } from "./math/trig.ts";
export { cos2PiOfLast, portableLog, portableSin2Pi, portableSinCos2Pi } from "./math/gaussian.ts";

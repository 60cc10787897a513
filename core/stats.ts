/**
 * Summary statistics shared by the benchmark programs: medians and the quantile rules their reports
 * were written with (each rule is kept as its report defines it, so numbers stay comparable).
 */

/** The median; the mean of the two middle values for an even count. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The q-quantile, linearly interpolated between the two nearest order statistics. */
export function quantileInterpolated(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * q, lo = Math.floor(i), hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

/** The q-quantile as the order statistic nearest to index q·(n − 1). */
export function quantileNearest(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))];
}

/** The q-quantile as the order statistic at index ⌊q·n⌋ (clamped to the largest). */
export function quantileFloor(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** training/metrics.ts: the Jacobi eigensolver and the Fréchet distance against closed forms. */
import { assert, assertClose, describe, it } from "../testing.ts";
import { frechetDistance, meanCov, sqrtPsd, symmetricEigen } from "../../training/metrics.ts";
import { rngStream } from "../../core/rng.ts";

describe("metrics", () => {
  it("symmetric eigen: A v = λ v, and sqrtPsd(A)² = A", () => {
    const d = 12, r = rngStream(3, 0), b = Float64Array.from({ length: d * d }, () => r.normal());
    const a = new Float64Array(d * d); // A = B Bᵀ (PSD)
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) a[i * d + j] += b[i * d + k] * b[j * d + k];
    }
    const { values, vectors } = symmetricEigen(a, d);
    for (let k = 0; k < d; k++) {
      for (let i = 0; i < d; i++) {
        let av = 0;
        for (let j = 0; j < d; j++) av += a[i * d + j] * vectors[j * d + k];
        assertClose(av, values[k] * vectors[i * d + k], 1e-8 * (1 + Math.abs(values[k])), "A v − λ v");
      }
    }
    // the vectors are orthonormal (so none is zero) and the values sum to the trace
    for (let k = 0; k < d; k++) {
      for (let l = 0; l < d; l++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += vectors[i * d + k] * vectors[i * d + l];
        assertClose(dot, k === l ? 1 : 0, 1e-8, "VᵀV − I");
      }
    }
    let trace = 0;
    for (let i = 0; i < d; i++) trace += a[i * d + i];
    assertClose(values.reduce((s, v) => s + v, 0), trace, 1e-8 * trace, "Σλ − trace A");
    const s = sqrtPsd(a, d);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        let ss = 0;
        for (let k = 0; k < d; k++) ss += s[i * d + k] * s[k * d + j];
        assertClose(ss, a[i * d + j], 1e-8 * (1 + Math.abs(a[i * d + j])), "S² − A");
      }
    }
  });

  it("Fréchet distance: 0 for identical Gaussians; |Δμ|² + Σ(σ₁ − σ₂)² for diagonal ones", () => {
    const d = 5;
    const diag = (v: number[]) => {
      const c = new Float64Array(d * d);
      v.forEach((x, i) => (c[i * d + i] = x));
      return c;
    };
    const a = { mean: Float64Array.of(0, 1, 2, 3, 4), cov: diag([1, 2, 3, 4, 5]) };
    const b = { mean: Float64Array.of(1, 1, 2, 3, 2), cov: diag([4, 2, 1, 9, 5]) };
    assertClose(frechetDistance(a, a, d), 0, 1e-9, "FD(a, a)");
    const expected = 1 + 4 +
      [1, 2, 3, 4, 5].reduce((s, v, i) => s + (Math.sqrt(v) - Math.sqrt([4, 2, 1, 9, 5][i])) ** 2, 0);
    assertClose(frechetDistance(a, b, d), expected, 1e-9, "FD(a, b)");
    // meanCov of samples
    const r = rngStream(1, 1), n = 4000, x = new Float64Array(n * 2);
    for (let i = 0; i < n; i++) [x[2 * i], x[2 * i + 1]] = [1 + 2 * r.normal(), -1 + 0.5 * r.normal()];
    const m = meanCov(x, n, 2);
    assert(Math.abs(m.mean[0] - 1) < 0.1 && Math.abs(m.cov[0] - 4) < 0.4 && Math.abs(m.cov[3] - 0.25) < 0.03);
  });
});

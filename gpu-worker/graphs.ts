/**
 * ONNX graphs of an analytic Gaussian mixture (docs/method.md §7) under the linear VP schedule, built with
 * onnx/proto.ts. Inputs and outputs follow docs/contracts.md §4 (x float32 [B, …shape], t float32 [B],
 * class int64 [B] when conditional); everything in between is float64, so the outputs equal the
 * float64 reference (core/gmm.ts) to float32 precision.
 *
 * Per sample, with B = β_min t + ½ β_d t², γ = sqrt(e^B − 1), x̄ = x e^{B/2}, v_k = s_k² + γ²:
 *
 *     logits_k = log w_k − (d/2) log v_k − (|x̄|² − 2 x̄·μ_k + |μ_k|²)/(2 v_k)  (+ class mask)
 *     r = softmax(logits),  ρ_k = r_k/v_k,  S₀ = Σ_k ρ_k
 *     ε = γ (S₀ x̄ − ρ·M)                                                     (M = the K × d means)
 *
 * The derivative graphs share one closed form: for a direction u in x̄ and a change dγ,
 *
 *     p_k = (x̄·u − μ_k·u)/v_k,  b_k = −d γ/v_k + γ |x̄ − μ_k|²/v_k²   (d = dimension)
 *     q_k = ρ_k [dγ (1 + γ (b_k − b̄) − 2γ²/v_k) − γ (p_k − p̄)]
 *     (∇_x̄ ε)·u + ∂_γ ε dγ = (Σ_k q_k) x̄ − q·M + γ S₀ u
 *
 * - `head`: u = ε, dγ = 1 — the exact total derivative D = dε/dγ along the probability-flow ODE
 *   (for analytic models the "head" is exact, not distilled); outputs `eps` and `deriv`.
 * - `jvp`: the tangent (dx, dt) in the model's (x, t) maps to dγ = dt (1+γ²) β(t)/(2γ) and
 *   dx̄ = (dx + x β(t) dt/2) e^{B/2}; outputs `eps` and `jvp`.
 *
 * Batch invariance: a sample's outputs are bit-identical whatever the batch size and its position in
 * the batch (docs/contracts.md §2). ONNX Runtime's float64 CPU kernels do not give that by themselves:
 * - `Softmax` (float64) sums its rows with one matrix–vector product over the whole [B, K] batch,
 *   whose accumulation order for a row depends on B and on the row's position;
 * - `Exp` and `Log` (float64) evaluate full SIMD packets with a vectorised polynomial and the elements
 *   left over at the end of the tensor with the C library, and the two differ in the last bit; the
 *   single element of a [1, 1] tensor takes the library path, the same element inside [B, 1] the
 *   packet path.
 * So the graphs use softmax written out (ReduceMax, Sub, Exp, ReduceSum: row by row), pad the
 * mixture to a multiple of {@link LANES} components with components of weight zero (which contribute
 * exact zeros), and evaluate per-sample scalars such as e^B on {@link LANES} identical lanes: every
 * Exp and Log then works on rows whose length is a multiple of the widest SIMD packet, so no element
 * is ever left over. MatMul (MLAS), ReduceSum, ReduceMax and the arithmetic ops compute every row on
 * its own already.
 */
import type { GaussianMixture } from "../core/gmm.ts";
import { DataType, GraphBuilder } from "../onnx/proto.ts";
import { JVP_INPUTS } from "../onnx/tangent_inputs.ts";

/** Which graph of a mixture to build. */
export type MixtureGraphKind = "eps" | "head" | "jvp";

/**
 * Input names of the JVP graph's tangent (x-space direction and time direction): the names onnx/jvp.ts
 * gives the tangents of inputs `x` and `t`, so analytic and transformed neural graphs are fed alike.
 */
export { JVP_INPUTS };

export interface MixtureGraphOptions {
  kind: MixtureGraphKind;
  /** Sample shape, e.g. [1, 28, 28] or [2]; its size must equal the mixture's dimension. */
  shape: readonly number[];
  name?: string;
}

/** A large negative logit that removes a component from the softmax without producing NaN. */
const MASKED = -1e300;

/**
 * Row lengths of transcendental ops are multiples of this: 8 float64 numbers fill the widest SIMD
 * packet (AVX-512), so no element of any batch falls into a kernel's scalar remainder.
 */
const LANES = 8;

/** Builds one graph of the mixture and returns the encoded model. */
export function mixtureGraph(mix: GaussianMixture, opts: MixtureGraphOptions): Uint8Array {
  const { kind, shape } = opts;
  const d = mix.dim, K = Math.ceil(mix.count / LANES) * LANES; // padded with components of weight 0
  if (shape.reduce((a, b) => a * b, 1) !== d) {
    throw new Error(`shape [${shape.join(", ")}] does not have ${d} numbers`);
  }
  const spec = mix.schedule.spec;
  if (spec.type !== "vp-linear") throw new Error(`analytic graphs support the vp-linear schedule only`);
  const betaMin = spec.beta_min ?? 0.1, betaD = (spec.beta_max ?? 20) - betaMin;

  const g = new GraphBuilder(opts.name ?? `gmm-${kind}`, { producerName: "genie-gpu-worker" });
  const dims = ["B", ...shape];
  const x = g.input("x", "float32", dims);
  const t = g.input("t", "float32", ["B"]);
  const cls = mix.labels ? g.input("class", "int64", ["B"]) : undefined;
  const tangent = kind === "jvp"
    ? { x: g.input(JVP_INPUTS.x, "float32", dims), t: g.input(JVP_INPUTS.t, "float32", ["B"]) }
    : undefined;

  const num = (v: number) => g.constant(new Float64Array([v]), [], "float64", "c");
  const op = (type: string, inputs: string[], attrs = {}) => g.op(type, inputs, attrs);
  const add = (a: string, b: string) => op("Add", [a, b]);
  const sub = (a: string, b: string) => op("Sub", [a, b]);
  const mul = (a: string, b: string) => op("Mul", [a, b]);
  const div = (a: string, b: string) => op("Div", [a, b]);
  const axis1 = g.constant(BigInt64Array.of(1n), [1], "int64", "axis1");
  const rowSum = (a: string) => op("ReduceSum", [a, axis1], { keepdims: 1 });
  const toDouble = (a: string) => op("Cast", [a], { to: DataType.DOUBLE });
  const flat = (a: string) => toDouble(op("Flatten", [a], { axis: 1 }));
  const column = (a: string) => op("Unsqueeze", [toDouble(a), axis1]);
  const lanes = g.constant(BigInt64Array.of(1n, BigInt(LANES)), [2], "int64", "lanes");
  const first = [0n, 1n, 1n].map((v, i) => g.constant(BigInt64Array.of(v), [1], "int64", `first${i}`));
  /** A transcendental op on a column [B, 1], evaluated on LANES copies of it (see the module comment). */
  const columnOp = (type: string, a: string) =>
    op("Slice", [op(type, [op("Expand", [a, lanes])]), first[0], first[1], first[2]]);

  // Schedule: B(t), γ, e^{B/2}, all [B, 1].
  const tc = column(t);
  const B = add(mul(num(betaMin), tc), mul(num(0.5 * betaD), mul(tc, tc)));
  const expB = columnOp("Exp", B);
  const gamma2 = sub(expB, num(1));
  const gamma = op("Sqrt", [gamma2]);
  const scale = columnOp("Exp", mul(num(0.5), B));
  const xd = flat(x);
  const xbar = mul(xd, scale);

  // Mixture constants. Means stay float32 on disk when they are float32 numbers (MNIST pixels).
  const f32 = mix.means.every((m) => Math.fround(m) === m);
  const meansData = f32 ? new Float32Array(K * d) : new Float64Array(K * d);
  meansData.set(mix.means);
  const mu = f32
    ? toDouble(g.initializer("means", meansData, [K, d]))
    : g.initializer("means", meansData, [K, d]);
  const muT = op("Transpose", [mu], { perm: [1, 0] });
  const norms = new Float64Array(K),
    logw = new Float64Array(K).fill(MASKED),
    s2 = new Float64Array(K).fill(1);
  for (let k = 0; k < mix.count; k++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += mix.means[k * d + i] * mix.means[k * d + i];
    norms[k] = s;
    logw[k] = mix.weights[k] > 0 ? Math.log(mix.weights[k]) : MASKED;
    s2[k] = mix.stds[k] * mix.stds[k];
  }
  const v = add(g.initializer("std2", s2, [1, K]), gamma2); // [B, K]

  // Responsibilities.
  const xx = rowSum(mul(xbar, xbar));
  const dist2 = add(
    sub(xx, mul(num(2), op("MatMul", [xbar, muT]))),
    g.initializer("mean_norm2", norms, [1, K]),
  );
  let logits = sub(
    sub(g.initializer("log_weights", logw, [1, K]), mul(num(0.5 * d), op("Log", [v]))),
    div(dist2, mul(num(2), v)),
  );
  if (cls && mix.labels && mix.classes !== undefined) {
    const C = mix.classes;
    const mask = new Float64Array((C + 1) * K);
    for (let c = 0; c < C; c++) {
      for (let k = 0; k < mix.count; k++) if (mix.labels[k] !== c) mask[c * K + k] = MASKED;
    }
    logits = add(logits, op("Gather", [g.initializer("class_mask", mask, [C + 1, K]), cls], { axis: 0 }));
  }
  // Softmax written out, row by row (ORT's float64 Softmax couples the rows of a batch).
  const unnormalised = op("Exp", [sub(logits, op("ReduceMax", [logits], { axes: [1], keepdims: 1 }))]);
  const r = div(unnormalised, rowSum(unnormalised));
  const rho = div(r, v);
  const S0 = rowSum(rho);
  const eps = mul(gamma, sub(mul(S0, xbar), op("MatMul", [rho, mu])));

  const xShape = op("Shape", [x]);
  const emit = (value: string, name: string) => {
    g.node("Reshape", [op("Cast", [value], { to: DataType.FLOAT }), xShape], [name]);
    g.output(name, "float32", dims);
  };
  emit(eps, "eps");
  if (kind === "eps") return g.bytes();

  /** (∇_x̄ ε)·u + (∂_γ ε) dγ; `dgamma` undefined means dγ = 1. */
  const derivative = (u: string, dgamma?: string): string => {
    const p = div(sub(rowSum(mul(xbar, u)), op("MatMul", [u, muT])), v);
    const pBar = rowSum(mul(r, p));
    const b = add(mul(num(-d), div(gamma, v)), div(mul(gamma, dist2), mul(v, v)));
    const bBar = rowSum(mul(r, b));
    let along = sub(add(num(1), mul(gamma, sub(b, bBar))), div(mul(num(2), gamma2), v));
    if (dgamma) along = mul(dgamma, along);
    const q = mul(rho, sub(along, mul(gamma, sub(p, pBar))));
    return add(sub(mul(rowSum(q), xbar), op("MatMul", [q, mu])), mul(mul(gamma, S0), u));
  };

  if (kind === "head") {
    emit(derivative(eps), "deriv");
    return g.bytes();
  }
  // JVP along (dx, dt): β(t) = β_min + β_d t; dγ = dt (1+γ²) β/(2γ); dx̄ = (dx + x β dt/2) e^{B/2}.
  const beta = add(num(betaMin), mul(num(betaD), tc));
  const dt = column(tangent!.t);
  const dgamma = div(mul(mul(dt, expB), beta), mul(num(2), gamma));
  const dxbar = mul(add(flat(tangent!.x), mul(xd, mul(mul(num(0.5), beta), dt))), scale);
  emit(derivative(dxbar, dgamma), "jvp");
  return g.bytes();
}

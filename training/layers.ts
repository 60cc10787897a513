/**
 * The layers the trainable graphs share (training/unet.ts, training/head.ts): seeded parameters, 3×3/1×1
 * convolutions, dense layers, SiLU and GroupNorm, appended to one {@link GraphBuilder}.
 *
 * Parameters are drawn from one seeded stream in the order the layers are built, so a graph's initial
 * weights depend only on its seed and its structure. A {@link ParamSource} can supply other values (the
 * trained ones) instead.
 */
import { float, type GraphBuilder } from "../onnx/proto.ts";
import { uniform } from "./init.ts";

/** Supplies a parameter's values: initial (from the seed) or trained. */
export type ParamSource = (name: string, dims: number[], init: () => Float32Array) => Float32Array;

/**
 * How GroupNorm is expressed: "decomposed" (Reshape/ReduceMean/…, which onnx/grad.ts differentiates) or
 * "instance" (one InstanceNormalization over the groups: fewer kernels, the same values to float32
 * rounding; for served graphs).
 */
export type NormForm = "decomposed" | "instance";

export class Layers {
  /** Names of the parameters created so far, in order. */
  readonly params: string[] = [];
  /** Number of parameter values created so far. */
  count = 0;
  readonly #random: () => number;
  /** InstanceNormalization's unit scale and zero bias, made once. */
  #unit: [string, string] | undefined;

  constructor(
    readonly g: GraphBuilder,
    seed: number,
    /** GroupNorm groups. */
    readonly groups: number,
    readonly source: ParamSource = (_n, _d, init) => init(),
  ) {
    this.#random = uniform(seed);
  }

  /** The next number of the seeded stream, uniform in [0, 1). */
  random(): number {
    return this.#random();
  }

  /** A parameter `name` of shape `dims`, element i initially `init(i)`; returns its name. */
  param(name: string, dims: number[], init: (i: number) => number): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = this.source(name, dims, () => Float32Array.from({ length: n }, (_, i) => init(i)));
    if (data.length !== n) throw new Error(`parameter ${name}: ${data.length} values for ${n}`);
    this.params.push(this.g.initializer(name, data, dims));
    this.count += n;
    return name;
  }

  /** He-uniform initial values: gain · U(−1, 1) · sqrt(3/fanIn). */
  heUniform(fanIn: number, gain = 1): () => number {
    return () => gain * (2 * this.#random() - 1) * Math.sqrt(3 / fanIn);
  }

  i64(v: number[]): string {
    return this.g.constant(v, [v.length], "int64");
  }

  f32(v: number): string {
    return this.g.constant(v, [], "float32");
  }

  silu(h: string): string {
    return this.g.op("Mul", [h, this.g.op("Sigmoid", [h])]);
  }

  /** A k×k convolution with bias, "same" padding. */
  conv(h: string, cin: number, cout: number, name: string, { k = 3, stride = 1, gain = 1 } = {}): string {
    return this.g.op("Conv", [
      h,
      this.param(`${name}.w`, [cout, cin, k, k], this.heUniform(cin * k * k, gain)),
      this.param(`${name}.b`, [cout], () => 0),
    ], { pads: new Array(4).fill((k - 1) >> 1), strides: [stride, stride] });
  }

  /** A dense layer v·W + b. */
  dense(v: string, din: number, dout: number, name: string, gain = 1): string {
    return this.g.op("Gemm", [
      v,
      this.param(`${name}.w`, [din, dout], this.heUniform(din, gain)),
      this.param(`${name}.b`, [dout], () => 0),
    ]);
  }

  /** GroupNorm over `groups` groups with a per-channel scale and bias. */
  groupNorm(h: string, c: number, name: string, form: NormForm = "decomposed"): string {
    const g = this.g, G = this.groups;
    // a Reshape to [B, G, −1] would succeed anyway, with groups straddling channels
    if (c % G !== 0) throw new Error(`${name}: ${c} channels do not split into ${G} groups`);
    const grouped = g.op("Reshape", [h, this.i64([0, G, -1])]);
    const back = g.op("Reshape", [this.#standardize(grouped, form), g.op("Shape", [h])]);
    const scale = this.param(`${name}.scale`, [c, 1, 1], () => 1);
    return g.op("Add", [g.op("Mul", [back, scale]), this.param(`${name}.bias`, [c, 1, 1], () => 0)]);
  }

  /** [B, G, N] standardised over N. */
  #standardize(grouped: string, form: NormForm): string {
    const g = this.g, G = this.groups;
    if (form === "instance") {
      this.#unit ??= [
        g.constant(new Float32Array(G).fill(1), [G], "float32"),
        g.constant(new Float32Array(G), [G], "float32"),
      ];
      return g.op("InstanceNormalization", [grouped, ...this.#unit], { epsilon: float(1e-5) });
    }
    const xc = g.op("Sub", [grouped, g.op("ReduceMean", [grouped], { axes: [2] })]);
    const variance = g.op("ReduceMean", [g.op("Mul", [xc, xc])], { axes: [2] });
    return g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [variance, this.f32(1e-5)])])]);
  }
}

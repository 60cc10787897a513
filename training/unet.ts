/**
 * A small trainable ε-prediction U-Net as an ONNX graph, built only from operators `gradModel` can
 * differentiate: convolutions, GroupNorm in decomposed form (Reshape/ReduceMean/Sub/Mul/Sqrt/Div), SiLU,
 * a sinusoidal time embedding with an MLP, optional class embedding (Gather), residual blocks with a
 * time-embedding bias, self-attention at the lowest resolution, strided-conv down-sampling and nearest
 * Resize up-sampling with skip connections.
 *
 *     inputs  x [B, C, S, S] float32, t [B] float32 (in [0, 1]), class [B] int64 (when classes > 0)
 *     output  eps [B, C, S, S]
 *
 * The last decoder feature map, after the output norm and activation (the output conv's input), is the value
 * "features" and the time (+class) embedding is "temb": the two tensors the GENIE derivative head consumes.
 * Parameters are initializers named `<block>.<layer>.<w|b|scale|bias>`; `params` lists them, and every
 * other initializer is a constant. The output conv starts at zero (unless `zeroOutput` is false), so the
 * untrained model predicts ε = 0.
 */
import { GraphBuilder, type ModelProto } from "../onnx/proto.ts";
import { Layers } from "./layers.ts";

export interface UNetOptions {
  channels: number;
  size: number;
  /** Base width (channels at full resolution). */
  width: number;
  /** Width multiplier per resolution level; one down-sampling between levels. */
  mults: readonly number[];
  /** GroupNorm groups. */
  groups: number;
  /** Time-embedding width. */
  embed: number;
  /** Number of classes (0: unconditional). */
  classes: number;
  /** Self-attention at the lowest resolution. */
  attention: boolean;
  /** Start the output conv at zero (ε = 0, the usual choice for training); default true. */
  zeroOutput: boolean;
  seed: number;
  /**
   * Wrap the network F in EDM-style preconditioning on a VP-linear schedule (see {@link VpPrecondition}):
   * the graph's input x is x_t and its output eps is ε̂ = a(t)·x_t − b(t)·F(c_in(t)·x_t, t). Without it
   * (the default) the graph is F itself, with x and eps as F's input and output: the form trained.
   */
  precondition?: VpPrecondition;
}

/**
 * EDM preconditioning (Karras et al. 2022) written for a variance-preserving schedule with
 * α² + σ² = 1 and log α(t) = −¼(β_max − β_min) t² − ½ β_min t. With D = σ² + σ_d² α²:
 *
 *     c_in = 1/√D,    ε̂ = a x_t − b F,    a = σ/D,    b = σ_d α/√D,
 *
 * which is EDM's D̂ = c_skip x + c_out F in the variance-exploding coordinates x/α, σ/α, rewritten for ε.
 * The network F is trained with unit weight against F* = (σ x₀ − σ_d² α ε)/(σ_d √D) (training/precondition.ts):
 * F* tends to x₀/σ_d at high noise and to −ε at low noise, so its scale is about 1 at every t, and at high
 * noise ε̂ tends to x_t, which is right whatever F says.
 */
export interface VpPrecondition {
  sigmaData: number;
  betaMin: number;
  betaMax: number;
}

export const UNET_DEFAULTS: UNetOptions = {
  channels: 1,
  size: 28,
  width: 32,
  mults: [1, 2, 2],
  groups: 8,
  embed: 128,
  classes: 0,
  attention: true,
  zeroOutput: true,
  seed: 1,
};

export interface UNet {
  model: ModelProto;
  /** The trainable initializers. */
  params: string[];
  /** Number of trainable values. */
  count: number;
}

/** Builds the U-Net (options default to a 28×28 one-channel model of about 0.6 M parameters). */
export function buildTrainableUNet(options: Partial<UNetOptions> = {}): UNet {
  const o = { ...UNET_DEFAULTS, ...options };
  const { channels: C, size: S, width: nf, groups: G, embed: E } = o;
  if (S % 2 ** (o.mults.length - 1)) throw new Error(`size ${S} does not halve ${o.mults.length - 1} times`);
  const g = new GraphBuilder("unet", { opset: 17 });
  const L = new Layers(g, o.seed, G);

  const xt = g.input("x", "float32", ["B", C, S, S]);
  const t = g.input("t", "float32", ["B"]);
  const pre = o.precondition ? preconditionCoefficients(g, L, t, o.precondition) : undefined;
  const x = pre ? g.op("Mul", [xt, pre.cIn]) : xt;

  // time embedding: [sin(1000 t f_k), cos(1000 t f_k)], f_k = 10000^(−k/half), then an MLP
  const half = E / 4;
  const freqs = g.constant(
    Array.from({ length: half }, (_, k) => 1000 * Math.exp((-Math.log(10000) * k) / half)),
    [1, half],
    "float32",
  );
  const phase = g.op("Mul", [g.op("Unsqueeze", [t, L.i64([1])]), freqs]);
  const sinusoid = g.op("Concat", [g.op("Sin", [phase]), g.op("Cos", [phase])], { axis: 1 });
  let temb = L.dense(L.silu(L.dense(sinusoid, 2 * half, E, "temb.0")), E, E, "temb.1");
  if (o.classes > 0) {
    const cls = g.input("class", "int64", ["B"]);
    const table = L.param("class_emb.table", [o.classes, E], () => 0.5 * (2 * L.random() - 1));
    temb = g.op("Add", [temb, g.op("Gather", [table, cls], { axis: 0 })]);
  }
  const [tembOut] = g.node("Identity", [temb], ["temb"]);
  const tembAct = L.silu(tembOut);

  const resBlock = (h: string, cin: number, cout: number, name: string) => {
    let a = L.conv(L.silu(L.groupNorm(h, cin, `${name}.norm0`)), cin, cout, `${name}.conv0`);
    a = g.op("Add", [a, g.op("Unsqueeze", [L.dense(tembAct, E, cout, `${name}.temb`), L.i64([2, 3])])]);
    a = L.conv(L.silu(L.groupNorm(a, cout, `${name}.norm1`)), cout, cout, `${name}.conv1`, { gain: 0.2 });
    const skip = cin === cout ? h : L.conv(h, cin, cout, `${name}.skip`, { k: 1 });
    return g.op("Mul", [g.op("Add", [skip, a]), L.f32(Math.SQRT1_2)]);
  };
  const attention = (h: string, c: number, name: string) => {
    const n = L.groupNorm(h, c, `${name}.norm`);
    const [q, k, v] = ["q", "k", "v"].map((p) =>
      g.op("Reshape", [L.conv(n, c, c, `${name}.${p}`, { k: 1 }), L.i64([0, 0, -1])])
    );
    const scores = g.op("Mul", [
      g.op("MatMul", [g.op("Transpose", [q], { perm: [0, 2, 1] }), k]),
      L.f32(1 / Math.sqrt(c)),
    ]);
    const attn = g.op("Softmax", [scores], { axis: -1 });
    const out = g.op("MatMul", [v, g.op("Transpose", [attn], { perm: [0, 2, 1] })]);
    const proj = L.conv(g.op("Reshape", [out, g.op("Shape", [h])]), c, c, `${name}.proj`, {
      k: 1,
      gain: 0.2,
    });
    return g.op("Mul", [g.op("Add", [h, proj]), L.f32(Math.SQRT1_2)]);
  };

  // encoder
  let h = L.conv(x, C, nf, "in");
  let ch = nf;
  const skips: { value: string; channels: number }[] = [];
  o.mults.forEach((m, level) => {
    h = resBlock(h, ch, nf * m, `down${level}.res`);
    ch = nf * m;
    skips.push({ value: h, channels: ch });
    if (level < o.mults.length - 1) h = L.conv(h, ch, ch, `down${level}.down`, { stride: 2 });
  });
  // middle
  h = resBlock(h, ch, ch, "mid.res0");
  if (o.attention) h = attention(h, ch, "mid.attn");
  h = resBlock(h, ch, ch, "mid.res1");
  // decoder
  for (let level = o.mults.length - 1; level >= 0; level--) {
    const skip = skips[level];
    if (level < o.mults.length - 1) {
      h = g.op("Resize", [h, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" });
    }
    h = resBlock(
      g.op("Concat", [h, skip.value], { axis: 1 }),
      ch + skip.channels,
      nf * o.mults[level],
      `up${level}.res`,
    );
    ch = nf * o.mults[level];
  }
  // "features": the last feature map, normalised and activated, read by the output conv and the GENIE head
  const [features] = g.node("Identity", [L.silu(L.groupNorm(h, ch, "out.norm"))], ["features"]);
  const out = L.conv(features, ch, C, "out", {
    gain: o.zeroOutput ? 0 : 1,
  });
  const eps = pre ? g.op("Sub", [g.op("Mul", [xt, pre.a]), g.op("Mul", [out, pre.b])]) : out;
  g.node("Identity", [eps], ["eps"]);
  g.output("eps", "float32", ["B", C, S, S]);
  return { model: g.model(), params: L.params, count: L.count };
}

/** The per-sample coefficients of {@link VpPrecondition} as [B, 1, 1, 1] tensors of the graph. */
function preconditionCoefficients(
  g: GraphBuilder,
  L: Layers,
  t: string,
  p: VpPrecondition,
): { cIn: string; a: string; b: string } {
  const mul = (u: string, v: string) => g.op("Mul", [u, v]);
  const add = (u: string, v: string) => g.op("Add", [u, v]);
  // 2 log α = −½ β_d t² − β_min t
  const twoLogAlpha = mul(t, add(mul(t, L.f32(-0.5 * (p.betaMax - p.betaMin))), L.f32(-p.betaMin)));
  const alpha2 = g.op("Exp", [twoLogAlpha]);
  const sigma2 = g.op("Sub", [L.f32(1), alpha2]);
  const d = add(sigma2, mul(alpha2, L.f32(p.sigmaData * p.sigmaData)));
  const rootD = g.op("Sqrt", [d]);
  const perSample = (v: string) => g.op("Unsqueeze", [v, L.i64([1, 2, 3])]);
  return {
    cIn: perSample(g.op("Reciprocal", [rootD])),
    a: perSample(g.op("Div", [g.op("Sqrt", [sigma2]), d])),
    b: perSample(g.op("Div", [mul(g.op("Sqrt", [alpha2]), L.f32(p.sigmaData)), rootD])),
  };
}

/**
 * The GENIE derivative head (docs/method.md §5) as ONNX graphs.
 *
 * Inputs: x_t, the network's prediction ε̂ (detached), the score network's last feature map ("features":
 * the normalised, activated map its output convolution reads) and its time (+class) embedding ("temb"),
 * γ_t, and optionally the derived images x̂₀ and dx/dγ and coarse decoder maps. With the time embedding
 * modulating each hidden layer (scale and shift, FiLM), `depth` hidden convolutions of `kernel`×`kernel`
 * on a grid `stride` times coarser than the image (docs/method.md §5):
 *
 *     h₁ = SiLU(FiLM₁(conv of concat(x, ε̂[, x̂₀, dx/dγ], features) [+ coarse maps]))   to `width`
 *     hᵢ = SiLU(FiLMᵢ(conv of hᵢ₋₁))                                                i = 2 … depth
 *     (k¹, k², k³) = 3×3 conv of h_depth to 3C channels (3C·stride², unshuffled to the image)
 *     k = −k¹/γ + k² γ/(1+γ²) + k³/(γ(1+γ²))
 *
 * FiLMᵢ(h) = h·(1 + sᵢ) + bᵢ with (sᵢ, bᵢ) = dense(SiLU(temb)): the modulation lets k be a time-dependent
 * map of its inputs. The head needs no normalisation of its own (the features are already normalised).
 *
 * The output conv starts near zero (gain `initGain`), so the untrained head gives k ≈ 0: GENIE starts as
 * DDIM.
 *
 * - {@link buildHeadModel}: the trainable head alone (inputs x, eps, features, temb, gamma → k, and the
 *   unmixed `k123`), the graph `deno task distill` differentiates with onnx/grad.ts.
 * - {@link combinedHeadModel}: the served `head` graph (docs/contracts.md §4): x, t, class → eps, deriv in
 *   ONE run: the score network (exposing features and temb), γ(t) from the VP-linear schedule (in
 *   float64), then the head with trained weights. training/model_folder.ts builds the same graph for any
 *   model folder (mapped names, other schedules and prediction types).
 *
 * A network without a usable time embedding gets one from γ instead (`embed: 0`, {@link gammaEmbedding}):
 * log γ and sines and cosines of it, computed inside the head, so the FiLM layers still see the time.
 */
import {
  GraphBuilder,
  type IModelProto,
  type IValueInfoProto,
  modelOpset,
  type ModelProto,
  onnx,
  valueInfo,
} from "../onnx/proto.ts";
import { Layers, type ParamSource } from "./layers.ts";

export interface HeadOptions {
  /** Image channels C (x and ε̂). */
  channels: number;
  /** Channels of the feature map. */
  featureChannels: number;
  /** Width of the time(+class) embedding; 0: the network has none, the head embeds γ itself. */
  embed: number;
  /** Head width: channels of the hidden layers (ORT's CPU convolutions work in blocks of 16). */
  width: number;
  /**
   * Coarser decoder maps the first hidden layer also reads: channels and the factor that scales each up
   * to the image (a 1×1 conv to `width` at the coarse size, then nearest up-sampling, added before the
   * first FiLM). They bring the context a per-pixel head cannot see.
   */
  coarse: readonly { channels: number; factor: number }[];
  /**
   * Also read the denoised image x̂₀ = x sqrt(1+γ²) − γ ε̂ and the ODE's velocity dx/dγ, computed in
   * the graph: γ-dependent mixtures of x and ε̂ that a FiLM-modulated conv cannot form by itself.
   */
  derived: boolean;
  /** Hidden layers (each a conv, FiLM and SiLU); the first reads x, ε̂ and the features. */
  depth: number;
  /** Kernel size of the hidden convolutions (1: per pixel; 3: each layer widens the view by one pixel). */
  kernel: number;
  /**
   * Resolution of the hidden layers: 1 works at the image's size; s > 1 patchifies the inputs (an s×s
   * conv with stride s), works on the s-times coarser grid, and unshuffles the output (s² values per
   * coarse pixel, one per fine pixel): s² fewer positions for the hidden convolutions to visit.
   */
  stride: number;
  /** Scale of the initial weights of the output conv. */
  initGain: number;
  seed: number;
}

export const HEAD_DEFAULTS: HeadOptions = {
  channels: 1,
  featureChannels: 32,
  embed: 128,
  width: 32,
  coarse: [],
  derived: false,
  depth: 2,
  kernel: 1,
  stride: 1,
  initGain: 1e-2,
  seed: 7,
};

/** Values of the head's inputs inside a graph under construction. */
export interface HeadInputs {
  x: string;
  eps: string;
  features: string;
  /** The network's time(+class) embedding [B, E]; without it the head embeds γ ({@link gammaEmbedding}). */
  temb?: string;
  /** γ_t, float32 [B]. */
  gamma: string;
  /** The coarse decoder maps of {@link HeadOptions.coarse}, in its order. */
  coarse?: readonly string[];
}

/**
 * Appends the head to `g`; returns the mixed derivative `k`, the raw `k123` [B, 3C, H, W] and the
 * parameter names (all `head.*`).
 */
export function addHead(
  g: GraphBuilder,
  inp: HeadInputs,
  options: Partial<HeadOptions> = {},
  source?: ParamSource,
): { k: string; k123: string; params: string[]; count: number } {
  const o = { ...HEAD_DEFAULTS, ...options };
  const { channels: C, width: W } = o;
  const L = new Layers(g, o.seed, 1, source);
  const i64 = (v: number[]) => L.i64(v), f32 = (v: number) => L.f32(v);
  if ((inp.temb === undefined) !== (o.embed === 0)) {
    throw new Error(`the head's embed option (${o.embed}) and its temb input disagree`);
  }
  const E = inp.temb === undefined ? GAMMA_EMBED : o.embed;
  const tembAct = inp.temb === undefined ? gammaEmbedding(g, inp.gamma) : L.silu(inp.temb);
  // h·(1 + s) + b with [s, b] = dense(SiLU(temb)) per sample, broadcast over pixels
  const film = (h: string, name: string) => {
    const sb = g.op("Unsqueeze", [L.dense(tembAct, E, 2 * W, name, 0.1), i64([2, 3])]);
    const [s, b] = [0, 1].map((j) => g.op("Slice", [sb, i64([j * W]), i64([(j + 1) * W]), i64([1])]));
    return g.op("Add", [g.op("Mul", [h, g.op("Add", [s, f32(1)])]), b]);
  };

  // the mixing coefficients' per-sample γ [B, 1, 1, 1] (also the derived inputs')
  const gam = g.op("Unsqueeze", [inp.gamma, i64([1, 2, 3])]);
  const onePlus = g.op("Add", [f32(1), g.op("Mul", [gam, gam])]);
  const images = [inp.x, inp.eps];
  if (o.derived) {
    // x̂₀ = x sqrt(1+γ²) − γ ε̂ (the network's denoised image) and v = ε̂/sqrt(1+γ²) − γ x/(1+γ²) (dx/dγ)
    const root = g.op("Sqrt", [onePlus]);
    images.push(g.op("Sub", [g.op("Mul", [inp.x, root]), g.op("Mul", [inp.eps, gam])]));
    images.push(
      g.op("Sub", [g.op("Div", [inp.eps, root]), g.op("Mul", [inp.x, g.op("Div", [gam, onePlus])])]),
    );
  }
  let h = g.op("Concat", [...images, inp.features], { axis: 1 });
  if ((inp.coarse?.length ?? 0) !== o.coarse.length) {
    throw new Error(
      `the head reads ${o.coarse.length} coarse map(s) but is given ${inp.coarse?.length ?? 0}`,
    );
  }
  const S = o.stride;
  for (let i = 0; i < o.depth; i++) {
    const name = i === 0 ? "head.in" : i === 1 ? "head.mid" : `head.mid${i}`;
    let pre = i === 0
      ? L.conv(
        h,
        images.length * C + o.featureChannels,
        W,
        name,
        S > 1 ? { k: S, stride: S } : { k: o.kernel },
      )
      : L.conv(h, W, W, name, { k: o.kernel });
    if (i === 0) {
      o.coarse.forEach(({ channels, factor }, j) => {
        if (factor % S !== 0) {
          throw new Error(`coarse map ${j}: factor ${factor} is not a multiple of stride ${S}`);
        }
        const c = L.conv(inp.coarse![j], channels, W, `head.coarse${j}`, { k: 1 });
        const up = factor === S
          ? c
          : g.op("Resize", [c, "", g.constant([1, 1, factor / S, factor / S], [4], "float32")], {
            mode: "nearest",
          });
        pre = g.op("Add", [pre, up]);
      });
    }
    h = L.silu(film(pre, `head.film${i}`));
  }
  // [B, c·S·S, h, w] → [B, c, h·S, w·S]: value (a, b) of a coarse pixel goes to fine pixel (S·y + a, S·x + b)
  const unshuffle = (v: string, c: number) => {
    const coarseSize = g.op("Slice", [g.op("Shape", [v]), i64([2]), i64([4]), i64([0])]);
    const split = g.op("Reshape", [v, g.op("Concat", [i64([0, c, S, S]), coarseSize], { axis: 0 })]);
    const fineSize = g.op("Slice", [g.op("Shape", [inp.x]), i64([2]), i64([4]), i64([0])]);
    const moved = g.op("Transpose", [split], { perm: [0, 1, 4, 2, 5, 3] });
    return g.op("Reshape", [moved, g.op("Concat", [i64([0, c]), fineSize], { axis: 0 })]);
  };
  const k123 = S === 1
    ? L.conv(h, W, 3 * C, "head.out", { gain: o.initGain })
    : unshuffle(L.conv(h, W, 3 * C * S * S, "head.out", { gain: o.initGain }), 3 * C);

  // k = −k¹/γ + k² γ/(1+γ²) + k³/(γ(1+γ²)), coefficients per sample [B, 1, 1, 1]
  const c1 = g.op("Neg", [g.op("Reciprocal", [gam])]);
  const c2 = g.op("Div", [gam, onePlus]);
  const c3 = g.op("Reciprocal", [g.op("Mul", [gam, onePlus])]);
  // Σ_j c_j k^j as one Mul and one ReduceSum over the 3 parts (fewer kernels than Split + 3 Mul + 2 Add)
  const coef = g.op("Concat", [c1, c2, c3], { axis: 1 }); // [B, 3, 1, 1]
  const sum = (t: string) =>
    g.op("ReduceSum", [g.op("Mul", [t, coef]), i64([1])], { keepdims: C === 1 ? 1 : 0 });
  const k = C === 1
    ? sum(k123)
    : g.op("Reshape", [sum(g.op("Reshape", [k123, i64([0, 3, C, -1])])), g.op("Shape", [inp.x])]);
  return { k, k123, params: L.params, count: L.count };
}

/** Frequencies of {@link gammaEmbedding}'s sines and cosines of log γ. */
const GAMMA_FREQUENCIES = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16];
/** Width of {@link gammaEmbedding}: log γ/5, then a sine and a cosine per frequency. */
const GAMMA_EMBED = 1 + 2 * GAMMA_FREQUENCIES.length;

/**
 * The head's own time embedding when the network offers none: [log γ/5, sin(f log γ), cos(f log γ)] for
 * the frequencies f above, [B, {@link GAMMA_EMBED}]. log γ spans about −7 … 5 over the schedules in use.
 */
function gammaEmbedding(g: GraphBuilder, gamma: string): string {
  const lg = g.op("Unsqueeze", [g.op("Log", [gamma]), g.constant([1], [1], "int64")]);
  const phase = g.op("Mul", [lg, g.constant(GAMMA_FREQUENCIES, [1, GAMMA_FREQUENCIES.length], "float32")]);
  return g.op("Concat", [
    g.op("Mul", [lg, g.constant(0.2, [], "float32")]),
    g.op("Sin", [phase]),
    g.op("Cos", [phase]),
  ], { axis: 1 });
}

export interface HeadModel {
  model: ModelProto;
  params: string[];
  count: number;
}

/**
 * The trainable head alone: inputs x, eps [B, C, H, W], features [B, F, H, W], temb [B, E] (none when
 * `embed` is 0), gamma [B]; outputs k [B, C, H, W] (mixed) and k123 [B, 3C, H, W]. `size` is S for
 * S × S images, or [H, W].
 */
export function buildHeadModel(
  size: number | readonly [number, number],
  options: Partial<HeadOptions> = {},
  source?: ParamSource,
): HeadModel {
  const o = { ...HEAD_DEFAULTS, ...options };
  const [h, w] = typeof size === "number" ? [size, size] : size;
  const g = new GraphBuilder("genie-head", { opset: 17 });
  const img = ["B", o.channels, h, w];
  const inputs: HeadInputs = {
    x: g.input("x", "float32", img),
    eps: g.input("eps", "float32", img),
    features: g.input("features", "float32", ["B", o.featureChannels, h, w]),
    temb: o.embed === 0 ? undefined : g.input("temb", "float32", ["B", o.embed]),
    gamma: g.input("gamma", "float32", ["B"]),
    coarse: o.coarse.map(({ channels, factor }, j) =>
      g.input(`coarse${j}`, "float32", ["B", channels, h / factor, w / factor])
    ),
  };
  const { k, k123, params, count } = addHead(g, inputs, o, source);
  g.node("Identity", [k], ["k"]);
  g.node("Identity", [k123], ["k123"]);
  g.output("k", "float32", img);
  g.output("k123", "float32", ["B", 3 * o.channels, h, w]);
  return { model: g.model(), params, count };
}

/**
 * The served head graph: the score network `unet` (whose graph holds the values "eps", "features" and
 * "temb", inputs x, t[, class]) followed by the head with the trained values `params`; γ(t) of the
 * VP-linear schedule (β_min, β_max) computed in float64 as sqrt(exp(B) − 1). Outputs: eps, deriv.
 */
export function combinedHeadModel(
  unet: IModelProto,
  params: Readonly<Record<string, Float32Array>>,
  options: Partial<HeadOptions> = {},
  schedule: { betaMin: number; betaMax: number } = { betaMin: 0.1, betaMax: 20 },
): ModelProto {
  const graph = unet.graph!;
  const opset = modelOpset(unet);
  const g = new GraphBuilder(`${graph.name ?? "unet"}-genie-head`, { opset });
  g.reserveNamesOf(graph);
  const eps = (graph.output ?? []).find((o) => o.name === "eps");
  if (!eps) throw new Error("the score network has no output 'eps'");
  const num = (v: number) => g.constant(new Float64Array([v]), [], "float64");
  const td = g.op("Cast", ["t"], { to: 11 });
  const betaD = schedule.betaMax - schedule.betaMin;
  const B = g.op("Add", [
    g.op("Mul", [num(schedule.betaMin), td]),
    g.op("Mul", [num(0.5 * betaD), g.op("Mul", [td, td])]),
  ]);
  const gamma = g.op("Cast", [g.op("Sqrt", [g.op("Sub", [g.op("Exp", [B]), num(1)])])], { to: 1 });
  const coarse = decoderMaps(unet).slice(0, options.coarse?.length ?? 0);
  return withTrainedHead(unet, g, eps, {
    x: "x",
    eps: "eps",
    features: "features",
    temb: "temb",
    gamma,
    coarse,
  }, {
    params,
    options,
  });
}

/**
 * The coarse decoder maps of a U-Net built by training/unet.ts, finest first: the inputs of its
 * up-sampling (Resize) nodes, each a decoder level's output before it is scaled up to the next.
 */
export function decoderMaps(unet: IModelProto): string[] {
  return (unet.graph?.node ?? []).filter((n) => n.opType === "Resize").map((n) => n.input![0]).reverse();
}

/**
 * `source` with the head appended to its graph (builder `g`, which reserved the source's names): the head
 * on `inputs` with the trained `params` (every one of them used, none missing), its derivative as the new
 * output `deriv` beside the source's `eps` output.
 */
export function withTrainedHead(
  source: IModelProto,
  g: GraphBuilder,
  eps: IValueInfoProto,
  inputs: HeadInputs,
  trained: { params: Readonly<Record<string, Float32Array>>; options: Partial<HeadOptions> },
): ModelProto {
  const graph = source.graph!;
  const { params, options } = trained;
  const { k, params: names } = addHead(g, inputs, options, (name) => {
    const v = params[name];
    if (!v) throw new Error(`no trained value for head parameter ${name}`);
    return v;
  });
  const unknown = Object.keys(params).filter((n) => !names.includes(n));
  if (unknown.length) throw new Error(`trained values for unknown head parameters: ${unknown.join(", ")}`);
  g.node("Identity", [k], ["deriv"]);
  const shape = eps.type?.tensorType?.shape;
  return onnx.ModelProto.create({
    ...source,
    graph: onnx.GraphProto.create({
      ...graph,
      name: g.name,
      node: [...(graph.node ?? []), ...g.nodes],
      initializer: [...(graph.initializer ?? []), ...g.initializers],
      output: [
        eps,
        onnx.ValueInfoProto.create({
          ...valueInfo("deriv", "float32"),
          type: { tensorType: { elemType: 1, shape } },
        }),
      ],
    }),
  });
}

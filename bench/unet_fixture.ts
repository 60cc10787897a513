/**
 * A small U-Net-shaped ε-model built as an ONNX graph: sinusoidal time embedding of t, class embedding by
 * Gather, convolutions, GroupNorm (in the decomposed form exporters emit), SiLU, a residual block with a
 * time-embedding bias, self-attention with softmax, down-sampling (strided conv), up-sampling (Resize)
 * and a skip connection. Inputs x [B, 3, 8, 8] float32, t [B] float32, class [B] int64; output eps.
 * The last decoder feature map is the named value "features"; the time embedding is "temb".
 */
import { GraphBuilder, type ModelProto } from "../onnx/proto.ts";
import { uniform as rng } from "../training/init.ts";

export const UNET = { batch: 2, channels: 3, size: 8, width: 16, embed: 32, classes: 4, groups: 4 };

export function buildUNet(options: Partial<typeof UNET> = {}): ModelProto {
  const { channels: C, size: S, width: nf, embed: E, classes, groups: G } = { ...UNET, ...options };
  const g = new GraphBuilder("tiny_unet", { opset: 17 });
  const random = rng(1234);
  const weights = (n: number, fanIn: number) =>
    Float32Array.from({ length: n }, () => (2 * random() - 1) * Math.sqrt(3 / fanIn));
  const param = (prefix: string, data: Float32Array, dims: number[]) =>
    g.initializer(g.fresh(prefix), data, dims);
  const i64 = (v: number[]) => g.constant(v, [v.length], "int64");
  const f32 = (v: number) => g.constant(v, [], "float32");

  const x = g.input("x", "float32", ["B", C, S, S]);
  const t = g.input("t", "float32", ["B"]);
  const cls = g.input("class", "int64", ["B"]);

  const silu = (h: string) => g.op("Mul", [h, g.op("Sigmoid", [h])]);
  const linear = (v: string, din: number, dout: number) =>
    g.op("Gemm", [
      v,
      param("w", weights(din * dout, din), [din, dout]),
      param("b", weights(dout, din), [dout]),
    ]);
  const conv = (h: string, cin: number, cout: number, k = 3, stride = 1) =>
    g.op("Conv", [
      h,
      param("conv_w", weights(cout * cin * k * k, cin * k * k), [cout, cin, k, k]),
      param("conv_b", weights(cout, cin * 9), [cout]),
    ], {
      kernel_shape: [k, k],
      pads: new Array(4).fill((k - 1) >> 1),
      strides: [stride, stride],
    });
  const groupNorm = (h: string, c: number) => {
    const grouped = g.op("Reshape", [h, i64([0, G, -1])]);
    const normed = g.op("InstanceNormalization", [
      grouped,
      g.constant(new Array(G).fill(1), [G], "float32"),
      g.constant(new Array(G).fill(0), [G], "float32"),
    ], {
      epsilon: 1e-5,
    });
    const back = g.op("Reshape", [normed, g.op("Shape", [h])]);
    const gamma = param("gn_scale", Float32Array.from({ length: c }, () => 1 + 0.2 * (random() - 0.5)), [
      c,
      1,
      1,
    ]);
    const beta = param("gn_bias", Float32Array.from({ length: c }, () => 0.2 * (random() - 0.5)), [c, 1, 1]);
    return g.op("Add", [g.op("Mul", [back, gamma]), beta]);
  };

  // time embedding: [sin(10 t f_k), cos(10 t f_k)], f_k = 10000^(−k/8), then MLP; plus class embedding
  const half = 8;
  const freqs = g.constant(
    Array.from({ length: half }, (_, k) => 10 * Math.exp((-Math.log(10000) * k) / half)),
    [1, half],
    "float32",
  );
  const phase = g.op("Mul", [g.op("Unsqueeze", [t, i64([1])]), freqs]);
  const sinusoid = g.op("Concat", [g.op("Sin", [phase]), g.op("Cos", [phase])], { axis: 1 });
  const tembT = linear(silu(linear(sinusoid, 2 * half, E)), E, E);
  const classEmb = g.op("Gather", [param("class_table", weights(classes * E, 1), [classes, E]), cls], {
    axis: 0,
  });
  const [temb] = g.node("Add", [tembT, classEmb], ["temb"]);

  const resBlock = (h: string, c: number) => {
    let a = conv(silu(groupNorm(h, c)), c, c);
    const bias = g.op("Unsqueeze", [linear(silu(temb), E, c), i64([2, 3])]);
    a = g.op("Add", [a, bias]);
    a = conv(silu(groupNorm(a, c)), c, c);
    return g.op("Mul", [g.op("Add", [h, a]), f32(Math.SQRT1_2)]);
  };
  const attention = (h: string, c: number) => {
    const n = groupNorm(h, c);
    const [q, k, v] = [conv(n, c, c, 1), conv(n, c, c, 1), conv(n, c, c, 1)].map((u) =>
      g.op("Reshape", [u, i64([0, 0, -1])])
    );
    const scores = g.op("Mul", [
      g.op("MatMul", [g.op("Transpose", [q], { perm: [0, 2, 1] }), k]),
      f32(1 / Math.sqrt(c)),
    ]);
    const attn = g.op("Softmax", [scores], { axis: -1 });
    const out = g.op("MatMul", [v, g.op("Transpose", [attn], { perm: [0, 2, 1] })]);
    return g.op("Add", [h, conv(g.op("Reshape", [out, g.op("Shape", [h])]), c, c, 1)]);
  };

  const h0 = conv(x, C, nf);
  const h1 = resBlock(h0, nf);
  const h2 = conv(h1, nf, nf, 3, 2); // down: 8 → 4
  const h3 = attention(resBlock(h2, nf), nf);
  const up = g.op("Resize", [h3, "", g.constant([1, 1, 2, 2], [4], "float32")], { mode: "nearest" }); // 4 → 8
  const merged = conv(g.op("Concat", [up, h1], { axis: 1 }), 2 * nf, nf);
  const [features] = g.node("Identity", [resBlock(merged, nf)], ["features"]);
  g.node(
    "Conv",
    [
      silu(groupNorm(features, nf)),
      param("out_w", weights(C * nf * 9, nf * 9), [C, nf, 3, 3]),
      param("out_b", weights(C, nf), [C]),
    ],
    ["eps"],
    {
      pads: [1, 1, 1, 1],
    },
  );
  g.output("eps", "float32", ["B", C, S, S]);
  return g.model();
}

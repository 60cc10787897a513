/**
 * The GENIE derivative head (training/head.ts): the mixing formula in the graph, shapes, the N(0, I) check of
 * docs/method.md §8, the near-zero start (the untrained head is DDIM) and the served graph's wiring.
 */
import { assert, assertClose, assertEquals, describe, it, maxAbsDiff } from "../testing.ts";
import { addHead, buildHeadModel, combinedHeadModel, decoderMaps } from "../../training/head.ts";
import { exposeTensors } from "../../onnx/features.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { encodeModel, GraphBuilder } from "../../onnx/proto.ts";
import { rngStream } from "../../core/rng.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { buildTrainableUNet } from "../../training/unet.ts";

/**
 * The head's mixing (docs/method.md §5), written here from the equation:
 * k = −k¹/γ + k² γ/(1+γ²) + k³/(γ(1+γ²)), k per element, γ per sample.
 */
function mixDerivative(
  k1: ArrayLike<number>,
  k2: ArrayLike<number>,
  k3: ArrayLike<number>,
  gamma: ArrayLike<number>,
): Float64Array {
  const per = k1.length / gamma.length;
  return Float64Array.from({ length: k1.length }, (_, i) => {
    const g = gamma[Math.floor(i / per)];
    return -k1[i] / g + k2[i] * g / (1 + g * g) + k3[i] / (g * (1 + g * g));
  });
}

const OPTS = { featureChannels: 4, embed: 8, width: 16, initGain: 0.5 };
const S = 6;

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rngStream(seed, 3);
  return Float32Array.from({ length: n }, () => scale * r.normal());
}

async function run(model: Parameters<typeof encodeModel>[0], feeds: Parameters<typeof runSession>[1]) {
  const { session } = await createSession(encodeModel(model), { providers: ["cpu"], threads: 1 });
  return await runSession(session, feeds);
}

describe("GENIE head", () => {
  it("mixes k = −k¹/γ + k²γ/(1+γ²) + k³/(γ(1+γ²)) in the graph; shapes [B,C,S,S] and [B,3C,S,S]", async () => {
    const B = 3;
    const head = buildHeadModel(S, OPTS);
    const gamma = Float32Array.of(0.05, 1.3, 40);
    const out = await run(head.model, {
      x: { type: "float32", data: randn(B * S * S, 1), dims: [B, 1, S, S] },
      eps: { type: "float32", data: randn(B * S * S, 2), dims: [B, 1, S, S] },
      features: { type: "float32", data: randn(B * 4 * S * S, 3), dims: [B, 4, S, S] },
      temb: { type: "float32", data: randn(B * 8, 4), dims: [B, 8] },
      gamma: { type: "float32", data: gamma, dims: [B] },
    });
    assertEquals(out.k.dims, [B, 1, S, S]);
    assertEquals(out.k123.dims, [B, 3, S, S]);
    const k123 = out.k123.data as Float32Array, n = S * S;
    const part = (j: number) =>
      Float32Array.from({ length: B * n }, (_, i) => k123[(Math.floor(i / n) * 3 + j) * n + (i % n)]);
    const expected = mixDerivative(part(0), part(1), part(2), gamma);
    const k = out.k.data as Float32Array;
    for (let i = 0; i < k.length; i++) {
      assertClose(k[i], expected[i], 1e-5 * (1 + Math.abs(expected[i])), `k[${i}]`);
    }
    assert(head.count > 0 && head.params.every((p) => p.startsWith("head.")));
  });

  it("mixes per channel when images have several channels (C = 2: k123 is [B, 6, S, S])", async () => {
    const B = 2, C = 2, n = S * S, opts = { ...OPTS, channels: C };
    const gamma = Float32Array.of(0.2, 7);
    const out = await run(buildHeadModel(S, opts).model, {
      x: { type: "float32", data: randn(B * C * n, 11), dims: [B, C, S, S] },
      eps: { type: "float32", data: randn(B * C * n, 12), dims: [B, C, S, S] },
      features: { type: "float32", data: randn(B * 4 * n, 13), dims: [B, 4, S, S] },
      temb: { type: "float32", data: randn(B * 8, 14), dims: [B, 8] },
      gamma: { type: "float32", data: gamma, dims: [B] },
    });
    assertEquals(out.k.dims, [B, C, S, S]);
    const k123 = out.k123.data as Float32Array, k = out.k.data as Float32Array;
    // part j of channel c of sample b is channel j·C + c of k123
    const part = (j: number) =>
      Float32Array.from({ length: B * C * n }, (_, i) => {
        const b = Math.floor(i / (C * n)), c = Math.floor(i / n) % C;
        return k123[((b * 3 * C) + j * C + c) * n + (i % n)];
      });
    const expected = mixDerivative(part(0), part(1), part(2), gamma);
    for (let i = 0; i < k.length; i++) {
      assertClose(k[i], expected[i], 1e-5 * (1 + Math.abs(expected[i])), `k[${i}]`);
    }
  });

  it("stride 2: hidden layers on the coarse grid, output channel c·4 + a·2 + b at fine pixel (2y + a, 2x + b)", async () => {
    const B = 2, C = 2, n = S * S, opts = { ...OPTS, channels: C, stride: 2, depth: 2, kernel: 3 };
    // the output conv's weights zero and its bias distinct per channel: k123 is the unshuffled bias
    const bias = Float32Array.from({ length: 3 * C * 4 }, (_, j) => j + 1);
    const source = (name: string, dims: readonly number[], init: () => Float32Array) =>
      name === "head.out.w"
        ? new Float32Array(dims.reduce((a, b) => a * b, 1))
        : name === "head.out.b"
        ? bias
        : init();
    const head = buildHeadModel(S, opts, source);
    const out = await run(head.model, {
      x: { type: "float32", data: randn(B * C * n, 21), dims: [B, C, S, S] },
      eps: { type: "float32", data: randn(B * C * n, 22), dims: [B, C, S, S] },
      features: { type: "float32", data: randn(B * 4 * n, 23), dims: [B, 4, S, S] },
      temb: { type: "float32", data: randn(B * 8, 24), dims: [B, 8] },
      gamma: { type: "float32", data: Float32Array.of(0.5, 3), dims: [B] },
    });
    assertEquals(out.k123.dims, [B, 3 * C, S, S]);
    assertEquals(out.k.dims, [B, C, S, S]);
    const k123 = out.k123.data as Float32Array;
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < 3 * C; c++) {
        for (let y = 0; y < S; y++) {
          for (let x = 0; x < S; x++) {
            const want = bias[c * 4 + (y % 2) * 2 + (x % 2)];
            assertEquals(k123[((b * 3 * C + c) * S + y) * S + x], want, `k123[${b},${c},${y},${x}]`);
          }
        }
      }
    }
    // trained weights: the same parameter names and shapes as a stride-1 head of the same width,
    // except the first conv (2×2) and the output conv (3C·4 channels)
    const names = (o: object) => buildHeadModel(S, { ...opts, ...o }).params;
    assertEquals(names({}), names({ stride: 1 }));
  });

  it("N(0, I) data: (k¹, k², k³) = (0, 0, ε) is the exact dε/dγ along the ODE (docs/method.md §8)", () => {
    // ε(x̄, γ) = γ x̄/(1+γ²) for N(0, I); along dx̄/dγ = ε the total derivative is x̄/(1+γ²)².
    const d = 50, gammas = [0.01, 0.3, 1, 4.5, 150];
    const xbar = Float64Array.from(randn(d, 9));
    for (const g of gammas) {
      const eps = xbar.map((v) => (g * v) / (1 + g * g));
      const k = mixDerivative(new Float64Array(d), new Float64Array(d), eps, [g]);
      const exact = xbar.map((v) => v / (1 + g * g) ** 2);
      // and independently: central difference of ε along the exact flow x̄(γ) = x̄₀ sqrt((1+γ²)/(1+γ₀²))
      const h = 1e-4 * Math.max(g, 1e-2);
      const epsAt = (gg: number) =>
        xbar.map((v) => (gg * v * Math.sqrt((1 + gg * gg) / (1 + g * g))) / (1 + gg * gg));
      const [ep, em] = [epsAt(g + h), epsAt(g - h)];
      for (let i = 0; i < d; i++) {
        assertClose(k[i], exact[i], 1e-12 * (1 + Math.abs(exact[i])), `k at γ=${g}`);
        assertClose((ep[i] - em[i]) / (2 * h), exact[i], 1e-6 * (1 + Math.abs(exact[i])), `fd at γ=${g}`);
      }
    }
  });

  it("starts near zero (GENIE starts as DDIM) with the default initialisation", async () => {
    const B = 2;
    const head = buildHeadModel(S, { ...OPTS, initGain: 1e-2 });
    const out = await run(head.model, {
      x: { type: "float32", data: randn(B * S * S, 1), dims: [B, 1, S, S] },
      eps: { type: "float32", data: randn(B * S * S, 2), dims: [B, 1, S, S] },
      features: { type: "float32", data: randn(B * 4 * S * S, 3), dims: [B, 4, S, S] },
      temb: { type: "float32", data: randn(B * 8, 4), dims: [B, 8] },
      gamma: { type: "float32", data: Float32Array.of(1, 1), dims: [B] },
    });
    const k = out.k.data as Float32Array;
    assert(
      Math.max(...k.map(Math.abs)) < 0.05,
      `untrained head output too large: ${Math.max(...k.map(Math.abs))}`,
    );
  });

  for (
    const [label, arch] of [
      ["the default head", {}],
      ["3 hidden 3×3 layers reading the coarse decoder map", {
        depth: 3,
        kernel: 3,
        coarse: [{ channels: 16, factor: 2 }],
      }],
      ["2 hidden 3×3 layers at stride 2 reading the coarse decoder map", {
        depth: 2,
        kernel: 3,
        stride: 2,
        coarse: [{ channels: 16, factor: 2 }],
      }],
    ] as const
  ) {
    it(`the served graph runs eps and ${label} in one call: eps unchanged, deriv = head(features, γ(t))`, async () => {
      const unet = buildTrainableUNet({
        size: 8,
        width: 8,
        mults: [1, 2],
        groups: 2,
        embed: 8,
        classes: 3,
        attention: false,
        zeroOutput: false,
      });
      const B = 2;
      // trained values for the head: the seeded initial ones, with a non-trivial output layer
      const probe = new GraphBuilder("probe");
      const inputs = ["x", "eps", "features", "temb", "gamma", "coarse"].map((n) =>
        probe.input(n, "float32")
      );
      const opts = { ...OPTS, featureChannels: 8, initGain: 0.5, ...arch };
      const params: Record<string, Float32Array> = {};
      addHead(
        probe,
        {
          x: inputs[0],
          eps: inputs[1],
          features: inputs[2],
          temb: inputs[3],
          gamma: inputs[4],
          coarse: arch.coarse ? [inputs[5]] : [],
        },
        opts,
        (n, _d, init) => (params[n] = init()),
      );
      const combined = combinedHeadModel(unet.model, params, opts);
      const x = randn(B * 64, 5), t = Float32Array.of(0.2, 0.7), cls = BigInt64Array.of(1n, 2n);
      const feeds = {
        x: { type: "float32" as const, data: x, dims: [B, 1, 8, 8] },
        t: { type: "float32" as const, data: t, dims: [B] },
        class: { type: "int64" as const, data: cls, dims: [B] },
      };
      const served = await run(combined, feeds);
      assertEquals(Object.keys(served).sort(), ["deriv", "eps"]);
      const coarse = decoderMaps(unet.model);
      assertEquals(coarse.length, 1);
      const f = await run(exposeTensors(unet.model, ["features", "temb", ...coarse]), feeds);
      assertEquals(f[coarse[0]].dims, [B, 16, 4, 4]);
      assertEquals(maxAbsDiff(served.eps.data as Float32Array, f.eps.data as Float32Array), 0);
      const schedule = vpLinearSchedule();
      const alone = await run(buildHeadModel(8, opts, (n) => params[n]).model, {
        x: feeds.x,
        eps: { type: "float32", data: f.eps.data as Float32Array, dims: [B, 1, 8, 8] },
        features: { type: "float32", data: f.features.data as Float32Array, dims: [B, 8, 8, 8] },
        temb: { type: "float32", data: f.temb.data as Float32Array, dims: [B, 8] },
        gamma: { type: "float32", data: Float32Array.from(t, (v) => schedule.gamma(v)), dims: [B] },
        ...(arch.coarse
          ? {
            coarse0: {
              type: "float32" as const,
              data: f[coarse[0]].data as Float32Array,
              dims: [B, 16, 4, 4],
            },
          }
          : {}),
      });
      const a = alone.k.data as Float32Array, b = served.deriv.data as Float32Array;
      assert(
        maxAbsDiff(a, b) <= 1e-5 * Math.max(...a.map(Math.abs)),
        `served deriv differs: ${maxAbsDiff(a, b)}`,
      );
    });
  }
});

/**
 * Distillation data for the GENIE head (docs/method.md §5), computed with ONNX Runtime from the frozen score
 * network: x_t = α x₀ + σ ε with t ~ U[t_min, 1]; one run of the network exposing its features gives
 * ε̂, the last decoder feature map and the time(+class) embedding; one run of its JVP graph gives the
 * target τ = dε̂/dγ along the probability-flow ODE, with tangent
 *
 *     v = dx/dγ = ε̂/sqrt(1+γ²) − γ x/(1+γ²),   dt/dγ,
 *
 * where ε̂ is the network's own prediction (never the training noise). Nothing here is differentiated:
 * the targets are plain numbers fed to the head's training graph.
 */
import { vpLinearSchedule } from "../core/schedule.ts";
import type { RngStream } from "../core/rng.ts";
import { exposeTensors } from "../onnx/features.ts";
import { decoderMaps } from "./head.ts";
import { jvpModel } from "../onnx/jvp.ts";
import { createSession, type InferenceSession, runSession } from "../onnx/ort.ts";
import { decodeModel, encodeModel, type ModelProto } from "../onnx/proto.ts";
import { type Digits, FEATURE_TENSORS, NULL_CLASS, PIXELS, SIZE } from "./common.ts";

export const schedule = vpLinearSchedule();

/** Sessions of a trained score network: eps+features+temb(+coarse maps), and the JVP graph (x, t, class, dx, dt). */
export interface ScoreGraphs {
  eps: ModelProto;
  features: InferenceSession;
  jvp: InferenceSession;
  /** The coarse decoder maps the features session also returns (training/head.ts `decoderMaps`), finest first. */
  coarse: string[];
}

/** The score network's sessions; `coarse` > 0 also exposes that many coarse decoder maps for the head. */
export async function loadScoreGraphs(epsPath: string, threads = 1, coarse = 0): Promise<ScoreGraphs> {
  const eps = decodeModel(await Deno.readFile(epsPath));
  const maps = decoderMaps(eps);
  if (coarse > maps.length) {
    throw new Error(`${epsPath} has ${maps.length} coarse decoder maps, not ${coarse}`);
  }
  const opts = { providers: ["cpu"] as const, threads };
  const exposed = [...FEATURE_TENSORS, ...maps.slice(0, coarse)];
  const features = (await createSession(encodeModel(exposeTensors(eps, exposed)), opts)).session;
  const jvp = (await createSession(encodeModel(jvpModel(eps, { wrt: ["x", "t"], outputs: ["eps"] })), opts))
    .session;
  return { eps, features, jvp, coarse: maps.slice(0, coarse) };
}

/** The ODE tangent in (x, t) per unit γ at time t (float64 arithmetic, float32 result). */
export function odeTangentX(
  x: Float32Array,
  eps: Float32Array,
  t: Float32Array,
): { dx: Float32Array; dt: Float32Array } {
  const per = x.length / t.length, dx = new Float32Array(x.length), dt = new Float32Array(t.length);
  for (let b = 0; b < t.length; b++) {
    const g = schedule.gamma(t[b]), onePlus = 1 + g * g, inv = 1 / Math.sqrt(onePlus);
    dt[b] = schedule.dtDgamma(t[b]);
    for (let i = b * per; i < (b + 1) * per; i++) dx[i] = eps[i] * inv - (g * x[i]) / onePlus;
  }
  return { dx, dt };
}

/** One batch of head-distillation data. */
export interface HeadData {
  x: Float32Array;
  t: Float32Array;
  cls: BigInt64Array;
  gamma: Float32Array;
  eps: Float32Array;
  features: Float32Array;
  temb: Float32Array;
  /** τ = dε̂/dγ along the ODE (exact JVP). */
  target: Float32Array;
  batch: number;
  featureChannels: number;
  embed: number;
  /** Coarse decoder maps for a head that reads them: values and per-sample dims [C, H, W]. */
  coarse?: { data: Float32Array; dims: number[] }[];
}

/** Draws x₀, class (null class with probability `drop`), t, ε from `r`; x_t = α x₀ + σ ε. */
export function drawNoisy(
  digits: Digits,
  batch: number,
  r: RngStream,
  drop: number,
  pool?: Int32Array,
  tFixed?: number[],
): { x: Float32Array; t: Float32Array; cls: BigInt64Array; eps: Float32Array } {
  const x = new Float32Array(batch * PIXELS), t = new Float32Array(batch), cls = new BigInt64Array(batch);
  const eps = new Float32Array(batch * PIXELS);
  for (let b = 0; b < batch; b++) {
    const n = pool ? pool.length : digits.count;
    const j = Math.min(n - 1, Math.floor(r.uniform() * n));
    const k = pool ? pool[j] : j;
    const u = r.uniform();
    const tb = Math.fround(tFixed ? tFixed[b] : schedule.tMin + (1 - schedule.tMin) * u);
    t[b] = tb;
    cls[b] = BigInt(r.uniform() < drop ? NULL_CLASS : digits.labels[k]);
    const alpha = schedule.alpha(tb), sigma = schedule.sigma(tb);
    for (let i = 0; i < PIXELS; i++) {
      const e = r.normal();
      eps[b * PIXELS + i] = e;
      x[b * PIXELS + i] = alpha * digits.pixels[k * PIXELS + i] + sigma * e;
    }
  }
  return { x, t, cls, eps };
}

/** ε̂, features, temb and the exact target τ at (x, t, class). */
export async function headData(
  g: ScoreGraphs,
  x: Float32Array,
  t: Float32Array,
  cls: BigInt64Array,
): Promise<HeadData> {
  const batch = t.length, dims = [batch, 1, SIZE, SIZE];
  const base = {
    x: { type: "float32" as const, data: x, dims },
    t: { type: "float32" as const, data: t, dims: [batch] },
    class: { type: "int64" as const, data: cls, dims: [batch] },
  };
  const f = await runSession(g.features, base, ["eps", "features", "temb", ...g.coarse]);
  const eps = f.eps.data as Float32Array;
  const { dx, dt } = odeTangentX(x, eps, t);
  const j = await runSession(g.jvp, {
    ...base,
    dx: { type: "float32", data: dx, dims },
    dt: { type: "float32", data: dt, dims: [batch] },
  }, ["jvp"]);
  const gamma = Float32Array.from(t, (tb) => schedule.gamma(tb));
  return {
    x,
    t,
    cls,
    gamma,
    eps,
    features: f.features.data as Float32Array,
    temb: f.temb.data as Float32Array,
    target: j.jvp.data as Float32Array,
    batch,
    featureChannels: f.features.dims[1],
    embed: f.temb.dims[1],
    coarse: g.coarse.map((name) => ({ data: f[name].data as Float32Array, dims: f[name].dims.slice(1) })),
  };
}

/**
 * The ONNX Runtime sessions distillation runs on a model folder — the eps graph exposing the head's
 * inputs, and its JVP graph — and the distillation data they give: ε̂ in ε terms, the head's inputs and
 * the exact target τ = dε̂/dγ along the probability-flow ODE. Part of training/model_folder.ts.
 */
import { epsDerivativeFromPrediction, epsFromPrediction } from "../../core/prediction.ts";
import { gaussianNoise } from "../../core/rng.ts";
import { exposeTensors, FeatureError, findHeadTensors } from "../../onnx/features.ts";
import { JvpError, jvpModel } from "../../onnx/jvp.ts";
import { createSession, type InferenceSession, runSession, type TensorInit } from "../../onnx/ort.ts";
import { encodeModel, type ModelProto } from "../../onnx/proto.ts";
import type { HeadData } from "../targets.ts";
import { FolderError, type FolderModel } from "./read.ts";

/** The sessions distillation runs and the head's inputs found in the graph. */
export interface FolderGraphs {
  model: FolderModel;
  /** The feature tensor and the time embedding (absent: the head embeds γ itself). */
  tensors: { features: string; temb?: string };
  /** How they were found, one line each. */
  facts: string[];
  /** Channels of the feature map and width of the time embedding (0 without one). */
  featureChannels: number;
  embed: number;
  /** The eps graph with the head's inputs as extra outputs. */
  features: InferenceSession;
  /** The JVP graph: inputs as eps plus dx, dt; outputs eps and jvp. */
  jvp: InferenceSession;
  release(): Promise<void>;
}

/** The model time fed to the graph for solver times `t`. */
function modelTimes(model: FolderModel, t: ArrayLike<number>): Float32Array {
  return Float32Array.from(t, (v) => v * model.time.scale + model.time.offset);
}

/** The eps graph's feeds at (x, t, class) under its own names. */
export function baseFeeds(
  model: FolderModel,
  x: Float32Array,
  t: ArrayLike<number>,
  cls: BigInt64Array,
): Record<string, TensorInit> {
  const B = t.length;
  const feeds: Record<string, TensorInit> = {
    [model.names.x]: { type: "float32", data: x, dims: [B, ...model.shape] },
    [model.names.t]: { type: "float32", data: modelTimes(model, t), dims: [B] },
  };
  if (model.takesClass) feeds[model.names.class] = { type: "int64", data: cls, dims: [B] };
  return feeds;
}

/**
 * Sessions for distilling a head on `model`: the head's inputs found (or named by `options`; `temb: null`
 * for none) and checked on a batch-2 run: features [B, F, H, W] at the image's H × W, temb [B, E]. When
 * the time embedding found first has another shape, the next candidates are tried.
 */
export async function loadFolderGraphs(
  model: FolderModel,
  options: { features?: string; temb?: string | null; threads?: number } = {},
): Promise<FolderGraphs> {
  let found;
  try {
    found = findHeadTensors(model.eps, model.names, options);
  } catch (e) {
    if (e instanceof FeatureError) throw new FolderError(`${model.name}: ${e.message}`);
    throw e;
  }
  const opts = { providers: ["cpu"] as const, threads: options.threads ?? 1 };
  const facts = [...found.facts];
  const [, H, W] = model.shape;
  // probe: the features and up to 4 embedding candidates on a batch of 2
  const candidates = found.temb !== undefined && found.tembCandidates.length
    ? found.tembCandidates.slice(0, 4)
    : found.temb !== undefined
    ? [found.temb]
    : [];
  const probeModel = exposeTensors(model.eps, [found.features, ...candidates]);
  const probe = (await createSession(encodeModel(probeModel), opts)).session;
  const B = 2;
  const x = Float32Array.from(gaussianNoise(1, 0, B * model.dim));
  const t = [0.3, 0.7];
  const cls = BigInt64Array.from(
    { length: B },
    (_, i) => BigInt(model.classes ? i % model.classes.count : 0),
  );
  const out = await runSession(probe, baseFeeds(model, x, t, cls), [found.features, ...candidates]);
  await probe.release();
  const fd = out[found.features].dims;
  if (fd.length !== 4 || fd[0] !== B || fd[2] !== H || fd[3] !== W) {
    throw new FolderError(
      `${model.name}: the feature tensor '${found.features}' has shape [${fd.join(", ")}] at batch ${B}, ` +
        `not [B, F, ${H}, ${W}] (the head works at the image's resolution); name another with --features`,
    );
  }
  let temb: string | undefined;
  for (const c of candidates) {
    const d = out[c].dims;
    if (d.length === 2 && d[0] === B && d[1] >= 2) {
      temb = c;
      break;
    }
    facts.push(`temb: '${c}' has shape [${d.join(", ")}], not [B, E]; ${options.temb ? "" : "skipped"}`);
    if (options.temb) throw new FolderError(`${model.name}: --temb '${c}' is not [B, E]`);
  }
  if (found.temb !== undefined && temb !== found.temb) {
    facts.push(temb ? `temb: '${temb}' (the next candidate)` : "temb: none usable: the head embeds γ itself");
  }
  const featureChannels = fd[1], embed = temb ? out[temb].dims[1] : 0;
  const exposed = exposeTensors(model.eps, temb ? [found.features, temb] : [found.features]);
  const features = (await createSession(encodeModel(exposed), opts)).session;
  let jvpGraph: ModelProto;
  try {
    jvpGraph = jvpModel(model.eps, {
      wrt: [model.names.x, model.names.t],
      outputs: [model.names.eps],
      tangentInputs: { [model.names.x]: "dx", [model.names.t]: "dt" },
      tangentOutputs: { [model.names.eps]: "jvp" },
    });
  } catch (e) {
    await features.release();
    if (e instanceof JvpError) {
      throw new FolderError(
        `${model.name}: the JVP graph cannot be derived, so there is no target: ${e.message}`,
      );
    }
    throw e;
  }
  const jvp = (await createSession(encodeModel(jvpGraph), opts)).session;
  return {
    model,
    tensors: { features: found.features, ...(temb ? { temb } : {}) },
    facts,
    featureChannels,
    embed,
    features,
    jvp,
    release: async () => {
      await features.release();
      await jvp.release();
    },
  };
}

/**
 * Distillation data at (x, t, class): ε̂ in ε terms, the head's inputs, and the exact target
 * τ = dε̂/dγ along the ODE, whose tangent per unit γ is dx = ε̂/sqrt(1+γ²) − γx/(1+γ²), dt = dt/dγ.
 */
export async function folderHeadData(
  g: FolderGraphs,
  x: Float32Array,
  t: Float32Array,
  cls: BigInt64Array,
): Promise<HeadData> {
  const m = g.model, B = t.length, dim = m.dim;
  const base = baseFeeds(m, x, t, cls);
  const wanted = [m.names.eps, g.tensors.features, ...(g.tensors.temb ? [g.tensors.temb] : [])];
  const f = await runSession(g.features, base, wanted);
  const raw = f[m.names.eps].data as Float32Array;
  const x64 = Float64Array.from(x), t64 = Float64Array.from(t);
  const eps = epsFromPrediction(m.prediction, m.schedule, raw, x64, t64);
  const dx = new Float64Array(B * dim), dt = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const gam = m.schedule.gamma(t[b]), onePlus = 1 + gam * gam, inv = 1 / Math.sqrt(onePlus);
    dt[b] = m.schedule.dtDgamma(t[b]);
    for (let i = b * dim; i < (b + 1) * dim; i++) dx[i] = eps[i] * inv - (gam * x[i]) / onePlus;
  }
  const j = await runSession(g.jvp, {
    ...base,
    dx: { type: "float32", data: Float32Array.from(dx), dims: [B, ...m.shape] },
    dt: { type: "float32", data: Float32Array.from(dt, (v) => v * m.time.scale), dims: [B] },
  }, ["jvp"]);
  const df = j.jvp.data as Float32Array;
  const target = m.prediction === "eps" ? df : Float32Array.from(
    epsDerivativeFromPrediction(m.prediction, m.schedule, raw, df, x64, t64, { x: dx, t: dt }),
  );
  return {
    x,
    t,
    cls,
    gamma: Float32Array.from(t, (v) => m.schedule.gamma(v)),
    eps: Float32Array.from(eps),
    features: f[g.tensors.features].data as Float32Array,
    temb: g.tensors.temb ? f[g.tensors.temb].data as Float32Array : new Float32Array(0),
    target,
    batch: B,
    featureChannels: g.featureChannels,
    embed: g.embed,
  };
}

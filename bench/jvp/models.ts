/**
 * The models of `deno task bench:jvp` (bench/jvp.ts) and their graphs: mnist-mix (as the worker builds
 * it, with its closed-form mixture), the U-Net-shaped fixture (bench/unet_fixture.ts) and the project's
 * trainable U-Net (training/unet.ts), each with the JVP graph onnx/jvp.ts makes of it; and ONNX Runtime
 * sessions in this thread.
 */
import { readFileSync } from "node:fs";
import type { GaussianMixture } from "../../core/gmm.ts";
import { mixtureFromSource } from "../../gpu-worker/analytic.ts";
import { transformEps } from "../../gpu-worker/jvp_cache.ts";
import type { LoadedModel } from "../../gpu-worker/manifest.ts";
import { defaultModelsDir, loadRegistry } from "../../gpu-worker/models.ts";
import { createSession, type InferenceSession, loadOrt } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import { buildTrainableUNet } from "../../training/unet.ts";
import { buildUNet } from "../unet_fixture.ts";
import { log } from "./settings.ts";

/** ONNX Runtime's module, for its tensors. */
export type Ort = Awaited<ReturnType<typeof loadOrt>>;

/** The U-Net fixture's options, and the trainable U-Net's. */
export const UNET_OPTIONS = { channels: 1, size: 28, classes: 11 };
export const TRAINABLE_OPTIONS = { classes: 10, zeroOutput: false };

/** The models and their graphs. */
export interface JvpModels {
  ort: Ort;
  /** A session of `bytes` on the CPU provider with --threads intra-op threads. */
  open(bytes: Uint8Array): Promise<InferenceSession>;
  /** mnist-mix as the registry loads it, its mixture, its null class, its eps graph and that graph's JVP. */
  info: LoadedModel;
  mix: GaussianMixture;
  nullClass: number;
  mnistEps: Uint8Array;
  mnistJvp: Uint8Array;
  unetEps: Uint8Array;
  unetJvp: Uint8Array;
  /** The trainable U-Net (its parameter count), its eps graph and that graph's JVP. */
  trainable: { count: number };
  trainableEps: Uint8Array;
  trainableJvp: Uint8Array;
}

/** Loads (or builds) the models and derives their JVP graphs. */
export async function loadJvpModels(threads: number): Promise<JvpModels> {
  const ort = await loadOrt();
  const open = async (bytes: Uint8Array): Promise<InferenceSession> =>
    (await createSession(bytes, { providers: ["cpu"], threads })).session;
  const registry = await loadRegistry(defaultModelsDir(), { only: ["mnist-mix"], log });
  const info = registry.models.get("mnist-mix");
  if (!info) throw new Error(`mnist-mix: ${JSON.stringify(registry.errors)}`);
  const mix: GaussianMixture = {
    ...(await mixtureFromSource(info.manifest.analytic!)),
    schedule: info.schedule,
  };
  const NULL_CLASS = info.manifest.classes!.null_class!;
  const mnistEps = readFileSync(info.graphPaths.eps!);
  const transformed = transformEps(mnistEps);
  if (!("bytes" in transformed)) throw new Error(`mnist-mix: ${transformed.unavailable.reason}`);
  const mnistJvp = transformed.bytes;

  const unetEps = encodeModel(buildUNet(UNET_OPTIONS));
  const unetTransformed = transformEps(unetEps);
  if (!("bytes" in unetTransformed)) throw new Error(`U-Net: ${unetTransformed.unavailable.reason}`);

  const trainable = buildTrainableUNet(TRAINABLE_OPTIONS);
  const trainableEps = encodeModel(trainable.model);
  const trainableTransformed = transformEps(trainableEps);
  if (!("bytes" in trainableTransformed)) {
    throw new Error(`trainable U-Net: ${trainableTransformed.unavailable.reason}`);
  }
  return {
    ort,
    open,
    info,
    mix,
    nullClass: NULL_CLASS,
    mnistEps,
    mnistJvp,
    unetEps,
    unetJvp: unetTransformed.bytes,
    trainable,
    trainableEps,
    trainableJvp: trainableTransformed.bytes,
  };
}

/**
 * `deno task distill --model NAME` (training/distill.ts) for any model folder whose JVP can be derived
 * (training/model_folder.ts): the data are `--data` or the model's own samples; writes head.onnx, checked
 * against eps.onnx, and names it in model.json.
 */
import { join } from "node:path";
import { decodeNpy, encodeNpy } from "../../core/npy.ts";
import { type RngStream, rngStream } from "../../core/rng.ts";
import { median } from "../../core/stats.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import {
  formatSeconds,
  gradientSetup,
  log,
  parallelSetup,
  parseTrainingFlags,
  readJsonIfExists,
  writeAtomic,
} from "../common.ts";
import { HEAD_DEFAULTS, type HeadOptions } from "../head.ts";
import {
  combinedFolderHead,
  type DataPool,
  drawFromPool,
  FolderError,
  type FolderGraphs,
  folderHeadData,
  loadFolderGraphs,
  readModelFolder,
  samplePool,
} from "../model_folder.ts";
import type { FloatArray } from "../trainer.ts";
import { batchSource } from "./dataset.ts";
import { FOLDER_DISTILL_DEFAULTS, headArchitecture, INTEGER_FLAGS } from "./flags.ts";
import { headFeedsFor, headTrainingGraph, relativeErrors, runHead, summary } from "./loss.ts";
import { DistillRun, headTrainer, installHead } from "./run.ts";

/** The data the head is distilled on: `--data` (x₀ in model space, .npy) or the model's own samples. */
async function folderData(
  f: typeof FOLDER_DISTILL_DEFAULTS,
  g: FolderGraphs,
): Promise<{ pool: DataPool; facts: Record<string, unknown> }> {
  const m = g.model;
  if (f.data) {
    const a = decodeNpy(await Deno.readFile(f.data));
    if (a.shape.length !== 4 || a.shape.slice(1).join() !== m.shape.join()) {
      throw new FolderError(
        `--data ${f.data}: shape [${a.shape.join(", ")}], expected [N, ${m.shape.join(", ")}]`,
      );
    }
    const count = a.shape[0];
    let labels = new Int32Array(count).fill(-1);
    if (f.labels) {
      const l = decodeNpy(await Deno.readFile(f.labels));
      if (l.data.length !== count) {
        throw new FolderError(`--labels ${f.labels}: ${l.data.length} labels for ${count} samples`);
      }
      labels = Int32Array.from(l.data, (v) => Math.round(v));
    }
    log(`data: ${count} samples from ${f.data}${f.labels ? ` with labels from ${f.labels}` : ""}`);
    return {
      pool: { x: Float32Array.from(a.data), labels, count },
      facts: { source: f.data, labels: f.labels || undefined, count },
    };
  }
  // the model's own samples, made once and kept beside the checkpoint
  const stamp = { source: "model", solver: "dpmpp-2m", nfe: f.poolNfe, count: f.pool, seed: f.seed };
  const saved = await readJsonIfExists<typeof stamp & { labels: number[] }>(`${f.ckpt}/pool.json`);
  if (
    saved &&
    JSON.stringify({ ...saved, labels: undefined }) === JSON.stringify({ ...stamp, labels: undefined })
  ) {
    const a = decodeNpy(await Deno.readFile(`${f.ckpt}/pool.npy`));
    log(`data: ${f.pool} samples of the model from ${f.ckpt}/pool.npy`);
    return {
      pool: { x: Float32Array.from(a.data), labels: Int32Array.from(saved.labels), count: f.pool },
      facts: stamp,
    };
  }
  log(`data: sampling ${f.pool} x₀ from the model (dpmpp-2m, NFE ${f.poolNfe}) …`);
  const t0 = performance.now();
  const pool = await samplePool(g, {
    n: f.pool,
    nfe: f.poolNfe,
    seed: f.seed,
    onProgress: (done) => {
      const s = (performance.now() - t0) / 1000;
      log(
        `data: ${done}/${f.pool} samples  elapsed ${formatSeconds(s)}  ETA ${
          formatSeconds((s / done) * (f.pool - done))
        }`,
      );
    },
  });
  await Deno.mkdir(f.ckpt, { recursive: true });
  await writeAtomic(`${f.ckpt}/pool.npy`, encodeNpy(pool.x, [pool.count, ...m.shape]));
  await writeAtomic(
    `${f.ckpt}/pool.json`,
    JSON.stringify({ ...stamp, labels: Array.from(pool.labels) }) + "\n",
  );
  return { pool, facts: stamp };
}
/** `deno task distill --model NAME` for any model folder whose JVP can be derived. */
export async function distillFolder(argv: string[], dir: string): Promise<void> {
  const f = parseTrainingFlags(argv, FOLDER_DISTILL_DEFAULTS, { ...INTEGER_FLAGS, pool: 1, poolNfe: 2 });
  f.parallel = parallelSetup(f.threads, f.parallel, f.batch).parallel;
  const setup = await gradientSetup(f.formulation);
  f.formulation = setup.formulation;
  f.model = dir;
  f.ckpt ||= join(dir, "distill");
  const model = readModelFolder(dir);
  const graphs = await loadFolderGraphs(model, {
    features: f.features || undefined,
    temb: f.temb === "none" ? null : f.temb || undefined,
    threads: f.threads,
  });
  for (const line of graphs.facts) log(`${model.name}: ${line}`);
  const [C, H, W] = model.shape;
  const headOptions: Partial<HeadOptions> = {
    channels: C,
    featureChannels: graphs.featureChannels,
    embed: graphs.embed,
    ...headArchitecture(f, [H, W]),
  };
  if (f.coarse > 0) {
    throw new FolderError(
      `--coarse: only mnist-unet's head reads coarse decoder maps (${model.name} is not a known U-Net)`,
    );
  }
  const { pool, facts: dataFacts } = await folderData(f, graphs);
  const { head, graph } = headTrainingGraph(headOptions, [H, W], setup);
  log(
    `GENIE head for ${model.name}: ${head.count} parameters (width ${f.width}, ${graphs.featureChannels} ` +
      `feature channels, ${graphs.embed ? `time embedding of ${graphs.embed}` : "γ embedding"}); flags ${
        JSON.stringify(f)
      }`,
  );
  const { trainer, feed } = await headTrainer(f, graph);
  const { tMin } = model.schedule;
  const ts = Array.from({ length: f.evalBatch }, (_, b) => tMin + (1 - tMin) * (b + 0.5) / f.evalBatch);
  const held = drawFromPool(model, pool, f.evalBatch, rngStream(f.seed + 7919, 0xe7a1), f.drop, ts);
  const evalSet = await folderHeadData(graphs, held.x, held.t, held.cls);
  const heldOut = async (params: Readonly<Record<string, FloatArray>>) =>
    relativeErrors(await runHead(params, evalSet, headOptions, model.shape), evalSet.target, evalSet.batch);
  const before = await heldOut(trainer.params);
  log(`held-out relative error before: median ${median(before).toFixed(3)}  ${summary(before, evalSet.t)}`);

  const describe = {
    ...HEAD_DEFAULTS,
    ...headOptions,
    parameters: head.count,
    tensors: graphs.tensors,
    found: graphs.facts,
  };
  const run = await DistillRun.start(f, trainer, describe);
  const extra = () => ({ model: model.name, data: dataFacts });
  const draw = async (n: number, r: RngStream) => {
    const { x, t, cls } = drawFromPool(model, pool, n, r, f.drop);
    return await folderHeadData(graphs, x, t, cls);
  };
  const next = batchSource(f, draw);
  await run.loop(
    async (step) => feed(headFeedsFor(await next(step), model.shape)),
    heldOut,
    evalSet.t,
    extra,
  );
  feed(undefined);
  const trained = trainer.state.ema ?? trainer.params;
  const after = await heldOut(trained);
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet.t)}`);

  // the served graph, checked against eps.onnx and the standalone head before the manifest names it
  const params: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(trained)) params[k] = Float32Array.from(v);
  const combined = encodeModel(combinedFolderHead(model, graphs.tensors, params, headOptions));
  const { session } = await createSession(combined, { providers: ["cpu"], threads: 1 });
  const B = evalSet.batch,
    time = Float32Array.from(evalSet.t, (v) => v * model.time.scale + model.time.offset);
  const out = await runSession(session, {
    x: { type: "float32", data: evalSet.x, dims: [B, ...model.shape] },
    t: { type: "float32", data: time, dims: [B] },
    ...(model.takesClass ? { class: { type: "int64" as const, data: evalSet.cls, dims: [B] } } : {}),
  });
  await session.release();
  const raw = await runSession(graphs.features, {
    [model.names.x]: { type: "float32", data: evalSet.x, dims: [B, ...model.shape] },
    [model.names.t]: { type: "float32", data: time, dims: [B] },
    ...(model.takesClass
      ? { [model.names.class]: { type: "int64" as const, data: evalSet.cls, dims: [B] } }
      : {}),
  }, [model.names.eps]);
  const served = relativeErrors(out.deriv.data as Float32Array, evalSet.target, B);
  const a = out.eps.data as Float32Array, b = raw[model.names.eps].data as Float32Array;
  let epsDiff = 0;
  for (let i = 0; i < a.length; i++) epsDiff = Math.max(epsDiff, Math.abs(a[i] - b[i]));
  log(
    `head.onnx: median relative error ${median(served).toFixed(3)}; max |Δε| vs eps.onnx ${
      epsDiff.toExponential(2)
    }`,
  );
  if (!(epsDiff <= 1e-4 * Math.max(1, ...Array.from(b, Math.abs)))) {
    throw new FolderError(`${model.name}: the head graph's eps differs from eps.onnx's by ${epsDiff}`);
  }
  await writeAtomic(join(dir, "head.onnx"), combined);
  const text = run.record({
    ...extra(),
    heldout_relative_error: {
      before_median: run.earlier?.heldout_relative_error?.before_median ?? median(before),
      after_median: median(after),
      served_median: median(served),
      per_sample_t: Array.from(evalSet.t),
      after,
    },
  });
  await installHead(dir, f.ckpt, text, model.prediction !== "eps" ? "eps" : undefined);
  log(
    `done: ${trainer.state.step} steps; wrote ${join(dir, "head.onnx")}; model.json serves derivative "head"`,
  );
  await trainer.release();
  await graphs.release();
}

/**
 * `deno task distill` on mnist-unet (training/distill.ts): the digits are the data, the targets the exact
 * JVP of eps.onnx (training/targets.ts); writes head.onnx and names it in model.json.
 */
import { type RngStream, rngStream } from "../../core/rng.ts";
import { median } from "../../core/stats.ts";
import { createSession, runSession } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import {
  type Digits,
  gradientSetup,
  loadDigits,
  log,
  parallelSetup,
  parseTrainingFlags,
  SIZE,
  writeAtomic,
} from "../common.ts";
import { combinedHeadModel, HEAD_DEFAULTS, type HeadOptions } from "../head.ts";
import { resolveModelDir } from "../model_folder.ts";
import {
  drawNoisy,
  type HeadData,
  headData,
  loadScoreGraphs,
  schedule,
  type ScoreGraphs,
} from "../targets.ts";
import type { FloatArray } from "../trainer.ts";
import { batchSource } from "./dataset.ts";
import { UsageError } from "../../core/flags.ts";
import { DISTILL_DEFAULTS, headArchitecture, INTEGER_FLAGS } from "./flags.ts";
import { headFeeds, headTrainingGraph, relativeErrors, runHead, summary } from "./loss.ts";
import { DistillRun, headTrainer, installHead } from "./run.ts";

/** A fixed evaluation batch: stratified t over [t_min, 1], its own random stream. */
async function evalData(g: ScoreGraphs, digits: Digits, n: number, seed: number): Promise<HeadData> {
  const ts = Array.from({ length: n }, (_, b) => schedule.tMin + (1 - schedule.tMin) * (b + 0.5) / n);
  const { x, t, cls } = drawNoisy(digits, n, rngStream(seed + 7919, 0xe7a1), 0.1, undefined, ts);
  return await headData(g, x, t, cls);
}

/** drawNoisy's x_t, t and class as headData's arguments. */
function noisy(
  digits: Digits,
  n: number,
  r: RngStream,
  drop: number,
): [Float32Array, Float32Array, BigInt64Array] {
  const { x, t, cls } = drawNoisy(digits, n, r, drop);
  return [x, t, cls];
}

/** `deno task distill` on mnist-unet: the digits are the data (see the module's comment). */
export async function distillMnist(argv: string[]): Promise<void> {
  const f = parseTrainingFlags(argv, DISTILL_DEFAULTS, INTEGER_FLAGS);
  f.parallel = parallelSetup(f.threads, f.parallel, f.batch).parallel;
  const setup = await gradientSetup(f.formulation);
  f.formulation = setup.formulation;
  f.model = resolveModelDir(f.model);
  const digits = await loadDigits();
  const graphs = await loadScoreGraphs(`${f.model}/eps.onnx`, f.threads, f.coarse);
  const probe = await headData(graphs, ...noisy(digits, 1, rngStream(f.seed, 0), 0));
  const headOptions: Partial<HeadOptions> = {
    ...headArchitecture(f, [SIZE, SIZE]),
    coarse: (probe.coarse ?? []).map((c) => ({ channels: c.dims[0], factor: SIZE / c.dims[1] })),
  };
  for (const { factor } of headOptions.coarse!) {
    if (factor % f.stride !== 0) {
      throw new UsageError("--stride", `${f.stride} does not divide the ×${factor} scale of a coarse map`);
    }
  }
  const { head, graph } = headTrainingGraph(headOptions, SIZE, setup);
  log(`GENIE head: ${head.count} parameters (${JSON.stringify(headOptions)}); flags ${JSON.stringify(f)}`);
  const { trainer, feed } = await headTrainer(f, graph);
  const evalSet = await evalData(graphs, digits, f.evalBatch, f.seed);
  const heldOut = async (params: Readonly<Record<string, FloatArray>>) =>
    relativeErrors(await runHead(params, evalSet, headOptions), evalSet.target, evalSet.batch);
  const before = await heldOut(trainer.params);
  log(`held-out relative error before: median ${median(before).toFixed(3)}  ${summary(before, evalSet.t)}`);

  const run = await DistillRun.start(f, trainer, {
    ...HEAD_DEFAULTS,
    ...headOptions,
    parameters: head.count,
  });
  const next = batchSource(f, (n, r) => headData(graphs, ...noisy(digits, n, r, f.drop)));
  await run.loop(
    async (step) => feed(headFeeds(await next(step))),
    heldOut,
    evalSet.t,
  );
  feed(undefined);
  const trained = trainer.state.ema ?? trainer.params;
  const after = await heldOut(trained);
  log(`held-out relative error after: median ${median(after).toFixed(3)}  ${summary(after, evalSet.t)}`);

  // the served graph: eps + features → head → deriv, in one run
  const params: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(trained)) params[k] = Float32Array.from(v);
  const combined = combinedHeadModel(graphs.eps, params, headOptions);
  await writeAtomic(`${f.model}/head.onnx`, encodeModel(combined));
  // check: the combined graph reproduces eps.onnx's ε and the standalone head's k
  const { session } = await createSession(encodeModel(combined), { providers: ["cpu"], threads: 1 });
  const out = await runSession(session, {
    x: { type: "float32", data: evalSet.x, dims: [evalSet.batch, 1, SIZE, SIZE] },
    t: { type: "float32", data: evalSet.t, dims: [evalSet.batch] },
    class: { type: "int64", data: evalSet.cls, dims: [evalSet.batch] },
  });
  const served = relativeErrors(out.deriv.data as Float32Array, evalSet.target, evalSet.batch);
  let epsDiff = 0;
  for (let i = 0; i < evalSet.eps.length; i++) {
    epsDiff = Math.max(epsDiff, Math.abs((out.eps.data as Float32Array)[i] - evalSet.eps[i]));
  }
  log(
    `head.onnx: median relative error ${median(served).toFixed(3)}; max |Δε| vs eps.onnx ${
      epsDiff.toExponential(2)
    }`,
  );

  const text = run.record({
    heldout_relative_error: {
      before_median: run.earlier?.heldout_relative_error?.before_median ?? median(before),
      after_median: median(after),
      served_median: median(served),
      per_sample_t: Array.from(evalSet.t),
      after,
    },
  });
  await installHead(f.model, f.ckpt, text);
  log(`done: ${trainer.state.step} steps; wrote ${f.model}/head.onnx`);
  await trainer.release();
}

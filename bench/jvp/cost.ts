/**
 * Section 1 of `deno task bench:jvp` (bench/jvp.ts): JVP-graph time ÷ forward time at batch 1, 8, 32, the
 * two calls alternating in blocks, every row once per round.
 */
import { readFileSync } from "node:fs";
import { median, quantileNearest } from "../../core/stats.ts";
import { JVP_INPUTS } from "../../gpu-worker/graphs.ts";
import type { InferenceSession, OrtTensor } from "../../onnx/ort.ts";
import { UNET_DEFAULTS } from "../../training/unet.ts";
import type { JvpModels, Ort } from "./models.ts";
import { BATCHES, log } from "./settings.ts";

export interface CostGraph {
  label: string;
  /** What the graph computes, for the report. */
  what: string;
  session: InferenceSession;
  tangent: boolean;
}

export interface CostModel {
  key: string;
  title: string;
  shape: number[];
  /** The class label fed (every graph here takes one). */
  label: number;
  forward: InferenceSession;
  graphs: CostGraph[];
}

export interface CostRow {
  model: CostModel;
  graph: CostGraph;
  batch: number;
  /** Calls per timed block. */
  calls: number;
  forwardMs: number;
  graphMs: number;
  ratio: number;
  ratioLo: number;
  ratioHi: number;
  /** Lower decile of the graph's block times ÷ lower decile of the forward's (the least disturbed runs). */
  decileRatio: number;
}

function feedsFor(ort: Ort, model: CostModel, B: number, tangent: boolean): Record<string, OrtTensor> {
  const dim = model.shape.reduce((a, b) => a * b, 1), dims = [B, ...model.shape];
  const x = Float32Array.from({ length: B * dim }, (_, i) => Math.sin(0.37 * i));
  const feeds: Record<string, OrtTensor> = {
    x: new ort.Tensor("float32", x, dims),
    t: new ort.Tensor("float32", Float32Array.from({ length: B }, (_, i) => 0.3 + 0.4 * (i / B)), [B]),
    class: new ort.Tensor("int64", new BigInt64Array(B).fill(BigInt(model.label)), [B]),
  };
  if (tangent) {
    feeds[JVP_INPUTS.x] = new ort.Tensor(
      "float32",
      Float32Array.from({ length: B * dim }, (_, i) => Math.cos(0.91 * i)),
      dims,
    );
    feeds[JVP_INPUTS.t] = new ort.Tensor("float32", new Float32Array(B).fill(0.7), [B]);
  }
  return feeds;
}

/** Wall ms of `n` back-to-back calls. */
async function timed(session: InferenceSession, feeds: Record<string, OrtTensor>, n = 1): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await session.run(feeds);
  return performance.now() - t0;
}

/** Calls per timed block so that a forward block lasts about 10 ms (fewer timer and scheduler artefacts). */
async function callsPerBlock(session: InferenceSession, feeds: Record<string, OrtTensor>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) times.push(await timed(session, feeds));
  const one = Math.min(...times);
  return Math.max(1, Math.min(50, Math.ceil(10 / Math.max(one, 1e-3))));
}

/**
 * Every (model, batch, graph) pair, measured round-robin: each round times one block pair of every
 * configuration, so that a change of load on the shared machine spreads over all rows alike.
 *
 * `reps` rounds after 3 warm-up pairs per configuration.
 */
export async function costRows(models: CostModel[], reps: number, ort: Ort): Promise<CostRow[]> {
  interface Slot {
    model: CostModel;
    graph: CostGraph;
    batch: number;
    fwdFeeds: Record<string, OrtTensor>;
    feeds: Record<string, OrtTensor>;
    calls: number;
    fwd: number[];
    other: number[];
    ratios: number[];
  }
  const slots: Slot[] = [];
  for (const model of models) {
    for (const B of BATCHES) {
      const fwdFeeds = feedsFor(ort, model, B, false), jvpFeeds = feedsFor(ort, model, B, true);
      for (const graph of model.graphs) {
        const feeds = graph.tangent ? jvpFeeds : fwdFeeds;
        for (let i = 0; i < 3; i++) {
          await timed(model.forward, fwdFeeds);
          await timed(graph.session, feeds);
        }
        const calls = await callsPerBlock(model.forward, fwdFeeds);
        slots.push({ model, graph, batch: B, fwdFeeds, feeds, calls, fwd: [], other: [], ratios: [] });
      }
    }
  }
  for (let r = 0; r < reps; r++) {
    for (const s of slots) {
      // alternate which goes first, so drift and caches favour neither
      let a: number, b: number;
      if (r % 2 === 0) {
        a = await timed(s.model.forward, s.fwdFeeds, s.calls);
        b = await timed(s.graph.session, s.feeds, s.calls);
      } else {
        b = await timed(s.graph.session, s.feeds, s.calls);
        a = await timed(s.model.forward, s.fwdFeeds, s.calls);
      }
      s.fwd.push(a / s.calls);
      s.other.push(b / s.calls);
      s.ratios.push(b / a);
    }
  }
  return slots.map((s) => {
    log(`cost ${s.model.key} ${s.graph.label} B=${s.batch}: ${median(s.ratios).toFixed(2)}`);
    return {
      model: s.model,
      graph: s.graph,
      batch: s.batch,
      calls: s.calls,
      forwardMs: median(s.fwd),
      graphMs: median(s.other),
      ratio: median(s.ratios),
      ratioLo: quantileNearest(s.ratios, 0.25),
      ratioHi: quantileNearest(s.ratios, 0.75),
      decileRatio: quantileNearest(s.other, 0.1) / quantileNearest(s.fwd, 0.1),
    };
  });
}

/**
 * The models of the cost section, with sessions of their forward graph and of the graphs compared with it:
 * (a) mnist-mix (its JVP graph, and for context its hand-built jvp and head graphs), (b) the U-Net fixture
 * and (c) the trainable U-Net, each with its JVP graph.
 */
export async function costModels(m: JvpModels): Promise<CostModel[]> {
  const { info, open } = m;
  const mnistCost: CostModel = {
    key: "mnist-mix",
    title: "(a) mnist-mix, transformed eps graph",
    shape: info.manifest.shape,
    label: m.nullClass,
    forward: await open(m.mnistEps),
    graphs: [
      {
        label: "JVP (onnx/jvp.ts)",
        what: "jvpModel(eps.onnx): outputs eps and the JVP along (dx, dt)",
        session: await open(m.mnistJvp),
        tangent: true,
      },
      {
        label: "jvp.onnx (hand-built)",
        what: "the closed-form JVP graph of gpu-worker/graphs.ts (context only)",
        session: await open(readFileSync(info.graphPaths.jvp!)),
        tangent: true,
      },
      {
        label: "head.onnx (hand-built)",
        what: "the closed-form total derivative dε/dγ (context only)",
        session: await open(readFileSync(info.graphPaths.head!)),
        tangent: false,
      },
    ],
  };
  const unetCost: CostModel = {
    key: "unet28",
    title: "(b) U-Net-shaped ε-network, 1×28×28",
    shape: [1, 28, 28],
    label: 0,
    forward: await open(m.unetEps),
    graphs: [{
      label: "JVP (onnx/jvp.ts)",
      what: "jvpModel(eps): outputs eps and the JVP along (dx, dt)",
      session: await open(m.unetJvp),
      tangent: true,
    }],
  };
  const trainableCost: CostModel = {
    key: "unet-trainable",
    title: "(c) the project's trainable U-Net (training/unet.ts), 1×28×28",
    shape: [UNET_DEFAULTS.channels, UNET_DEFAULTS.size, UNET_DEFAULTS.size],
    label: 0,
    forward: await open(m.trainableEps),
    graphs: [{
      label: "JVP (onnx/jvp.ts)",
      what: "jvpModel(eps): outputs eps and the JVP along (dx, dt)",
      session: await open(m.trainableJvp),
      tangent: true,
    }],
  };
  return [mnistCost, unetCost, trainableCost];
}

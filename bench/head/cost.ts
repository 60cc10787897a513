/**
 * Section 2 of `deno task bench:head` (bench/head.ts): ms per call of eps.onnx, head.onnx and the JVP
 * graph, interleaved in one run, and their ratios to an eps call.
 */
import { rngStream } from "../../core/rng.ts";
import { median } from "../../core/stats.ts";
import { jvpBytes, jvpModel } from "../../onnx/jvp.ts";
import { createSession, type InferenceSession, runSession } from "../../onnx/ort.ts";
import { encodeModel } from "../../onnx/proto.ts";
import { PIXELS, SIZE } from "../../training/common.ts";
import type { FolderModel } from "../../training/model_folder.ts";
import { fmt, type HeadBench } from "./settings.ts";

/** Batches of the cost section; the ratios of the last are the manifest's `costs` and the "cost" column. */
export const COST_BATCHES = [1, 16, 64];

/** The cost of one call of each graph ÷ one eps call. */
export interface CostRatios {
  eps: number;
  head: number;
  jvp: number;
}

/** Section 2's table rows, and the ratios at the largest batch. */
export async function cost(bench: HeadBench): Promise<{ rows: string[]; ratios: CostRatios }> {
  const { f } = bench;
  let ratios: CostRatios = { eps: 1, head: NaN, jvp: NaN };
  const opts = { providers: ["cpu"] as const, threads: 1 };
  const epsBytes = await Deno.readFile(`${f.model}/eps.onnx`);
  // another model: its graphs under its own names (the JVP graph as the worker derives it)
  const M = bench.mnist ? undefined : (await bench.folder()).model;
  const jvpGraph = M
    ? encodeModel(jvpModel(M.eps, {
      wrt: [M.names.x, M.names.t],
      outputs: [M.names.eps],
      tangentInputs: { [M.names.x]: "dx", [M.names.t]: "dt" },
      tangentOutputs: { [M.names.eps]: "jvp" },
    }))
    : jvpBytes(epsBytes);
  const sessions: Record<string, InferenceSession> = {
    eps: (await createSession(epsBytes, opts)).session,
    head: (await createSession(await Deno.readFile(`${f.model}/head.onnx`), opts)).session,
    jvp: (await createSession(jvpGraph, opts)).session,
  };
  const rows = [
    "| batch | eps.onnx ms (median / min) | head.onnx ms (median / min) | JVP graph ms (median) | (eps + head) ÷ eps: median of rounds | (eps + head) ÷ eps: ratio of minima | JVP ÷ eps |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const B of COST_BATCHES) {
    const r = rngStream(7, B);
    const x = Float32Array.from({ length: B * PIXELS }, () => r.normal());
    const base = {
      x: { type: "float32" as const, data: x, dims: [B, 1, SIZE, SIZE] },
      t: {
        type: "float32" as const,
        data: Float32Array.from({ length: B }, (_, i) => 0.1 + 0.8 * i / B),
        dims: [B],
      },
      class: {
        type: "int64" as const,
        data: BigInt64Array.from({ length: B }, (_, i) => BigInt(i % 11)),
        dims: [B],
      },
    };
    const feeds: Record<string, Parameters<typeof runSession>[1]> = M ? folderCostFeeds(M, B) : {
      eps: base,
      head: base,
      jvp: {
        ...base,
        dx: { type: "float32", data: x, dims: [B, 1, SIZE, SIZE] },
        dt: { type: "float32", data: new Float32Array(B).fill(0.1), dims: [B] },
      },
    };
    if (M && !sessions.head.inputNames.includes("class")) delete feeds.head.class;
    const times: Record<string, number[]> = { eps: [], head: [], jvp: [] };
    for (let round = -2; round < f.costRounds; round++) {
      for (const name of ["eps", "head", "jvp"]) {
        const a = performance.now();
        await runSession(sessions[name], feeds[name]);
        if (round >= 0) times[name].push(performance.now() - a);
      }
    }
    const ratio = (n: string) => median(times[n].map((v, i) => v / times.eps[i]));
    const min = (n: string) => Math.min(...times[n]);
    if (B === COST_BATCHES.at(-1)) ratios = { eps: 1, head: ratio("head"), jvp: ratio("jvp") };
    rows.push(
      `| ${B} | ${fmt(median(times.eps))} / ${fmt(min("eps"))} | ${fmt(median(times.head))} / ${
        fmt(min("head"))
      } | ${fmt(median(times.jvp))} | ${ratio("head").toFixed(3)} | ${
        (min("head") / min("eps")).toFixed(3)
      } | ${ratio("jvp").toFixed(2)} |`,
    );
  }
  return { rows, ratios };
}

/** Another model's cost feeds at batch B: its names and time for eps and jvp, the standard ones for head. */
function folderCostFeeds(M: FolderModel, B: number): Record<string, Parameters<typeof runSession>[1]> {
  const r = rngStream(7, B), dims = [B, ...M.shape];
  const x = Float32Array.from({ length: B * M.dim }, () => r.normal());
  const t = Float32Array.from({ length: B }, (_, i) => (0.1 + 0.8 * i / B) * M.time.scale + M.time.offset);
  const labels = M.classes ? Math.max(M.classes.count, (M.classes.nullClass ?? -1) + 1) : 1;
  const cls = {
    type: "int64" as const,
    data: BigInt64Array.from({ length: B }, (_, i) => BigInt(i % labels)),
    dims: [B],
  };
  const mapped = {
    [M.names.x]: { type: "float32" as const, data: x, dims },
    [M.names.t]: { type: "float32" as const, data: t, dims: [B] },
    ...(M.takesClass ? { [M.names.class]: cls } : {}),
  };
  return {
    eps: mapped,
    head: { x: { type: "float32", data: x, dims }, t: { type: "float32", data: t, dims: [B] }, class: cls },
    jvp: {
      ...mapped,
      dx: { type: "float32", data: x, dims },
      dt: { type: "float32", data: new Float32Array(B).fill(0.1 * M.time.scale), dims: [B] },
    },
  };
}

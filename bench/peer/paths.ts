/**
 * The solves of `deno task bench:peer` (bench/peer.ts) — DPM-Solver++(2M) and GENIE with the JVP graph,
 * their grids and schedule values from core/ — and the three ways it runs them: PyTorch eager
 * (bench/peer.py), `deno task sample` and the HTTP API.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decode, encode } from "@msgpack/msgpack";
import { type GridKind, makeGrid } from "../../core/grid.ts";
import { decodeNpy, encodeNpy } from "../../core/npy.ts";
import type { Schedule } from "../../core/schedule.ts";
import { LOWER_ORDER_FINAL_BELOW } from "../../core/solvers/multistep.ts";
import { stepsForNfe } from "../../core/solvers/registry.ts";
import type { EvalRequest } from "../../core/solvers/types.ts";
import type { WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind, LoadedModel } from "../../gpu-worker/manifest.ts";
import { batchFeeds, type ServedModel } from "../../gpu-worker/served.ts";
import { odeJvpBytes } from "../../onnx/ode_jvp.ts";
import { JVP_INPUTS } from "../../onnx/tangent_inputs.ts";
import {
  createSession,
  type InferenceSession,
  type Provider,
  runSession,
  type TensorInit,
} from "../../onnx/ort.ts";
import { type Peer, run } from "./torch.ts";

/** The imported model's name. */
export const PEER_MODEL = "peer-unet";

/** A solve as every path runs it: its grid, its steps and, for PyTorch, the schedule's values there. */
export interface Solve {
  solver: "dpmpp-2m" | "genie";
  label: string;
  grid: GridKind;
  steps: number;
  /** What the project's requests add: the derivative source. */
  extra: Record<string, string>;
  plan: Record<string, number[] | number>;
}

/** The solve of `solver` at `nfe` on `grid`, with the schedule values PyTorch runs it on. */
export function solve(
  solver: Solve["solver"],
  grid: GridKind,
  nfe: number,
  schedule: Schedule,
  time: { scale: number; offset: number },
): Solve {
  const { scale, offset } = time;
  const derivative = solver === "genie" ? "jvp" as const : undefined;
  const steps = stepsForNfe(solver, nfe, { derivative });
  const t = [...makeGrid(schedule, { kind: grid, steps })];
  return {
    solver,
    label: solver === "genie" ? "GENIE (JVP)" : "DPM-Solver++(2M)",
    grid,
    steps,
    extra: derivative ? { genie_derivative: derivative } : {},
    plan: {
      t,
      alpha: t.map((s) => schedule.alpha(s)),
      gamma: t.map((s) => schedule.gamma(s)),
      lambda: t.map((s) => schedule.lambda(s)),
      timestep: t.map((s) => s * scale + offset),
      dtimestep_dgamma: t.map((s) => schedule.dtDgamma(s) * scale),
      lower_order_final_below: LOWER_ORDER_FINAL_BELOW,
    },
  };
}

/** The latents of batch B in `tmp`. */
export const latentsPathIn = (tmp: string, B: number) => join(tmp, `latents_${B}.npy`);

export type Path = "pytorch" | "cli" | "http" | "floor";
export const PATHS: Path[] = ["pytorch", "cli", "http"];
export interface Timing {
  ms: number;
  /** The CLI's own `seconds` of the solve, in ms. */
  solveMs?: number;
}

/** Where a path saves its samples of a solve at batch B, in `tmp`. */
export const outPathIn = (tmp: string, s: Solve, B: number, p: Path) =>
  join(tmp, `out_${s.solver}_${B}_${p}.npy`);

/** What running a path needs. */
export interface PathContext {
  peer: Peer;
  /** The HTTP API's address. */
  url: string;
  /** `deno task sample`'s command line (Deno's arguments). */
  sampleArgs: string[];
  /** The environment of the command line (models, providers, threads). */
  env: Record<string, string>;
  /** The temporary folder of latents and outputs. */
  tmp: string;
  nfe: number;
  threads: number;
  /** The model's sample shape. */
  shape: number[];
}

/** One run of `s` at batch B on path `p` (its samples saved with `save`). */
export async function runPath(c: PathContext, p: Path, s: Solve, B: number, save: boolean): Promise<Timing> {
  const { peer, url, sampleArgs, env, nfe: NFE, threads: THREADS, shape } = c;
  const latentsPath = (B: number) => latentsPathIn(c.tmp, B);
  const outPath = (s: Solve, B: number, p: Path) => outPathIn(c.tmp, s, B, p);
  if (p === "pytorch") {
    const r = await peer.send({
      cmd: "run",
      solver: s.solver,
      latents: latentsPath(B),
      plan: s.plan,
      out: save ? outPath(s, B, p) : null,
    });
    return { ms: r.ms as number };
  }
  if (p === "cli") {
    const args = [
      ...sampleArgs,
      "--model",
      PEER_MODEL,
      "--solver",
      s.solver,
      "--nfe",
      String(NFE),
      "--grid",
      s.grid,
      "--latents",
      latentsPath(B),
      "--threads",
      String(THREADS),
      "--out",
      outPath(s, B, p),
      "--json",
      "--quiet",
      ...Object.entries(s.extra).flatMap(([k, v]) => [`--${k.replaceAll("_", "-")}`, v]),
    ];
    const t0 = performance.now();
    const r = await run(Deno.execPath(), args, env);
    const ms = performance.now() - t0;
    if (!r.ok) throw new Error(`deno task sample failed (${r.code}): ${r.stderr.slice(-2000)}`);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    return { ms, solveMs: summary.seconds * 1000 };
  }
  const noise = decodeNpy(new Uint8Array(readFileSync(latentsPath(B)))).data;
  const body = encode({
    model: PEER_MODEL,
    solver: s.solver,
    nfe: NFE,
    grid: s.grid,
    afs: false,
    denoise: false,
    output: "tensor",
    latents: {
      shape: [B, ...shape],
      dtype: "float32",
      data: new Uint8Array(Float32Array.from(noise).buffer),
    },
    ...s.extra,
  });
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/samples`, {
    method: "POST",
    body,
    headers: { "content-type": "application/msgpack", accept: "application/msgpack" },
  });
  const reply = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`POST /v1/samples: ${res.status} ${JSON.stringify(reply)}`);
  if (save) {
    const t = reply.tensor as { shape: number[]; data: Uint8Array };
    const data = new Float32Array(t.data.slice().buffer);
    writeFileSync(outPath(s, B, p), encodeNpy(data, t.shape));
  }
  return { ms };
}

/**
 * The floor: the solve's network calls alone, ONNX Runtime in this process with no solver, no batching
 * and no protocol — every ε call, or for GENIE every call of the JVP graph as the worker loads it (it makes
 * the ODE's tangent from its own ε: one call a step, onnx/ode_jvp.ts), back to back on one session (ORT's
 * default spinning, `--threads` threads), from the solve's latents at its first time.
 */
export interface Floor {
  run(s: Solve, B: number): Promise<Timing>;
  close(): Promise<void>;
}

export async function openFloor(
  info: LoadedModel,
  threads: number,
  providers: Provider[],
  tmp: string,
): Promise<Floor> {
  const graphs = ["eps", "jvp"] as const;
  const sessions: Partial<Record<GraphKind, InferenceSession>> = {};
  const inputs: Partial<Record<GraphKind, string[]>> = {};
  for (const g of graphs) {
    const path = info.graphPaths[g];
    if (!path) continue;
    const bytes = new Uint8Array(readFileSync(path));
    const graph = g === "jvp"
      ? odeJvpBytes(bytes, { x: info.names.x, out: info.names.eps, dx: JVP_INPUTS.x })
      : bytes;
    const { session } = await createSession(graph, { providers, threads });
    sessions[g] = session;
    inputs[g] = [...session.inputNames];
  }
  const model: ServedModel = { info, inputs, maxBatch: Number.MAX_SAFE_INTEGER };
  const feedsOf = (graph: GraphKind, s: Solve, B: number): Record<string, TensorInit> => {
    const x = Float64Array.from(decodeNpy(new Uint8Array(readFileSync(latentsPathIn(tmp, B)))).data);
    const t0 = (s.plan.t as number[])[0];
    const req: EvalRequest = {
      x,
      t: new Float64Array(B).fill(t0),
      want: graph === "eps" ? "eps" : "eps+deriv",
      step: 0,
      steps: s.steps,
    };
    if (graph === "jvp") {
      const ones = new Float64Array(B).fill(1);
      req.odeTangent = { eps: ones, x: new Float64Array(B).fill(-0.5), t: ones };
    }
    const wire = batchFeeds(model, graph, [{ req, from: 0, count: B }]);
    return Object.fromEntries(Object.entries(wire).map(([name, w]) => [name, toInit(w)]));
  };
  return {
    async run(s: Solve, B: number): Promise<Timing> {
      const calls: GraphKind[] = s.solver === "genie" ? ["jvp"] : ["eps"];
      const prepared = calls.map((g) => ({ g, feeds: feedsOf(g, s, B) }));
      let ms = 0;
      for (const { g, feeds } of prepared) {
        const session = sessions[g];
        if (!session) throw new Error(`the floor has no ${g} graph`);
        for (let i = 0; i < s.steps; i++) {
          const t0 = performance.now();
          await runSession(session, feeds);
          ms += performance.now() - t0;
        }
      }
      return { ms };
    },
    async close() {
      for (const s of Object.values(sessions)) await s?.release();
    },
  };
}

function toInit(w: WireTensor): TensorInit {
  if (w.type === "int64") return { type: "int64", data: new BigInt64Array(w.data), dims: w.dims };
  return { type: "float32", data: new Float32Array(w.data), dims: w.dims };
}

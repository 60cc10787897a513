/**
 * Training checkpoints (training/trainer.ts): directories `step-<k>` (state.json, params.bin, adam_m.bin,
 * adam_v.bin, ema.bin when the run keeps an average; little-endian) written under a temporary name and
 * renamed into place, then published by rewriting `latest.json` the same way: a crash leaves either the
 * previous or the new checkpoint, never a torn one. One writer per directory.
 */
import { type FloatArray, TrainError } from "./optimizer.ts";

/** Everything a run needs to continue exactly where it stopped. */
export interface TrainState {
  /** Steps completed (the next step to run). */
  step: number;
  /** Seed of the data streams: step k draws from rngStream(seed, k). */
  seed: number;
  params: Record<string, FloatArray>;
  adam: { t: number; m: Record<string, FloatArray>; v: Record<string, FloatArray> };
  /** Exponential moving average of the parameters, when the run keeps one. */
  ema?: Record<string, FloatArray>;
  /** Loss of the last completed step (informational). */
  loss?: number;
}

interface StateFile {
  format: "genie-onnx-train";
  version: 1;
  step: number;
  seed: number;
  rng: { generator: "philox4x32-10 rngStream"; seed: number; nextStream: number };
  adam: { t: number };
  loss?: number;
  params: { name: string; dtype: "float32" | "float64"; length: number; offset: number }[];
  files: { params: string; m: string; v: string; ema?: string };
}

const STEP_DIGITS = 9;

function stepDirName(step: number): string {
  return `step-${String(step).padStart(STEP_DIGITS, "0")}`;
}

async function writeSynced(path: string, data: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
}

function concatBytes(arrays: readonly FloatArray[]): Uint8Array {
  const total = arrays.reduce((n, a) => n + a.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Writes a checkpoint of `state` into `dir` atomically and makes it the latest; keeps the newest `keep`
 * checkpoints (default 2). Returns the checkpoint's path.
 */
export async function saveCheckpoint(dir: string, state: TrainState, keep = 2): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const names = Object.keys(state.params);
  let offset = 0;
  const params = names.map((name) => {
    const p = state.params[name];
    const entry = {
      name,
      dtype: p instanceof Float64Array ? "float64" as const : "float32" as const,
      length: p.length,
      offset,
    };
    offset += p.byteLength;
    return entry;
  });
  const meta: StateFile = {
    format: "genie-onnx-train",
    version: 1,
    step: state.step,
    seed: state.seed,
    rng: { generator: "philox4x32-10 rngStream", seed: state.seed, nextStream: state.step },
    adam: { t: state.adam.t },
    ...(state.loss !== undefined && Number.isFinite(state.loss) ? { loss: state.loss } : {}),
    params,
    files: {
      params: "params.bin",
      m: "adam_m.bin",
      v: "adam_v.bin",
      ...(state.ema ? { ema: "ema.bin" } : {}),
    },
  };
  const final = `${dir}/${stepDirName(state.step)}`;
  const tmp = `${dir}/.tmp-${stepDirName(state.step)}-${crypto.randomUUID()}`;
  await Deno.mkdir(tmp);
  try {
    await writeSynced(`${tmp}/params.bin`, concatBytes(names.map((n) => state.params[n])));
    await writeSynced(`${tmp}/adam_m.bin`, concatBytes(names.map((n) => state.adam.m[n])));
    await writeSynced(`${tmp}/adam_v.bin`, concatBytes(names.map((n) => state.adam.v[n])));
    if (state.ema) await writeSynced(`${tmp}/ema.bin`, concatBytes(names.map((n) => state.ema![n])));
    await writeSynced(`${tmp}/state.json`, new TextEncoder().encode(JSON.stringify(meta, null, 1)));
    if (await exists(final)) await Deno.remove(final, { recursive: true });
    await Deno.rename(tmp, final);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  const latestTmp = `${dir}/.latest-${crypto.randomUUID()}.json`;
  await writeSynced(
    latestTmp,
    new TextEncoder().encode(JSON.stringify({ checkpoint: stepDirName(state.step) })),
  );
  await Deno.rename(latestTmp, `${dir}/latest.json`);
  // prune: older checkpoints beyond `keep`, and temporaries of interrupted writes
  const entries: string[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e.name);
  const steps = entries.filter((n) => /^step-\d+$/.test(n)).sort();
  for (const old of steps.slice(0, Math.max(0, steps.length - Math.max(keep, 1)))) {
    if (old !== stepDirName(state.step)) await Deno.remove(`${dir}/${old}`, { recursive: true });
  }
  for (const t of entries.filter((n) => n.startsWith(".tmp-") || n.startsWith(".latest-"))) {
    await Deno.remove(`${dir}/${t}`, { recursive: true }).catch(() => {});
  }
  return final;
}

/** Reads the latest checkpoint in `dir` (undefined when there is none). */
export async function loadCheckpoint(dir: string): Promise<TrainState | undefined> {
  if (!(await exists(`${dir}/latest.json`))) return undefined;
  const { checkpoint } = JSON.parse(await Deno.readTextFile(`${dir}/latest.json`)) as { checkpoint: string };
  const path = `${dir}/${checkpoint}`;
  const meta = JSON.parse(await Deno.readTextFile(`${path}/state.json`)) as StateFile;
  if (meta.format !== "genie-onnx-train" || meta.version !== 1) {
    throw new TrainError(`${path}: not a training checkpoint (format ${meta.format} v${meta.version})`);
  }
  const read = async (file: string) => {
    const bytes = await Deno.readFile(`${path}/${file}`);
    const expected = meta.params.reduce((n, p) => n + p.length * (p.dtype === "float64" ? 8 : 4), 0);
    if (bytes.byteLength !== expected) {
      throw new TrainError(`${path}/${file}: ${bytes.byteLength} bytes, expected ${expected}`);
    }
    const out: Record<string, FloatArray> = {};
    for (const p of meta.params) {
      const Ctor = p.dtype === "float64" ? Float64Array : Float32Array;
      const width = Ctor.BYTES_PER_ELEMENT;
      out[p.name] = new Ctor(bytes.buffer.slice(p.offset, p.offset + p.length * width));
    }
    return out;
  };
  return {
    step: meta.step,
    seed: meta.seed,
    params: await read(meta.files.params),
    adam: { t: meta.adam.t, m: await read(meta.files.m), v: await read(meta.files.v) },
    ...(meta.files.ema ? { ema: await read(meta.files.ema) } : {}),
    loss: meta.loss,
  };
}

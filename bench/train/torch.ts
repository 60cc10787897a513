/**
 * PyTorch as the reference for `deno task bench:train --torch`: the same training graph (the loss of the
 * preconditioned U-Net F), the same weights and batches, run node by node with PyTorch operators and
 * differentiated by PyTorch's autograd (bench/train/torch_step.py). The losses both compute on every
 * batch are compared, so the two are seen to time the same network (tests/bench/train_torch.test.ts
 * also compares the gradients with onnx/grad.ts's).
 */
import type { TensorInit } from "../../onnx/ort.ts";
import { attributeValue } from "../../onnx/proto/attributes.ts";
import { tensorDims, tensorProto, tensorValues } from "../../onnx/proto/tensors.ts";
import type { IModelProto } from "../../onnx/proto.ts";
import { rngStream } from "../../core/rng.ts";
import { ROOT, run } from "../peer/torch.ts";

/** One batch size: its feeds and the loss ONNX Runtime computed on them with the initial weights. */
export interface TorchBatch {
  batch: number;
  feeds: Record<string, TensorInit>;
  ortLoss: number;
}

export interface TorchOptions {
  python: string;
  /** The loss graph: the network with its weights as initializers, and the loss appended. */
  model: IModelProto;
  /** The trainable initializers. */
  params: readonly string[];
  /** The network's output (the forward pass stops there) and the loss. */
  eps: string;
  loss: string;
  batches: readonly TorchBatch[];
  threads: number;
  steps: number;
  optimizer: { lr: number; beta1: number; beta2: number; eps: number; clip: number; average: number };
}

/** One variant's times on one batch, and the loss it computed there before any step. */
export interface TorchTimes {
  stepMs: number;
  forwardMs: number;
  loss: number;
}

/**
 * The two variants torch_step.py times: "graph", the graph's nodes as they are (decomposed GroupNorm,
 * SiLU as x·σ(x)), and "native", those replaced by PyTorch's group_norm and silu.
 */
export type TorchVariant = "graph" | "native";

export interface TorchRow {
  batch: number;
  ortLoss: number;
  variants: Record<TorchVariant, TorchTimes>;
}

export interface TorchResult {
  torch: string;
  threads: number;
  /** Nodes each variant runs. */
  nodes: Record<TorchVariant, number>;
  rows: TorchRow[];
}

/**
 * `model` with every parameter drawn uniformly from ±`scale` (seeded): a network whose loss depends on
 * every layer, for comparing the two runtimes (at initialisation the output convolution is zero, so the
 * loss would not see the rest). Changes the initializers in place and returns the model.
 */
export function randomizeWeights<M extends IModelProto>(
  model: M,
  params: readonly string[],
  seed: number,
  scale = 0.1,
): M {
  const r = rngStream(seed, 0);
  const names = new Set(params);
  const inits = model.graph!.initializer!;
  inits.forEach((t, i) => {
    if (!names.has(t.name!)) return;
    const dims = tensorDims(t);
    const n = dims.reduce((a, b) => a * b, 1);
    inits[i] = tensorProto(
      t.name!,
      Float32Array.from({ length: n }, () => (2 * r.uniform() - 1) * scale),
      dims,
    );
  });
  return model;
}

/** The folder torch_step.py reads: graph.json (nodes, tensors' places) and data.bin (their bytes). */
async function writeFolder(dir: string, o: TorchOptions): Promise<void> {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const place = (bytes: Uint8Array) => {
    const at = offset;
    chunks.push(bytes);
    offset += bytes.length;
    return at;
  };
  const tensor = (
    name: string,
    t: { type: string; data: ArrayLike<number | bigint>; dims: readonly number[] },
  ) => {
    if (t.type !== "float32" && t.type !== "int64") {
      throw new Error(`${name}: ${t.type} tensors are not passed`);
    }
    const data = t.type === "int64"
      ? BigInt64Array.from(t.data as ArrayLike<bigint>)
      : Float32Array.from(t.data as ArrayLike<number>);
    return { name, dims: [...t.dims], dtype: t.type, offset: place(new Uint8Array(data.buffer)) };
  };
  const graph = o.model.graph!;
  const params = new Set(o.params);
  const initializers = (graph.initializer ?? []).map((t) => {
    const float = t.dataType === 1;
    const values = tensorValues(t);
    return tensor(t.name!, {
      type: float ? "float32" : "int64",
      data: float ? values : values.map((v) => BigInt(v)),
      dims: tensorDims(t),
    });
  });
  const nodes = (graph.node ?? []).map((n) => ({
    op: n.opType,
    name: n.name,
    inputs: n.input ?? [],
    outputs: n.output ?? [],
    attrs: Object.fromEntries((n.attribute ?? []).map((a) => [a.name, attributeValue(a)])),
  }));
  const spec = {
    nodes,
    params: initializers.filter((t) => params.has(t.name)),
    constants: initializers.filter((t) => !params.has(t.name)),
    eps: o.eps,
    loss: o.loss,
    optimizer: o.optimizer,
    batches: o.batches.map((b) => ({
      batch: b.batch,
      ortLoss: b.ortLoss,
      feeds: Object.fromEntries(Object.entries(b.feeds).map(([k, v]) => [k, tensor(k, v)])),
    })),
  };
  const bytes = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  await Deno.writeFile(`${dir}/data.bin`, bytes);
  await Deno.writeTextFile(`${dir}/graph.json`, JSON.stringify(spec));
}

/** Runs torch_step.py on a folder written for `o`; returns its last line of output and the folder. */
async function runStep<T>(o: TorchOptions, mode: string, read: (dir: string, out: string) => Promise<T>) {
  const dir = await Deno.makeTempDir({ prefix: "genie-torch-train-" });
  try {
    await writeFolder(dir, o);
    const r = await run(o.python, [`${ROOT}bench/train/torch_step.py`, dir, String(o.threads), mode]);
    if (!r.ok) throw new Error(`bench/train/torch_step.py failed (${r.code}):\n${r.stderr.slice(-2000)}`);
    return await read(dir, r.stdout.trim().split("\n").at(-1)!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Times the step and the forward pass in PyTorch on every batch; throws with its error output if it fails. */
export function torchReference(o: TorchOptions): Promise<TorchResult> {
  return runStep(o, String(o.steps), (_dir, out) => Promise.resolve(JSON.parse(out) as TorchResult));
}

/**
 * PyTorch's autograd on the first batch with the initial weights (the graph's nodes as they are): the
 * loss and every parameter's gradient.
 */
export function torchGradients(
  o: TorchOptions,
): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
  return runStep(o, "grads", async (dir, out) => {
    const all = new Float32Array((await Deno.readFile(`${dir}/grads.bin`)).buffer);
    const sizes = new Map(
      (o.model.graph!.initializer ?? []).map((t) => [t.name!, tensorDims(t).reduce((a, b) => a * b, 1)]),
    );
    const grads: Record<string, Float32Array> = {};
    let at = 0;
    for (const t of o.model.graph!.initializer ?? []) {
      if (!o.params.includes(t.name!)) continue;
      const n = sizes.get(t.name!)!;
      grads[t.name!] = all.slice(at, at + n);
      at += n;
    }
    return { loss: (JSON.parse(out) as { loss: number }).loss, grads };
  });
}

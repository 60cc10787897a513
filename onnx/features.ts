/**
 * Exposes named intermediate tensors of a model as extra graph outputs (e.g. the score network's last
 * decoder feature map and its time embedding, which the GENIE derivative head consumes). The original
 * outputs stay first and unchanged; nothing else in the graph changes.
 *
 * {@link findHeadTensors} finds those two tensors in a network that does not name them (an exported
 * diffusers UNet): the input of the last convolution before the output, and the [B, E] value computed from
 * the time input alone that the most nodes read.
 */
import { inferGraph } from "./infer.ts";
import {
  type IModelProto,
  modelOpset,
  type ModelProto,
  onnx,
  valueInfo,
  type ValueInfoProto,
} from "./proto.ts";

/** Thrown for a tensor name the graph does not have. */
export class FeatureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FeatureError";
  }
}

export interface FeatureOptions {
  /** Output name per tensor (default: the tensor's own name); an alias adds an Identity node. */
  aliases?: Readonly<Record<string, string>>;
}

/** Every value name of a graph: inputs, initializers and node outputs. */
export function tensorNames(model: IModelProto): string[] {
  const g = model.graph ?? {};
  const names = [
    ...(g.input ?? []).map((i) => i.name!),
    ...(g.initializer ?? []).map((t) => t.name!),
    ...(g.node ?? []).flatMap((n) => n.output ?? []),
  ];
  return [...new Set(names.filter((n) => n))];
}

/** A copy of `model` whose outputs also include the tensors `names` (typed where their type is known). */
export function exposeTensors(
  model: IModelProto,
  names: readonly string[],
  options: FeatureOptions = {},
): ModelProto {
  const graph = model.graph;
  if (!graph) throw new FeatureError("model has no graph");
  const known = new Set(tensorNames(model));
  const missing = names.filter((n) => !known.has(n));
  if (missing.length) {
    throw new FeatureError(`unknown tensor(s) ${missing.map((n) => `'${n}'`).join(", ")}`);
  }
  const info = inferGraph(graph, modelOpset(model));
  const outputs = [...(graph.output ?? [])] as ValueInfoProto[];
  const nodes = [...(graph.node ?? [])];
  const taken = new Set(outputs.map((o) => o.name));
  for (const name of names) {
    const alias = options.aliases?.[name] ?? name;
    if (taken.has(alias)) continue;
    if (alias !== name) {
      if (known.has(alias)) throw new FeatureError(`alias '${alias}' is already a tensor name`);
      nodes.push(
        onnx.NodeProto.create({
          opType: "Identity",
          name: `features/${alias}`,
          input: [name],
          output: [alias],
        }),
      );
    }
    const dtype = info.dtype.get(name);
    const shape = info.shape.get(name);
    outputs.push(
      dtype
        ? valueInfo(
          alias,
          dtype,
          shape?.every((d) => d !== null) ? (shape as (number | string)[]) : undefined,
        )
        : onnx.ValueInfoProto.create({ name: alias }),
    );
    taken.add(alias);
  }
  return onnx.ModelProto.create({
    ...model,
    graph: onnx.GraphProto.create({ ...graph, node: nodes, output: outputs }),
  });
}

/** How the GENIE head's inputs were found in a score network (see {@link findHeadTensors}). */
export interface HeadTensors {
  /** The feature map: the input of the last convolution on the way to the output. */
  features: string;
  /** The time(+class) embedding [B, E], if one was found. */
  temb?: string;
  /** One line per tensor saying how it was chosen (or why there is none). */
  facts: string[];
}

/** Nodes that only read their input's shape: their outputs carry no information about its values. */
const SHAPE_ONLY = new Set(["Shape", "Size"]);
/** Activations the time embedding is often consumed through; the tensor they read is the embedding. */
const ACTIVATIONS = new Set([
  "Sigmoid",
  "Relu",
  "Tanh",
  "Gelu",
  "Elu",
  "Selu",
  "Mish",
  "Softplus",
  "HardSwish",
]);

/**
 * The input of the last convolution feeding `output` (nearest to it, searching back through the graph):
 * in a U-Net, the normalised and activated feature map its output convolution reads, the map the GENIE
 * head of docs/method.md §5 consumes. Undefined when no convolution feeds the output.
 */
function lastConvInput(model: IModelProto, output: string): string | undefined {
  const g = model.graph ?? {};
  const producer = new Map<string, { opType?: string | null; input?: string[] | null }>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  const seen = new Set([output]);
  const queue = [output];
  while (queue.length) {
    const node = producer.get(queue.shift()!);
    if (!node) continue;
    if (node.opType === "Conv" || node.opType === "ConvTranspose") return node.input![0];
    for (const i of node.input ?? []) {
      if (i && !seen.has(i)) seen.add(i), queue.push(i);
    }
  }
  return undefined;
}

/**
 * Candidates for the time(+class) embedding of a score network with inputs `x` and `t`, best first: the
 * values computed from t (and the class) but not from x's values (reading x's shape is allowed, as exported
 * models do to broadcast the timestep), of rank 2 [B, E] with E ≥ 2 where the shape is known, ranked by how
 * many nodes read them (the embedding feeds every residual block), later ones first on ties. A candidate
 * that is an activation of another value (SiLU as x·sigmoid(x), or one of {@link ACTIVATIONS}) is replaced
 * by that value.
 */
function timeEmbeddingCandidates(model: IModelProto, inputs: { x: string; t: string }): string[] {
  const g = model.graph ?? {};
  const nodes = g.node ?? [];
  const inits = new Set((g.initializer ?? []).map((t) => t.name!));
  const fromX = new Set([inputs.x]), fromT = new Set([inputs.t]);
  const producer = new Map<string, (typeof nodes)[number]>();
  const consumers = new Map<string, number>();
  const order = new Map<string, number>();
  nodes.forEach((n, i) => {
    const ins = (n.input ?? []).filter((v) => v);
    for (const v of new Set(ins)) consumers.set(v, (consumers.get(v) ?? 0) + 1);
    const data = SHAPE_ONLY.has(n.opType ?? "") ? [] : ins;
    const x = data.some((v) => fromX.has(v)), t = ins.some((v) => fromT.has(v));
    for (const o of n.output ?? []) {
      if (!o) continue;
      producer.set(o, n);
      order.set(o, i);
      if (x) fromX.add(o);
      if (t) fromT.add(o);
    }
  });
  let shapes: Map<string, unknown[] | null> | undefined;
  try {
    shapes = inferGraph(g, modelOpset(model)).shape as Map<string, unknown[] | null>;
  } catch {
    shapes = undefined; // shapes unknown: candidates are checked when run
  }
  /** The value an activation reads, when `v` is one (SiLU written as Mul(a, Sigmoid(a)) included). */
  const beforeActivation = (v: string): string => {
    const n = producer.get(v);
    if (!n) return v;
    const ins = n.input ?? [];
    if (ACTIVATIONS.has(n.opType ?? "") && ins[0]) return ins[0];
    if (n.opType === "Mul" && ins.length === 2) {
      for (const [a, b] of [[ins[0], ins[1]], [ins[1], ins[0]]]) {
        const s = producer.get(b);
        if (s?.opType === "Sigmoid" && s.input?.[0] === a) return a;
      }
    }
    return v;
  };
  const rank2 = (v: string) => {
    const s = shapes?.get(v);
    if (!s) return true;
    return s.length === 2 && !(typeof s[1] === "number" && s[1] < 2);
  };
  const ranked = [...fromT]
    .filter((v) => v !== inputs.t && !fromX.has(v) && !inits.has(v) && producer.has(v) && rank2(v))
    .sort((a, b) => (consumers.get(b) ?? 0) - (consumers.get(a) ?? 0) || order.get(b)! - order.get(a)!);
  const out: string[] = [];
  for (const v of ranked) {
    const base = beforeActivation(v);
    const pick = fromT.has(base) && !fromX.has(base) && rank2(base) ? base : v;
    if (!out.includes(pick)) out.push(pick);
  }
  return out;
}

/**
 * The GENIE head's inputs in a score network: the feature map ({@link lastConvInput} of `output`, or
 * `options.features`) and the time embedding (the best of {@link timeEmbeddingCandidates}, or
 * `options.temb`; `temb: null` asks for none). Throws a {@link FeatureError} when a named tensor does not
 * exist or no convolution feeds the output. Whether the tensors have the right shapes is for the caller to
 * check on a run.
 */
export function findHeadTensors(
  model: IModelProto,
  names: { x: string; t: string; eps: string },
  options: { features?: string; temb?: string | null } = {},
): HeadTensors & { tembCandidates: string[] } {
  const known = new Set(tensorNames(model));
  const facts: string[] = [];
  let features = options.features;
  if (features !== undefined) {
    if (!known.has(features)) throw new FeatureError(`unknown tensor '${features}' (--features)`);
    facts.push(`features: '${features}' (given)`);
  } else {
    features = lastConvInput(model, names.eps);
    if (features === undefined) {
      throw new FeatureError(
        `no convolution feeds the output '${names.eps}': name the feature tensor the head should read`,
      );
    }
    facts.push(`features: '${features}' (the input of the last convolution before '${names.eps}')`);
  }
  let temb: string | undefined;
  let tembCandidates: string[] = [];
  if (options.temb === null) facts.push("temb: none (asked for none): the head embeds γ itself");
  else if (options.temb !== undefined) {
    if (!known.has(options.temb)) throw new FeatureError(`unknown tensor '${options.temb}' (--temb)`);
    temb = options.temb;
    facts.push(`temb: '${temb}' (given)`);
  } else {
    tembCandidates = timeEmbeddingCandidates(model, names);
    temb = tembCandidates[0];
    facts.push(
      temb === undefined
        ? `temb: none found (no [B, E] value computed from '${names.t}' alone): the head embeds γ itself`
        : `temb: '${temb}' (computed from '${names.t}' without '${names.x}', read by the most nodes)`,
    );
  }
  return { features, temb, facts, tembCandidates };
}

/**
 * Exposes named intermediate tensors of a model as extra graph outputs (e.g. the score network's last
 * decoder feature map and its time embedding, which the GENIE derivative head consumes). The original
 * outputs stay first and unchanged; nothing else in the graph changes.
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

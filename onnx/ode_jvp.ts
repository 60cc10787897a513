/**
 * The JVP graph along the sampling ODE, in one call: a JVP graph (onnx/jvp.ts, or a model folder's own
 * jvp.onnx; inputs x, t, …, dx, dt; outputs ε and its tangent) whose tangent of x may be made inside the
 * graph from the graph's own output,
 *
 *     dx_used = dx + a ⊙ out + b ⊙ x        (a, b: one number per row, broadcast over the row),
 *
 * so that ε and its derivative along the ODE come from one evaluation instead of an ε call followed by a
 * JVP call at the same point. The probability-flow ODE's tangent is of this form: per unit γ,
 * dx/dγ = α ε − γ α² x (docs/method.md §3). With a = b = 0 the graph is the JVP graph it was, so one
 * session answers both kinds of rows in one batch. The primal half of a JVP graph never reads dx, so the
 * result is acyclic: the nodes are re-ordered so that every tangent node runs after the output it now
 * depends on.
 *
 * Inputs: the JVP graph's, and `tangent_out`, `tangent_x` ([B], float32). Outputs: unchanged.
 */
import {
  decodeModel,
  encodeModel,
  type IGraphProto,
  type IModelProto,
  type INodeProto,
  type ModelProto,
  onnx,
  valueInfoType,
} from "./proto.ts";
import { ODE_TANGENT_INPUTS } from "./tangent_inputs.ts";

export { ODE_TANGENT_INPUTS };

export interface OdeJvpNames {
  /** The primal input x. */
  x: string;
  /** The primal output the tangent is made of (ε, or x₀ / v). */
  out: string;
  /** The tangent input of x. */
  dx: string;
}

export class OdeJvpError extends Error {}

/** The JVP graph that also makes its tangent of x from its output ({@link ODE_TANGENT_INPUTS}). */
export function odeJvpModel(jvp: IModelProto, names: OdeJvpNames): ModelProto {
  return alongOdeTangent(onnx.ModelProto.decode(onnx.ModelProto.encode(jvp).finish()), names);
}

/** {@link odeJvpModel} from and to model bytes (decoded once, changed in place). */
export function odeJvpBytes(bytes: Uint8Array, names: OdeJvpNames): Uint8Array {
  return encodeModel(alongOdeTangent(decodeModel(bytes), names));
}

/** Changes `model` in place into {@link odeJvpModel}'s graph and returns it. */
function alongOdeTangent(model: ModelProto, names: OdeJvpNames): ModelProto {
  const graph = model.graph;
  if (!graph) throw new OdeJvpError("the model has no graph");
  const inputs = graph.input ?? [];
  const xInfo = inputs.find((i) => i.name === names.x);
  if (!inputs.some((i) => i.name === names.dx)) {
    throw new OdeJvpError(`the graph has no tangent input '${names.dx}'`);
  }
  if (!xInfo) throw new OdeJvpError(`the graph has no input '${names.x}'`);
  if (!(graph.output ?? []).some((o) => o.name === names.out)) {
    throw new OdeJvpError(`the graph has no output '${names.out}'`);
  }
  const rank = valueInfoType(xInfo).shape?.length;
  if (!rank || rank < 2) throw new OdeJvpError(`input '${names.x}' has no batch axis and shape`);
  const taken = new Set<string>([
    ...inputs.map((i) => i.name!),
    ...(graph.initializer ?? []).map((t) => t.name!),
    ...(graph.node ?? []).flatMap((n) => [...(n.output ?? []), n.name ?? ""]),
  ]);
  for (const name of Object.values(ODE_TANGENT_INPUTS)) {
    if (taken.has(name)) throw new OdeJvpError(`the graph already uses the name '${name}'`);
  }
  const fresh = (base: string) => {
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    return name;
  };

  // dx_used = dx + Reshape(a, [-1, 1, …]) · out + Reshape(b, [-1, 1, …]) · x; dx's readers read dx_used
  const used = fresh(`${names.dx}_used`);
  const rename = (g: IGraphProto) => {
    for (const n of g.node ?? []) {
      n.input = (n.input ?? []).map((s) => s === names.dx ? used : s);
      subgraphs(n).forEach(rename);
    }
  };
  rename(graph);
  const rowShape = fresh("ode_tangent.row_shape");
  graph.initializer = [
    ...(graph.initializer ?? []),
    onnx.TensorProto.create({
      name: rowShape,
      dataType: onnx.TensorProto.DataType.INT64,
      dims: [rank],
      int64Data: [-1, ...new Array(rank - 1).fill(1)],
    }),
  ];
  const node = (op: string, ins: string[], out: string): INodeProto =>
    onnx.NodeProto.create({ opType: op, input: ins, output: [out], name: fresh(`ode_tangent.${op}`) });
  const [a, b, aOut, bX, made] = ["a", "b", "a_out", "b_x", "made"].map((s) => fresh(`ode_tangent.${s}`));
  const added = [
    node("Reshape", [ODE_TANGENT_INPUTS.out, rowShape], a),
    node("Reshape", [ODE_TANGENT_INPUTS.x, rowShape], b),
    node("Mul", [a, names.out], aOut),
    node("Mul", [b, names.x], bX),
    node("Add", [aOut, bX], made),
    node("Add", [names.dx, made], used),
  ];
  const batchDim = xInfo.type?.tensorType?.shape?.dim?.[0] ?? { dimParam: "B" };
  const row = (name: string) =>
    onnx.ValueInfoProto.create({
      name,
      type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [batchDim] } } },
    });
  graph.input = [...inputs, row(ODE_TANGENT_INPUTS.out), row(ODE_TANGENT_INPUTS.x)];
  graph.node = topologicalOrder([...(graph.node ?? []), ...added], [
    ...graph.input.map((i) => i.name!),
    ...graph.initializer.map((t) => t.name!),
  ]);
  return model;
}

/** The graphs a node's attributes hold (If, Loop and Scan bodies). */
function subgraphs(n: INodeProto): IGraphProto[] {
  return (n.attribute ?? []).flatMap((at) => [...(at.g ? [at.g] : []), ...(at.graphs ?? [])]);
}

/** Every value a node reads, including those its subgraphs read from outside them. */
function reads(n: INodeProto): string[] {
  const names = [...(n.input ?? [])].filter((s) => s !== "");
  const visit = (g: IGraphProto) => {
    const inner = new Set([
      ...(g.input ?? []).map((i) => i.name!),
      ...(g.initializer ?? []).map((t) => t.name!),
      ...(g.node ?? []).flatMap((m) => m.output ?? []),
    ]);
    for (const m of g.node ?? []) {
      for (const s of m.input ?? []) if (s && !inner.has(s)) names.push(s);
      subgraphs(m).forEach(visit);
    }
  };
  subgraphs(n).forEach(visit);
  return names;
}

/**
 * The nodes in an order where each runs after the nodes whose outputs it reads (Kahn's algorithm, keeping
 * the given order where it can). Throws where the graph has a cycle: the primal output depends on dx.
 */
function topologicalOrder(nodes: INodeProto[], given: string[]): INodeProto[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => (n.output ?? []).forEach((o) => producer.set(o, i)));
  const available = new Set(given);
  const waiting = nodes.map((n) =>
    new Set(reads(n).filter((s) => !available.has(s) && producer.has(s)).map((s) => producer.get(s)!))
  );
  const users = nodes.map(() => [] as number[]);
  waiting.forEach((deps, i) => deps.forEach((d) => users[d].push(i)));
  const ready = nodes.map((_, i) => i).filter((i) => waiting[i].size === 0);
  const order: INodeProto[] = [];
  // a min-heap would keep the original order exactly; a sorted insert is enough for graphs of this size
  while (ready.length) {
    const i = ready.shift()!;
    order.push(nodes[i]);
    for (const u of users[i]) {
      waiting[u].delete(i);
      if (waiting[u].size === 0) {
        const at = ready.findIndex((r) => r > u);
        ready.splice(at < 0 ? ready.length : at, 0, u);
      }
    }
  }
  if (order.length !== nodes.length) {
    throw new OdeJvpError("the output depends on the tangent input: this is not a JVP graph");
  }
  return order;
}

/**
 * Reverse-mode differentiation of ONNX graphs: training graphs for ONNX Runtime.
 *
 * `gradModel(model, { loss, params })` turns a forward graph with a scalar loss output into a graph that
 * computes, in one run, the loss and its gradient with respect to every parameter:
 *
 *     inputs   x, t, target, …  (the original inputs)  +  W₁, b₁, …  (the parameters, as inputs)
 *     outputs  loss, grad.W₁, grad.b₁, …
 *
 * Parameters leave the initializer list and become graph inputs, so an optimiser feeds the current weights
 * on every step; every other initializer stays a constant. The forward nodes are kept as they are; after
 * them, in reverse order, the rule of each operator appends the nodes that pull the cotangent of its
 * outputs back to its inputs (a vector-Jacobian product). Cotangents that reach a value along several
 * paths are summed.
 *
 * Only what is needed is differentiated: nodes on a path from a parameter to the loss. Integer and boolean
 * values, shapes and indices carry no gradient. An operator without a rule on such a path — or a use of a
 * supported operator that its rule cannot handle (an unknown static shape it needs, an attribute it does
 * not support) — is reported by name in a `GradError`; the transform never returns a silently wrong
 * gradient.
 *
 * The rules live in one table, `RULES`, one small function per operator returning one thunk per input
 * (`Sigmoid: dx = dy · y · (1 − y)`); a thunk runs only when that input needs a gradient. Helpers on
 * `Ctx` reduce broadcast gradients back to their input's shape (`sumTo`), mostly from static shapes, else
 * at run time. Two patterns the model builders write out node by node, SiLU and standardisation (GroupNorm's
 * core), are differentiated as one function each (onnx/grad_composites.ts): the same gradient with fewer
 * memory-bound nodes (formulation 2; `GradOptions.formulation`).
 *
 * `withLoss(model, build)` appends a loss to a forward graph with the project's GraphBuilder;
 * `meanSquaredErrorLoss` is the usual one.
 */
import {
  type AttrValue,
  DataType,
  getAttribute,
  GraphBuilder,
  type IGraphProto,
  type IModelProto,
  type INodeProto,
  isFloatType,
  type ITensorProto,
  modelOpset,
  type ModelProto,
  type NodeProto,
  onnx,
  tensorDims,
  tensorFromNumbers,
  type TensorProto,
  tensorValues,
  valueInfo,
  type ValueInfoProto,
  valueInfoType,
} from "./proto.ts";
import { broadcastShapes, inferGraph, type Inferred, sameShape, type SDim, type SShape } from "./infer.ts";
import { NON_DIFFERENTIABLE_OPERATORS } from "./jvp.ts";
import { GraphRewriter } from "./rewrite.ts";
import { compositeGradient } from "./grad_composites.ts";

/** Thrown when a graph cannot be differentiated; `operators` names the operators at fault. */
export class GradError extends Error {
  constructor(message: string, readonly operators: string[]) {
    super(message);
    this.name = "GradError";
  }
}

/** Raised inside a rule when this use of a supported operator cannot be differentiated. */
class NotDifferentiable extends Error {}

/** A cotangent value (null: zero). */
type Cot = string | null;
/** Gives up on this use of an operator (reported with the operator's name). */
function fail(reason: string): never {
  throw new NotDifferentiable(reason);
}

/** The gradient of one input, computed on demand. */
type GradFn = () => Cot;
/** A vector-Jacobian rule: one thunk per input (null or missing: that input gets no gradient). */
type Rule = (c: Ctx) => (GradFn | null | undefined)[];

export interface GradOptions {
  /** The scalar loss output (default: the graph's first output). */
  loss?: string;
  /**
   * The parameters: initializers (or floating-point graph inputs) to differentiate with respect to, or a
   * predicate on initializer names. Default: every floating-point initializer that reaches the loss.
   */
  params?: readonly string[] | ((name: string) => boolean);
  /** Other values to keep as outputs of the training graph (e.g. the prediction, for logging). */
  keep?: readonly string[];
  /** Prefix of the gradient outputs (default "grad."). */
  gradPrefix?: string;
  /**
   * How the gradient is computed; every formulation gives the same gradient up to float rounding, and a
   * newer one is faster. 2 (the default): SiLU and standardisation differentiated as one function each
   * (onnx/grad_composites.ts), and the weight gradients' windows laid out batch-last (`convWeightGrad`).
   * 1: node by node, windows batch-second, as the training graphs were built before 2 existed; kept so
   * that a run recorded with it reproduces bit for bit.
   */
  formulation?: Formulation;
}

/** The gradient formulations ({@link GradOptions.formulation}). */
export const FORMULATIONS = [1, 2] as const;
export type Formulation = (typeof FORMULATIONS)[number];

/** One parameter of a training graph. */
export interface ParamInfo {
  name: string;
  /** Name of its gradient output. */
  grad: string;
  dtype: "float32" | "float64";
  dims: number[];
  /** Its value in the forward model (undefined for parameters that were graph inputs). */
  init?: Float32Array | Float64Array;
}

export interface TrainingGraph {
  /** Inputs: data inputs, then parameters; outputs: loss, kept values, then gradients. */
  model: ModelProto;
  loss: string;
  params: ParamInfo[];
  /** The data inputs (graph inputs that are not parameters). */
  inputs: string[];
}

/** Builds the training graph (loss and parameter gradients) of a forward model. */
export function gradModel(model: IModelProto, options: GradOptions = {}): TrainingGraph {
  const graph = model.graph;
  if (!graph) throw new GradError("model has no graph", []);
  const opset = modelOpset(model);
  if (opset < 11) throw new GradError(`opset ${opset} is not supported (need 11 or newer)`, []);
  const nodes = (graph.node ?? []) as NodeProto[];
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const loss = options.loss ?? graph.output?.[0]?.name;
  if (!loss) throw new GradError("model has no output to use as the loss", []);
  const produced = new Set(nodes.flatMap((n) => n.output ?? []));
  if (!produced.has(loss)) throw new GradError(`loss '${loss}' is not computed by any node`, []);
  const formulation = options.formulation ?? 2;
  if (!FORMULATIONS.includes(formulation)) {
    throw new GradError(`formulation ${formulation} is not one of ${FORMULATIONS.join(", ")}`, []);
  }
  const b = new Backward(model, opset, formulation);
  const lossType = b.info.dtype.get(loss);
  if (!isFloatType(lossType)) throw new GradError(`loss '${loss}' is not floating-point`, []);
  const lossShape = b.info.shape.get(loss);
  // (a loss of unknown shape is seeded with ones: its gradient is that of the sum of its elements)
  if (lossShape && lossShape.some((d) => d !== 1 && d !== null)) {
    throw new GradError(`loss '${loss}' must be a scalar, has shape [${lossShape.join(", ")}]`, []);
  }

  // ----- the parameters
  const graphInputs = (graph.input ?? []).filter((i) => !inits.has(i.name!));
  const floatInit = (n: string) => isFloatType(inits.get(n)?.dataType ?? undefined);
  let params: string[];
  if (Array.isArray(options.params)) {
    params = [...options.params as readonly string[]];
    for (const p of params) {
      const isInput = graphInputs.some((i) => i.name === p);
      if (!floatInit(p) && !(isInput && isFloatType(b.info.dtype.get(p)))) {
        throw new GradError(`'${p}' is neither a floating-point initializer nor a floating-point input`, []);
      }
    }
    if (new Set(params).size !== params.length) throw new GradError("a parameter is listed twice", []);
  } else {
    const pick = (options.params as ((name: string) => boolean) | undefined) ?? (() => true);
    const candidates = [...inits.keys()].filter((n) => floatInit(n) && pick(n));
    const reaching = b.needed(b.active(candidates), loss);
    params = candidates.filter((n) => reaching.has(n));
  }

  // ----- which values carry a gradient: active (depend on a parameter) and needed (reach the loss)
  b.activeSet = b.active(params);
  b.neededSet = b.needed(b.activeSet, loss);
  const missing = new Map<string, string>();
  for (const n of nodes) {
    if (!b.differentiates(n)) continue;
    const op = n.opType ?? "";
    if (n.domain && n.domain !== "ai.onnx") missing.set(`${n.domain}::${op}`, n.name || n.output[0]);
    else if (!RULES[op]) missing.set(op, n.name || n.output[0]);
    else if (hasSubgraph(n)) missing.set(op, n.name || n.output[0]);
  }
  if (missing.size) {
    const ops = [...missing.keys()];
    const detail = [...missing].map(([op, node]) => `${op} (node '${node}')`).join(", ");
    throw new GradError(`no gradient rule for operator(s) ${ops.join(", ")}: ${detail}`, ops);
  }

  // ----- the backward pass
  for (const n of nodes) b.nodes.push(n);
  const seed = b.emit("ConstantOfShape", [b.shapeOf(loss)], {
    value: tensorFromNumbers("value", [1], [1], lossType!),
  });
  b.contribute(loss, seed);
  const faults: { op: string; node: string; reason: string }[] = [];
  for (let k = nodes.length - 1; k >= 0; k--) {
    const node = nodes[k];
    if (!b.differentiates(node)) continue;
    const dys = node.output.map((o) => (o && b.wants(o) ? b.cotangent(o) : null));
    if (dys.every((d) => d === null)) continue;
    const c = new Ctx(b, node, dys);
    const mark = b.nodes.length;
    try {
      // a pattern differentiated as one function (onnx/grad_composites.ts) at its last node
      const composite = b.formulation >= 2 ? compositeGradient(c, node.opType) : undefined;
      if (composite) {
        b.contribute(composite.input, composite.grad());
        continue;
      }
      const thunks = RULES[node.opType](c);
      const grads: [string, string][] = [];
      node.input.forEach((x, i) => {
        if (!x || !b.wants(x) || !b.diffSlot(node, i)) return;
        const fn = thunks[i];
        if (!fn) fail(`no gradient for input ${i} ('${x}')`);
        const g = fn();
        if (g) grads.push([x, g]);
      });
      for (const [x, g] of grads) b.contribute(x, g);
    } catch (e) {
      if (!(e instanceof NotDifferentiable)) throw e;
      b.nodes.splice(mark);
      faults.push({ op: node.opType, node: node.name || node.output[0], reason: e.message });
    }
  }
  if (faults.length) {
    const ops = [...new Set(faults.map((f) => f.op))];
    const detail = faults.map((f) => `${f.op} (node '${f.node}': ${f.reason})`).join(", ");
    throw new GradError(`cannot differentiate operator(s) ${ops.join(", ")}: ${detail}`, ops);
  }

  // ----- outputs, inputs, initializers
  const prefix = options.gradPrefix ?? "grad.";
  const infos: ParamInfo[] = [];
  const gradOutputs: ValueInfoProto[] = [];
  for (const p of params) {
    const t = inits.get(p);
    const dtypeCode = t ? t.dataType! : b.info.dtype.get(p)!;
    const dtype = dtypeCode === DataType.DOUBLE ? "float64" : dtypeCode === DataType.FLOAT ? "float32" : null;
    if (!dtype) {
      throw new GradError(`parameter '${p}': only float32 and float64 parameters are supported`, []);
    }
    const dims = t ? tensorDims(t) : (b.info.shape.get(p) ?? []).map((d) => (typeof d === "number" ? d : -1));
    const gname = b.reserve(`${prefix}${p}`);
    b.append("Identity", [b.cotangent(p) ?? b.zerosLike(p)], [gname]);
    gradOutputs.push(valueInfo(gname, dtypeCode, t ? dims : b.info.shape.get(p)?.map((d) => d ?? "?")));
    infos.push({ name: p, grad: gname, dtype, dims, init: t ? typedValues(t) : undefined });
  }
  const lossInfo = (graph.output ?? []).find((o) => o.name === loss) ?? valueInfo(loss, lossType!);
  const kept = (options.keep ?? []).map((name) => {
    const declared = (graph.output ?? []).find((o) => o.name === name);
    if (declared) return declared;
    const dtype = b.info.dtype.get(name);
    if (dtype === undefined) throw new GradError(`cannot keep '${name}': unknown value`, []);
    return valueInfo(name, dtype);
  });
  const outputs = [lossInfo, ...kept, ...gradOutputs] as ValueInfoProto[];
  const paramSet = new Set(params);
  const inputs: ValueInfoProto[] = [];
  for (const i of graphInputs) inputs.push(i as ValueInfoProto);
  for (const p of params) {
    if (graphInputs.some((i) => i.name === p)) continue;
    const t = inits.get(p)!;
    inputs.push(valueInfo(p, t.dataType!, tensorDims(t)));
  }
  const live = b.liveNodes(outputs.map((o) => o.name));
  const used = new Set(live.flatMap((n) => n.input));
  const initializers = [
    ...[...inits.values()].filter((t) => !paramSet.has(t.name) && used.has(t.name)),
    ...b.initializers.filter((t) => used.has(t.name)),
  ];
  const newGraph = onnx.GraphProto.create({
    name: `${graph.name ?? "graph"}_train`,
    node: live,
    input: inputs,
    output: outputs,
    initializer: initializers,
    valueInfo: (graph.valueInfo ?? []).filter((v) => !paramSet.has(v.name!)),
  });
  return {
    model: onnx.ModelProto.create({ ...model, graph: newGraph }),
    loss,
    params: infos,
    inputs: graphInputs.map((i) => i.name!).filter((n) => !paramSet.has(n)),
  };
}

/** A tensor's values as a typed array of its float type. */
function typedValues(t: ITensorProto): Float32Array | Float64Array {
  const raw = t.rawData && t.rawData.length ? t.rawData : undefined;
  if (raw && t.dataType === DataType.FLOAT) {
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  }
  if (raw && t.dataType === DataType.DOUBLE) {
    return new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  }
  const v = tensorValues(t);
  return t.dataType === DataType.DOUBLE ? Float64Array.from(v) : Float32Array.from(v);
}

function hasSubgraph(n: INodeProto): boolean {
  return (n.attribute ?? []).some((a) => a.g || a.graphs?.length);
}

/** Names the subgraphs of a node (If, Loop, Scan) read from enclosing graphs. */
function outerNames(n: INodeProto): string[] {
  const graphs = (n.attribute ?? []).flatMap((a) => [a.g, ...(a.graphs ?? [])]).filter((g) => !!g);
  const used = new Set<string>();
  for (const g of graphs) {
    const defined = new Set([
      ...(g!.input ?? []).map((i) => i.name!),
      ...(g!.initializer ?? []).map((t) => t.name!),
    ]);
    for (const inner of g!.node ?? []) {
      for (const i of [...(inner.input ?? []), ...outerNames(inner)]) if (i && !defined.has(i)) used.add(i);
      for (const o of inner.output ?? []) defined.add(o);
    }
  }
  return [...used];
}

/** Operators whose outputs carry no gradient (shapes, comparisons, constants, rounding). */
const NON_DIFFERENTIABLE = new Set(NON_DIFFERENTIABLE_OPERATORS);

/** Inputs through which an operator is not differentiated (resampling grids, shapes, indices). */
const NON_DIFFERENTIABLE_INPUTS: Record<string, number[]> = {
  Resize: [1, 2, 3],
  Upsample: [1],
};

/** The state of one transformation: names, emitted nodes, contributions to each cotangent. */
class Backward extends GraphRewriter {
  readonly #parts = new Map<string, string[]>();
  readonly #sums = new Map<string, Cot>();
  readonly graphNodes: NodeProto[];
  /** The forward node computing each value. */
  readonly producers = new Map<string, NodeProto>();
  activeSet = new Set<string>();
  neededSet = new Set<string>();

  constructor(model: IModelProto, readonly opset: number, readonly formulation: Formulation) {
    const g = model.graph!;
    super(g, inferWithResize(g, opset), "grad");
    this.graphNodes = (g.node ?? []) as NodeProto[];
    for (const n of this.graphNodes) for (const o of n.output ?? []) if (o) this.producers.set(o, n);
    // Constant nodes are constants too (the graph's initializers already are).
    for (const n of g.node ?? []) {
      if (n.opType === "Constant" && (!n.domain || n.domain === "ai.onnx")) {
        const t = getAttribute(n, "value") as ITensorProto | undefined;
        if (t) this.constants.set(n.output![0], t);
      }
    }
  }

  protected nameTaken(name: string): Error {
    return new GradError(`name '${name}' is already used in the graph`, []);
  }

  /** Values that depend on one of `seeds` through a differentiable path. */
  active(seeds: readonly string[]): Set<string> {
    const active = new Set(seeds);
    for (const n of this.graphNodes) {
      if (!this.#reads(n, active)) continue;
      for (const o of n.output ?? []) {
        if (!o) continue;
        const d = this.info.dtype.get(o);
        if (d === undefined || isFloatType(d)) active.add(o);
      }
    }
    return active;
  }

  /** Active values with a path to `loss`. */
  needed(active: Set<string>, loss: string): Set<string> {
    const needed = new Set<string>();
    if (active.has(loss)) needed.add(loss);
    for (let k = this.graphNodes.length - 1; k >= 0; k--) {
      const n = this.graphNodes[k];
      if (!(n.output ?? []).some((o) => o && needed.has(o))) continue;
      (n.input ?? []).forEach((x, i) => {
        if (x && active.has(x) && this.diffSlot(n, i)) needed.add(x);
      });
      for (const x of outerNames(n)) if (active.has(x)) needed.add(x);
    }
    return needed;
  }

  /** True when a differentiable input of the node (or a value its subgraph captures) is active. */
  #reads(n: INodeProto, active: Set<string>): boolean {
    const op = n.opType ?? "";
    const domain = n.domain && n.domain !== "ai.onnx";
    if (!domain && NON_DIFFERENTIABLE.has(op)) return false;
    return (n.input ?? []).some((x, i) => x && active.has(x) && this.diffSlot(n, i)) ||
      outerNames(n).some((x) => active.has(x));
  }

  /** True when a node lies on a path from a parameter to the loss. */
  differentiates(n: INodeProto): boolean {
    return (n.output ?? []).some((o) => o && this.activeSet.has(o) && this.neededSet.has(o)) &&
      this.#reads(n, this.activeSet);
  }

  /** True when value x needs a gradient. */
  wants(x: string): boolean {
    return this.activeSet.has(x) && this.neededSet.has(x);
  }

  diffSlot(n: INodeProto, i: number): boolean {
    return !NON_DIFFERENTIABLE_INPUTS[n.opType ?? ""]?.includes(i);
  }

  /** Adds a contribution to the cotangent of `v`. */
  contribute(v: string, g: string): void {
    if (this.#sums.has(v)) throw new Error(`internal: cotangent of '${v}' used before all contributions`);
    const parts = this.#parts.get(v) ?? [];
    parts.push(g);
    this.#parts.set(v, parts);
  }

  /** The cotangent of `v`: the sum of its contributions (null when there are none). */
  cotangent(v: string): Cot {
    if (this.#sums.has(v)) return this.#sums.get(v)!;
    const parts = this.#parts.get(v) ?? [];
    const sum = parts.length === 0
      ? null
      : parts.length === 1
      ? parts[0]
      : this.emit(parts.length === 2 ? "Add" : "Sum", parts);
    this.#sums.set(v, sum);
    return sum;
  }

  emit(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}): string {
    return this.emitN(opType, inputs, 1, attrs)[0];
  }

  /** A constant tensor shared by every use. */
  constant(values: readonly number[], dims: readonly number[], dtype: number): string {
    return this.sharedConstant(
      `${dtype}:${dims.join("x")}:${values.join(",")}`,
      "const",
      values,
      dims,
      dtype,
    );
  }

  /** The node list without nodes whose results nothing needs. */
  liveNodes(outputs: readonly string[]): NodeProto[] {
    const needed = new Set(outputs);
    const keep: boolean[] = new Array(this.nodes.length).fill(false);
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (n.output.some((o) => needed.has(o))) {
        keep[i] = true;
        for (const inp of [...n.input, ...outerNames(n)]) if (inp) needed.add(inp);
      }
    }
    return this.nodes.filter((_, i) => keep[i]);
  }
}

/**
 * `inferGraph`, plus the output shapes of Resize nodes with constant scales or sizes (which it leaves
 * unknown), fed back as value infos until nothing new is learnt.
 */
function inferWithResize(graph: IGraphProto, opset: number): Inferred {
  let info = inferGraph(graph, opset);
  const consts = new Map<string, ITensorProto>((graph.initializer ?? []).map((t) => [t.name!, t]));
  for (const n of graph.node ?? []) {
    const t = n.opType === "Constant" ? getAttribute(n, "value") as ITensorProto | undefined : undefined;
    if (t) consts.set(n.output![0], t);
  }
  const declared = new Map<string, ValueInfoProto>();
  for (let pass = 0; pass < 16; pass++) {
    let learnt = false;
    for (const n of graph.node ?? []) {
      if (n.opType !== "Resize" || (n.domain && n.domain !== "ai.onnx") || opset < 11) continue;
      const [x, , scales, sizes] = n.input ?? [];
      const out = n.output![0];
      const known = info.shape.get(out);
      if (known && known.every((d) => typeof d === "number")) continue;
      const xs = info.shape.get(x);
      const sc = scales && consts.get(scales) ? tensorValues(consts.get(scales)!) : [];
      const sz = sizes && consts.get(sizes) ? tensorValues(consts.get(sizes)!) : [];
      let dims: SDim[] | undefined;
      if (sz.length) dims = sz;
      else if (sc.length && xs && xs.length === sc.length) {
        dims = xs.map((d, i) => (typeof d === "number" ? Math.floor(d * sc[i]) : sc[i] === 1 ? d : null));
      }
      if (!dims || getAttribute(n, "axes")) continue;
      const vi = valueInfo(out, info.dtype.get(x) ?? DataType.FLOAT, dims.map((d, i) => d ?? `?${out}/${i}`));
      const before = declared.get(out);
      if (before && JSON.stringify(valueInfoType(before)) === JSON.stringify(valueInfoType(vi))) continue;
      declared.set(out, vi);
      learnt = true;
    }
    if (!learnt) break;
    info = inferGraph({ ...graph, valueInfo: [...(graph.valueInfo ?? []), ...declared.values()] }, opset);
  }
  // placeholders for unknown dims are not real symbols
  for (const [k, s] of info.shape) {
    if (s?.some((d) => typeof d === "string" && d.startsWith("?"))) {
      info.shape.set(k, s.map((d) => (typeof d === "string" && d.startsWith("?") ? null : d)));
    }
  }
  return info;
}

/** What a rule sees: the node, its primal inputs x and outputs y, output cotangents dys, and emitters. */
class Ctx {
  readonly x: string[];
  readonly y: string[];
  readonly op: string;

  constructor(readonly b: Backward, readonly node: NodeProto, readonly dys: Cot[]) {
    this.x = node.input;
    this.y = node.output;
    this.op = node.opType;
  }

  /** The cotangent of the (first) output. */
  get dy(): string {
    const d = this.dys[0];
    if (!d) fail("no cotangent for its first output");
    return d;
  }

  get opset(): number {
    return this.b.opset;
  }

  attr<T>(name: string, dflt: T): T {
    const v = getAttribute(this.node, name);
    return v === undefined ? dflt : v as T;
  }

  /** The floating-point element type of this node's gradients. */
  get dtype(): number {
    for (const v of [this.y[0], ...this.x]) {
      const d = this.b.info.dtype.get(v);
      if (isFloatType(d)) return d!;
    }
    return fail("unknown floating-point element type");
  }

  shape(v: string): SShape {
    return this.b.info.shape.get(v) ?? null;
  }

  /** The static rank of a value (fails when unknown). */
  rank(v: string): number {
    const s = this.shape(v);
    if (!s) fail(`rank of '${v}' is not known statically`);
    return s.length;
  }

  /** Static numeric dims of a value (fails when one is unknown). */
  dims(v: string, what = `shape of '${v}'`): number[] {
    const s = this.shape(v);
    if (!s || s.some((d) => typeof d !== "number")) fail(`${what} is not known statically`);
    return s as number[];
  }

  /** The values of a constant input: an initializer, Constant output or inferred small integer tensor. */
  constValues(v: string): number[] | undefined {
    const t = this.b.constants.get(v);
    if (t) return tensorValues(t);
    const inferred = this.b.info.value.get(v);
    if (inferred && inferred.every((d) => typeof d === "number")) return inferred as number[];
    return undefined;
  }

  /** A scalar constant in this node's element type. */
  k(v: number): string {
    return this.b.constant([v], [], this.dtype);
  }

  ints(values: readonly number[]): string {
    return this.b.constant(values, [values.length], DataType.INT64);
  }

  emit(op: string, inputs: readonly (string | number)[], attrs: Record<string, AttrValue> = {}): string {
    return this.b.emit(op, inputs.map((v) => (typeof v === "number" ? this.k(v) : v)), attrs);
  }

  emitN(op: string, inputs: readonly string[], n: number, attrs: Record<string, AttrValue> = {}): string[] {
    return this.b.emitN(op, inputs, n, attrs);
  }

  // ----- algebra (numbers become scalar constants)
  add(a: string | number, b: string | number): string {
    return this.emit("Add", [a, b]);
  }
  sub(a: string | number, b: string | number): string {
    return this.emit("Sub", [a, b]);
  }
  mul(a: string | number, b: string | number, ...more: (string | number)[]): string {
    return more.reduce<string>((acc, m) => this.emit("Mul", [acc, m]), this.emit("Mul", [a, b]));
  }
  div(a: string | number, b: string | number): string {
    return this.emit("Div", [a, b]);
  }
  neg(a: string): string {
    return this.emit("Neg", [a]);
  }
  /** An elementwise function of primal values, e.g. `c.f("Cos", c.x[0])`. */
  f(op: string, ...inputs: (string | number)[]): string {
    return this.emit(op, inputs);
  }
  where(cond: string, a: string | number, b: string | number): string {
    return this.emit("Where", [cond, a, b]);
  }

  // ----- shapes (opset-aware)
  shapeOf(v: string): string {
    return this.b.shapeOf(v);
  }
  zerosLike(v: string): string {
    return this.b.zerosLike(v);
  }
  reshape(v: string, shape: readonly number[] | string): string {
    return this.emit("Reshape", [v, typeof shape === "string" ? shape : this.ints(shape)]);
  }
  /** Reshape(v, Shape(like)). */
  reshapeLike(v: string, like: string): string {
    return this.reshape(v, this.shapeOf(like));
  }
  transpose(v: string, perm: readonly number[]): string {
    return this.emit("Transpose", [v], { perm: [...perm] });
  }
  reduce(op: "ReduceSum" | "ReduceMean", v: string, axes: readonly number[], keepdims = 1): string {
    const axesAsInput = op === "ReduceSum" ? this.opset >= 13 : this.opset >= 18;
    return axesAsInput
      ? this.emit(op, [v, this.ints(axes)], { keepdims })
      : this.emit(op, [v], { axes: [...axes], keepdims });
  }
  sum(v: string, axes: readonly number[], keepdims = 1): string {
    return this.reduce("ReduceSum", v, axes, keepdims);
  }
  mean(v: string, axes: readonly number[], keepdims = 1): string {
    return this.reduce("ReduceMean", v, axes, keepdims);
  }
  unsqueeze(v: string, axes: readonly number[]): string {
    return this.opset >= 13
      ? this.emit("Unsqueeze", [v, this.ints(axes)])
      : this.emit("Unsqueeze", [v], { axes: [...axes] });
  }
  split(v: string, sizes: readonly number[] | string, axis: number, n: number): string[] {
    if (this.opset >= 13) {
      return this.emitN("Split", [v, typeof sizes === "string" ? sizes : this.ints(sizes)], n, { axis });
    }
    if (typeof sizes === "string") fail("split sizes unknown statically (opset < 13)");
    return this.emitN("Split", [v], n, { axis, split: [...sizes] });
  }
  slice(v: string, starts: readonly number[], ends: readonly number[], axes: readonly number[]): string {
    return this.emit("Slice", [v, this.ints(starts), this.ints(ends), this.ints(axes)]);
  }
  /** Size(a)/Size(b) as a scalar of this node's type (how many inputs each output averages). */
  sizeRatio(a: string, b: string): string {
    const ratio = this.emit("Div", [this.emit("Size", [a]), this.emit("Size", [b])]);
    return this.emit("Cast", [ratio], { to: this.dtype });
  }

  /**
   * Sums a gradient `g` of shape `gShape` (a broadcast of `target`'s shape) back to the shape of the
   * value `target`: over the leading axes it lacks and the axes where it has size 1. Static shapes decide
   * the axes where they can; otherwise they are found at run time.
   */
  sumTo(g: string, gShape: SShape, target: string, t: SShape = this.shape(target)): string {
    if (sameShape(t, gShape)) return g;
    if (t && gShape && gShape.length >= t.length) {
      const lead = gShape.length - t.length;
      const axes: number[] = [];
      for (let i = 0; i < lead; i++) axes.push(i);
      let known = true;
      t.forEach((d, j) => {
        const s = gShape[lead + j];
        if (d === s && d !== null) return;
        if (d === 1) {
          if (s !== 1) axes.push(lead + j);
        } else if (typeof d !== "number") known = false;
      });
      if (known) {
        if (axes.length === 0) return lead ? this.reshapeLike(g, target) : g;
        const r = this.sum(g, axes, 1);
        return t.every((d) => typeof d === "number")
          ? this.reshape(r, t as number[])
          : this.reshapeLike(r, target);
      }
    }
    if (this.opset < 13) fail(`broadcast of '${target}' is not known statically (opset < 13)`);
    const sx = this.shapeOf(target), sg = this.emit("Shape", [g]);
    const pad = this.emit("ConstantOfShape", [this.sub(this.emit("Shape", [sg]), this.emit("Shape", [sx]))], {
      value: tensorFromNumbers("value", [1], [1], DataType.INT64),
    });
    const padded = this.emit("Concat", [pad, sx], { axis: 0 });
    const axes = this.reshape(this.emit("NonZero", [this.f("Not", this.f("Equal", padded, sg))]), [-1]);
    const r = this.emit("ReduceSum", [g, axes], { keepdims: 1, noop_with_empty_axes: 1 });
    return this.reshape(r, sx);
  }

  /** The gradient of input i of a broadcasting operator: `g` has the output's shape. */
  unbroadcast(g: string, i: number): string {
    return this.sumTo(g, this.shape(this.y[0]), this.x[i]);
  }

  /** Fails when an input other than those in `ok` needs a gradient. */
  only(...ok: number[]): void {
    this.x.forEach((_, i) => {
      if (!ok.includes(i) && this.wants(i)) {
        fail(`gradient for input ${i} ('${this.x[i]}') is not supported`);
      }
    });
  }

  /** The forward node computing `v` (undefined for inputs and initializers). */
  producer(v: string): NodeProto | undefined {
    return this.b.producers.get(v);
  }

  /** True when the value `v` needs a gradient. */
  wantsValue(v: string): boolean {
    return this.b.wants(v);
  }

  /** True when input i needs a gradient. */
  wants(i: number): boolean {
    const x = this.x[i];
    return !!x && this.b.wants(x) && this.b.diffSlot(this.node, i);
  }

  /** x̂ = (X − mean)/sqrt(var + ε) over `axis` (keepdims), and 1/sqrt(var + ε). */
  standardize(X: string, axis: number, eps: number): { xhat: string; rstd: string } {
    const xc = this.sub(X, this.mean(X, [axis]));
    const variance = this.mean(this.mul(xc, xc), [axis]);
    const rstd = this.f("Reciprocal", this.f("Sqrt", this.add(variance, eps)));
    return { xhat: this.mul(xc, rstd), rstd };
  }

  /** Gradient of x̂ = standardize(X) over `axis` for cotangent G of x̂: rstd·(G − mean G − x̂·mean(G·x̂)). */
  standardizeGrad(G: string, xhat: string, rstd: string, axis: number): string {
    const inner = this.sub(
      this.sub(G, this.mean(G, [axis])),
      this.mul(xhat, this.mean(this.mul(G, xhat), [axis])),
    );
    return this.mul(inner, rstd);
  }
}

/** One thunk for the first input: unary functions. */
const unary = (f: (c: Ctx) => string): Rule => (c) => [() => f(c)];

/** Data movement whose inverse is a reshape back to the input's shape. */
const reshapeBack: Rule = (c) => [() => c.reshapeLike(c.dy, c.x[0])];

/** Static spatial attributes of Conv/ConvTranspose/AveragePool with auto_pad resolved to explicit pads. */
function spatial(c: Ctx, kernel: readonly number[], transposed = false) {
  const n = kernel.length;
  const strides = c.attr<number[]>("strides", new Array(n).fill(1));
  const dilations = c.attr<number[]>("dilations", new Array(n).fill(1));
  let pads = c.attr<number[]>("pads", new Array(2 * n).fill(0));
  const auto = c.attr<string>("auto_pad", "NOTSET");
  if (auto === "VALID") pads = new Array(2 * n).fill(0);
  else if (auto === "SAME_UPPER" || auto === "SAME_LOWER") {
    if (transposed) fail(`auto_pad=${auto}`);
    const x = c.dims(c.x[0]).slice(2);
    pads = new Array(2 * n).fill(0);
    for (let i = 0; i < n; i++) {
      const out = Math.ceil(x[i] / strides[i]);
      const total = Math.max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x[i]);
      const small = Math.floor(total / 2);
      pads[i] = auto === "SAME_UPPER" ? small : total - small;
      pads[i + n] = total - pads[i];
    }
  } else if (auto !== "NOTSET") fail(`auto_pad=${auto}`);
  return { strides, dilations, pads, n };
}

/**
 * dW of a convolution with input I [N, Ci, …] and output cotangent G [N, Co, …], one kernel tap at a
 * time: with the channels moved first (I' = [Ci, …, N] padded, G' = [g, Co/g, L·N] for g groups and L
 * output positions), tap κ's slice of dW is the matrix product dW[:, :, κ] = G' · S_κᵀ, S_κ = [g, Ci/g, L·N]
 * the strided window of I' at offset d·κ. The K products [g, Co/g, Ci/g] are stacked and laid out
 * [Co, Ci/g, k₁, k₂, …]. Every product has the whole batch and every position as its inner dimension (one
 * well-shaped GEMM per tap and group), and no K-fold copy of the input is held at once. The batch goes
 * last (formulation 2) so that a window's rows are runs of W·N contiguous values, which the slices copy
 * faster than runs of W (formulation 1 put it second: [Ci, N, …]).
 */
function convWeightGrad(
  c: Ctx,
  I: string,
  G: string,
  a: { strides: number[]; dilations: number[]; pads: number[]; n: number },
  kernel: readonly number[],
  channels: { inC: number; outC: number; group: number },
): string {
  const { n, strides, dilations, pads } = a;
  const { inC, outC, group } = channels;
  const spatial = Array.from({ length: n }, (_, i) => i + 2);
  // the channels first: [C, spatial…, N] (formulation 2) or [C, N, spatial…] (1)
  const batchLast = c.b.formulation >= 2;
  const swap = batchLast ? [1, ...spatial, 0] : [1, 0, ...spatial];
  const axes = batchLast ? spatial.map((a) => a - 1) : spatial;
  const It = c.transpose(I, swap);
  const padPart = (part: number[]) => (batchLast ? [0, ...part, 0] : [0, 0, ...part]);
  const padded = pads.some((p) => p !== 0)
    ? c.emit("Pad", [It, c.ints([...padPart(pads.slice(0, n)), ...padPart(pads.slice(n))])])
    : It;
  // [Co, N·L] (ungrouped) or [g, Co/g, N·L]; a tap's window likewise with Ci
  const matrix = (v: string, channels: number) =>
    group === 1 ? c.reshape(v, [channels, -1]) : c.reshape(v, [group, channels / group, -1]);
  const transposed = (v: string) => c.transpose(v, group === 1 ? [1, 0] : [0, 2, 1]);
  const Gm = matrix(c.transpose(G, swap), outC);
  const product = (window: string) => c.emit("MatMul", [Gm, transposed(matrix(window, inC))]);
  const taps = kernel.reduce((p, k) => p * k, 1);
  if (taps === 1 && strides.every((s) => s === 1)) {
    return c.reshape(product(padded), [outC, inC / group, ...kernel]);
  }
  const out = c.shape(G)?.slice(2);
  const staticOut = out && out.every((d) => typeof d === "number") ? out as number[] : undefined;
  // the last window start + 1 along each axis, at run time when the output size is not static
  const span = staticOut ? undefined : c.emit("Add", [
    c.emit("Mul", [
      c.emit("Sub", [
        c.emit("Slice", [c.shapeOf(G), c.ints([2]), c.ints([n + 2])]),
        c.ints(new Array(n).fill(1)),
      ]),
      c.ints(strides),
    ]),
    c.ints(new Array(n).fill(1)),
  ]);
  // kernel offsets in row-major order, matching the weight layout [Co, Ci/g, k₁, k₂, …]
  const offsets: number[][] = [[]];
  for (const k of kernel) {
    offsets.splice(
      0,
      offsets.length,
      ...offsets.flatMap((o) => Array.from({ length: k }, (_, i) => [...o, i])),
    );
  }
  const products = offsets.map((offset) => {
    const starts = offset.map((o, i) => o * dilations[i]);
    const ends = staticOut
      ? c.ints(starts.map((s, i) => s + strides[i] * (staticOut[i] - 1) + 1))
      : c.emit("Add", [span!, c.ints(starts)]);
    const window = c.emit("Slice", [padded, c.ints(starts), ends, c.ints(axes), c.ints(strides)]);
    return c.unsqueeze(product(window), [group === 1 ? 2 : 3]);
  });
  // [(g,) Co/g, Ci/g, K] → [Co, Ci/g, k₁, k₂, …]
  const stacked = c.emit("Concat", products, { axis: group === 1 ? 2 : 3 });
  return c.reshape(stacked, [outC, inC / group, ...kernel]);
}

/**
 * dX of a stride-1 ungrouped convolution as a convolution: dX = G ⋆ W̃ with W̃[ci, co, κ] = W[co, ci, −κ]
 * (the kernel flipped and its channel axes swapped) and pads d(k − 1) − p, which gives back the input's
 * size. Undefined when a stride is not 1, the convolution is grouped, or a pad exceeds d(k − 1).
 */
function inputGradByConv(
  c: Ctx,
  g: string,
  W: string,
  a: { strides: number[]; dilations: number[]; pads: number[]; n: number },
  group: number,
  kernel: readonly number[],
): string | undefined {
  const { n, strides, dilations, pads } = a;
  if (group !== 1 || strides.some((s) => s !== 1)) return undefined;
  const reach = kernel.map((k, i) => dilations[i] * (k - 1));
  const flippedPads = [...reach, ...reach].map((r, j) => r - pads[j]);
  if (flippedPads.some((p) => p < 0)) return undefined;
  const axes = Array.from({ length: n }, (_, i) => i + 2);
  const big = 2 ** 62;
  const flipped = c.emit("Slice", [
    W,
    c.ints(new Array(n).fill(-1)),
    c.ints(new Array(n).fill(-big)),
    c.ints(axes),
    c.ints(new Array(n).fill(-1)),
  ]);
  return c.emit("Conv", [g, c.transpose(flipped, [1, 0, ...axes])], { pads: flippedPads, dilations });
}

/**
 * The adjoint of a convolution of `like` with weight W applied to a cotangent g: ConvTranspose(g, W),
 * given the spatial size of `like` — by output padding when the sizes are known statically, else by
 * transposing without the end padding, padding the end with zeros and slicing to Shape(like) at run time.
 */
function adjointConv(
  c: Ctx,
  g: string,
  W: string,
  a: { strides: number[]; dilations: number[]; pads: number[]; n: number },
  group: number,
  like: string,
  out: string,
  kernel: readonly number[],
): string {
  const base: Record<string, AttrValue> = { strides: a.strides, dilations: a.dilations };
  if (group !== 1) base.group = group;
  const xs = c.shape(like)?.slice(2), ys = c.shape(out)?.slice(2);
  if (xs && ys && [...xs, ...ys].every((d) => typeof d === "number")) {
    const op = outputPadding(xs as number[], ys as number[], kernel, a);
    return c.emit("ConvTranspose", [g, W], {
      ...base,
      pads: a.pads,
      ...(op.some((p) => p) ? { output_padding: op } : {}),
    });
  }
  const { n } = a;
  let t = c.emit("ConvTranspose", [g, W], {
    ...base,
    pads: [...a.pads.slice(0, n), ...new Array(n).fill(0)],
  });
  const extra = a.strides.map((s, i) => Math.max(s - 1 - a.pads[n + i], 0));
  if (extra.some((e) => e > 0)) t = c.emit("Pad", [t, c.ints([...new Array(n + 2).fill(0), 0, 0, ...extra])]);
  const ends = c.emit("Slice", [c.shapeOf(like), c.ints([2]), c.ints([n + 2])]);
  const axes = Array.from({ length: n }, (_, i) => i + 2);
  return c.emit("Slice", [t, c.ints(new Array(n).fill(0)), ends, c.ints(axes)]);
}

/** Output padding that makes a transposed convolution of `outLen` give back `inLen`. */
function outputPadding(
  inLen: readonly number[],
  outLen: readonly number[],
  kernel: readonly number[],
  a: { strides: number[]; dilations: number[]; pads: number[]; n: number },
): number[] {
  return inLen.map((len, i) =>
    len -
    (a.strides[i] * (outLen[i] - 1) + a.dilations[i] * (kernel[i] - 1) + 1 - a.pads[i] - a.pads[i + a.n])
  );
}

/** Sum over every axis but the channels: the gradient of a per-channel bias. */
function channelSum(c: Ctx, g: string, rank: number): string {
  return c.sum(g, [0, ...Array.from({ length: rank - 2 }, (_, i) => i + 2)], 0);
}

/** Softmax-style gradients: reduce over `axis` (opset ≥ 13) or over the dims from `axis` on (older). */
function softmaxLike(c: Ctx, body: (y: string, d: string, sum: (v: string) => string) => string): string {
  const [y, d] = [c.y[0], c.dy];
  if (c.opset >= 13) return body(y, d, (v) => c.sum(v, [c.attr("axis", -1)]));
  const axis = c.attr("axis", 1);
  const flat = (v: string) => c.emit("Flatten", [v], { axis });
  return c.reshapeLike(body(flat(y), flat(d), (v) => c.sum(v, [1])), y);
}

/** Nearest-neighbour source index of output `o` (ONNX Resize), for checking block replication. */
function nearestSource(o: number, scale: number, len: number, mode: string, rounding: string): number {
  const outLen = len * scale;
  let x: number;
  if (mode === "half_pixel") x = (o + 0.5) / scale - 0.5;
  else if (mode === "pytorch_half_pixel") x = outLen > 1 ? (o + 0.5) / scale - 0.5 : 0;
  else if (mode === "asymmetric") x = o / scale;
  else if (mode === "tf_half_pixel_for_nn") x = (o + 0.5) / scale;
  else if (mode === "align_corners") x = outLen === 1 ? 0 : (o * (len - 1)) / (outLen - 1);
  else return NaN;
  let i: number;
  if (rounding === "floor") i = Math.floor(x);
  else if (rounding === "ceil") i = Math.ceil(x);
  else if (rounding === "round_prefer_ceil") i = x - Math.floor(x) === 0.5 ? Math.ceil(x) : Math.round(x);
  else i = x - Math.floor(x) === 0.5 ? Math.floor(x) : Math.round(x);
  return Math.min(Math.max(i, 0), len - 1);
}

/** The integer up-sampling factor of each axis of a nearest Resize that replicates blocks, or a failure. */
function nearestFactors(c: Ctx): number[] {
  if (c.opset < 11) fail("Resize before opset 11");
  if (c.attr<string>("mode", "nearest") !== "nearest") fail(`mode=${c.attr("mode", "nearest")}`);
  if (c.attr<number[] | undefined>("axes", undefined)) fail("axes attribute");
  const x = c.shape(c.x[0]);
  if (!x) fail("rank of the input is not known statically");
  const scales = c.x[2] ? c.constValues(c.x[2]) : undefined;
  const sizes = c.x[3] ? c.constValues(c.x[3]) : undefined;
  let factors: number[];
  if (scales && scales.length) factors = scales;
  else if (sizes && sizes.length) {
    if (c.attr<string>("keep_aspect_ratio_policy", "stretch") !== "stretch") {
      fail("keep_aspect_ratio_policy");
    }
    const dims = c.dims(c.x[0], "input shape (with sizes)");
    factors = sizes.map((s, i) => s / dims[i]);
  } else fail("scales or sizes are not constant");
  if (factors.some((f) => !Number.isInteger(f) || f < 1)) {
    fail(`scales [${factors}] are not whole numbers ≥ 1`);
  }
  const mode = c.attr<string>("coordinate_transformation_mode", "half_pixel");
  const rounding = c.attr<string>("nearest_mode", "round_prefer_floor");
  factors.forEach((s, axis) => {
    if (s === 1) return;
    const len = typeof x[axis] === "number" ? x[axis] as number : 16;
    if (typeof x[axis] !== "number" && mode === "align_corners") fail("align_corners with an unknown size");
    for (let o = 0; o < len * s; o++) {
      if (nearestSource(o, s, len, mode, rounding) !== Math.floor(o / s)) {
        fail(`nearest ${mode}/${rounding} ×${s} does not replicate blocks`);
      }
    }
  });
  return factors;
}

/** Max/Min of two inputs: the gradient goes to the selected input (ties pick the first). */
function minMax(c: Ctx, otherWins: "Less" | "Greater") {
  if (c.x.length !== 2) fail(`${c.x.length} inputs (only 2 supported)`);
  const first = c.f("Not", c.f(otherWins, c.x[0], c.x[1]));
  return [() => c.unbroadcast(c.where(first, c.dy, 0), 0), () => c.unbroadcast(c.where(first, 0, c.dy), 1)];
}

/** Reduction axes of ReduceSum/ReduceMean (static), normalised; null for "all axes". */
function reductionAxes(c: Ctx): number[] | null {
  const axesAsInput = c.op === "ReduceSum" ? c.opset >= 13 : c.opset >= 18;
  let axes: number[] | undefined;
  if (axesAsInput) axes = c.x[1] ? c.constValues(c.x[1]) : [];
  else axes = c.attr<number[]>("axes", []);
  if (!axes) fail("axes are not constant");
  if (axes.length === 0) return null;
  const r = axes.some((a) => a < 0) ? c.rank(c.x[0]) : 0;
  return axes.map((a) => (a < 0 ? a + r : a));
}

/** The vector-Jacobian rules, one per operator. */
const RULES: Readonly<Record<string, Rule>> = {
  // ----- data movement: the inverse movement of the cotangent
  Identity: unary((c) => c.dy),
  Dropout: (c) => {
    if (c.x[2] || c.attr("training_mode", 0)) fail("training mode");
    return [() => c.dy];
  },
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: (c) => {
    const perm = c.attr<number[] | undefined>("perm", undefined);
    if (!perm) return [() => c.emit("Transpose", [c.dy])];
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [() => c.transpose(c.dy, inverse)];
  },
  Expand: unary((c) => c.unbroadcast(c.dy, 0)),
  Cast: unary((c) =>
    c.emit("Cast", [c.dy], { to: c.b.info.dtype.get(c.x[0]) ?? fail("unknown input type") })
  ),
  CastLike: unary((c) =>
    c.emit("Cast", [c.dy], { to: c.b.info.dtype.get(c.x[0]) ?? fail("unknown input type") })
  ),
  // Concat: split the cotangent at the inputs' sizes along the axis
  Concat: (c) => {
    const axis = c.attr("axis", 0);
    let pieces: string[] | undefined;
    const sizes = () => {
      const r = c.rank(c.x[0]);
      const a = axis < 0 ? axis + r : axis;
      const known = c.x.map((x) => c.shape(x)?.[a]);
      if (known.every((d) => typeof d === "number")) return known as number[];
      if (c.opset < 13) fail("input sizes along the axis are not known statically");
      const dims = c.x.map((x) => c.emit("Gather", [c.shapeOf(x), c.ints([a])], { axis: 0 }));
      return c.emit("Concat", dims, { axis: 0 });
    };
    const piece = (i: number) => (pieces ??= c.split(c.dy, sizes(), axis, c.x.length))[i];
    return c.x.map((_, i) => () => piece(i));
  },
  // Split: concatenate the outputs' cotangents (zeros for outputs without one)
  Split: (
    c,
  ) => [() => c.emit("Concat", c.y.map((y, k) => c.dys[k] ?? c.zerosLike(y)), { axis: c.attr("axis", 0) })],
  // Slice (step 1): pad the cotangent back with zeros
  Slice: (c) => {
    c.only(0);
    return [() => {
      const r = c.rank(c.x[0]);
      const starts = c.constValues(c.x[1]), ends = c.constValues(c.x[2]);
      const axes = c.x[3] ? c.constValues(c.x[3]) : starts?.map((_, i) => i);
      const steps = c.x[4] ? c.constValues(c.x[4]) : starts?.map(() => 1);
      if (!starts || !ends || !axes || !steps) fail("starts, ends, axes or steps are not constant");
      if (steps.some((s) => s !== 1)) fail(`steps [${steps}] (only 1 is supported)`);
      const pads = new Array(2 * r).fill(0);
      axes.forEach((axis, k) => {
        const a = axis < 0 ? axis + r : axis;
        const dim = c.shape(c.x[0])![a];
        const open = starts[k] >= 0 && ends[k] >= 2 ** 31 - 1;
        if (typeof dim !== "number" && !open) fail(`dimension ${a} of the input is not known statically`);
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + (dim as number) : v, 0), dim as number);
        if (typeof dim !== "number") {
          pads[a] = starts[k];
          return;
        }
        const [s, e] = [clamp(starts[k]), clamp(ends[k])];
        pads[a] = s;
        pads[a + r] = dim - Math.max(s, e);
      });
      return c.emit("Pad", [c.dy, c.ints(pads)], { mode: "constant" });
    }];
  },
  // Pad (constant, non-negative pads): slice the cotangent back
  Pad: (c) => {
    c.only(0);
    if (c.attr("mode", "constant") !== "constant") fail(`mode=${c.attr("mode", "")}`);
    return [() => {
      const r = c.rank(c.x[0]);
      const pads = c.x[1] ? c.constValues(c.x[1]) : undefined;
      if (!pads) fail("pads are not constant");
      if (pads.some((p) => p < 0)) fail("negative pads");
      const axes = c.x[3] ? c.constValues(c.x[3]) : Array.from({ length: r }, (_, i) => i);
      if (!axes) fail("axes are not constant");
      const m = axes.length;
      return c.slice(c.dy, pads.slice(0, m), pads.slice(m).map((p) => (p > 0 ? -p : 2 ** 62)), axes);
    }];
  },
  // Gather (embedding lookup): the one-hot matrix of the indices, transposed, times the cotangent
  Gather: (c) => [() => {
    const [data, idx] = c.x;
    const r = c.rank(data), q = c.rank(idx);
    const axis = c.attr("axis", 0) < 0 ? c.attr("axis", 0) + r : c.attr("axis", 0);
    // move the indexed axes of dy to the front: [idx…, pre…, post…]
    const perm = [
      ...Array.from({ length: q }, (_, i) => axis + i),
      ...Array.from({ length: axis }, (_, i) => i),
      ...Array.from({ length: r - axis - 1 }, (_, i) => axis + q + i),
    ];
    const dy = axis === 0 ? c.dy : c.transpose(c.dy, perm);
    const rows = c.emit("Flatten", [dy], { axis: q });
    const V = c.emit("Gather", [c.shapeOf(data), c.ints([axis])], { axis: 0 });
    const flat = c.emit("Cast", [c.reshape(idx, [-1])], { to: DataType.INT64 });
    const wrapped = c.where(c.f("Less", flat, c.ints([0])), c.f("Add", flat, V), flat);
    const range = c.emit("Range", [
      c.b.constant([0], [], DataType.INT64),
      c.reshape(V, []),
      c.b.constant([1], [], DataType.INT64),
    ]);
    const oneHot = c.emit("Cast", [c.f("Equal", c.unsqueeze(wrapped, [1]), range)], { to: c.dtype });
    const table = c.emit("MatMul", [c.transpose(oneHot, [1, 0]), rows]);
    if (axis === 0) return c.reshapeLike(table, data);
    const moved = [axis, ...Array.from({ length: r }, (_, i) => i).filter((i) => i !== axis)];
    const shape = c.emit("Gather", [c.shapeOf(data), c.ints(moved)], { axis: 0 });
    return c.transpose(c.reshape(table, shape), moved.map((_, i) => moved.indexOf(i)));
  }],

  // ----- sums and products (with broadcasting)
  Neg: unary((c) => c.neg(c.dy)),
  Add: (c) => [() => c.unbroadcast(c.dy, 0), () => c.unbroadcast(c.dy, 1)],
  Sub: (c) => [() => c.unbroadcast(c.dy, 0), () => c.unbroadcast(c.neg(c.dy), 1)],
  Sum: (c) => c.x.map((_, i) => () => c.unbroadcast(c.dy, i)),
  Mul: (c) => [() => c.unbroadcast(c.mul(c.dy, c.x[1]), 0), () => c.unbroadcast(c.mul(c.dy, c.x[0]), 1)],
  // y = a/b: da = dy/b, db = −dy·y/b
  Div: (c) => [
    () => c.unbroadcast(c.div(c.dy, c.x[1]), 0),
    () => c.unbroadcast(c.neg(c.div(c.mul(c.dy, c.y[0]), c.x[1])), 1),
  ],
  Where: (
    c,
  ) => [
    null,
    () => c.unbroadcast(c.where(c.x[0], c.dy, 0), 1),
    () => c.unbroadcast(c.where(c.x[0], 0, c.dy), 2),
  ],
  Max: (c) => minMax(c, "Less"),
  Min: (c) => minMax(c, "Greater"),

  // ----- linear algebra
  // Y = A·B (batched, broadcasting; 1-D operands promoted): dA = dY·Bᵀ, dB = Aᵀ·dY, summed over broadcast
  MatMul: (c) => {
    const [A, B] = c.x;
    const T = (v: string, rank: number) =>
      c.transpose(v, [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2]);
    const promoted = () => {
      const ra = c.rank(A), rb = c.rank(B);
      const sa = c.shape(A)!, sb = c.shape(B)!;
      let dy = c.dy;
      if (ra === 1 && rb === 1) dy = c.reshape(dy, [1, 1]);
      else if (ra === 1) dy = c.unsqueeze(dy, [-2]);
      else if (rb === 1) dy = c.unsqueeze(dy, [-1]);
      const pa = ra === 1 ? [1, sa[0]] : sa, pb = rb === 1 ? [sb[0], 1] : sb;
      return {
        a: ra === 1 ? c.unsqueeze(A, [0]) : A,
        b: rb === 1 ? c.unsqueeze(B, [1]) : B,
        dy,
        pa,
        pb,
        batch: broadcastShapes([pa.slice(0, -2), pb.slice(0, -2)]),
      };
    };
    // a gradient [batch…, r, c] summed to the (promoted) operand, then shaped like the operand
    const back = (g: string, batch: SShape, p: SDim[], promotedValue: string, original: string) => {
      const summed = c.sumTo(g, batch ? [...batch, ...p.slice(-2)] : null, promotedValue, p);
      return promotedValue === original ? summed : c.reshapeLike(summed, original);
    };
    return [
      () => {
        const { a, b, dy, pa, pb, batch } = promoted();
        return back(c.emit("MatMul", [dy, T(b, pb.length)]), batch, pa, a, A);
      },
      () => {
        const { a, b, dy, pa, pb, batch } = promoted();
        return back(c.emit("MatMul", [T(a, pa.length), dy]), batch, pb, b, B);
      },
    ];
  },
  // Y = α·op(A)·op(B) + β·C
  Gemm: (c) => {
    const [A, B, C] = c.x;
    const tA = c.attr("transA", 0), tB = c.attr("transB", 0);
    const alpha = c.attr("alpha", 1), beta = c.attr("beta", 1);
    return [
      () =>
        tA
          ? c.emit("Gemm", [B, c.dy], { alpha, transA: tB, transB: 1 })
          : c.emit("Gemm", [c.dy, B], { alpha, transB: 1 - tB }),
      () =>
        tB
          ? c.emit("Gemm", [c.dy, A], { alpha, transA: 1, transB: tA })
          : c.emit("Gemm", [A, c.dy], { alpha, transA: 1 - tA }),
      C ? () => c.sumTo(beta === 1 ? c.dy : c.mul(c.dy, beta), c.shape(c.y[0]), C) : null,
    ];
  },
  // Y = W ⋆ X + b: dX = W ⋆ᵀ dY (a convolution with the flipped kernel at stride 1, else a transposed
  // convolution), dW by one matrix product per kernel tap (convWeightGrad), db = Σ dY
  Conv: (c) => {
    const [X, W, bias] = c.x;
    const w = c.dims(W, "weight shape");
    const kernel = w.slice(2);
    const group = c.attr("group", 1);
    const a = () => spatial(c, kernel);
    return [
      () =>
        inputGradByConv(c, c.dy, W, a(), group, kernel) ??
          adjointConv(c, c.dy, W, a(), group, X, c.y[0], kernel),
      () => convWeightGrad(c, X, c.dy, a(), kernel, { inC: w[1] * group, outC: w[0], group }),
      bias ? () => channelSum(c, c.dy, kernel.length + 2) : null,
    ];
  },
  // Y = W ⋆ᵀ X + b: dX = W ⋆ dY (the convolution it transposes), dW with the roles of X and dY swapped
  ConvTranspose: (c) => {
    const [, W, bias] = c.x;
    const w = c.dims(W, "weight shape");
    const kernel = w.slice(2);
    const group = c.attr("group", 1);
    if (c.attr<number[] | undefined>("output_shape", undefined)) fail("output_shape attribute");
    const a = () => spatial(c, kernel, true);
    return [
      () => {
        const s = a();
        return c.emit("Conv", [c.dy, W], { strides: s.strides, dilations: s.dilations, pads: s.pads, group });
      },
      () => convWeightGrad(c, c.dy, c.x[0], a(), kernel, { inC: w[1] * group, outC: w[0], group }),
      bias ? () => channelSum(c, c.dy, kernel.length + 2) : null,
    ];
  },

  // ----- pooling and resampling: transposed sums with ones
  AveragePool: (c) => [() => {
    if (c.attr("ceil_mode", 0)) fail("ceil_mode=1");
    const kernel = c.attr<number[]>("kernel_shape", []);
    const s = spatial(c, kernel);
    if (s.dilations.some((d) => d !== 1)) fail("dilations");
    // divide by the window size: the kernel volume, or the count of non-pad inputs of each window
    const volume = kernel.reduce((p, k) => p * k, 1);
    let scaled: string;
    if (c.attr("count_include_pad", 0) || s.pads.every((p) => p === 0)) scaled = c.mul(c.dy, 1 / volume);
    else {
      const xs = c.dims(c.x[0], "input shape").slice(2), ys = c.dims(c.y[0], "output shape").slice(2);
      const counts: number[] = [];
      const walk = (axis: number, acc: number) => {
        if (axis === kernel.length) return void counts.push(1 / acc);
        for (let o = 0; o < ys[axis]; o++) {
          const start = o * s.strides[axis] - s.pads[axis];
          walk(axis + 1, acc * (Math.min(start + kernel[axis], xs[axis]) - Math.max(start, 0)));
        }
      };
      walk(0, 1);
      scaled = c.mul(c.dy, c.b.constant(counts, [1, 1, ...ys], c.dtype));
    }
    // every (n, c) plane on its own: [N·C, 1, …], transposed against a kernel of ones
    const ones = c.b.constant(new Array(volume).fill(1), [1, 1, ...kernel], c.dtype);
    const single = c.reshape(scaled, [-1, 1, ...kernel.map(() => 0)]);
    return c.reshapeLike(adjointConv(c, single, ones, s, 1, c.x[0], c.y[0], kernel), c.x[0]);
  }],
  GlobalAveragePool: unary((c) =>
    c.div(c.emit("Expand", [c.dy, c.shapeOf(c.x[0])]), c.sizeRatio(c.x[0], c.y[0]))
  ),
  // nearest up-sampling by whole factors: each input receives the sum of its block (a strided ones-conv)
  Resize: (c) => [() => {
    const factors = nearestFactors(c);
    if (factors[0] !== 1 || factors[1] !== 1) fail("scaling of the batch or channel axis");
    const block = factors.slice(2);
    if (block.every((f) => f === 1)) return c.dy;
    const ones = c.b.constant(new Array(block.reduce((p, k) => p * k, 1)).fill(1), [1, 1, ...block], c.dtype);
    const single = c.reshape(c.dy, [-1, 1, ...block.map(() => 0)]);
    return c.reshapeLike(c.emit("Conv", [single, ones], { strides: block }), c.x[0]);
  }],

  // ----- reductions: broadcast the cotangent back (divided by the count for a mean)
  ReduceSum: (c) => reduceRule(c, false),
  ReduceMean: (c) => reduceRule(c, true),

  // ----- pointwise functions
  Exp: unary((c) => c.mul(c.dy, c.y[0])),
  Log: unary((c) => c.div(c.dy, c.x[0])),
  Sqrt: unary((c) => c.div(c.dy, c.mul(2, c.y[0]))),
  Reciprocal: unary((c) => c.neg(c.mul(c.dy, c.y[0], c.y[0]))),
  // y = a^b: da = dy·b·a^(b−1), db = dy·y·ln a
  Pow: (c) => {
    const [a, b] = c.x;
    const bf = () => (c.b.info.dtype.get(b) === c.dtype ? b : c.emit("Cast", [b], { to: c.dtype }));
    return [
      () => c.unbroadcast(c.mul(c.dy, bf(), c.f("Pow", a, c.sub(bf(), 1))), 0),
      () => c.unbroadcast(c.mul(c.dy, c.y[0], c.f("Log", a)), 1),
    ];
  },
  Sigmoid: unary((c) => c.mul(c.dy, c.y[0], c.sub(1, c.y[0]))),
  Tanh: unary((c) => c.mul(c.dy, c.sub(1, c.mul(c.y[0], c.y[0])))),
  Relu: unary((c) => c.where(c.f("Greater", c.x[0], 0), c.dy, 0)),
  LeakyRelu: unary((c) => c.where(c.f("Greater", c.x[0], 0), c.dy, c.mul(c.dy, c.attr("alpha", 0.01)))),
  Softplus: unary((c) => c.mul(c.dy, c.f("Sigmoid", c.x[0]))),
  Abs: unary((c) => c.mul(c.dy, c.f("Sign", c.x[0]))),
  Sin: unary((c) => c.mul(c.dy, c.f("Cos", c.x[0]))),
  Cos: unary((c) => c.neg(c.mul(c.dy, c.f("Sin", c.x[0])))),
  // erf′(x) = 2/√π · exp(−x²)
  Erf: unary((c) => c.mul(c.dy, 2 / Math.sqrt(Math.PI), c.f("Exp", c.neg(c.mul(c.x[0], c.x[0]))))),
  // Gelu (exact): y = x·Φ(x), y′ = Φ(x) + x·φ(x)
  Gelu: (c) => {
    if (c.attr<string>("approximate", "none") !== "none") fail(`approximate=${c.attr("approximate", "")}`);
    return [() => {
      const x = c.x[0];
      const cdf = c.mul(0.5, c.add(1, c.f("Erf", c.mul(x, Math.SQRT1_2))));
      const pdf = c.mul(1 / Math.sqrt(2 * Math.PI), c.f("Exp", c.mul(-0.5, c.mul(x, x))));
      return c.mul(c.dy, c.add(cdf, c.mul(x, pdf)));
    }];
  },
  // Clip: the cotangent passes where the input was not clipped
  Clip: (c) => {
    c.only(0);
    return [() => c.where(c.f("Equal", c.y[0], c.x[0]), c.dy, 0)];
  },

  // ----- softmax: dx = y·(dy − Σ y·dy); log-softmax: dx = dy − softmax·Σ dy
  Softmax: unary((c) => softmaxLike(c, (y, d, sum) => c.mul(y, c.sub(d, sum(c.mul(y, d)))))),
  LogSoftmax: unary((c) => softmaxLike(c, (y, d, sum) => c.sub(d, c.mul(c.f("Exp", y), sum(d))))),

  // ----- normalisations: y = scale · x̂ + bias, x̂ standardised per (n, c) / per group / over trailing axes
  InstanceNormalization: (c) => {
    const [x, scale] = c.x;
    const norm = () => {
      const X3 = c.reshape(x, [0, 0, -1]), D3 = c.reshape(c.dy, [0, 0, -1]);
      return { D3, ...c.standardize(X3, 2, c.attr("epsilon", 1e-5)) };
    };
    return [
      () => {
        const { D3, xhat, rstd } = norm();
        return c.reshapeLike(c.standardizeGrad(c.mul(D3, c.unsqueeze(scale, [1])), xhat, rstd, 2), x);
      },
      () => {
        const { D3, xhat } = norm();
        return c.sum(c.mul(D3, xhat), [0, 2], 0);
      },
      () => c.sum(c.reshape(c.dy, [0, 0, -1]), [0, 2], 0),
    ];
  },
  GroupNormalization: (c) => {
    if (c.opset < 21) fail("opset < 21 (scale per group)");
    const [x, scale] = c.x;
    const G = c.attr("num_groups", 0);
    const norm = () => c.standardize(c.reshape(x, [0, G, -1]), 2, c.attr("epsilon", 1e-5));
    return [
      () => {
        const { xhat, rstd } = norm();
        const g = c.mul(c.reshape(c.dy, [0, 0, -1]), c.unsqueeze(scale, [1]));
        return c.reshapeLike(c.standardizeGrad(c.reshape(g, [0, G, -1]), xhat, rstd, 2), x);
      },
      () =>
        c.sum(c.mul(c.reshape(c.dy, [0, 0, -1]), c.reshape(c.reshapeLike(norm().xhat, x), [0, 0, -1])), [
          0,
          2,
        ], 0),
      () => c.sum(c.reshape(c.dy, [0, 0, -1]), [0, 2], 0),
    ];
  },
  LayerNormalization: (c) => {
    if (c.dys.slice(1).some((d) => d)) fail("gradient through the Mean or InvStdDev output");
    const [x, scale, bias] = c.x;
    const axis = c.attr("axis", -1);
    const flat = (v: string) => c.emit("Flatten", [v], { axis });
    const norm = () => c.standardize(flat(x), 1, c.attr("epsilon", 1e-5));
    return [
      () => {
        const { xhat, rstd } = norm();
        return c.reshapeLike(c.standardizeGrad(flat(c.mul(c.dy, scale)), xhat, rstd, 1), x);
      },
      () => c.sumTo(c.mul(c.dy, c.reshapeLike(norm().xhat, x)), c.shape(x), scale),
      bias ? () => c.sumTo(c.dy, c.shape(x), bias) : null,
    ];
  },
};

function reduceRule(c: Ctx, mean: boolean): (GradFn | null)[] {
  return [() => {
    if (c.attr("noop_with_empty_axes", 0) && reductionAxes(c) === null) return c.dy;
    const axes = reductionAxes(c);
    const kept = c.attr("keepdims", 1) || axes === null ? c.dy : c.unsqueeze(c.dy, axes);
    const full = c.emit("Expand", [kept, c.shapeOf(c.x[0])]);
    return mean ? c.div(full, c.sizeRatio(c.x[0], c.y[0])) : full;
  }];
}

/** Operators with a gradient rule. */
export const SUPPORTED_OPERATORS: readonly string[] = Object.keys(RULES).sort();

// ----- losses

/**
 * Appends a loss to a forward model: `build` adds nodes (and inputs such as targets) with a GraphBuilder
 * whose names cannot clash with the model's, and returns the loss value. The result has the loss as its
 * first output, followed by the original outputs when `keepOutputs` is set.
 */
export function withLoss(
  model: IModelProto,
  build: (g: GraphBuilder) => string,
  options: { keepOutputs?: boolean } = {},
): ModelProto {
  const graph = model.graph!;
  const opset = modelOpset(model);
  const g = new GraphBuilder(graph.name ?? "graph", { opset });
  g.reserveNamesOf(graph);
  const loss = build(g);
  const merged = onnx.GraphProto.create({
    ...graph,
    node: [...(graph.node ?? []), ...g.nodes],
    input: [...(graph.input ?? []), ...g.inputs],
    initializer: [...(graph.initializer ?? []), ...g.initializers],
    valueInfo: [...(graph.valueInfo ?? []), ...g.valueInfo],
    output: [],
  });
  const dtype = inferGraph(merged, opset).dtype.get(loss);
  if (!isFloatType(dtype)) throw new GradError(`loss '${loss}' is not floating-point`, []);
  merged.output = [
    valueInfo(loss, dtype!, []),
    ...(options.keepOutputs ? (graph.output ?? []) as ValueInfoProto[] : []),
  ];
  return onnx.ModelProto.create({ ...model, graph: merged });
}

export interface MseOptions {
  /** Name of the target input (default `<output>_target`), shaped like the output. */
  target?: string;
  /** Name of an optional per-sample weight input [B]. */
  weight?: string;
  /** Per sample: mean (default) or sum of the squared errors over the non-batch axes. */
  perSample?: "mean" | "sum";
  /** Name of the loss output (default "loss"). */
  loss?: string;
}

/**
 * loss = mean over the batch of w_b · (mean or sum over the other axes of (y − target)²), with w_b = 1
 * unless a weight input is named. Adds the target (and weight) inputs.
 */
export function meanSquaredErrorLoss(
  model: IModelProto,
  output: string,
  options: MseOptions = {},
): ModelProto {
  const out = (model.graph?.output ?? []).find((o) => o.name === output);
  if (!out) throw new GradError(`'${output}' is not an output of the model`, []);
  const { elemType, shape } = valueInfoType(out);
  if (!shape) throw new GradError(`output '${output}' has no declared shape`, []);
  return withLoss(model, (g) => {
    const target = g.input(
      options.target ?? `${output}_target`,
      elemType!,
      shape.map((d, i) => d ?? `d${i}`),
    );
    const err = g.op("Sub", [output, target]);
    const sq = g.op("Mul", [err, err]);
    const rest = Array.from({ length: shape.length - 1 }, (_, i) => i + 1);
    const axesAsInput = (op: string) => (op === "ReduceSum" ? g.opset >= 13 : g.opset >= 18);
    const reduce = (op: "ReduceSum" | "ReduceMean", v: string, axes: number[]) =>
      axesAsInput(op)
        ? g.op(op, [v, g.constant(axes, [axes.length], "int64")], { keepdims: 0 })
        : g.op(op, [v], { axes, keepdims: 0 });
    let perSample = rest.length
      ? reduce(options.perSample === "sum" ? "ReduceSum" : "ReduceMean", sq, rest)
      : sq;
    if (options.weight) {
      perSample = g.op("Mul", [perSample, g.input(options.weight, elemType!, [shape[0] ?? "B"])]);
    }
    return g.node("ReduceMean", [perSample], [options.loss ?? "loss"], { keepdims: 0 })[0];
  });
}

/** The names of a model's floating-point initializers (candidate parameters). */
export function floatInitializers(model: IModelProto): string[] {
  return (model.graph?.initializer ?? []).filter((t) => isFloatType(t.dataType ?? undefined)).map((t) =>
    t.name!
  );
}

/**
 * Forward-mode differentiation of ONNX graphs.
 *
 * `jvpModel(eps)` returns a graph that computes, in one run, the original outputs and their
 * Jacobian-vector product along a tangent of the inputs:
 *
 *     inputs  x, t, [class], dx, dt          outputs  eps, jvp = (∂eps/∂x)·dx + (∂eps/∂t)·dt
 *
 * Every original node is kept as it is (weights are the same initializers); after each node whose inputs
 * carry a tangent, the rule of its operator appends the nodes that compute the tangent of its outputs.
 * Values that do not depend on a differentiated input carry no tangent (a zero tangent): integer and
 * boolean tensors, shapes, indices, class labels, weights. An operator without a rule on a path from a
 * differentiated input to an output is reported by name in a `JvpError`; the transform never produces a
 * silently wrong derivative.
 *
 * The rules live in one table, `RULES`, one small function per operator that reads like its derivative
 * (`Sigmoid: dy = dx · y · (1 − y)`). Helpers on `Ctx` are null-aware: a null tangent is zero, so
 * `c.mul(null, b)` is null and `c.add(a, null)` is `a`.
 *
 * A few rules recognise, at the node that ends it, a pattern whose tangent in one piece takes fewer
 * full-size passes and nodes than the rules of its operators one at a time (the tangents those emitted are
 * then left unused and dropped): SiLU x·σ(x); x·x; the standardisation exporters write out (GroupNorm,
 * LayerNorm, RMSNorm: ReduceMean … Sqrt, Div); a per-channel scale after a group normalisation, folded into
 * its divisor; softmax weights times values, without the softmax's own tangent; and a MatMul with tangents
 * on both inputs and a small inner dimension. Each reuses the primal values the graph computes anyway
 * (x̂, the standard deviation, σ, the softmax). Standard ONNX operators only, so the derived graph runs
 * wherever its primal graph does. (Stacking primal and tangent along the batch axis through one Conv is
 * not done: with ONNX Runtime's CPU convolutions the concatenation and split cost more than the second
 * call.)
 */
import {
  attribute,
  type AttrValue,
  DataType,
  float,
  getAttribute,
  type IAttributeProto,
  type IGraphProto,
  type IModelProto,
  type INodeProto,
  isFloatType,
  modelOpset,
  type ModelProto,
  type NodeProto,
  onnx,
  tensorDims,
  tensorValues,
  type ValueInfoProto,
} from "./proto.ts";
import { broadcastKeeps, broadcastShapes, inferGraph, sameShape, type SShape } from "./infer.ts";
import { GraphRewriter } from "./rewrite.ts";

/** Thrown when a graph cannot be differentiated; `operators` names the operators at fault. */
export class JvpError extends Error {
  constructor(message: string, readonly operators: string[]) {
    super(message);
    this.name = "JvpError";
  }
}

/** Raised inside a rule when this use of a supported operator cannot be differentiated. */
class NotDifferentiable extends Error {}

/** Marks one output of a node whose tangent is not available (e.g. LayerNormalization's Mean). */
class NoTangent {
  constructor(readonly reason: string) {}
}

type Tangent = string | null;
type RuleResult = Tangent | NoTangent | (Tangent | NoTangent)[];
/** A derivative rule: given the node, its primal values and input tangents, emits its output tangents. */
type Rule = (c: Ctx) => RuleResult;

export interface JvpOptions {
  /** Inputs to differentiate with respect to (default: every floating-point graph input). */
  wrt?: readonly string[];
  /** Outputs to differentiate (default: every floating-point graph output). */
  outputs?: readonly string[];
  /** Name of the tangent input of each differentiated input (default `d<name>`, e.g. dx, dt). */
  tangentInputs?: Readonly<Record<string, string>>;
  /** Name of the tangent output of each output (default "jvp" for a single output, else `<name>_jvp`). */
  tangentOutputs?: Readonly<Record<string, string>>;
}

interface Poison {
  op: string;
  node: string;
  reason: string;
}

/** Builds the forward-mode (JVP) graph of a model. */
export function jvpModel(model: IModelProto, options: JvpOptions = {}): ModelProto {
  const graph = model.graph;
  if (!graph) throw new JvpError("model has no graph", []);
  const opset = modelOpset(model);
  if (opset < 9) throw new JvpError(`opset ${opset} is not supported (need 9 or newer)`, []);
  const tr = new Transformer(model, opset);
  const inits = new Set((graph.initializer ?? []).map((t) => t.name));
  const realInputs = (graph.input ?? []).filter((i) => !inits.has(i.name));

  const wrt = options.wrt ??
    realInputs.filter((i) => isFloatType(tr.info.dtype.get(i.name!))).map((i) => i.name!);
  const inputs: ValueInfoProto[] = [...(graph.input ?? [])] as ValueInfoProto[];
  for (const name of wrt) {
    const vi = realInputs.find((i) => i.name === name);
    if (!vi) throw new JvpError(`'${name}' is not an input of the graph`, []);
    if (!isFloatType(tr.info.dtype.get(name))) {
      throw new JvpError(`input '${name}' is not floating-point`, []);
    }
    const tname = tr.reserve(options.tangentInputs?.[name] ?? `d${name}`);
    inputs.push(onnx.ValueInfoProto.create({ name: tname, type: vi.type }));
    tr.tangent.set(name, tname);
  }

  for (const node of graph.node ?? []) tr.visit(node);

  const graphOutputs = graph.output ?? [];
  const outs = options.outputs ??
    graphOutputs.filter((o) => isFloatType(tr.info.dtype.get(o.name!))).map((o) => o.name!);
  const outputs: ValueInfoProto[] = [...graphOutputs] as ValueInfoProto[];
  const faults: Poison[] = [];
  for (const name of outs) {
    const vi = graphOutputs.find((o) => o.name === name);
    if (!vi) throw new JvpError(`'${name}' is not an output of the graph`, []);
    const poison = tr.poison.get(name);
    if (poison) {
      faults.push(...poison);
      continue;
    }
    const tname = tr.reserve(options.tangentOutputs?.[name] ?? (outs.length === 1 ? "jvp" : `${name}_jvp`));
    const t = tr.tangent.get(name) ?? tr.zerosLike(name);
    tr.append("Identity", [t], [tname]);
    outputs.push(onnx.ValueInfoProto.create({ name: tname, type: vi.type }));
  }
  if (faults.length) {
    const unique = [...new Map(faults.map((f) => [`${f.op}|${f.reason}`, f])).values()];
    const ops = [...new Set(unique.map((f) => f.op))];
    const detail = unique.map((f) => `${f.op} (node '${f.node}'${f.reason ? `: ${f.reason}` : ""})`).join(
      ", ",
    );
    throw new JvpError(`cannot differentiate operator(s) ${ops.join(", ")}: ${detail}`, ops);
  }

  const nodes = tr.liveNodes(outputs.map((o) => o.name));
  const used = new Set(nodes.flatMap((n) => n.input));
  const newGraph = onnx.GraphProto.create({
    ...graph,
    node: nodes,
    input: inputs,
    output: outputs,
    initializer: [...(graph.initializer ?? []), ...tr.initializers.filter((t) => used.has(t.name))],
  });
  return onnx.ModelProto.create({ ...model, graph: newGraph });
}

/** The state of one transformation: names, emitted nodes, tangents. */
class Transformer extends GraphRewriter {
  readonly emitted = new Set<NodeProto>();
  /** Tangent of each value that has one. */
  readonly tangent = new Map<string, string>();
  /** Values whose tangent cannot be computed, with why. */
  readonly poison = new Map<string, Poison[]>();
  /** The original node that computes each value (for rules that recognise a pattern, e.g. x·σ(x)). */
  readonly producer = new Map<string, NodeProto>();
  /**
   * Tangents of normalisations over the last axis of a [N, G, L] value that are `inner / sd` with sd of
   * shape [N, G, 1] (standardization, unit InstanceNormalization): a per-channel scale that follows can
   * fold into the divisor ({@link scaledNormalization}).
   */
  readonly quotients = new Map<string, { inner: string; sd: string }>();

  constructor(model: IModelProto, readonly opset: number) {
    const g = model.graph!;
    super(g, inferGraph(g, opset), "jvp");
  }

  protected nameTaken(name: string): Error {
    return new JvpError(`name '${name}' is already used in the graph`, []);
  }

  /** Appends a tangent-computation node with explicit output names. */
  override append(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attrs: Record<string, AttrValue> | IAttributeProto[] = {},
  ): NodeProto {
    const node = super.append(opType, inputs, outputs, attrs);
    this.emitted.add(node);
    return node;
  }

  /** Appends a node with `n` fresh outputs and returns their names. */
  emit(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, n = 1): string[] {
    return this.emitN(opType, inputs, n, attrs);
  }

  /** A scalar constant of element type `dtype`, shared by every use. */
  scalar(value: number, dtype: number): string {
    return this.sharedConstant(`${dtype}:${value}`, "const", [value], [], dtype);
  }

  /** A 1-D int64 constant. */
  ints(values: readonly number[]): string {
    return this.sharedConstant(`ints:${values.join(",")}`, "ints", values, [values.length], DataType.INT64);
  }

  /** Copies a node into the output graph, then appends the nodes of its output tangents. */
  visit(original: INodeProto): void {
    const node = onnx.NodeProto.create({ ...original, output: [...(original.output ?? [])] });
    this.nodes.push(node);
    for (const o of node.output) if (o) this.producer.set(o, node);
    const op = node.opType ?? "";
    const inputs = node.input ?? [];
    const inherited = inputs.flatMap((i) => this.poison.get(i) ?? []);
    if (inherited.length) {
      for (const o of node.output) if (o) this.poison.set(o, inherited);
      return;
    }
    const domain = node.domain && node.domain !== "ai.onnx" ? node.domain : "";
    const label = domain ? `${domain}::${op}` : op;
    const fail = (reason: string) => {
      const p = [{ op: label, node: node.name || node.output[0] || "?", reason }];
      for (const o of node.output) if (o) this.poison.set(o, p);
    };
    // values a subgraph (If, Loop, Scan) captures from the outer graph are inputs too
    const captured = (node.attribute ?? []).flatMap((a) => [a.g, ...(a.graphs ?? [])]).flatMap((
      g,
    ) => (g ? outerNames(g) : []));
    const capturedPoison = captured.flatMap((n) => this.poison.get(n) ?? []);
    if (capturedPoison.length) {
      for (const o of node.output) if (o) this.poison.set(o, capturedPoison);
      return;
    }
    if (captured.some((n) => this.tangent.has(n))) return fail("its subgraph uses a differentiated value");
    const dx = inputs.map((i) => (i ? this.tangent.get(i) ?? null : null));
    if (dx.every((d) => d === null)) return;
    if (!domain && NON_DIFFERENTIABLE.has(op)) return;
    const rule = domain ? undefined : RULES[op];
    if (!rule) return fail("");
    const mark = this.nodes.length;
    let result: (Tangent | NoTangent)[];
    try {
      const r = rule(new Ctx(this, node, dx));
      result = Array.isArray(r) ? r : [r];
    } catch (e) {
      if (!(e instanceof NotDifferentiable)) throw e;
      for (const n of this.nodes.splice(mark)) this.emitted.delete(n);
      return fail(e.message);
    }
    node.output.forEach((o, k) => {
      const t = result[k];
      if (!o || t === undefined || t === null) return;
      if (t instanceof NoTangent) this.poison.set(o, [{ op: label, node: node.name || o, reason: t.reason }]);
      else this.tangent.set(o, t);
    });
  }

  /** The node list without emitted nodes whose results nothing needs. */
  liveNodes(outputs: readonly string[]): NodeProto[] {
    const needed = new Set(outputs);
    const keep: boolean[] = new Array(this.nodes.length).fill(false);
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (!this.emitted.has(n) || n.output.some((o) => needed.has(o))) {
        keep[i] = true;
        for (const inp of n.input) if (inp) needed.add(inp);
        for (const a of n.attribute ?? []) {
          for (const g of [a.g, ...(a.graphs ?? [])]) {
            if (g) { for (const inp of outerNames(g)) needed.add(inp); }
          }
        }
      }
    }
    return this.nodes.filter((_, i) => keep[i]);
  }
}

/** Names a subgraph reads from enclosing graphs (used but not defined inside it). */
function outerNames(g: IGraphProto): string[] {
  const defined = new Set([
    ...(g.input ?? []).map((i) => i.name!),
    ...(g.initializer ?? []).map((t) => t.name!),
  ]);
  const used = new Set<string>();
  for (const n of g.node ?? []) {
    const nested = (n.attribute ?? []).flatMap((a) => [a.g, ...(a.graphs ?? [])]).flatMap((
      sg,
    ) => (sg ? outerNames(sg) : []));
    for (const i of [...(n.input ?? []), ...nested]) if (i && !defined.has(i)) used.add(i);
    for (const o of n.output ?? []) defined.add(o);
  }
  return [...used];
}

/** What a rule sees: the node, its primal inputs x and outputs y, input tangents dx, and emitters. */
class Ctx {
  readonly x: string[];
  readonly y: string[];
  readonly op: string;

  constructor(readonly tr: Transformer, readonly node: NodeProto, readonly dx: Tangent[]) {
    this.x = node.input;
    this.y = node.output;
    this.op = node.opType;
  }

  get opset(): number {
    return this.tr.opset;
  }

  /** An attribute of the node, or `dflt`. */
  attr<T>(name: string, dflt: T): T {
    const v = getAttribute(this.node, name);
    return v === undefined ? dflt : v as T;
  }

  /** The floating-point element type of this node's tangents. */
  get dtype(): number {
    const candidates = [this.y[0], ...this.x.filter((_, i) => this.dx[i])];
    for (const v of candidates) {
      const d = this.tr.info.dtype.get(v);
      if (isFloatType(d)) return d!;
    }
    throw new NotDifferentiable("unknown floating-point element type");
  }

  shape(v: string): SShape {
    return this.tr.info.shape.get(v) ?? null;
  }

  /**
   * True when `v` is an initializer or the output of a Constant node (of at most 4096 values) whose every
   * value is `value`.
   */
  constantAll(v: string | undefined, value: number): boolean {
    const values = v ? this.constantValues(v) : undefined;
    return !!values && values.every((x) => x === value);
  }

  /** The values of a constant `v` (initializer or Constant node) of at most 4096 values, else undefined. */
  constantValues(v: string): number[] | undefined {
    const node = this.tr.producer.get(v);
    const fromNode = node?.opType === "Constant" && (!node.domain || node.domain === "ai.onnx")
      ? (node.attribute ?? []).find((a) => a.name === "value")?.t ?? undefined
      : undefined;
    const t = this.tr.constants.get(v) ?? fromNode;
    if (!t || tensorDims(t).reduce((a, b) => a * b, 1) > 4096) return undefined;
    try {
      return tensorValues(t);
    } catch {
      return undefined;
    }
  }

  fail(reason: string): never {
    throw new NotDifferentiable(reason);
  }

  /** The scalar constant `v` in this node's element type. */
  k(v: number): string {
    return this.tr.scalar(v, this.dtype);
  }

  emit(op: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}): string {
    return this.tr.emit(op, inputs, attrs)[0];
  }

  // ----- null-aware algebra (null is a zero tangent)
  add(a: Tangent, b: Tangent): Tangent {
    return a && b ? this.emit("Add", [a, b]) : a ?? b;
  }
  sub(a: Tangent, b: Tangent): Tangent {
    return a && b ? this.emit("Sub", [a, b]) : a ?? this.neg(b);
  }
  mul(a: Tangent, b: Tangent): Tangent {
    return a && b ? this.emit("Mul", [a, b]) : null;
  }
  div(a: Tangent, b: string): Tangent {
    return a ? this.emit("Div", [a, b]) : null;
  }
  neg(a: Tangent): Tangent {
    return a ? this.emit("Neg", [a]) : null;
  }
  sum(terms: readonly Tangent[]): Tangent {
    return terms.reduce<Tangent>((acc, t) => this.add(acc, t), null);
  }
  /** An elementwise function of primal values, e.g. `c.f("Cos", c.x[0])`. */
  f(op: string, ...inputs: string[]): string {
    return this.emit(op, inputs);
  }
  /** Where(cond, a, b) with null tangents as zeros. */
  where(cond: string, a: Tangent, b: Tangent): Tangent {
    return a || b ? this.emit("Where", [cond, a ?? this.k(0), b ?? this.k(0)]) : null;
  }

  // ----- opset-aware shape helpers
  reduce(
    op: "ReduceSum" | "ReduceMean" | "ReduceSumSquare",
    v: string,
    axes: number[],
    keepdims = 1,
  ): string {
    const axesAsInput = op === "ReduceSum" ? this.opset >= 13 : this.opset >= 18;
    return axesAsInput
      ? this.emit(op, [v, this.tr.ints(axes)], { keepdims })
      : this.emit(op, [v], { axes, keepdims });
  }
  unsqueeze(v: string, axes: number[]): string {
    return this.opset >= 13
      ? this.emit("Unsqueeze", [v, this.tr.ints(axes)])
      : this.emit("Unsqueeze", [v], { axes });
  }
  reshape(v: string, shape: readonly number[] | string): string {
    return this.emit("Reshape", [v, typeof shape === "string" ? shape : this.tr.ints(shape)]);
  }
  flatten(v: string, axis: number): string {
    return this.emit("Flatten", [v], { axis });
  }
  shapeOf(v: string): string {
    return this.tr.shapeOf(v);
  }
  zerosLike(v: string): string {
    return this.tr.zerosLike(v);
  }

  /** Indices of the inputs that carry a tangent. */
  get withTangent(): number[] {
    return this.dx.flatMap((d, i) => (d ? [i] : []));
  }

  /**
   * `t` has the broadcast shape of the inputs `covered`; expand it to the output's shape unless the other
   * inputs provably do not enlarge it.
   */
  fit(t: Tangent, covered: readonly number[]): Tangent {
    if (!t) return null;
    const base = broadcastShapes(covered.map((i) => this.shape(this.x[i])));
    const others = this.x.filter((v, j) => v && !covered.includes(j));
    if (others.every((v) => broadcastKeeps(base, this.shape(v)))) return t;
    return this.emit("Expand", [t, this.shapeOf(this.y[0])]);
  }

  /** Expands `t` (shaped like `like`) to the output's shape unless provably equal. */
  fitTo(t: Tangent, like: string): Tangent {
    if (!t || sameShape(this.shape(like), this.shape(this.y[0]))) return t;
    return this.emit("Expand", [t, this.shapeOf(this.y[0])]);
  }

  /**
   * The node's own operation applied with input `i` replaced by its tangent, the other inputs primal
   * (inputs in `omit` left out, attributes in `attrs` overridden). Null when input i has no tangent.
   */
  with(
    i: number,
    o: { omit?: number[]; replace?: Record<number, string>; attrs?: Record<string, AttrValue> } = {},
  ) {
    return this.withAll(i, o)?.[0] ?? null;
  }

  withAll(
    i: number,
    o: { omit?: number[]; replace?: Record<number, string>; attrs?: Record<string, AttrValue> } = {},
  ): string[] | null {
    const d = this.dx[i];
    if (!d) return null;
    const inputs = this.x.map((v, j) => (j === i ? d : o.omit?.includes(j) ? "" : o.replace?.[j] ?? v));
    while (inputs.length && inputs[inputs.length - 1] === "") inputs.pop();
    const overrides = o.attrs ?? {};
    const attrs = [
      ...(this.node.attribute ?? []).filter((a) => !(a.name! in overrides)),
      ...Object.entries(overrides).map(([k, v]) => attribute(k, v)),
    ];
    const outs = this.y.map((y) => (y ? this.tr.fresh(`jvp/${this.op.toLowerCase()}`) : ""));
    this.tr.append(this.op, inputs, outs, attrs);
    return outs;
  }

  /** Requires that only input `i` carries a tangent (the operation is linear in it). */
  onlyTangentAt(i: number): void {
    const other = this.withTangent.find((j) => j !== i);
    if (other !== undefined) this.fail(`tangent on input ${other} (${this.x[other]}) is not supported`);
  }

  /** The operation is linear in input i for fixed other inputs: apply it to the tangent. */
  linear(i = 0, o: { omit?: number[]; attrs?: Record<string, AttrValue> } = {}): Tangent[] {
    this.onlyTangentAt(i);
    return this.withAll(i, o) ?? [];
  }

  /**
   * x̂ = (X − mean)/sqrt(var + ε) over `axis` (keepdims), and sqrt(var + ε); `xhat` when the caller
   * already has x̂ (then only the statistics are computed). Two passes (centre, then mean of squares), as
   * accurate as the normalisation itself. (ReduceSumSquare of the centred values would save the second
   * pass, but ONNX Runtime's CPU kernel for it is slower than Mul and ReduceMean together.)
   */
  standardize(X: string, axis: number, eps: number, xhat?: string): { xhat: string; sd: string } {
    const mean = (v: string) => this.reduce("ReduceMean", v, [axis]);
    const xc = this.emit("Sub", [X, mean(X)]);
    const sd = this.f("Sqrt", this.emit("Add", [mean(this.emit("Mul", [xc, xc])), this.k(eps)]));
    return { xhat: xhat ?? this.emit("Div", [xc, sd]), sd };
  }

  /**
   * The tangent of a normalisation x̂ = (X − mean)/sqrt(var + ε) over `axis` (keepdims), given its input X
   * and tangent D: with dxc = D − mean(D), dx̂ = (dxc − x̂·mean(x̂·dxc)) / sqrt(var + ε), five full-size
   * passes. With `scale` (broadcastable against the statistics, e.g. per group) it returns scale·dx̂,
   * folding the scale into the per-group divisor; with `xhat` it uses that x̂ instead of recomputing it.
   * Returns the tangent and x̂.
   */
  normalized(
    X: string,
    D: string,
    axis: number,
    eps: number,
    o: { scale?: string; xhat?: string } = {},
  ): { dxhat: string; xhat: string; inner: string; sd: string } {
    const mean = (v: string) => this.reduce("ReduceMean", v, [axis]);
    const { xhat, sd } = this.standardize(X, axis, eps, o.xhat);
    const dxc = this.emit("Sub", [D, mean(D)]);
    const inner = this.emit("Sub", [dxc, this.emit("Mul", [xhat, mean(this.emit("Mul", [xhat, dxc]))])]);
    const dxhat = o.scale
      ? this.emit("Mul", [inner, this.emit("Div", [o.scale, sd])])
      : this.emit("Div", [inner, sd]);
    return { dxhat, xhat, inner, sd };
  }
}

/** Operators whose outputs are piecewise constant or not real-valued: they pass no tangent on. */
const NON_DIFFERENTIABLE = new Set([
  "Shape",
  "Size",
  "Equal",
  "Less",
  "LessOrEqual",
  "Greater",
  "GreaterOrEqual",
  "Not",
  "And",
  "Or",
  "Xor",
  "ArgMax",
  "ArgMin",
  "NonZero",
  "IsNaN",
  "IsInf",
  "Floor",
  "Ceil",
  "Round",
  "Sign",
  "Constant",
  "ConstantOfShape",
  "EyeLike",
  "RandomNormalLike",
  "RandomUniformLike",
]);

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** Linear in its first input for fixed other inputs (data movement, pooling, resampling, reductions). */
const linear: Rule = (c) => c.linear(0);

/** Bias tangent of Conv/ConvTranspose, reshaped to [1, C, 1, …] against the output. */
function convBias(c: Ctx): Tangent {
  const db = c.dx[2];
  if (!db) return null;
  const kernel = c.attr<number[] | undefined>("kernel_shape", undefined);
  const w = c.shape(c.x[1]);
  const x = c.shape(c.x[0]);
  const spatial = kernel?.length ?? (w ? w.length - 2 : x ? x.length - 2 : undefined);
  if (spatial === undefined) c.fail("bias tangent with unknown spatial rank");
  return c.emit("Expand", [c.reshape(db, [1, -1, ...new Array(spatial).fill(1)]), c.shapeOf(c.y[0])]);
}

/** Softmax-style tangents: reduce over `axis` (opset ≥ 13) or over the dims from `axis` on (older). */
function softmaxLike(c: Ctx, body: (y: string, d: string, sum: (v: string) => string) => string): Tangent {
  const [y, d] = [c.y[0], c.dx[0]!];
  if (c.opset >= 13) return body(y, d, (v) => c.reduce("ReduceSum", v, [c.attr("axis", -1)]));
  const axis = c.attr("axis", 1);
  const out = body(c.flatten(y, axis), c.flatten(d, axis), (v) => c.reduce("ReduceSum", v, [1]));
  return c.reshape(out, c.shapeOf(y));
}

/** The derivative rules, one per operator. */
const RULES: Readonly<Record<string, Rule>> = {
  // ----- data movement, resampling, pooling, linear reductions: the same operation on the tangent
  Identity: (c) => c.dx[0],
  Reshape: linear,
  Transpose: linear,
  Flatten: linear,
  Squeeze: linear,
  Unsqueeze: linear,
  Expand: linear,
  Slice: linear,
  Gather: linear,
  GatherElements: linear,
  GatherND: linear,
  Tile: linear,
  DepthToSpace: linear,
  SpaceToDepth: linear,
  Resize: linear,
  Upsample: linear,
  AveragePool: linear,
  GlobalAveragePool: linear,
  ReduceMean: linear,
  ReduceSum: linear,
  CumSum: linear,
  Split: linear,
  // Dropout in inference is the identity (its mask output has no tangent)
  Dropout: (c) => {
    c.onlyTangentAt(0);
    if (c.x[2]) c.fail("training_mode input");
    return [c.dx[0], null];
  },
  // Pad: padding values are constants (zero tangent) or copies of the input (reflect, edge)
  Pad: (c) =>
    c.linear(
      0,
      c.attr("mode", "constant") === "constant"
        ? { omit: [2], ...(c.opset < 11 ? { attrs: { value: float(0) } } : {}) }
        : {},
    ),
  Concat: (c) => c.emit("Concat", c.x.map((x, i) => c.dx[i] ?? c.zerosLike(x)), { axis: c.attr("axis", 0) }),
  Cast: (c) => (isFloatType(c.attr("to", 0)) ? c.emit("Cast", [c.dx[0]!], { to: c.attr("to", 0) }) : null),
  CastLike: (c) => (isFloatType(c.tr.info.dtype.get(c.x[1])) ? c.emit("CastLike", [c.dx[0]!, c.x[1]]) : null),
  // BatchNormalization (inference): affine in X; the tangent sees zero bias and zero mean
  BatchNormalization: (c) => {
    if (c.attr("training_mode", 0)) c.fail("training_mode=1");
    c.onlyTangentAt(0);
    const [, , bias, mean] = c.x;
    return c.with(0, { replace: { 2: c.zerosLike(bias), 3: c.zerosLike(mean) } });
  },

  // ----- sums
  Neg: (c) => c.neg(c.dx[0]),
  Add: (c) => c.fit(c.add(c.dx[0], c.dx[1]), c.withTangent),
  Sub: (c) => c.fit(c.sub(c.dx[0], c.dx[1]), c.withTangent),
  Sum: (c) => c.fit(c.sum(c.dx), c.withTangent),

  // ----- products: one term per input (product rule)
  Mul: (c) =>
    silu(c) ?? square(c) ?? scaledNormalization(c) ??
      c.add(c.mul(c.dx[0], c.x[1]), c.mul(c.x[0], c.dx[1])),
  // y = a/b: dy = (da − y·db)/b
  Div: (c) => standardization(c) ?? c.div(c.sub(c.dx[0], c.mul(c.y[0], c.dx[1])), c.x[1]),
  MatMul: (c) => softmaxProduct(c) ?? matmulBoth(c) ?? c.add(c.with(0), c.with(1)),
  Einsum: (c) => c.sum(c.x.map((_, i) => c.with(i))),
  // Y = α·A·B + β·C
  Gemm: (c) =>
    c.sum([
      c.with(0, { omit: [2] }),
      c.with(1, { omit: [2] }),
      c.dx[2] ? c.fitTo(c.mul(c.k(c.attr("beta", 1)), c.dx[2]), c.x[2]) : null,
    ]),
  // Y = W ⋆ X + b
  Conv: (c) => c.sum([c.with(0, { omit: [2] }), c.with(1, { omit: [2] }), convBias(c)]),
  ConvTranspose: (c) => c.sum([c.with(0, { omit: [2] }), c.with(1, { omit: [2] }), convBias(c)]),

  // ----- pointwise functions
  Exp: (c) => c.mul(c.dx[0], c.y[0]),
  Log: (c) => c.div(c.dx[0], c.x[0]),
  Sqrt: (c) => c.div(c.dx[0], c.f("Mul", c.k(2), c.y[0])),
  Reciprocal: (c) => c.neg(c.mul(c.dx[0], c.mul(c.y[0], c.y[0]))),
  // y = a^b: dy = b·a^(b−1)·da + y·ln(a)·db
  Pow: (c) => {
    const [a, b] = c.x;
    const bf = c.tr.info.dtype.get(b) === c.dtype ? b : c.emit("Cast", [b], { to: c.dtype });
    return c.add(
      c.mul(c.dx[0], c.mul(bf, c.f("Pow", a, c.emit("Sub", [bf, c.k(1)])))),
      c.mul(c.dx[1], c.mul(c.y[0], c.f("Log", a))),
    );
  },
  Sigmoid: (c) => c.mul(c.dx[0], c.mul(c.y[0], c.sub(c.k(1), c.y[0]))),
  Tanh: (c) => c.mul(c.dx[0], c.sub(c.k(1), c.mul(c.y[0], c.y[0]))),
  Relu: (c) => c.where(c.f("Greater", c.x[0], c.k(0)), c.dx[0], null),
  LeakyRelu: (c) =>
    c.where(c.f("Greater", c.x[0], c.k(0)), c.dx[0], c.mul(c.dx[0], c.k(c.attr("alpha", 0.01)))),
  Softplus: (c) => c.mul(c.dx[0], c.f("Sigmoid", c.x[0])),
  Abs: (c) => c.mul(c.dx[0], c.f("Sign", c.x[0])),
  Sin: (c) => c.mul(c.dx[0], c.f("Cos", c.x[0])),
  Cos: (c) => c.neg(c.mul(c.dx[0], c.f("Sin", c.x[0]))),
  // erf'(x) = 2/√π · exp(−x²)
  Erf: (c) => c.mul(c.dx[0], c.mul(c.k(2 / Math.sqrt(Math.PI)), c.f("Exp", c.neg(c.mul(c.x[0], c.x[0]))!))),
  // Gelu: exact y = x·Φ(x) → dy = (Φ(x) + x·φ(x))·dx; tanh form y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³)
  Gelu: (c) => {
    const x = c.x[0];
    if (c.attr<string>("approximate", "none") === "tanh") {
      const x2 = c.mul(x, x)!;
      const th = c.f("Tanh", c.mul(c.k(SQRT_2_OVER_PI), c.mul(x, c.add(c.k(1), c.mul(c.k(0.044715), x2)))!)!);
      const du = c.mul(c.k(SQRT_2_OVER_PI), c.add(c.k(1), c.mul(c.k(3 * 0.044715), x2)))!;
      const slope = c.mul(
        c.k(0.5),
        c.add(c.add(c.k(1), th), c.mul(x, c.mul(c.sub(c.k(1), c.mul(th, th)), du))),
      );
      return c.mul(c.dx[0], slope);
    }
    const cdf = c.mul(c.k(0.5), c.add(c.k(1), c.f("Erf", c.mul(x, c.k(Math.SQRT1_2))!)));
    const pdf = c.mul(c.k(1 / Math.sqrt(2 * Math.PI)), c.f("Exp", c.mul(c.k(-0.5), c.mul(x, x))!));
    return c.mul(c.dx[0], c.add(cdf, c.mul(x, pdf)));
  },
  // Clip: the tangent passes where the input was not clipped
  Clip: (c) => {
    c.onlyTangentAt(0);
    return c.where(c.f("Equal", c.y[0], c.x[0]), c.dx[0], null);
  },
  Max: (c) => minMax(c, "Less"),
  Min: (c) => minMax(c, "Greater"),
  Where: (c) => {
    const cond = c.x[0];
    return c.fit(c.where(cond, c.dx[1], c.dx[2] ?? null), [0, ...c.withTangent]);
  },

  // ----- softmax: dy = y·(d − Σ y·d); log-softmax: dy = d − Σ softmax·d
  Softmax: (c) => softmaxLike(c, (y, d, sum) => c.mul(y, c.sub(d, sum(c.mul(y, d)!)))!),
  LogSoftmax: (c) => softmaxLike(c, (y, d, sum) => c.sub(d, sum(c.mul(c.f("Exp", y), d)!))!),

  // ----- normalisations: y = scale · x̂ + bias, x̂ normalised per (n, c) / per group / over trailing axes
  InstanceNormalization: (c) => {
    c.onlyTangentAt(0);
    const [x, scale, bias] = c.x;
    // statistics per (n, c) over the rest: [N, C, L] (exporters' GroupNorm already feeds that shape)
    const flat = c.shape(x)?.length === 3;
    const toGroups = (v: string) => (flat ? v : c.reshape(v, [0, 0, -1]));
    // exporters' GroupNorm runs InstanceNormalization with unit scale and zero bias: its output is x̂
    const unit = c.constantAll(scale, 1) && c.constantAll(bias, 0);
    const { dxhat, inner, sd } = c.normalized(toGroups(x), toGroups(c.dx[0]!), 2, c.attr("epsilon", 1e-5), {
      scale: unit ? undefined : c.unsqueeze(scale, [1]),
      xhat: unit ? toGroups(c.y[0]) : undefined,
    });
    if (flat && unit) c.tr.quotients.set(dxhat, { inner, sd });
    return flat ? dxhat : c.reshape(dxhat, c.shapeOf(x));
  },
  GroupNormalization: (c) => {
    c.onlyTangentAt(0);
    const [x, scale] = c.x;
    const G = c.attr("num_groups", 0);
    const toGroups = (v: string) => c.reshape(v, [0, G, -1]);
    const eps = c.attr("epsilon", 1e-5);
    // opset 18–20: scale per group; opset 21+: scale per channel
    if (c.opset < 21) {
      const { dxhat } = c.normalized(toGroups(x), toGroups(c.dx[0]!), 2, eps, {
        scale: c.unsqueeze(scale, [1]),
      });
      return c.reshape(dxhat, c.shapeOf(x));
    }
    const { dxhat } = c.normalized(toGroups(x), toGroups(c.dx[0]!), 2, eps);
    const perChannel = c.reshape(c.reshape(dxhat, c.shapeOf(x)), [0, 0, -1]);
    return c.reshape(c.mul(perChannel, c.unsqueeze(scale, [1]))!, c.shapeOf(x));
  },
  LayerNormalization: (c) => {
    const [x, scale, bias] = c.x;
    const axis = c.attr("axis", -1);
    const eps = c.attr("epsilon", 1e-5);
    const { dxhat, xhat } = c.dx[0]
      ? c.normalized(c.flatten(x, axis), c.flatten(c.dx[0], axis), 1, eps)
      : { dxhat: null, xhat: c.standardize(c.flatten(x, axis), 1, eps).xhat };
    const full = (v: Tangent) => (v ? c.reshape(v, c.shapeOf(x)) : null);
    const dy = c.sum([
      c.mul(full(dxhat), scale),
      c.mul(full(xhat), c.dx[1]),
      c.fitTo(c.dx[2] ?? null, bias),
    ]);
    return [dy, new NoTangent("Mean output"), new NoTangent("InvStdDev output")];
  },

  // ----- nonlinear reductions (same axes, keepdims and noop_with_empty_axes as the node)
  // max/min: the tangent at the extremum, averaged over ties (as in JAX): dy = Σ dx·[x = y] / Σ [x = y]
  ReduceMax: (c) => reduceExtremum(c),
  ReduceMin: (c) => reduceExtremum(c),
  // y = Σ x²: dy = 2 Σ x·dx
  ReduceSumSquare: (c) => {
    const r = reduction(c);
    return c.mul(c.k(2), r.sum(c.mul(c.x[0], c.dx[0])!));
  },
  // y = sqrt(Σ x²): dy = Σ x·dx / y
  ReduceL2: (c) => {
    const r = reduction(c);
    return c.div(r.sum(c.mul(c.x[0], c.dx[0])!), c.y[0]);
  },
  // y = log Σ exp x: dy = Σ exp(x − y)·dx
  ReduceLogSumExp: (c) => {
    const r = reduction(c);
    return r.sum(c.mul(c.f("Exp", c.emit("Sub", [c.x[0], r.keep(c.y[0])])), c.dx[0])!);
  },

  // ----- max pooling: the tangent at the argmax of each window
  MaxPool: (c) => {
    c.onlyTangentAt(0);
    if (c.attr("storage_order", 0) !== 0) c.fail("storage_order=1");
    if (!c.y[1]) c.node.output[1] = c.tr.fresh(`${c.y[0]}/indices`);
    return [c.emit("Gather", [c.reshape(c.dx[0]!, [-1]), c.node.output[1]]), null];
  },
};

/**
 * The reduction of a Reduce* node, for its rule: `sum(v)` is ReduceSum over the node's axes with its
 * keepdims and noop_with_empty_axes; `keep(y)` is a reduced value broadcastable against the input (the
 * reduced axes re-inserted when keepdims = 0). Axes come from the attribute (opset < 18) or the node's
 * own axes input (opset ≥ 18), which ReduceSum and Unsqueeze take as they are.
 */
function reduction(c: Ctx): { sum: (v: string) => string; keep: (y: string) => string } {
  c.onlyTangentAt(0);
  const keepdims = c.attr("keepdims", 1);
  const axesInput = c.opset >= 18 && c.x[1] ? c.x[1] : undefined;
  const axesList = c.opset < 18 ? c.attr<number[] | undefined>("axes", undefined) : undefined;
  const noop = c.opset >= 18 ? c.attr("noop_with_empty_axes", 0) : 0;
  const sum = (v: string): string => {
    if (axesInput) return c.emit("ReduceSum", [v, axesInput], { keepdims, noop_with_empty_axes: noop });
    if (axesList?.length) return c.reduce("ReduceSum", v, axesList, keepdims);
    // no axes: every axis, unless noop_with_empty_axes makes the reduction the identity
    if (noop) return v;
    return c.emit("ReduceSum", [v], { keepdims });
  };
  const keep = (y: string): string => {
    if (keepdims) return y;
    if (axesInput) return c.emit("Unsqueeze", [y, axesInput]);
    if (axesList?.length) return c.unsqueeze(y, axesList);
    return y; // a scalar (all axes reduced) broadcasts as it is
  };
  return { sum, keep };
}

function reduceExtremum(c: Ctx): Tangent {
  const r = reduction(c);
  const mask = c.emit("Cast", [c.f("Equal", c.x[0], r.keep(c.y[0]))], { to: c.dtype });
  return c.div(r.sum(c.mul(c.dx[0], mask)!), r.sum(mask));
}

/**
 * SiLU, y = h·σ(h) with σ(h) computed by a Sigmoid node of the same h: dy = dh·(σ + y·(1 − σ)), three
 * passes for the slope instead of the product rule over σ's own tangent (which is then left unused).
 * Undefined for any other product.
 */
function silu(c: Ctx): Tangent | undefined {
  for (const [i, j] of [[0, 1], [1, 0]]) {
    const sig = c.tr.producer.get(c.x[j]);
    if (
      sig?.opType === "Sigmoid" && !sig.domain && sig.input[0] === c.x[i] && c.x[i] !== c.x[j] && c.dx[i]
    ) {
      const s = c.x[j];
      return c.mul(c.dx[i], c.add(s, c.mul(c.y[0], c.sub(c.k(1), s)))!);
    }
  }
  return undefined;
}

/** y = x·x: dy = 2·x·dx, two passes instead of the product rule's three. Undefined for other products. */
function square(c: Ctx): Tangent | undefined {
  if (c.x[0] !== c.x[1] || !c.dx[0]) return undefined;
  return c.mul(c.k(2), c.mul(c.x[0], c.dx[0]));
}

/** The single-input ReduceMean `node` applied to `v` instead (same axes, keepdims and axes input). */
function sameReduction(c: Ctx, node: NodeProto, v: string): string {
  const out = c.tr.fresh("jvp/reducemean");
  c.tr.append("ReduceMean", [v, ...node.input.slice(1)], [out], node.attribute ?? []);
  return out;
}

/**
 * The standardisation that exporters and training/layers.ts write out (GroupNorm, LayerNorm, RMSNorm),
 * ending at this Div:
 *
 *     v = ReduceMean(xc·xc) (or Pow(xc, 2)), keepdims;  s = Sqrt(v + ε);  x̂ = xc / s
 *
 * (xc is usually X − ReduceMean(X), but need not be). Its tangent in one piece from the tangent dxc and the
 * primal x̂ and s, with the mean over v's axes: dx̂ = (dxc − x̂·mean(x̂·dxc)) / s — exact, since
 * ds = mean(xc·dxc)/s. Four full-size passes and five nodes, where the rules of Mul, ReduceMean, Sqrt and
 * Div one at a time take six passes and eight nodes. Undefined for any other quotient.
 */
function standardization(c: Ctx): Tangent | undefined {
  const [xc, s] = c.x, dxc = c.dx[0];
  if (!dxc) return undefined;
  const p = (v: string | undefined, op: string) => {
    const n = v ? c.tr.producer.get(v) : undefined;
    return n && n.opType === op && (!n.domain || n.domain === "ai.onnx") ? n : undefined;
  };
  const add = p(p(s, "Sqrt")?.input[0], "Add");
  if (!add) return undefined;
  // v + ε with ε free of tangents (a constant)
  const [t0, t1] = add.input.map((v) => c.tr.tangent.has(v));
  const mean = p(t0 && !t1 ? add.input[0] : t1 && !t0 ? add.input[1] : undefined, "ReduceMean");
  if (!mean || (getAttribute(mean, "keepdims") ?? 1) !== 1) return undefined;
  const mul = p(mean.input[0], "Mul"), pow = p(mean.input[0], "Pow");
  const squares = mul
    ? mul.input[0] === xc && mul.input[1] === xc
    : !!pow && pow.input[0] === xc && c.constantAll(pow.input[1], 2);
  if (!squares) return undefined;
  // the quotient must have xc's shape (s broadcasts into it), as keepdims gives
  if (!sameShape(c.shape(c.y[0]), c.shape(xc)) && c.shape(xc) !== null) return undefined;
  const xhat = c.y[0];
  const m2 = sameReduction(c, mean, c.emit("Mul", [xhat, dxc]));
  const inner = c.emit("Sub", [dxc, c.emit("Mul", [xhat, m2])]);
  const dxhat = c.emit("Div", [inner, s]);
  const shape = c.shape(xc), axes = reducedAxes(c, mean);
  if (shape?.length === 3 && axes?.length === 1 && (axes[0] === 2 || axes[0] === -1)) {
    c.tr.quotients.set(dxhat, { inner, sd: s });
  }
  return dxhat;
}

/** The axes a ReduceMean node reduces (attribute, or a constant axes input), or undefined when not known. */
function reducedAxes(c: Ctx, node: NodeProto): number[] | undefined {
  const attr = getAttribute(node, "axes") as number[] | undefined;
  if (attr) return attr.map(Number);
  return node.input[1] ? c.constantValues(node.input[1]) : undefined;
}

/** Elements per sample below which {@link scaledNormalization} leaves the scale as its own pass. */
const FOLD_MIN_ELEMENTS = 4096;

/**
 * A per-channel scale after a group normalisation, y = Reshape(x̂, [N, C, …]) · γ with γ constant of shape
 * [C, 1, …] and x̂ normalised over the last axis of [N, G, L] (L = C/G · …), as exporters and
 * training/layers.ts write GroupNorm. The normalisation's tangent is inner/sd per (n, g); γ folds into that
 * divisor as one [N, G, C/G, 1] factor γ/sd, so the tangent takes one full-size pass (inner · γ/sd, in an
 * [N, G, C/G, …] view) instead of two (÷ sd, then · γ), for two more small nodes (reshapes of sd and
 * inner); feature maps of fewer than FOLD_MIN_ELEMENTS values per sample keep the two passes, where a
 * node costs about as much as a pass. Undefined for any other product.
 */
function scaledNormalization(c: Ctx): Tangent | undefined {
  for (const [i, j] of [[0, 1], [1, 0]]) {
    if (!c.dx[i] || c.dx[j]) continue;
    const reshape = c.tr.producer.get(c.x[i]);
    if (reshape?.opType !== "Reshape" || (reshape.domain && reshape.domain !== "ai.onnx")) continue;
    const q = c.tr.quotients.get(c.tr.tangent.get(reshape.input[0]) ?? "");
    const gamma = c.tr.constants.get(c.x[j]);
    const out = c.shape(c.y[0]), grouped = c.shape(reshape.input[0]);
    if (!q || !gamma || !out || !grouped || out.length < 3 || !sameShape(out, c.shape(c.x[i]))) continue;
    const [C, G] = [out[1], grouped[1]];
    // the same batch dimension (known, or the same symbol) and whole groups of channels
    if (typeof C !== "number" || typeof G !== "number" || C % G !== 0) continue;
    if (out[0] === null || out[0] !== grouped[0]) continue;
    // the fold saves a full-size pass for two more (tiny) nodes: not worth it on small feature maps
    const perSample = out.slice(1).reduce<number>((a, d) => a * (typeof d === "number" ? d : Infinity), 1);
    if (perSample < FOLD_MIN_ELEMENTS) continue;
    // γ of shape [C, 1, …] (rank − 1) or [1, C, 1, …] (rank)
    const dims = tensorDims(gamma);
    const lead = dims.length === out.length ? dims[0] : 1,
      rest = dims.length === out.length ? dims.slice(1) : dims;
    if (lead !== 1 || rest.length !== out.length - 1 || rest[0] !== C || rest.slice(1).some((d) => d !== 1)) {
      continue;
    }
    // γ in the grouped view: a Reshape of the initializer, which ONNX Runtime folds at load
    const factor = c.emit("Div", [c.reshape(c.x[j], [1, G, C / G, 1]), c.reshape(q.sd, [0, G, 1, 1])]);
    const scaled = c.emit("Mul", [c.reshape(q.inner, [0, G, C / G, -1]), factor]);
    return c.reshape(scaled, reshape.input[1]);
  }
  return undefined;
}

/**
 * Attention's product of softmax weights with values: y = A·V with A = Softmax(S) over the last axis (as
 * exporters write attention), or y = V·Aᵀ with the transpose of the last two axes (as training/unet.ts
 * does). With P = A ⊙ dS and r = Σ_last P (per query), the tangent of A is P − A·r, and its product with
 * V is P·V − r·y: the tangent never forms dA, saving two full passes over the attention matrix (the
 * subtraction and the product with A) for one over y. dS is the tangent of the softmax's input; the
 * softmax's own tangent is then left unused. Undefined for any other product.
 */
function softmaxProduct(c: Ctx): Tangent | undefined {
  if (c.opset < 13) return undefined;
  const plainNode = (v: string | undefined, op: string) => {
    const n = v ? c.tr.producer.get(v) : undefined;
    return n && n.opType === op && (!n.domain || n.domain === "ai.onnx") ? n : undefined;
  };
  const softmax = (v: string) => {
    const n = plainNode(v, "Softmax");
    const rank = c.shape(v)?.length;
    const axis = getAttribute(n ?? {}, "axis") as number | undefined ?? -1;
    return n && (axis === -1 || (rank !== undefined && axis === rank - 1)) ? n : undefined;
  };
  const swapsLastTwo = (n: NodeProto) => {
    const perm = getAttribute(n, "perm") as number[] | undefined;
    const r = perm?.length ?? 0;
    return !!perm && r >= 2 &&
      perm.every((p, k) => Number(p) === (k < r - 2 ? k : k === r - 2 ? r - 1 : r - 2));
  };
  const [a, b] = c.x, y = c.y[0];
  const transpose = plainNode(b, "Transpose");
  const left = softmax(a);
  const right = !left && transpose && swapsLastTwo(transpose) ? softmax(transpose.input[0]) : undefined;
  const sm = left ?? right;
  const dS = sm ? c.tr.tangent.get(sm.input[0]) : undefined;
  if (!sm || !dS) return undefined;
  const A = sm.output[0];
  const P = c.emit("Mul", [A, dS]);
  const r = c.reduce("ReduceSum", P, [-1]);
  if (left) {
    const term = c.emit("Sub", [c.emit("MatMul", [P, b]), c.emit("Mul", [r, y])]);
    return c.add(term, c.dx[1] ? c.emit("MatMul", [a, c.dx[1]]) : null);
  }
  const perm = getAttribute(transpose!, "perm") as number[];
  const swap = (v: string) => c.emit("Transpose", [v], { perm: perm.map(Number) });
  const term = c.emit("Sub", [c.emit("MatMul", [a, swap(P)]), c.emit("Mul", [y, swap(r)])]);
  return c.add(term, c.dx[0] ? c.emit("MatMul", [c.dx[0], b]) : null);
}

/**
 * dA·B + A·dB as one product [dA, A]·[B; dB] (inner dimension doubled) when both inputs carry tangents
 * and, by the inferred static shapes, the concatenated inputs are smaller than the output, so that copying
 * them costs less than a separate product and a sum over the output (e.g. attention scores qᵀk with few
 * channels and many positions). Undefined otherwise.
 */
function matmulBoth(c: Ctx): Tangent | undefined {
  const [a, b] = c.x, [da, db] = c.dx;
  if (!da || !db) return undefined;
  const sa = c.shape(a), sb = c.shape(b);
  if (!sa || !sb || sa.length < 2 || sb.length < 2) return undefined;
  const [M, K, N] = [sa[sa.length - 2], sa[sa.length - 1], sb[sb.length - 1]];
  if (typeof M !== "number" || typeof K !== "number" || typeof N !== "number") return undefined;
  if (!(2 * (M * K + K * N) < M * N)) return undefined;
  return c.emit("MatMul", [c.emit("Concat", [da, a], { axis: -1 }), c.emit("Concat", [b, db], { axis: -2 })]);
}

/** Max/Min of two inputs: the tangent of the selected input (ties pick the first). */
function minMax(c: Ctx, otherWins: "Less" | "Greater"): Tangent {
  if (c.x.length !== 2) c.fail(`${c.x.length} inputs (only 2 supported)`);
  const firstWins = c.f("Not", c.f(otherWins, c.x[0], c.x[1]));
  return c.fit(c.where(firstWins, c.dx[0], c.dx[1]), [0, 1]);
}

/** Operators with a derivative rule. */
export const SUPPORTED_OPERATORS: readonly string[] = Object.keys(RULES).sort();

/** Operators that pass no tangent on (shapes, comparisons, constants, rounding). */
export const NON_DIFFERENTIABLE_OPERATORS: readonly string[] = [...NON_DIFFERENTIABLE].sort();

/** The JVP graph of model bytes, as bytes. */
export function jvpBytes(bytes: Uint8Array, options: JvpOptions = {}): Uint8Array {
  return onnx.ModelProto.encode(jvpModel(onnx.ModelProto.decode(bytes), options)).finish();
}

/**
 * The graph-rewriting plumbing shared by the reverse-mode (grad.ts) and forward-mode (jvp.ts)
 * transforms: the names the graph already uses, fresh names, appended nodes, constants shared by every
 * use, and Shape / zeros computed once per value.
 */
import {
  attribute,
  type AttrValue,
  DataType,
  type IAttributeProto,
  type IGraphProto,
  type ITensorProto,
  type NodeProto,
  onnx,
  tensorFromNumbers,
  type TensorProto,
} from "./proto.ts";
import type { Inferred } from "./infer.ts";

/** One transformation of a graph: the nodes and initializers it adds, named apart from the graph's. */
export abstract class GraphRewriter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  /** Constant tensors by name (the graph's initializers; subclasses may add more). */
  readonly constants = new Map<string, ITensorProto>();
  readonly #names = new Set<string>();
  readonly #shared = new Map<string, string>();
  readonly #shapes = new Map<string, string>();
  #counter = 0;

  /** `prefix` starts the names of the nodes and constants this transform adds ("grad", "jvp"). */
  protected constructor(graph: IGraphProto, readonly info: Inferred, readonly prefix: string) {
    for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) {
      this.#names.add(v.name!);
    }
    for (const t of graph.initializer ?? []) {
      this.#names.add(t.name!);
      this.constants.set(t.name!, t);
    }
    for (const n of graph.node ?? []) {
      if (n.name) this.#names.add(n.name);
      for (const o of n.output ?? []) this.#names.add(o);
    }
  }

  /** The error for a requested name the graph already uses. */
  protected abstract nameTaken(name: string): Error;

  /** Claims `name` exactly (an input or output the caller names); throws when it is taken. */
  reserve(name: string): string {
    if (this.#names.has(name)) throw this.nameTaken(name);
    this.#names.add(name);
    return name;
  }

  /** A name not used yet: `prefix__N`. */
  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}__${this.#counter++}`; while (this.#names.has(name));
    this.#names.add(name);
    return name;
  }

  /** Appends a node with explicit output names. */
  append(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attrs: Record<string, AttrValue> | IAttributeProto[] = {},
  ): NodeProto {
    const attribute_ = Array.isArray(attrs) ? attrs : Object.entries(attrs).map(([k, v]) => attribute(k, v));
    const node = onnx.NodeProto.create({
      opType,
      domain: "",
      name: this.fresh(`${this.prefix}/${opType}`),
      input: [...inputs],
      output: [...outputs],
      attribute: attribute_,
    });
    this.nodes.push(node);
    return node;
  }

  /** Appends a node with `n` fresh outputs and returns their names. */
  emitN(
    opType: string,
    inputs: readonly string[],
    n: number,
    attrs: Record<string, AttrValue> = {},
  ): string[] {
    const outs = Array.from({ length: n }, () => this.fresh(`${this.prefix}/${opType.toLowerCase()}`));
    this.append(opType, inputs, outs, attrs);
    return outs;
  }

  /**
   * An initializer shared by every use with the same `key` (which must determine the values, dims and
   * type); a new one is named `<prefix>/<kind>__N`.
   */
  protected sharedConstant(
    key: string,
    kind: string,
    values: readonly number[],
    dims: readonly number[],
    dtype: number,
  ): string {
    let name = this.#shared.get(key);
    if (!name) {
      name = this.fresh(`${this.prefix}/${kind}`);
      this.initializers.push(tensorFromNumbers(name, values, dims, dtype));
      this.#shared.set(key, name);
    }
    return name;
  }

  /** Shape(v), computed once per value. */
  shapeOf(v: string): string {
    let s = this.#shapes.get(v);
    if (!s) {
      s = this.emitN("Shape", [v], 1)[0];
      this.#shapes.set(v, s);
    }
    return s;
  }

  /** Zeros shaped like `v` (in v's element type). */
  zerosLike(v: string): string {
    const dtype = this.info.dtype.get(v) ?? DataType.FLOAT;
    const value = tensorFromNumbers("value", [0], [1], dtype);
    return this.emitN("ConstantOfShape", [this.shapeOf(v)], 1, { value })[0];
  }
}

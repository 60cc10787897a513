/**
 * A thin, typed layer over the protobuf messages of `onnx-proto`: build ONNX graphs by name, encode them
 * to the bytes ONNX Runtime loads, and decode model files back into messages.
 *
 *     const g = new GraphBuilder("affine");
 *     const x = g.input("x", "float32", ["B", 3]);
 *     const w = g.initializer("W", new Float32Array(6), [3, 2]);
 *     const [y] = g.node("Sigmoid", [g.op("MatMul", [x, w])]);
 *     g.output(y, "float32", ["B", 2]);
 *     const bytes = encodeModel(g.model());
 *
 * The message types, element types and value infos are in onnx/proto/messages.ts, tensors in
 * onnx/proto/tensors.ts, attributes in onnx/proto/attributes.ts; this module re-exports them all with
 * the graph builder and model encoding, and is the one to import from.
 */
import { attribute, type AttrValue } from "./proto/attributes.ts";
import {
  DEFAULT_IR_VERSION,
  DEFAULT_OPSET,
  type Dim,
  type DType,
  type GraphProto,
  type IGraphProto,
  type IModelProto,
  type ModelProto,
  type NodeProto,
  onnx,
  type TensorProto,
  toNumber,
  valueInfo,
  type ValueInfoProto,
} from "./proto/messages.ts";
import { type TensorData, tensorFromNumbers, tensorProto } from "./proto/tensors.ts";

export * from "./proto/messages.ts";
export * from "./proto/tensors.ts";
export * from "./proto/attributes.ts";

/** Options of a whole model. */
export interface ModelOptions {
  /** Default-domain opset (17). */
  opset?: number;
  /** IR version (8). */
  irVersion?: number;
  /** Extra domains, e.g. `{ "com.microsoft": 1 }`. */
  domains?: Record<string, number>;
  producerName?: string;
}

/** Builds one graph with unique, readable names; `model()` wraps it in a ModelProto. */
export class GraphBuilder {
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly nodes: NodeProto[] = [];
  readonly valueInfo: ValueInfoProto[] = [];
  readonly opset: number;
  readonly irVersion: number;
  readonly #domains: Record<string, number>;
  readonly #producer: string;
  readonly #names = new Set<string>();
  readonly #counters = new Map<string, number>();
  readonly #unclaimed = new Set<string>();

  constructor(readonly name = "graph", options: ModelOptions = {}) {
    this.opset = options.opset ?? DEFAULT_OPSET;
    this.irVersion = options.irVersion ?? DEFAULT_IR_VERSION;
    this.#domains = options.domains ?? {};
    this.#producer = options.producerName ?? "genie-onnx";
  }

  /** Reserves `name` (throws if already used). */
  reserve(name: string): string {
    if (this.#unclaimed.delete(name)) return name;
    if (this.#names.has(name)) throw new Error(`name '${name}' is already used in graph '${this.name}'`);
    this.#names.add(name);
    return name;
  }

  /**
   * Reserves every name `graph` already uses (inputs, outputs, value infos, initializers, node names and
   * outputs) that is not reserved here yet, so that what is built here cannot clash with it.
   */
  reserveNamesOf(graph: IGraphProto): void {
    const values = [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])];
    const names = [
      ...values.map((v) => v.name),
      ...(graph.initializer ?? []).map((t) => t.name),
      ...(graph.node ?? []).flatMap((n) => [n.name, ...(n.output ?? [])]),
    ];
    for (const name of names) if (name && !this.#names.has(name)) this.reserve(name);
  }

  /**
   * A fresh name starting with `prefix` (`prefix`, `prefix_1`, `prefix_2`, …), reserved for the caller:
   * pass it once to `input`, `initializer` or `node` outputs.
   */
  fresh(prefix: string): string {
    const name = this.#generate(prefix);
    this.#unclaimed.add(name);
    return name;
  }

  #generate(prefix: string): string {
    let n = this.#counters.get(prefix) ?? 0;
    let name = n === 0 ? prefix : `${prefix}_${n}`;
    while (this.#names.has(name)) name = `${prefix}_${++n}`;
    this.#counters.set(prefix, n + 1);
    this.#names.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, dtype: DType | number, shape?: readonly Dim[]): string {
    this.inputs.push(valueInfo(this.reserve(name), dtype, shape));
    return name;
  }

  /** Declares an existing value as a graph output (its type is required by ONNX; shape optional). */
  output(name: string, dtype: DType | number, shape?: readonly Dim[]): string {
    this.outputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /**
   * Adds a named initializer (weights). Plain number arrays need a dtype; typed arrays imply theirs.
   * Returns the name.
   */
  initializer(
    name: string,
    data: TensorData | readonly number[],
    dims?: readonly number[],
    dtype?: DType | number,
  ): string {
    this.reserve(name);
    return this.#addInitializer(name, data, dims, dtype);
  }

  #addInitializer(
    name: string,
    data: TensorData | readonly number[],
    dims?: readonly number[],
    dtype?: DType | number,
  ): string {
    const t = Array.isArray(data)
      ? tensorFromNumbers(name, data as number[], dims, dtype ?? "float32")
      : tensorProto(name, data as TensorData, dims, dtype);
    this.initializers.push(t);
    return name;
  }

  /** A constant tensor as an initializer with a generated name (scalar when `dims` is []). */
  constant(
    values: TensorData | readonly number[] | number,
    dims?: readonly number[],
    dtype?: DType | number,
    prefix = "const",
  ): string {
    const data = typeof values === "number" ? [values] : values;
    const shape = dims ?? (typeof values === "number" ? [] : undefined);
    return this.#addInitializer(this.#generate(prefix), data, shape, dtype);
  }

  /** Adds a node. `outputs` is a count (names generated) or explicit names. Returns the output names. */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: number | readonly string[] = 1,
    attrs: Record<string, AttrValue | undefined> = {},
    options: { domain?: string; name?: string } = {},
  ): string[] {
    const base = opType.toLowerCase();
    const outs = typeof outputs === "number"
      ? Array.from({ length: outputs }, () => this.#generate(base))
      : outputs.map((o) => (o === "" ? "" : this.reserve(o)));
    const attribute_ = Object.entries(attrs)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => attribute(k, v as AttrValue));
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        domain: options.domain ?? "",
        name: options.name ?? this.#generate(`${opType}_node`),
        input: [...inputs],
        output: outs,
        attribute: attribute_,
      }),
    );
    return outs;
  }

  /** Adds a single-output node and returns its output name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}): string {
    return this.node(opType, inputs, 1, attrs)[0];
  }

  /** The graph message. */
  graph(): GraphProto {
    return onnx.GraphProto.create({
      name: this.name,
      node: this.nodes,
      input: this.inputs,
      output: this.outputs,
      initializer: this.initializers,
      valueInfo: this.valueInfo,
    });
  }

  /** The model message (opset and IR version from the constructor options). */
  model(): ModelProto {
    const opsetImport = [{ domain: "", version: this.opset }];
    for (const [domain, version] of Object.entries(this.#domains)) opsetImport.push({ domain, version });
    return onnx.ModelProto.create({
      irVersion: this.irVersion,
      producerName: this.#producer,
      opsetImport,
      graph: this.graph(),
    });
  }

  /** The encoded model. */
  bytes(): Uint8Array {
    return encodeModel(this.model());
  }
}

/** Serialises a model message to bytes. */
export function encodeModel(model: IModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** Parses model bytes (e.g. read from a .onnx file). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** The version of the default ("" or "ai.onnx") domain a model imports. */
export function modelOpset(model: IModelProto): number {
  const entry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === "ai.onnx");
  if (!entry) throw new Error("model imports no default-domain opset");
  return toNumber(entry.version);
}

/**
 * A model folder's graphs checked against its manifest before ONNX Runtime opens them: the inputs the
 * worker feeds (`x` float32 [N, ...shape], `t` float32 [N], `class` int64 [N] where the graph takes
 * it, and `dx`/`dt` like x/t for a JVP graph) by name, element type, rank and the fixed dimensions, and
 * the outputs it reads (`eps`; `deriv` from a head graph; `jvp` from a JVP graph). The eps and JVP graphs
 * are checked under the manifest's names (`inputs`, `outputs`: e.g. `sample`, `timestep`, `out_sample`),
 * and their time input may be int64 (a discrete model's integer timestep), which is recorded in
 * `LoadedModel.timestep` so that the worker feeds the nearest integer timestep. The graph's inputs
 * are read from the ONNX model itself (onnx/proto.ts), so a folder whose manifest disagrees with its
 * graph (e.g. `"shape": [2]` over a 1×28×28 U-Net) is reported, naming the graph, the input and the
 * mismatch, and skipped, instead of failing inside ONNX Runtime.
 *
 * Dimensions given as names (the batch `N`) or left unknown match anything; the batch dimension is
 * not checked beyond that. The `features` graph is not fed by the sampler and is not checked.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { DataType, decodeModel, type Dim, dtypeName, valueInfoType } from "../onnx/proto.ts";
import { JVP_INPUTS } from "./graphs.ts";
import { type GraphKind, graphNames, type LoadedModel, ManifestError } from "./manifest.ts";

interface Expected {
  type: number;
  /** The dimensions after the batch one (numbers must match where the graph fixes them). */
  dims: number[];
}

const fmtShape = (shape: (Dim | undefined)[]) => `[${shape.map((d) => d ?? "?").join(", ")}]`;
const typeName = (code: number | undefined) =>
  code === undefined ? "unknown" : dtypeName(code) ?? `type ${code}`;

/** What the worker feeds a graph of `kind`, by input name (the time input's type is checked apart). */
function expectedInputs(info: LoadedModel, kind: GraphKind): Map<string, Expected> {
  const shape = info.manifest.shape, names = graphNames(info, kind);
  const inputs = new Map<string, Expected>([
    [names.x, { type: DataType.FLOAT, dims: shape }],
    [names.t, { type: DataType.FLOAT, dims: [] }],
    [names.class, { type: DataType.INT64, dims: [] }],
  ]);
  if (kind === "jvp") {
    inputs.set(JVP_INPUTS.x, { type: DataType.FLOAT, dims: shape });
    inputs.set(JVP_INPUTS.t, { type: DataType.FLOAT, dims: [] });
  }
  return inputs;
}

/** The inputs a graph of `kind` must have and the outputs the worker reads from it. */
function required(info: LoadedModel, kind: GraphKind): { inputs: string[]; outputs: string[] } {
  const n = graphNames(info, kind);
  switch (kind) {
    case "eps":
      return { inputs: [n.x, n.t], outputs: [n.eps] };
    case "head":
      return { inputs: [n.x, n.t], outputs: [n.eps, "deriv"] };
    case "jvp":
      // an int64 time has no tangent: such a JVP graph differentiates along x only
      return {
        inputs: [n.x, n.t, JVP_INPUTS.x, ...(info.timestep === "int64" ? [] : [JVP_INPUTS.t])],
        outputs: [n.eps, "jvp"],
      };
    default:
      return { inputs: [], outputs: [] };
  }
}

/** Checks one graph file; throws a {@link ManifestError} naming `graphs.<kind>` and the mismatch. */
function checkGraph(info: LoadedModel, kind: GraphKind, path: string): void {
  const field = `graphs.${kind}`;
  const name = info.manifest.name;
  const fail = (message: string): never => {
    throw new ManifestError(field, `${basename(path)}: ${message}`, name);
  };
  let graph;
  try {
    graph = decodeModel(readFileSync(path)).graph;
  } catch (e) {
    return fail(`not a readable ONNX model (${e instanceof Error ? e.message.split("\n")[0] : e})`);
  }
  if (!graph) return fail("the ONNX model has no graph");
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((i) => !initializers.has(i.name ?? ""));
  const expected = expectedInputs(info, kind);
  const requiredInputs = required(info, kind).inputs;
  const names = inputs.map((i) => i.name ?? "");
  for (const need of requiredInputs) {
    if (!names.includes(need)) fail(`the graph has no input "${need}" (its inputs: ${names.join(", ")})`);
  }
  for (const input of inputs) {
    const inName = input.name ?? "";
    const want = expected.get(inName);
    if (!want) {
      fail(
        `unexpected input "${inName}": the worker feeds only ${[...expected.keys()].join(", ")}`,
      );
    }
    const { elemType, shape } = valueInfoType(input);
    // The time input of the eps graph may be an integer timestep; the other graphs follow the eps graph.
    const timeName = graphNames(info, kind).t;
    if (inName === timeName && kind === "eps" && elemType === DataType.INT64) {
      info.timestep = "int64";
    } else if (inName === timeName && kind === "jvp" && info.timestep === "int64") {
      if (elemType !== undefined && elemType !== DataType.INT64) {
        fail(`input "${inName}" is ${typeName(elemType)}, but the eps graph's is int64`);
      }
    } else if (elemType !== undefined && elemType !== want!.type) {
      fail(`input "${inName}" is ${typeName(elemType)}, the worker feeds ${typeName(want!.type)}`);
    }
    if (!shape) continue; // rank unknown: anything goes
    const wantShape = ["N", ...want!.dims];
    if (shape.length !== wantShape.length) {
      fail(
        `input "${inName}" has rank ${shape.length} ${fmtShape(shape)}, but model.json "shape" ` +
          `${JSON.stringify(info.manifest.shape)} means rank ${wantShape.length} ${fmtShape(wantShape)}`,
      );
    }
    shape.forEach((d, i) => {
      if (i === 0 || typeof d !== "number" || d <= 0) return;
      if (d !== wantShape[i]) {
        fail(
          `input "${inName}" has shape ${fmtShape(shape)}, but model.json "shape" ` +
            `${JSON.stringify(info.manifest.shape)} means ${fmtShape(wantShape)}`,
        );
      }
    });
  }
  const outputs = (graph.output ?? []).map((o) => o.name ?? "");
  for (const need of required(info, kind).outputs) {
    if (!outputs.includes(need)) {
      fail(`the graph has no output "${need}" (its outputs: ${outputs.join(", ")})`);
    }
  }
}

/**
 * Checks every graph the sampler feeds (eps, head, jvp) of a model, eps first (it sets
 * `info.timestep`, which the others follow); throws on the first mismatch.
 */
export function checkModelGraphs(info: LoadedModel): void {
  const order: GraphKind[] = ["eps", "head", "jvp"];
  for (const kind of order) {
    const path = info.graphPaths[kind];
    if (path) checkGraph(info, kind, path);
  }
}

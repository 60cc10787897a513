/**
 * Convolutions on ONNX Runtime's blocked (NCHWc) CPU kernels when their weights are not constants.
 *
 * ONNX Runtime's graph optimiser moves a Conv to its blocked kernels (domain `com.microsoft.nchwc`,
 * channels in blocks of the CPU's vector width β) only when the weight is a constant, which it reorders
 * once. A training graph feeds its weights as inputs every step, so its convolutions take the slower
 * general path (docs/training.md). {@link blockedConvolutions} rewrites each eligible Conv (2-D, one group,
 * input and output channels multiples of β) into
 *
 *     ReorderInput(x) → nchwc.Conv(x, W laid out [Co/β, Ci/β, kh, kw, β_in, β_out], b) → ReorderOutput
 *
 * with the weight's layout made in the graph by a Reshape and a Transpose (a few KB per step). The result is
 * the same convolution up to float rounding. β is a property of the CPU that the runtime does not report:
 * {@link probeBlockSize} finds it by running one small convolution both ways.
 */
import { inferGraph } from "./infer.ts";
import { createSession, runSession } from "./ort.ts";
import {
  attribute,
  encodeModel,
  getAttribute,
  GraphBuilder,
  type IModelProto,
  modelOpset,
  type ModelProto,
  type NodeProto,
  onnx,
  tensorFromNumbers,
} from "./proto.ts";

export const NCHWC_DOMAIN = "com.microsoft.nchwc";

/** `model` with its eligible Conv nodes on the blocked kernels of block size `block`; how many were moved. */
export function blockedConvolutions(
  model: IModelProto,
  block: number,
): { model: ModelProto; converted: number } {
  const graph = model.graph!;
  const info = inferGraph(graph, modelOpset(model));
  const taken = new Set([
    ...(graph.node ?? []).flatMap((n) => [n.name ?? "", ...(n.output ?? [])]),
    ...(graph.input ?? []).map((v) => v.name!),
    ...(graph.initializer ?? []).map((t) => t.name!),
  ]);
  let counter = 0;
  const fresh = (what: string) => {
    let name: string;
    do name = `nchwc/${what}__${counter++}`; while (taken.has(name));
    taken.add(name);
    return name;
  };
  const nodes: NodeProto[] = [], initializers = [...(graph.initializer ?? [])];
  const node = (
    opType: string,
    inputs: string[],
    attrs: Record<string, number | number[]> = {},
    domain = "",
  ) => {
    const out = fresh(opType.toLowerCase());
    nodes.push(onnx.NodeProto.create({
      opType,
      domain,
      name: fresh(opType),
      input: inputs,
      output: [out],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    }) as NodeProto);
    return out;
  };
  let converted = 0;
  for (const n of (graph.node ?? []) as NodeProto[]) {
    const w = n.opType === "Conv" && (!n.domain || n.domain === "ai.onnx")
      ? info.shape.get(n.input[1])
      : undefined;
    const [co, ci] = w ?? [];
    const group = (getAttribute(n, "group") as number | undefined) ?? 1;
    if (
      !w || w.length !== 4 || typeof co !== "number" || typeof ci !== "number" || group !== 1 ||
      co % block !== 0 || ci % block !== 0 || (getAttribute(n, "auto_pad") ?? "NOTSET") !== "NOTSET"
    ) {
      nodes.push(n);
      continue;
    }
    const dims = fresh("dims");
    initializers.push(tensorFromNumbers(dims, [co / block, block, ci / block, block, -1], [5], 7));
    // [Co/β, β_out, Ci/β, β_in, kh·kw] → [Co/β, Ci/β, kh·kw, β_in, β_out], then back to W's shape
    const grouped = node("Transpose", [node("Reshape", [n.input[1], dims])], { perm: [0, 2, 4, 3, 1] });
    const weight = node("Reshape", [grouped, node("Shape", [n.input[1]])]);
    const x = node("ReorderInput", [n.input[0]], {}, NCHWC_DOMAIN);
    const attrs = (n.attribute ?? []).filter((a) => a.name !== "group");
    const y = fresh("conv");
    nodes.push(onnx.NodeProto.create({
      opType: "Conv",
      domain: NCHWC_DOMAIN,
      name: fresh("Conv"),
      input: [x, weight, ...n.input.slice(2)],
      output: [y],
      attribute: attrs,
    }) as NodeProto);
    nodes.push(onnx.NodeProto.create({
      opType: "ReorderOutput",
      domain: NCHWC_DOMAIN,
      name: fresh("ReorderOutput"),
      input: [y],
      output: [n.output[0]],
      attribute: [attribute("channels", co)],
    }) as NodeProto);
    converted++;
  }
  const opsetImport = (model.opsetImport ?? []).filter((o) => o.domain !== NCHWC_DOMAIN);
  if (converted) opsetImport.push({ domain: NCHWC_DOMAIN, version: 1 });
  return {
    model: onnx.ModelProto.create({
      ...model,
      opsetImport,
      graph: onnx.GraphProto.create({ ...graph, node: nodes, initializer: initializers }),
    }),
    converted,
  };
}

let probed: Promise<number | undefined> | undefined;

/**
 * The block size of ONNX Runtime's blocked kernels on this CPU (16 with AVX-512, 8 with AVX2), or
 * undefined where they are missing: the block under which a rewritten 16-channel convolution gives the
 * general path's result. Probed once per process.
 */
export function probeBlockSize(): Promise<number | undefined> {
  probed ??= (async () => {
    const g = new GraphBuilder("probe", { opset: 17 });
    const x = g.input("x", "float32", [1, 16, 5, 5]);
    const w = g.input("w", "float32", [16, 16, 3, 3]);
    g.output(g.op("Conv", [x, w], { pads: [1, 1, 1, 1] }), "float32", [1, 16, 5, 5]);
    const plain = g.model();
    const values = (n: number, s: number) =>
      Float32Array.from({ length: n }, (_, i) => Math.sin(s * (i + 1)));
    const feeds = {
      x: { type: "float32" as const, data: values(400, 0.37), dims: [1, 16, 5, 5] },
      w: { type: "float32" as const, data: values(2304, 0.11), dims: [16, 16, 3, 3] },
    };
    const run = async (m: IModelProto) => {
      const { session } = await createSession(encodeModel(m), { providers: ["cpu"], threads: 1 });
      const out = Object.values(await runSession(session, feeds))[0].data as Float32Array;
      await session.release();
      return out;
    };
    const want = await run(plain);
    for (const block of [16, 8]) {
      try {
        const got = await run(blockedConvolutions(plain, block).model);
        if (got.every((v, i) => Math.abs(v - want[i]) <= 1e-4 * (1 + Math.abs(want[i])))) return block;
      } catch {
        // the blocked kernels are missing, or refuse this block: try the next
      }
    }
    return undefined;
  })();
  return probed;
}

/**
 * ONNX Runtime's per-node profile (a session created with `profile`, onnx/ort.ts): the kernel time of
 * every node run, summed per op type, with the floating-point work of the matrix ops counted from the
 * recorded shapes.
 *
 * FLOPs are 2 per multiply-add: Conv (and ORT's FusedConv) 2·|out|·(C_in/groups)·k_h·k_w, read from the
 * weight's shape [C_out, C_in/groups, k_h, k_w]; ConvTranspose 2·|in|·(C_out/groups)·k_h·k_w (weight
 * [C_in, C_out/groups, k_h, k_w]); MatMul, Gemm and their fused forms 2·|out|·K with K² = |A|·|B| / (|out|·L),
 * L the product of B's batch dimensions (1 when B is broadcast), so transposed operands count right.
 * Other ops count no FLOPs (they are memory-bound).
 */

/** One kernel run: its op type, microseconds, and FLOPs. */
export interface KernelRun {
  node: string;
  op: string;
  us: number;
  flops: number;
}

type Shapes = Record<string, number[]>[];

const size = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);
const dimsOf = (s: Shapes | undefined, i: number): number[] | undefined =>
  s && s[i] ? Object.values(s[i])[0] : undefined;

/** FLOPs of one node run from its op type and recorded input/output shapes (0 when not a matrix op). */
function kernelFlops(op: string, inputs: Shapes | undefined, outputs: Shapes | undefined): number {
  const [a, w, out] = [dimsOf(inputs, 0), dimsOf(inputs, 1), dimsOf(outputs, 0)];
  if (!a || !w || !out) return 0;
  if (op === "Conv" || op === "FusedConv" || op === "NhwcFusedConv") {
    return 2 * size(out) * size(w.slice(1));
  }
  if (op === "ConvTranspose") return 2 * size(a) * size(w.slice(1));
  if (op === "MatMul" || op === "Gemm" || op === "FusedMatMul" || op === "FusedGemm") {
    const batchB = w.length > 2 ? size(w.slice(0, -2)) : 1;
    const k = Math.sqrt((size(a) * size(w)) / (size(out) * batchB));
    return 2 * size(out) * Math.round(k);
  }
  return 0;
}

/** The kernel runs of a profile JSON (ORT's trace-event format). */
function kernelRuns(events: unknown[]): KernelRun[] {
  const runs: KernelRun[] = [];
  for (
    const e of events as {
      cat?: string;
      name?: string;
      dur?: number;
      args?: { op_name?: string; input_type_shape?: Shapes; output_type_shape?: Shapes };
    }[]
  ) {
    if (e.cat !== "Node" || !e.name?.endsWith("_kernel_time") || !e.args?.op_name) continue;
    const op = e.args.op_name;
    runs.push({
      node: e.name.slice(0, -"_kernel_time".length),
      op,
      us: e.dur ?? 0,
      flops: kernelFlops(op, e.args.input_type_shape, e.args.output_type_shape),
    });
  }
  return runs;
}

/** Per op type: total milliseconds, node runs and GFLOPs, over `runs` divided by `repeats`. */
export interface OpTotal {
  op: string;
  ms: number;
  calls: number;
  gflop: number;
}

export function totalsByOp(runs: readonly KernelRun[], repeats = 1): OpTotal[] {
  const by = new Map<string, OpTotal>();
  for (const r of runs) {
    const t = by.get(r.op) ?? { op: r.op, ms: 0, calls: 0, gflop: 0 };
    t.ms += r.us / 1000 / repeats;
    t.calls += 1 / repeats;
    t.gflop += r.flops / 1e9 / repeats;
    by.set(r.op, t);
  }
  return [...by.values()].sort((x, y) => y.ms - x.ms);
}

/** Reads the profile ORT wrote for the prefix `prefix` (the newest `<prefix>*.json`) and removes it. */
export async function readProfile(prefix: string): Promise<KernelRun[]> {
  const slash = prefix.lastIndexOf("/");
  const dir = slash >= 0 ? prefix.slice(0, slash) || "/" : ".";
  const base = prefix.slice(slash + 1);
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.startsWith(base) && e.name.endsWith(".json")) files.push(`${dir}/${e.name}`);
  }
  if (!files.length) throw new Error(`no ORT profile ${prefix}*.json`);
  files.sort();
  const path = files.at(-1)!;
  const runs = kernelRuns(JSON.parse(await Deno.readTextFile(path)));
  await Deno.remove(path);
  return runs;
}

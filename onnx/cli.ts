/**
 * Graph tools.
 *
 *     deno task jvp      --model IN.onnx --out OUT.onnx [--wrt x,t]
 *     deno task features --model IN.onnx --tensor NAME [NAME…] [--tensor NAME…] --out OUT.onnx
 *
 * `jvp` writes the forward-mode graph (inputs x, t, [class], dx, dt; outputs eps, jvp). `features` writes
 * the model with the named intermediate tensors as extra outputs. Exit status 2 on bad arguments (one line
 * naming the flag), 1 when the model cannot be transformed.
 */
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { exposeTensors, FeatureError, tensorNames } from "./features.ts";
import { JvpError, jvpModel } from "./jvp.ts";
import { decodeModel, encodeModel, type ModelProto } from "./proto.ts";

export { UsageError };

export interface Parsed {
  command: "jvp" | "features";
  model: string;
  out: string;
  tensors: string[];
  wrt?: string[];
}

const USAGE = "usage: cli.ts jvp --model IN.onnx --out OUT.onnx [--wrt x,t]\n" +
  "       cli.ts features --model IN.onnx --tensor NAME… --out OUT.onnx";

const MODEL: FlagSpec = { flag: "--model", kind: "string" };
const OUT: FlagSpec = { flag: "--out", kind: "string" };
/** Each command's flags; `--tensor a b` and `--tensor a,b` both name two tensors. */
const FLAGS: Record<Parsed["command"], readonly FlagSpec[]> = {
  jvp: [MODEL, OUT, { flag: "--wrt", kind: "list" }],
  features: [MODEL, OUT, { flag: "--tensor", kind: "list", repeat: true, greedy: true }],
};

/** Parses the command line; throws UsageError with a one-line message naming the bad flag. */
export function parseArgs(args: readonly string[]): Parsed {
  const [command, ...rest] = args;
  if (command !== "jvp" && command !== "features") {
    throw new UsageError("command", `unknown command '${command ?? ""}' (expected jvp or features)`);
  }
  const v = parseFlags(rest, FLAGS[command], { help: false }).values as {
    model?: string;
    out?: string;
    wrt?: string[];
    tensor?: string[];
  };
  if (v.model === undefined) throw new UsageError("--model", "is required");
  if (v.out === undefined) throw new UsageError("--out", "is required");
  const parsed: Parsed = { command, model: v.model, out: v.out, tensors: [] };
  if (command === "features") {
    if (!v.tensor) throw new UsageError("--tensor", "is required (at least one tensor name)");
    parsed.tensors = v.tensor;
  }
  if (v.wrt) parsed.wrt = v.wrt;
  return parsed;
}

/** Runs one command; returns the exit status. */
export async function main(args: readonly string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  let parsed: Parsed;
  try {
    parsed = parseArgs(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`error: ${e.message}`);
    return 2;
  }
  let model: ModelProto;
  try {
    model = decodeModel(await Deno.readFile(parsed.model));
  } catch (e) {
    console.error(`error: --model ${parsed.model}: ${e instanceof Error ? e.message : e}`);
    return 2;
  }
  const inputs = (model.graph?.input ?? []).map((i) => i.name!);
  const unknownWrt = (parsed.wrt ?? []).filter((n) => !inputs.includes(n));
  if (unknownWrt.length) {
    console.error(
      `error: --wrt: ${unknownWrt.map((n) => `'${n}'`).join(", ")} not among the inputs (${
        inputs.join(", ")
      })`,
    );
    return 2;
  }
  const names = new Set(tensorNames(model));
  const unknownTensors = parsed.tensors.filter((n) => !names.has(n));
  if (unknownTensors.length) {
    console.error(
      `error: --tensor: no tensor named ${unknownTensors.map((n) => `'${n}'`).join(", ")} in the model`,
    );
    return 2;
  }
  let result: ModelProto;
  try {
    result = parsed.command === "jvp"
      ? jvpModel(model, { wrt: parsed.wrt })
      : exposeTensors(model, parsed.tensors);
  } catch (e) {
    if (e instanceof JvpError || e instanceof FeatureError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
  await Deno.writeFile(parsed.out, encodeModel(result));
  const outs = (result.graph?.output ?? []).map((o) => o.name).join(", ");
  console.log(`wrote ${parsed.out} (outputs: ${outs})`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));

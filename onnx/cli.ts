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
import { exposeTensors, FeatureError, tensorNames } from "./features.ts";
import { JvpError, jvpModel } from "./jvp.ts";
import { decodeModel, encodeModel, type ModelProto } from "./proto.ts";

export class UsageError extends Error {}

export interface Parsed {
  command: "jvp" | "features";
  model: string;
  out: string;
  tensors: string[];
  wrt?: string[];
}

const USAGE = "usage: cli.ts jvp --model IN.onnx --out OUT.onnx [--wrt x,t]\n" +
  "       cli.ts features --model IN.onnx --tensor NAME… --out OUT.onnx";

/** Parses the command line; throws UsageError with a one-line message naming the bad flag. */
export function parseArgs(args: readonly string[]): Parsed {
  const [command, ...rest] = args;
  if (command !== "jvp" && command !== "features") {
    throw new UsageError(`unknown command '${command ?? ""}' (expected jvp or features)`);
  }
  const allowed = command === "jvp" ? ["--model", "--out", "--wrt"] : ["--model", "--out", "--tensor"];
  const values: Record<string, string[]> = {};
  let flag: string | undefined;
  for (const arg of rest) {
    if (arg.startsWith("--")) {
      const [name, inline] = arg.includes("=")
        ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
        : [arg, undefined];
      if (!allowed.includes(name)) throw new UsageError(`unknown flag ${name} for ${command}`);
      if (name !== "--tensor" && values[name]) throw new UsageError(`${name} given twice`);
      values[name] ??= [];
      flag = name;
      if (inline !== undefined) values[name].push(inline);
    } else {
      if (!flag) throw new UsageError(`unexpected argument '${arg}'`);
      if (flag !== "--tensor" && values[flag].length) throw new UsageError(`${flag} takes one value`);
      values[flag].push(arg);
    }
  }
  const one = (name: string): string => {
    const v = values[name];
    if (!v) throw new UsageError(`${name} is required`);
    if (v.length !== 1 || !v[0]) throw new UsageError(`${name} needs a value`);
    return v[0];
  };
  const parsed: Parsed = { command, model: one("--model"), out: one("--out"), tensors: [] };
  if (command === "features") {
    parsed.tensors = (values["--tensor"] ?? []).flatMap((v) => v.split(",")).filter((v) => v);
    if (!parsed.tensors.length) throw new UsageError("--tensor is required (at least one tensor name)");
  }
  if (values["--wrt"]) {
    parsed.wrt = one("--wrt").split(",").filter((v) => v);
    if (!parsed.wrt.length) throw new UsageError("--wrt needs input names");
  }
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

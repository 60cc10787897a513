/**
 * The command line of `deno task job` (cli/job.ts): its help, commands and flags, parsed and checked
 * before any request is made.
 */
import { flagKey, type FlagSpec, type FlagValue, parseFlags, UsageError } from "../../core/flags.ts";

export { UsageError };

export const HELP = `usage: deno task job <command> [flags]

commands:
  submit   --count C [--chunk K] [--schedule CRON] [--wait] [--json]
           and the request: --request FILE.json (a POST /v1/samples body) and/or
           --model M [--solver S] [--steps N | --nfe N] [--grid G] [--rho R] [--afs] [--denoise]
           [--genie-derivative D] [--order K] [--variant V] [--n N] [--seed S] [--class C]
           [--guidance W] [--output png|tensor]
  status   ID [--json]
  wait     ID [--timeout SECONDS] [--json]
  fetch    ID --out DIR | FILE.tar | FILE.npy
  cancel   ID [--json]
  delete   ID                  (the job and its files, now)
  usage    [--json]            this key's quotas and what it uses of them

common flags: --url URL (GENIE_URL, default http://127.0.0.1:8000), --key KEY (GENIE_API_KEY),
              --quiet (no progress on stderr), --help`;

/** The flags that set a field of the request (the key is the field), over `--request FILE.json`. */
export const REQUEST_FLAGS: readonly FlagSpec[] = [
  { flag: "--model", key: "model", kind: "string" },
  { flag: "--solver", key: "solver", kind: "string" },
  { flag: "--steps", key: "steps", kind: "int", min: 0 },
  { flag: "--nfe", key: "nfe", kind: "int", min: 0 },
  { flag: "--grid", key: "grid", kind: "string" },
  { flag: "--rho", key: "rho", kind: "number" },
  { flag: "--afs", key: "afs", kind: "bool" },
  { flag: "--denoise", key: "denoise", kind: "bool" },
  { flag: "--genie-derivative", key: "genie_derivative", kind: "string" },
  { flag: "--order", key: "order", kind: "int", min: 0 },
  { flag: "--variant", key: "variant", kind: "string" },
  { flag: "--n", key: "n", kind: "int", min: 0 },
  { flag: "--seed", key: "seed", kind: "int", min: 0 },
  { flag: "--class", key: "class", kind: "int", min: 0 },
  { flag: "--guidance", key: "guidance", kind: "number" },
  { flag: "--output", key: "output", kind: "string" },
];

/** Every flag: the common ones, each command's and the request's. */
const FLAGS: readonly FlagSpec[] = [
  { flag: "--url", kind: "string" },
  { flag: "--key", kind: "string" },
  { flag: "--quiet", kind: "bool" },
  { flag: "--count", kind: "int", min: 1 },
  { flag: "--chunk", kind: "int", min: 1 },
  { flag: "--schedule", kind: "string" },
  { flag: "--wait", kind: "bool" },
  { flag: "--json", kind: "bool" },
  { flag: "--request", kind: "string" },
  { flag: "--timeout", kind: "number", min: 0, positive: true },
  { flag: "--out", kind: "string" },
  ...REQUEST_FLAGS,
];

const COMMANDS = ["submit", "status", "wait", "fetch", "cancel", "delete", "usage"] as const;
type Command = typeof COMMANDS[number];

/** Flags each command accepts (besides --url, --key and --quiet). */
const ALLOWED: Record<Command, string[]> = {
  submit: [
    "--count",
    "--chunk",
    "--schedule",
    "--wait",
    "--json",
    "--request",
    "--timeout",
    ...REQUEST_FLAGS.map((s) => s.flag),
  ],
  status: ["--json"],
  wait: ["--timeout", "--json"],
  fetch: ["--out"],
  cancel: ["--json"],
  delete: [],
  usage: ["--json"],
};

export interface JobArgs {
  command: Command;
  id?: string;
  url: string;
  key?: string;
  quiet: boolean;
  json: boolean;
  /** The flags given, by key (a request flag's key is its request field). */
  flags: Record<string, FlagValue | undefined>;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Parses the command line; throws {@link UsageError} naming the flag; null for --help. */
export function parseJobArgs(argv: readonly string[]): JobArgs | null {
  const parsed = parseFlags(argv, FLAGS, { positionals: true });
  if (parsed.help) return null;
  const values = parsed.values as Record<string, FlagValue | undefined>;
  const [command, id, ...extra] = parsed.positionals;
  if (!command) throw new UsageError("command", `missing (one of ${COMMANDS.join(", ")})`);
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError("command", `unknown ${JSON.stringify(command)} (one of ${COMMANDS.join(", ")})`);
  }
  const cmd = command as Command;
  for (const spec of FLAGS) {
    const common = spec.flag === "--url" || spec.flag === "--key" || spec.flag === "--quiet";
    if (values[flagKey(spec)] !== undefined && !common && !ALLOWED[cmd].includes(spec.flag)) {
      throw new UsageError(spec.flag, `not a flag of ${cmd}`);
    }
  }
  if (cmd === "submit" || cmd === "usage") {
    if (id !== undefined) throw new UsageError(cmd, `unexpected argument ${JSON.stringify(id)}`);
  } else {
    if (!id) throw new UsageError(cmd, "missing the job id");
    if (!/^[0-9a-f]{16}(-\d+)?$/.test(id)) throw new UsageError(cmd, `${JSON.stringify(id)} is not a job id`);
  }
  if (extra.length > 0) throw new UsageError(cmd, `unexpected argument ${JSON.stringify(extra[0])}`);
  const url = (values.url as string | undefined) ?? env("GENIE_URL") ?? "http://127.0.0.1:8000";
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError("--url", `not an http(s) URL: ${JSON.stringify(url)}`);
  }
  if (cmd === "submit") {
    if (values.count === undefined) throw new UsageError("--count", "required");
    if (values.model === undefined && values.request === undefined) {
      throw new UsageError("--model", "required (or give --request FILE.json)");
    }
    if (values.steps !== undefined && values.nfe !== undefined) {
      throw new UsageError("--nfe", "give --steps or --nfe, not both");
    }
  }
  if (cmd === "fetch" && !values.out) throw new UsageError("--out", "required (DIR, FILE.tar or FILE.npy)");
  return {
    command: cmd,
    id,
    url: url.replace(/\/+$/, ""),
    key: (values.key as string | undefined) ?? env("GENIE_API_KEY"),
    quiet: values.quiet === true,
    json: values.json === true,
    flags: values,
  };
}

/**
 * The command line of `deno task job` (cli/job.ts): its help, commands and flags, parsed and checked
 * before any request is made.
 */
import { parseArgs } from "node:util";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

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

export const REQUEST_FLAGS = {
  model: "string",
  solver: "string",
  steps: "int",
  nfe: "int",
  grid: "string",
  rho: "number",
  afs: "bool",
  denoise: "bool",
  "genie-derivative": "string",
  order: "int",
  variant: "string",
  n: "int",
  seed: "int",
  class: "int",
  guidance: "number",
  output: "string",
} as const;

const COMMANDS = ["submit", "status", "wait", "fetch", "cancel", "delete", "usage"] as const;
type Command = typeof COMMANDS[number];

/** Flags each command accepts (besides the common ones). */
const ALLOWED: Record<Command, string[]> = {
  submit: ["count", "chunk", "schedule", "wait", "json", "request", "timeout", ...Object.keys(REQUEST_FLAGS)],
  status: ["json"],
  wait: ["timeout", "json"],
  fetch: ["out"],
  cancel: ["json"],
  delete: [],
  usage: ["json"],
};

export interface JobArgs {
  command: Command;
  id?: string;
  url: string;
  key?: string;
  quiet: boolean;
  json: boolean;
  flags: Record<string, string | boolean | undefined>;
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
  const options: Record<string, { type: "string" | "boolean" }> = {
    url: { type: "string" },
    key: { type: "string" },
    quiet: { type: "boolean" },
    help: { type: "boolean" },
    count: { type: "string" },
    chunk: { type: "string" },
    schedule: { type: "string" },
    wait: { type: "boolean" },
    json: { type: "boolean" },
    request: { type: "string" },
    timeout: { type: "string" },
    out: { type: "string" },
  };
  for (const [name, kind] of Object.entries(REQUEST_FLAGS)) {
    options[name] = { type: kind === "bool" ? "boolean" : "string" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const flag = /'(-[^' ]+)/.exec(msg)?.[1];
    throw new UsageError(flag ? `${flag}: ${msg.split(". ")[0]}` : msg);
  }
  const { values, positionals } = parsed;
  if (values.help) return null;
  const [command, id, ...extra] = positionals;
  if (!command) throw new UsageError(`command: missing (one of ${COMMANDS.join(", ")})`);
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(`command: unknown ${JSON.stringify(command)} (one of ${COMMANDS.join(", ")})`);
  }
  const cmd = command as Command;
  const common = new Set(["url", "key", "quiet", "help"]);
  for (const name of Object.keys(values)) {
    if (!common.has(name) && !ALLOWED[cmd].includes(name)) {
      throw new UsageError(`--${name}: not a flag of ${cmd}`);
    }
  }
  if (cmd === "submit" || cmd === "usage") {
    if (id !== undefined) throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(id)}`);
  } else {
    if (!id) throw new UsageError(`${cmd}: missing the job id`);
    if (!/^[0-9a-f]{16}(-\d+)?$/.test(id)) {
      throw new UsageError(`${cmd}: ${JSON.stringify(id)} is not a job id`);
    }
  }
  if (extra.length > 0) throw new UsageError(`${cmd}: unexpected argument ${JSON.stringify(extra[0])}`);
  const url = (values.url as string | undefined) ?? env("GENIE_URL") ?? "http://127.0.0.1:8000";
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url: not an http(s) URL: ${JSON.stringify(url)}`);
  }
  const flags = values as Record<string, string | boolean | undefined>;
  if (cmd === "submit") {
    if (flags.count === undefined) throw new UsageError("--count: required");
    intFlag("count", flags.count, 1);
    if (flags.chunk !== undefined) intFlag("chunk", flags.chunk, 1);
    if (flags.model === undefined && flags.request === undefined) {
      throw new UsageError("--model: required (or give --request FILE.json)");
    }
    for (const [name, kind] of Object.entries(REQUEST_FLAGS)) {
      const v = flags[name];
      if (v === undefined || kind === "bool" || kind === "string") continue;
      if (kind === "int") intFlag(name, v, 0);
      else if (!Number.isFinite(Number(v)) || String(v).trim() === "") {
        throw new UsageError(`--${name}: expected a number, got ${JSON.stringify(v)}`);
      }
    }
    if (flags.steps !== undefined && flags.nfe !== undefined) {
      throw new UsageError("--nfe: give --steps or --nfe, not both");
    }
  }
  if (flags.timeout !== undefined) {
    const t = Number(flags.timeout);
    if (!(t > 0)) {
      throw new UsageError(`--timeout: expected seconds > 0, got ${JSON.stringify(flags.timeout)}`);
    }
  }
  if (cmd === "fetch" && !flags.out) throw new UsageError("--out: required (DIR, FILE.tar or FILE.npy)");
  return {
    command: cmd,
    id,
    url: url.replace(/\/+$/, ""),
    key: (values.key as string | undefined) ?? env("GENIE_API_KEY"),
    quiet: Boolean(values.quiet),
    json: Boolean(values.json),
    flags,
  };
}

function intFlag(name: string, v: string | boolean | undefined, min: number): number {
  const n = Number(v);
  if (typeof v !== "string" || !/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/**
 * The one command-line flag parser of every program (`deno task sample`, `job`, `models`, `import`,
 * `serve`, `train`, the bench programs, …): a table of {@link FlagSpec}s in, typed values out. It reads
 * `--flag value`, `--flag=value` and bare boolean flags (`--flag=true`/`--flag=false` too), checks
 * integers and numbers against their bounds, strings against their allowed values, splits lists at
 * commas, and refuses unknown, repeated and (unless allowed) positional arguments. Every problem is a
 * {@link UsageError} whose one-line message starts with the flag it is about. Runtime-neutral: the caller
 * passes the arguments.
 */

/** A bad command line; `flag` names the offending flag (e.g. "--steps") or argument. */
export class UsageError extends Error {
  constructor(readonly flag: string, message: string) {
    super(`${flag}: ${message}`);
    this.name = "UsageError";
  }
}

export type FlagKind = "string" | "int" | "number" | "bool" | "list";

/** One flag of a program. */
export interface FlagSpec {
  /** The flag as typed, `--steps`. */
  readonly flag: string;
  /** The property of the parsed values (default: the flag in camelCase, `--t-min` → `tMin`). */
  readonly key?: string;
  readonly kind: FlagKind;
  /** The allowed values of a string flag (or of each item of a list). */
  readonly values?: readonly string[];
  /** Bounds of a number (or of each number of a list). */
  readonly min?: number;
  readonly max?: number;
  /** Strictly greater than `min`. */
  readonly positive?: boolean;
  /** What a list holds (default strings; empty string items are dropped). */
  readonly of?: "string" | "int" | "number";
  /** A list that may be given more than once (its items add up). */
  readonly repeat?: boolean;
  /** A list that also takes the arguments after its value, up to the next flag: `--tensor a b`. */
  readonly greedy?: boolean;
  /** The value when the flag is absent. */
  readonly default?: FlagValue;
}

export type FlagValue = string | number | boolean | readonly string[] | readonly number[];

export interface ParseOptions {
  /** Arguments that are not flags are collected (default: refused). After `--` every argument is one. */
  positionals?: boolean;
  /** `--help` and `-h` end parsing with `help: true` (default true). */
  help?: boolean;
  /** A boolean flag followed by the word `true` or `false` takes it as its value. */
  boolWords?: boolean;
}

type Camel<S extends string> = S extends `${infer A}-${infer B}` ? `${A}${Capitalize<Camel<B>>}` : S;
type KeyOf<S extends FlagSpec> = S extends { key: infer K extends string } ? K
  : S["flag"] extends `--${infer N}` ? Camel<N>
  : never;
type ValueOf<S extends FlagSpec> = S["kind"] extends "int" | "number" ? number
  : S["kind"] extends "bool" ? boolean
  : S["kind"] extends "list" ? (S extends { of: "int" | "number" } ? number[] : string[])
  : S extends { values: readonly (infer V)[] } ? V
  : string;

/** The values of a table of specs: a flag with a default always has a value. */
export type FlagValues<Specs extends readonly FlagSpec[]> =
  & { [S in Specs[number] as S extends { default: unknown } ? KeyOf<S> : never]: ValueOf<S> }
  & { [S in Specs[number] as S extends { default: unknown } ? never : KeyOf<S>]?: ValueOf<S> };

export interface ParsedFlags<V> {
  /** The flags given (and the defaults of those that were not), by key. */
  values: V;
  positionals: string[];
  /** `--help` or `-h` was given: parsing stopped there. */
  help: boolean;
}

/** The key of a spec's value: its `key`, else the flag in camelCase. */
export function flagKey(spec: FlagSpec): string {
  return spec.key ?? spec.flag.replace(/^-+/, "").replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

const INT_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function parseNumber(spec: FlagSpec, raw: string, isInt: boolean): number {
  const { flag } = spec;
  if (!(isInt ? INT_RE : NUMBER_RE).test(raw)) {
    throw new UsageError(flag, `expected ${isInt ? "an integer" : "a number"}, got ${JSON.stringify(raw)}`);
  }
  const v = Number(raw);
  if (!Number.isFinite(v) || (isInt && !Number.isSafeInteger(v))) {
    throw new UsageError(flag, `number out of range: ${raw}`);
  }
  if (spec.min !== undefined && (spec.positive ? v <= spec.min : v < spec.min)) {
    throw new UsageError(flag, `must be ${spec.positive ? ">" : "≥"} ${spec.min}, got ${raw}`);
  }
  if (spec.max !== undefined && v > spec.max) throw new UsageError(flag, `must be ≤ ${spec.max}, got ${raw}`);
  return v;
}

function parseString(spec: FlagSpec, raw: string): string {
  if (raw === "") throw new UsageError(spec.flag, "needs a non-empty value");
  if (spec.values && !spec.values.includes(raw)) {
    throw new UsageError(spec.flag, `must be one of ${spec.values.join(", ")}, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/** The items of one list value: split at commas and trimmed; numbers checked like number flags. */
function parseItems(spec: FlagSpec, raw: string): (string | number)[] {
  const items = raw.split(",").map((s) => s.trim());
  if (spec.of === "int" || spec.of === "number") {
    return items.map((s) => parseNumber(spec, s, spec.of === "int"));
  }
  return items.filter((s) => s !== "").map((s) => parseString(spec, s));
}

/**
 * One flag's value from its text: what `--flag=raw` gives (a list: its items). Also for a value that comes
 * from elsewhere, such as an environment variable, checked by the same rules.
 */
export function parseFlagValue(spec: FlagSpec, raw: string): FlagValue {
  switch (spec.kind) {
    case "bool":
      if (raw === "true") return true;
      if (raw === "false") return false;
      throw new UsageError(spec.flag, `takes no value (or =true/=false), got ${JSON.stringify(raw)}`);
    case "string":
      return parseString(spec, raw);
    case "list": {
      const items = parseItems(spec, raw);
      if (items.length === 0) throw new UsageError(spec.flag, "needs a non-empty value");
      return items as string[] | number[];
    }
    default:
      return parseNumber(spec, raw, spec.kind === "int");
  }
}

/**
 * Parses `argv` against `specs`. Values are typed by their specs; flags that were not given have their
 * default, or no property at all.
 */
export function parseFlags<const Specs extends readonly FlagSpec[]>(
  argv: readonly string[],
  specs: Specs,
  options: ParseOptions = {},
): ParsedFlags<FlagValues<Specs>> {
  const help = options.help ?? true;
  const values: Record<string, FlagValue> = {};
  const positionals: string[] = [];
  const seen = new Set<string>();
  const done = (isHelp: boolean): ParsedFlags<FlagValues<Specs>> => {
    if (!isHelp) {
      for (const s of specs) if (s.default !== undefined) values[flagKey(s)] ??= s.default;
    }
    return { values: values as FlagValues<Specs>, positionals, help: isHelp };
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (help && (arg === "--help" || arg === "-h")) return done(true);
    if (arg === "--" && options.positionals) {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--")) {
      if (options.positionals && !/^-[^-]/.test(arg)) {
        positionals.push(arg);
        continue;
      }
      throw new UsageError(arg, `unexpected argument (flags start with --${help ? "; see --help" : ""})`);
    }
    const eq = arg.indexOf("=");
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const spec = specs.find((s) => s.flag === flag);
    if (!spec) {
      throw new UsageError(
        flag,
        help ? "unknown flag (see --help)" : `unknown flag (known: ${specs.map((s) => s.flag).join(", ")})`,
      );
    }
    if (seen.has(flag) && !spec.repeat) throw new UsageError(flag, "given more than once");
    seen.add(flag);
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (spec.kind === "bool") {
      const next = argv[i + 1];
      if (options.boolWords && (next === "true" || next === "false")) {
        raw = next;
        i++;
      } else raw = "true";
    } else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new UsageError(flag, "missing value");
      raw = next;
      i++;
    }
    if (spec.greedy) {
      while (i + 1 < argv.length && !argv[i + 1].startsWith("--")) raw += "," + argv[++i];
    }
    const key = flagKey(spec);
    const value = parseFlagValue(spec, raw);
    const before = values[key];
    values[key] = spec.kind === "list" && Array.isArray(before)
      ? [...before, ...(value as unknown[])] as string[]
      : value;
  }
  return done(false);
}

/** core/flags.ts, the one flag parser: typed values, bounds, lists, and errors naming the flag. */
import { assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import { flagKey, type FlagSpec, parseFlags, parseFlagValue, UsageError } from "../../core/flags.ts";

const SPECS = [
  { flag: "--model", kind: "string" },
  { flag: "--steps", kind: "int", min: 1 },
  { flag: "--t-min", kind: "number", min: 0, positive: true },
  { flag: "--grid", kind: "string", values: ["uniform", "edm"] },
  { flag: "--seed", kind: "int", min: -1, max: 0xffffffff, default: 0 },
  { flag: "--afs", kind: "bool" },
  { flag: "--batches", kind: "list", of: "int", min: 1, default: [1, 8] },
  { flag: "--tensor", kind: "list", repeat: true, greedy: true },
  { flag: "--genie-derivative", key: "genie_derivative", kind: "string" },
] as const satisfies readonly FlagSpec[];

/** `fn` throws a one-line UsageError naming `flag`, whose message starts with it and matches `re`. */
const rejects = (fn: () => unknown, flag: string, re = /./) =>
  assertThrows(fn, (e) =>
    e instanceof UsageError && e.flag === flag && e.message.startsWith(`${flag}: `) &&
    !e.message.includes("\n") && re.test(e.message));

test("flags: typed values by key, defaults for absent flags, both value syntaxes", () => {
  const { values, positionals, help } = parseFlags([
    "--model",
    "m",
    "--steps=12",
    "--t-min",
    "2e-3",
    "--grid",
    "edm",
    "--afs",
    "--batches",
    "1, 4,32",
    "--genie-derivative",
    "jvp",
  ], SPECS);
  assertEquals(values, {
    model: "m",
    steps: 12,
    tMin: 2e-3,
    grid: "edm",
    afs: true,
    batches: [1, 4, 32],
    genie_derivative: "jvp",
    seed: 0,
  });
  assertEquals([positionals, help], [[], false]);
  // typed: numbers are numbers, lists are arrays
  const n: number | undefined = values.steps;
  const b: number[] = values.batches;
  assertEquals([n, b.length], [12, 3]);
  assertEquals(parseFlags([], SPECS).values, { seed: 0, batches: [1, 8] });
  assertEquals(parseFlags(["--afs=false"], SPECS).values.afs, false);
  assertStrictEquals(flagKey({ flag: "--pool-nfe", kind: "int" }), "poolNfe");
});

test("flags: --help stops parsing; positionals only where allowed, and after --", () => {
  assertStrictEquals(parseFlags(["--steps", "2", "-h", "--bogus"], SPECS).help, true);
  assertStrictEquals(parseFlags(["--help"], SPECS).help, true);
  rejects(() => parseFlags(["--help"], SPECS, { help: false }), "--help", /unknown flag \(known: --model/);
  rejects(() => parseFlags(["stray"], SPECS), "stray", /unexpected argument/);
  const p = parseFlags(["a", "--afs", "b", "--", "--c"], SPECS, { positionals: true });
  assertEquals([p.positionals, p.values.afs], [["a", "b", "--c"], true]);
  rejects(() => parseFlags(["-x"], SPECS, { positionals: true }), "-x", /unexpected argument/);
});

test("flags: unknown, repeated and value-less flags are refused naming the flag", () => {
  rejects(() => parseFlags(["--stepz", "3"], SPECS), "--stepz", /unknown flag/);
  rejects(() => parseFlags(["--steps", "2", "--steps", "3"], SPECS), "--steps", /more than once/);
  rejects(() => parseFlags(["--steps"], SPECS), "--steps", /missing value/);
  rejects(() => parseFlags(["--seed", "--afs"], SPECS), "--seed", /missing value/);
  rejects(() => parseFlags(["--model="], SPECS), "--model", /non-empty/);
  rejects(() => parseFlags(["--afs=yes"], SPECS), "--afs", /takes no value/);
});

test("flags: integers, numbers, bounds and allowed values", () => {
  rejects(() => parseFlags(["--steps", "1.5"], SPECS), "--steps", /expected an integer/);
  rejects(() => parseFlags(["--steps", "ten"], SPECS), "--steps", /expected an integer/);
  rejects(() => parseFlags(["--steps", "0"], SPECS), "--steps", /must be ≥ 1, got 0/);
  rejects(() => parseFlags(["--seed", "4294967296"], SPECS), "--seed", /must be ≤ 4294967295/);
  rejects(() => parseFlags(["--t-min", "0"], SPECS), "--t-min", /must be > 0/);
  rejects(() => parseFlags(["--t-min", "1e999"], SPECS), "--t-min", /out of range/);
  rejects(() => parseFlags(["--t-min", "0x10"], SPECS), "--t-min", /expected a number/);
  rejects(() => parseFlags(["--grid", "cosine"], SPECS), "--grid", /must be one of uniform, edm/);
  assertStrictEquals(parseFlags(["--seed", "-1"], SPECS).values.seed, -1);
});

test("flags: lists split at commas; repeated and greedy lists add up", () => {
  rejects(() => parseFlags(["--batches", "1,x"], SPECS), "--batches", /expected an integer, got "x"/);
  rejects(() => parseFlags(["--batches", "1,0"], SPECS), "--batches", /≥ 1/);
  rejects(() => parseFlags(["--batches", "1,,2"], SPECS), "--batches", /expected an integer, got ""/);
  rejects(() => parseFlags(["--tensor", ","], SPECS), "--tensor", /non-empty/);
  const t = parseFlags(["--tensor", "h", "temb", "--tensor=z,w", "--afs"], SPECS).values;
  assertEquals([t.tensor, t.afs], [["h", "temb", "z", "w"], true]);
});

test("flags: boolean words, and one value checked by a spec", () => {
  const words = parseFlags(["--afs", "false", "--steps", "3"], SPECS, { boolWords: true }).values;
  assertEquals([words.afs, words.steps], [false, 3]);
  rejects(() => parseFlags(["--afs", "false"], SPECS), "false", /unexpected argument/);
  assertStrictEquals(parseFlagValue({ flag: "PORT", kind: "int", min: 0, max: 65535 }, "8000"), 8000);
  rejects(() => parseFlagValue({ flag: "PORT", kind: "int", min: 0, max: 65535 }, "http"), "PORT", /integer/);
});

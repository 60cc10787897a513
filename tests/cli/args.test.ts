import { assert, assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import { getSolver, solverNames } from "../../core/solvers/registry.ts";
import {
  type EncodeArgs,
  encodeHelp,
  parseEncodeArgs,
  parseSampleArgs,
  type SampleArgs,
  sampleHelp,
  UsageError,
} from "../../cli/args.ts";

const base = ["--model", "gmm:m.json", "--solver", "genie"];

/** Asserts that parsing fails with a UsageError naming `flag`, whose message starts with it. */
function rejects(parse: () => unknown, flag: string, re?: RegExp): void {
  assertThrows(parse, (e: unknown) => {
    assert(e instanceof UsageError, `expected a UsageError, got ${e}`);
    assertStrictEquals(e.flag, flag);
    assert(e.message.startsWith(`${flag}: `), e.message);
    assert(!e.message.includes("\n"), "one line");
    if (re) assert(re.test(e.message), `${e.message} should match ${re}`);
    return true;
  });
}

test("sample: every flag of the contract parses to a typed value", () => {
  const a = parseSampleArgs([
    ...base,
    "--steps",
    "12",
    "--grid",
    "edm",
    "--rho",
    "7.5",
    "--t-min",
    "2e-3",
    "--t-max",
    "0.9",
    "--afs",
    "--denoise",
    "--genie-derivative",
    "exact",
    "--order",
    "2",
    "--n",
    "8",
    "--seed",
    "4294967295",
    "--latents",
    "z.npy",
    "--class",
    "3",
    "--guidance",
    "1.5",
    "--out",
    "o.PNG",
    "--json",
  ]) as SampleArgs;
  assertEquals(a, {
    model: "gmm:m.json",
    solver: "genie",
    steps: 12,
    grid: "edm",
    rho: 7.5,
    tMin: 2e-3,
    tMax: 0.9,
    afs: true,
    denoise: true,
    genieDerivative: "exact",
    order: 2,
    n: 8,
    seed: 4294967295,
    latents: "z.npy",
    class: 3,
    guidance: 1.5,
    out: "o.PNG",
    json: true,
    quiet: false,
    scale: 1,
  });
});

test("sample: defaults and --flag=value syntax", () => {
  const a = parseSampleArgs(["--model=gmm:m.json", "--solver=ddim", "--nfe=7", "--afs=false"]) as SampleArgs;
  assertEquals(a, {
    model: "gmm:m.json",
    solver: "ddim",
    nfe: 7,
    afs: false,
    denoise: false,
    n: 1,
    seed: 0,
    scale: 1,
    json: false,
    quiet: false,
  });
  const v = parseSampleArgs(["--model", "x", "--solver", "unipc", "--variant", "bh2"]) as SampleArgs;
  assertStrictEquals(v.variant, "bh2");
  assertEquals(parseSampleArgs([...base, "--help"]), { help: true });
  assertEquals(parseSampleArgs(["-h"]), { help: true });
});

test("sample: unknown flags, positional arguments and repeated flags", () => {
  rejects(() => parseSampleArgs([...base, "--stepz", "3"]), "--stepz", /unknown flag/);
  rejects(() => parseSampleArgs([...base, "--latent", "x.npy"]), "--latent", /unknown flag/);
  rejects(() => parseSampleArgs([...base, "stray"]), "stray", /unexpected argument/);
  rejects(() => parseSampleArgs([...base, "-n", "3"]), "-n");
  rejects(() => parseSampleArgs([...base, "--n", "2", "--n", "3"]), "--n", /more than once/);
});

test("sample: missing values", () => {
  rejects(() => parseSampleArgs([...base, "--steps"]), "--steps", /missing value/);
  rejects(() => parseSampleArgs([...base, "--seed", "--json"]), "--seed", /missing value/);
  rejects(() => parseSampleArgs([...base, "--out="]), "--out", /non-empty/);
  rejects(() => parseSampleArgs(["--solver", "genie"]), "--model", /required/);
  // the solver is optional: core/plan.ts's default, as in the API
  assertStrictEquals((parseSampleArgs(["--model", "gmm:m.json"]) as SampleArgs).solver, undefined);
});

test("sample: bad numbers and out-of-range values", () => {
  rejects(() => parseSampleArgs([...base, "--steps", "1.5"]), "--steps", /integer/);
  rejects(() => parseSampleArgs([...base, "--steps", "ten"]), "--steps", /integer/);
  rejects(() => parseSampleArgs([...base, "--steps", "0"]), "--steps", /≥ 1/);
  rejects(() => parseSampleArgs([...base, "--nfe", "-3"]), "--nfe");
  rejects(() => parseSampleArgs([...base, "--n", "0"]), "--n");
  rejects(() => parseSampleArgs([...base, "--seed", "-2"]), "--seed", /≥ -1/);
  rejects(() => parseSampleArgs([...base, "--seed", "4294967296"]), "--seed", /≤/);
  rejects(() => parseSampleArgs([...base, "--rho", "0"]), "--rho", /> 0/);
  rejects(() => parseSampleArgs([...base, "--t-min", "abc"]), "--t-min", /number/);
  rejects(() => parseSampleArgs([...base, "--t-max", "1e999"]), "--t-max", /range/);
  rejects(() => parseSampleArgs([...base, "--guidance", "NaN"]), "--guidance", /number/);
  rejects(() => parseSampleArgs([...base, "--class", "-1"]), "--class");
  rejects(() => parseSampleArgs([...base, "--afs=yes"]), "--afs");
});

test("sample: enumerated values", () => {
  rejects(() => parseSampleArgs([...base, "--grid", "cosine"]), "--grid", /uniform/);
  rejects(() => parseSampleArgs([...base, "--genie-derivative", "auto"]), "--genie-derivative", /head/);
  rejects(() => parseSampleArgs([...base, "--variant", "bh3"]), "--variant", /bh1/);
  rejects(() => parseSampleArgs([...base, "--out", "x.jpg"]), "--out", /\.npy/);
  rejects(() => parseSampleArgs([...base, "--out", "npy"]), "--out");
  rejects(() => parseSampleArgs([...base, "--latents", "z.bin"]), "--latents", /\.npy/);
});

test("sample: incompatible flags", () => {
  rejects(() => parseSampleArgs([...base, "--steps", "5", "--nfe", "5"]), "--nfe", /--steps/);
  rejects(() => parseSampleArgs([...base, "--nfe", "5", "--steps", "5"]), "--nfe", /--steps/);
  rejects(
    () => parseSampleArgs(["--model", "m", "--solver", "ddim", "--genie-derivative", "jvp"]),
    "--genie-derivative",
    /genie/,
  );
  rejects(() => parseSampleArgs([...base, "--guidance", "2"]), "--guidance", /--class/);
  rejects(() => parseSampleArgs([...base, "--grid", "uniform", "--rho", "2"]), "--rho", /uniform/);
  rejects(() => parseSampleArgs([...base, "--t-min", "0.5", "--t-max", "0.5"]), "--t-max", /--t-min/);
});

test("encode: required flags and output kinds", () => {
  const e = parseEncodeArgs([
    ...base,
    "--steps",
    "20",
    "--images",
    "x.npy",
    "--out",
    "z.npy",
    "--json",
  ]) as EncodeArgs;
  assertEquals(e, {
    model: "gmm:m.json",
    solver: "genie",
    steps: 20,
    images: "x.npy",
    out: "z.npy",
    json: true,
    quiet: false,
  });
  const io = ["--images", "x.npy", "--out", "z.npy"];
  rejects(() => parseEncodeArgs([...base, ...io]), "--steps", /required/);
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--out", "z.npy"]), "--images", /required/);
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--images", "x.npy"]), "--out", /required/);
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--images", "x.npy", "--out", "z.png"]), "--out");
  rejects(
    () => parseEncodeArgs([...base, "--steps", "3", "--images", "x.jpg", "--out", "z.npy"]),
    "--images",
    /\.npy or \.png/,
  );
  assertStrictEquals(
    (parseEncodeArgs([...base, "--steps", "3", "--images", "x.png", "--out", "z.npy"]) as EncodeArgs).images,
    "x.png",
  );
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--afs", ...io]), "--afs", /unknown flag/);
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--seed", "1", ...io]), "--seed", /unknown flag/);
  rejects(() => parseEncodeArgs([...base, "--steps", "3", "--nfe", "3", ...io]), "--nfe", /--steps/);
});

test("help texts document every flag and the defaults", () => {
  const solvers = [
    { name: "ddim", summary: "Euler", grid: { kind: "quadratic" } },
    {
      name: "unipc",
      summary: "UniPC",
      grid: { kind: "logsnr" },
      orders: { min: 1, max: 3, default: 3 },
      variants: { values: ["bh1", "bh2"], default: "bh1" },
    },
  ];
  const s = sampleHelp(solvers), e = encodeHelp(solvers);
  for (
    const flag of [
      "--model",
      "--solver",
      "--steps",
      "--nfe",
      "--grid",
      "--rho",
      "--t-min",
      "--t-max",
      "--afs",
      "--denoise",
      "--genie-derivative",
      "--order",
      "--variant",
      "--n ",
      "--seed",
      "--latents",
      "--class",
      "--guidance",
      "--guidance-scale",
      "--out",
      "--scale",
      "--quiet",
      "--threads",
      "--json",
      "--help",
    ]
  ) assert(s.includes(flag), `sample help mentions ${flag}`);
  for (const flag of ["--images", "--out", "--steps", "--json"]) {
    assert(e.includes(flag), `encode help: ${flag}`);
  }
  assert(s.includes("one of ddim, unipc"));
  assert(s.includes("--nfe 10"), "default NFE");
  assert(
    /unipc +grid logsnr; --order 1–3, default 3; --variant bh1\|bh2, default bh1/.test(s),
    "unipc defaults",
  );
  assert(/ddim +grid quadratic\n/.test(e), "ddim default grid");
  // the real registry: every solver with variants lists them
  const real = sampleHelp(solverNames().map(getSolver));
  assert(
    /dpmpp-3m .*--variant reference\|quadratic-exact, default reference/.test(real),
    "dpmpp-3m variants",
  );
});

test("sample: --guidance-scale is diffusers' s = 1 + w and excludes --guidance", () => {
  const a = parseSampleArgs([...base, "--class", "3", "--guidance-scale", "7.5"]) as SampleArgs;
  assertStrictEquals(a.guidance, 6.5);
  assertStrictEquals(a.guidanceScale, 7.5);
  assertStrictEquals(
    (parseSampleArgs([...base, "--class", "1", "--guidance-scale", "1.1"]) as SampleArgs)
      .guidance,
    0.1,
  );
  assertStrictEquals(
    (parseSampleArgs([...base, "--class", "1", "--guidance-scale", "1"]) as SampleArgs)
      .guidance,
    0,
  );
  rejects(
    () => parseSampleArgs([...base, "--class", "3", "--guidance", "1", "--guidance-scale", "2"]),
    "--guidance-scale",
    /cannot be combined with --guidance/,
  );
  rejects(() => parseSampleArgs([...base, "--guidance-scale", "2"]), "--guidance-scale", /--class/);
  const s = sampleHelp([{ name: "ddim", summary: "Euler", grid: { kind: "quadratic" } }]);
  assert(/S = 1 \+ W/.test(s), "help states s = 1 + w");
});

test("sample: --seed -1 (random), --scale and --quiet", () => {
  assertStrictEquals((parseSampleArgs([...base, "--seed", "-1"]) as SampleArgs).seed, -1);
  const a = parseSampleArgs([...base, "--out", "g.png", "--scale", "4", "--quiet"]) as SampleArgs;
  assertEquals([a.scale, a.quiet], [4, true]);
  rejects(() => parseSampleArgs([...base, "--out", "g.png", "--scale", "0"]), "--scale", /≥ 1/);
  rejects(() => parseSampleArgs([...base, "--out", "g.png", "--scale", "9"]), "--scale", /≤ 8/);
  rejects(() => parseSampleArgs([...base, "--out", "g.npy", "--scale", "2"]), "--scale", /PNG/);
  rejects(() => parseSampleArgs([...base, "--scale", "2"]), "--scale", /PNG/);
});

test("--threads: a positive integer, absent by default (the model resolver then uses the cores)", () => {
  const a = parseSampleArgs([...base, "--threads", "3"]) as SampleArgs;
  assertStrictEquals(a.threads, 3);
  assertStrictEquals((parseSampleArgs(base) as SampleArgs).threads, undefined);
  assertThrows(() => parseSampleArgs([...base, "--threads", "0"]), /--threads/);
});

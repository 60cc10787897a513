/**
 * Strict flag parsing for `deno task sample` and `deno task encode` (docs/contracts.md §1): their flag
 * tables, read by core/flags.ts, and the checks between flags. Every problem is a {@link UsageError} whose
 * one-line message starts with the flag it is about.
 */
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { GRID_KINDS, type GridKind } from "../core/grid.ts";
import { MAX_PNG_SCALE } from "../core/image.ts";
import {
  checkSolveRequest,
  DEFAULT_NFE,
  DEFAULT_SOLVER,
  type Direction,
  PlanError,
  type SolveRequest,
} from "../core/plan.ts";
import {
  DERIVATIVE_SOURCES,
  type DerivativeSource,
  SOLVER_VARIANTS,
  type SolverVariant,
} from "../core/solvers/types.ts";

export { UsageError };

/** The flag of each solve setting, by its request name (core/plan.ts names refused settings so). */
export const FIELD_FLAGS: Readonly<Record<string, string>> = {
  solver: "--solver",
  steps: "--steps",
  nfe: "--nfe",
  grid: "--grid",
  rho: "--rho",
  t_min: "--t-min",
  t_max: "--t-max",
  genie_derivative: "--genie-derivative",
  derivative: "--genie-derivative",
  order: "--order",
  variant: "--variant",
  afs: "--afs",
  denoise: "--denoise",
  guidance: "--guidance",
};

/**
 * A refusal of core/plan.ts (or another core error naming a field) as the UsageError of its flag; the
 * request names of other settings in the message become their flags too (`t_min` → `--t-min`).
 */
export function usageFromField(field: string, message: string): UsageError | undefined {
  const flag = FIELD_FLAGS[field];
  if (flag === undefined) return undefined;
  return new UsageError(flag, message.replace(/\b(t_min|t_max|genie_derivative)\b/g, (f) => FIELD_FLAGS[f]));
}

/** The solve settings of parsed flags by their request names (core/plan.ts). */
export function solveRequestOf(a: {
  solver?: string;
  steps?: number;
  nfe?: number;
  grid?: string;
  rho?: number;
  tMin?: number;
  tMax?: number;
  genieDerivative?: string;
  order?: number;
  variant?: Variant;
  afs?: boolean;
  denoise?: boolean;
  guidance?: number;
}): SolveRequest {
  return {
    solver: a.solver,
    steps: a.steps,
    nfe: a.nfe,
    grid: a.grid,
    rho: a.rho,
    t_min: a.tMin,
    t_max: a.tMax,
    genie_derivative: a.genieDerivative,
    order: a.order,
    variant: a.variant,
    afs: a.afs,
    denoise: a.denoise,
    guidance: a.guidance,
  };
}

const OUTPUT_EXTENSIONS = [".npy", ".png", ".msgpack"] as const;
export type Variant = SolverVariant;

/** Flags shared by both commands: the model, the solver and its grid. */
export interface SolveArgs {
  model: string;
  /** The solver (default: core/plan.ts's, as in the API). */
  solver?: string;
  steps?: number;
  nfe?: number;
  grid?: GridKind;
  rho?: number;
  tMin?: number;
  tMax?: number;
  genieDerivative?: DerivativeSource;
  order?: number;
  variant?: Variant;
  class?: number;
  /** Classifier-free guidance w (0 = off); `--guidance-scale S` sets w = S − 1. */
  guidance?: number;
  /** The `--guidance-scale` given (diffusers' s = 1 + w), when it was. */
  guidanceScale?: number;
  out?: string;
  json: boolean;
  /** No progress bar on stderr. */
  quiet: boolean;
  /** ONNX Runtime's compute threads (default: the cores available). */
  threads?: number;
}

export interface SampleArgs extends SolveArgs {
  afs: boolean;
  denoise: boolean;
  n: number;
  /** Seed of the first sample; −1 (random) is replaced by a drawn seed before the run. */
  seed: number;
  latents?: string;
  /** img2img: the starting images (IN.npy or IN.png) and how far into the noise they go, in (0, 1]. */
  images?: string;
  strength?: number;
  /** Integer upscaling factor of a PNG --out (nearest neighbour; default 1). */
  scale: number;
}

export interface EncodeArgs extends SolveArgs {
  images: string;
  out: string;
}

/** What `--help` asks for instead of a run. */
export interface HelpRequest {
  help: true;
}

const SOLVE_FLAGS: FlagSpec[] = [
  { flag: "--model", kind: "string" },
  { flag: "--solver", kind: "string" },
  { flag: "--steps", kind: "int", min: 1 },
  { flag: "--nfe", kind: "int", min: 1 },
  { flag: "--grid", kind: "string", values: GRID_KINDS },
  { flag: "--rho", kind: "number", min: 0, positive: true },
  { flag: "--t-min", kind: "number", min: 0, positive: true },
  { flag: "--t-max", kind: "number", min: 0, positive: true },
  { flag: "--genie-derivative", kind: "string", values: DERIVATIVE_SOURCES },
  { flag: "--order", kind: "int", min: 1 },
  { flag: "--variant", kind: "string", values: SOLVER_VARIANTS },
  { flag: "--class", kind: "int", min: 0 },
  { flag: "--guidance", kind: "number" },
  { flag: "--guidance-scale", kind: "number" },
  { flag: "--out", kind: "string" },
  { flag: "--json", kind: "bool" },
  { flag: "--quiet", kind: "bool" },
  { flag: "--threads", kind: "int", min: 1, max: 1024 },
];

const SAMPLE_FLAGS: FlagSpec[] = [
  ...SOLVE_FLAGS,
  { flag: "--afs", kind: "bool" },
  { flag: "--denoise", kind: "bool" },
  { flag: "--n", kind: "int", min: 1, max: 1_000_000 },
  { flag: "--seed", kind: "int", min: -1, max: 0xffffffff },
  { flag: "--latents", kind: "string" },
  { flag: "--images", kind: "string" },
  { flag: "--strength", kind: "number", min: 0, positive: true, max: 1 },
  { flag: "--scale", kind: "int", min: 1, max: MAX_PNG_SCALE },
];

const ENCODE_FLAGS: FlagSpec[] = [
  ...SOLVE_FLAGS,
  { flag: "--images", kind: "string" },
];

/** Reads the flags (core/flags.ts): `--help` asks for the help text instead of a run. */
function readFlags(
  argv: readonly string[],
  specs: readonly FlagSpec[],
): Record<string, unknown> | HelpRequest {
  const { values, help } = parseFlags(argv, specs);
  return help ? { help: true } : values as Record<string, unknown>;
}

function extension(path: string): string {
  const m = /\.[^./\\]+$/.exec(path);
  return m ? m[0].toLowerCase() : "";
}

/**
 * Checks that do not need the model: required flags, flags that exclude each other, and the solve
 * settings' own rules (core/plan.ts `checkSolveRequest`, applied again with the model when the run is
 * planned).
 */
function checkSolve(a: Record<string, unknown>, direction: Direction): void {
  if (a.model === undefined) throw new UsageError("--model", "is required (a model name or gmm:SPEC.json)");
  if (a.steps !== undefined && a.nfe !== undefined) {
    throw new UsageError("--nfe", "cannot be combined with --steps (give one of them)");
  }
  try {
    checkSolveRequest(solveRequestOf(a as Parameters<typeof solveRequestOf>[0]), direction);
  } catch (e) {
    if (e instanceof PlanError) throw usageFromField(e.field, e.detail) ?? e;
    throw e;
  }
  if (a.guidanceScale !== undefined) {
    if (a.guidance !== undefined) {
      throw new UsageError(
        "--guidance-scale",
        "cannot be combined with --guidance (give one: --guidance-scale S is --guidance S − 1)",
      );
    }
    a.guidance = guidanceFromScale(a.guidanceScale as number);
  }
  if (a.guidance !== undefined && a.class === undefined) {
    const flag = a.guidanceScale !== undefined ? "--guidance-scale" : "--guidance";
    throw new UsageError(flag, "needs --class (guidance steers towards a class)");
  }
  a.json = a.json === true;
  a.quiet = a.quiet === true;
}

/**
 * diffusers' guidance scale s as this project's guidance w: s = 1 + w (s = 1 is no guidance), rounded
 * to 12 significant digits so that e.g. s = 1.1 gives w = 0.1.
 */
function guidanceFromScale(s: number): number {
  return Number((s - 1).toPrecision(12));
}

/** `--images` names a .npy tensor [n, …sample shape] or a .png image of the sample shape. */
function checkImagesPath(path: string): void {
  const ext = extension(path);
  if (ext !== ".npy" && ext !== ".png") {
    throw new UsageError("--images", `must be a .npy or .png file, got ${JSON.stringify(path)}`);
  }
}

/** Parses the flags of `deno task sample`. */
export function parseSampleArgs(argv: readonly string[]): SampleArgs | HelpRequest {
  const a = readFlags(argv, SAMPLE_FLAGS);
  if ("help" in a) return a as HelpRequest;
  checkSolve(a, "sample");
  if (a.out !== undefined) {
    const ext = extension(a.out as string);
    if (!(OUTPUT_EXTENSIONS as readonly string[]).includes(ext)) {
      throw new UsageError(
        "--out",
        `must end in ${OUTPUT_EXTENSIONS.join(", ")}, got ${JSON.stringify(a.out)}`,
      );
    }
  }
  if (a.latents !== undefined && extension(a.latents as string) !== ".npy") {
    throw new UsageError("--latents", `must be a .npy file, got ${JSON.stringify(a.latents)}`);
  }
  if (a.images !== undefined) {
    checkImagesPath(a.images as string);
    if (a.latents !== undefined) throw new UsageError("--images", "cannot be combined with --latents");
    if (a.strength === undefined) {
      throw new UsageError("--strength", "is required with --images: how far into the noise, in (0, 1]");
    }
  } else if (a.strength !== undefined) throw new UsageError("--strength", "needs --images (img2img)");
  if (a.scale !== undefined && (a.out === undefined || extension(a.out as string) !== ".png")) {
    throw new UsageError("--scale", "only applies to a PNG --out (OUT.png)");
  }
  return { afs: false, denoise: false, n: 1, seed: 0, scale: 1, ...a } as unknown as SampleArgs;
}

/** Parses the flags of `deno task encode`. */
export function parseEncodeArgs(argv: readonly string[]): EncodeArgs | HelpRequest {
  const a = readFlags(argv, ENCODE_FLAGS);
  if ("help" in a) return a as HelpRequest;
  checkSolve(a, "encode");
  if (a.steps === undefined && a.nfe === undefined) throw new UsageError("--steps", "is required (or --nfe)");
  if (a.images === undefined) throw new UsageError("--images", "is required (an IN.npy or IN.png of images)");
  checkImagesPath(a.images as string);
  if (a.out === undefined) throw new UsageError("--out", "is required (LATENTS.npy or LATENTS.msgpack)");
  const ext = extension(a.out as string);
  if (ext !== ".npy" && ext !== ".msgpack") {
    throw new UsageError("--out", `must end in .npy or .msgpack, got ${JSON.stringify(a.out)}`);
  }
  return a as unknown as EncodeArgs;
}

/** Defaults applied when a flag is absent, shown in the help texts. */
const DEFAULTS = {
  nfe: DEFAULT_NFE,
  n: 1,
  seed: 0,
} as const;

/** What the help texts show of a solver (a subset of the registry's SolverInfo). */
export interface SolverHelp {
  name: string;
  summary: string;
  grid: { kind: string; rho?: number };
  orders?: { min: number; max: number; default: number };
  variants?: { values: readonly string[]; default: string };
}

/** One line per solver: name, default grid and orders, then its summary. */
function solverTable(solvers: readonly SolverHelp[]): string {
  return solvers.map((s) => {
    const grid = `grid ${s.grid.kind}${s.grid.rho === undefined ? "" : ` ρ=${s.grid.rho}`}`;
    const order = s.orders ? `; --order ${s.orders.min}–${s.orders.max}, default ${s.orders.default}` : "";
    const variant = s.variants
      ? `; --variant ${s.variants.values.join("|")}, default ${s.variants.default}`
      : "";
    return `    ${s.name.padEnd(10)} ${grid}${order}${variant}\n${" ".repeat(15)}${s.summary}`;
  }).join("\n");
}

function solveHelp(solvers: readonly SolverHelp[]): string {
  return `  --model NAME|gmm:SPEC.json  (required) a model folder NAME of the models directory
                              (GENIE_MODELS_DIR, else the repository's models/; built-in: gmm2d,
                              mnist-mix, built on first use), run with ONNX Runtime in-process as
                              the worker runs it (GENIE_PROVIDERS: default cuda,cpu); or an
                              analytic Gaussian mixture
                              {"weights","means","stds","schedule"?,"labels"?,"classes"?,"shape"?};
                              "shape" is an optional per-sample shape such as [C,H,W] whose
                              product is the length of a mean (default [D])
  --solver S                  one of ${solvers.map((s) => s.name).join(", ")} (default ${DEFAULT_SOLVER})
  --steps N                   N steps: the grid has N+1 points from t_max to t_min
  --nfe N                     choose the steps so that exactly N evaluations are used
                              (an error if impossible; excludes --steps)
  --grid KIND                 ${GRID_KINDS.join("|")} (default: the model's grid for the solver
                              when its model.json has "defaults", else the solver's grid, below)
  --rho R                     exponent of power grids (default 2) and of edm (default 7); the
                              quadratic grid is ρ = 2, so --rho without --grid turns a default
                              quadratic grid into the power grid with that ρ; refused on
                              uniform and logsnr grids
  --t-min T                   last time of the grid (default: the schedule's, 1e-3)
  --t-max T                   first time of the grid (default and at most: the schedule's, 1 for
                              vp-linear)
  --genie-derivative SRC      GENIE's dε/dγ: head|jvp|fd|exact (default: head when the model has a
                              derivative head, else jvp; analytic gmm models answer jvp exactly
                              and also offer exact, the closed form)
  --order K                   order of solvers that have several (default: the solver's, below)
  --variant V                 the form of solvers that have several: UniPC's B(h) bh1|bh2 (default
                              bh1); dpmpp-3m reference|quadratic-exact (default reference)
  --class C                   class label of a class-conditional model (0-based)
  --guidance W                classifier-free guidance ε̃ = (1+w) ε_c − w ε_u with weight W
                              (needs --class; default 0, no guidance)
  --guidance-scale S          the same as diffusers' guidance_scale: S = 1 + W, so S = 1 is no
                              guidance and S = 7.5 is W = 6.5 (excludes --guidance)`;
}

const COMMON_TAIL =
  `  --threads N                 ONNX Runtime's compute threads (default: the cores available)
  --quiet                     no progress bar (it is shown on stderr only when stderr is a
                              terminal, without --json, once a run takes over a second)
  --json                      print one JSON summary line on stdout
                              {"solver","steps","nfe","calls","cost","seconds","n","shape",
                              "model",…}: nfe = evaluations of ε, calls = graph calls of every
                              kind (a GENIE jvp step makes 2), cost = their forward-pass
                              equivalents with the model's measured ratios ("costs")
  -h, --help                  show this help`;

function solverNotes(solvers: readonly SolverHelp[]): string {
  return `Solvers (default grid and orders):
${solverTable(solvers)}
Multistep solvers warm up with lower orders from the first step; with fewer than 15 steps they
also lower the order of their final steps; with 15 or more every later step runs at full order.`;
}

/** The `deno task sample --help` text, listing the registered solvers. */
export function sampleHelp(solvers: readonly SolverHelp[]): string {
  return `Usage: deno task sample --model NAME|gmm:SPEC.json [--solver S] [--steps N | --nfe N] [options]

Samples from a diffusion model by solving its probability-flow ODE, in-process.

${solveHelp(solvers)}
  --afs                       analytical first step ε(x_T) := x_T: one evaluation fewer (default off)
  --denoise                   final denoising step to γ = 0: one evaluation more (default off)
  --n COUNT                   number of samples (default ${DEFAULTS.n})
  --seed S                    seed of the first sample, in 0…2^32−1 (default ${DEFAULTS.seed}); seeds
                              are per-sample: sample i has seed (S + i) mod 2^32, as in the API,
                              so a seed gives the same sample whatever --n and its position;
                              -1 draws a random seed (reported in the summary and the PNG text)
  --latents IN.npy            x at t_max (VP scale), shape [n, …sample shape]; overrides --seed, --n
  --images IN.npy|IN.png      img2img: start from these images (.npy [n, …sample shape] in model
                              space, or one .png of the sample shape); needs --strength; overrides
                              --seed and --n
  --strength S                img2img: in (0, 1]; the images are encoded along the ODE from t_min to
                              t = S · t_max, then sampled back from there with the same settings
                              (1: sampling from their latents; small: close to the images)
  --out OUT.npy|OUT.png|OUT.msgpack
                              write the samples [n, …sample shape]: .npy (float32, C order),
                              .png (one grid of all samples; image shapes [C,H,W], C = 1 or 3),
                              .msgpack ({shape, dtype: "float32", data: float32 LE bytes})
                              (default: write nothing); a PNG carries its settings in a
                              "parameters" text chunk (A1111 style); missing folders are created
  --scale K                   upscale a PNG --out K× (integer 1–${MAX_PNG_SCALE}, nearest neighbour;
                              default 1)
${COMMON_TAIL}

Without --steps or --nfe: --nfe ${DEFAULTS.nfe}.

${solverNotes(solvers)}

Exit status: 0 on success, 2 on bad arguments (one line on stderr naming the flag), 1 otherwise.
`;
}

/** The `deno task encode --help` text, listing the registered solvers. */
export function encodeHelp(solvers: readonly SolverHelp[]): string {
  return `Usage: deno task encode --model NAME|gmm:SPEC.json --solver S --steps N --images IN.npy|IN.png --out LATENTS.npy [options]

Encodes data into latents by solving the probability-flow ODE forwards from t_min to t_max on the
sampling grid reversed (no AFS, no denoising). The data are taken as x at t_min; decoding with
\`deno task sample --latents\` and the same solver and grid returns them up to the solver's error.

${solveHelp(solvers)}
  --images IN.npy|IN.png      (required) the data: .npy [n, …sample shape] in model space, or one
                              .png of the sample shape (pixels mapped to [−1, 1])
  --out LATENTS.npy|LATENTS.msgpack
                              (required) where to write the latents x at t_max
${COMMON_TAIL}

One of --steps or --nfe is required.

${solverNotes(solvers)}

Exit status: 0 on success, 2 on bad arguments (one line on stderr naming the flag), 1 otherwise.
`;
}

/** Collapses a message to one line for stderr. */
function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Runs a command body and maps its outcome to the exit status of docs/contracts.md §1: 0 on success, 2 on
 * a {@link UsageError} (one line on stderr naming the flag), 1 on any other failure.
 */
export async function withExitCode(body: () => Promise<void>): Promise<number> {
  try {
    await body();
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${oneLine(e.message)}`);
      return 2;
    }
    console.error(`error: ${oneLine(e instanceof Error ? e.message : String(e))}`);
    return 1;
  }
}

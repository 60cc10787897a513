/**
 * The settings of `deno task bench:head` (bench/head.ts): its flags, the solver configurations compared,
 * the model it measures, and the number format of the report.
 */
import { basename } from "node:path";
import type { GridKind } from "../../core/grid.ts";
import { getSolver } from "../../core/solvers/registry.ts";
import type { DerivativeSource } from "../../core/solvers/types.ts";
import { parseTrainingFlags } from "../../training/common.ts";
import {
  type FolderGraphs,
  type FolderModel,
  loadFolderGraphs,
  readModelFolder,
  resolveModelDir,
} from "../../training/model_folder.ts";

const FLAGS = {
  n: 96,
  refSteps: 120,
  threads: 2,
  nfes: "3,4,5,6,8,10,15,20",
  headEval: 96,
  costRounds: 40,
  model: "models/mnist-unet",
  classifier: "models/mnist-classifier",
  /** Default: docs/head.md for mnist-unet, out/head-<model>.md for another model. */
  out: "",
  /** Another model's x₀ for section 1 (.npy, [N, …shape]); default: the model's own samples. */
  data: "",
  seed: 0,
  denoise: true,
  record: false,
};
export type HeadFlags = typeof FLAGS;

export interface Config {
  label: string;
  solver: string;
  derivative?: DerivativeSource;
  /** The grid it runs on. */
  grid: { kind: GridKind; rho?: number };
}

/**
 * The solvers compared (each on its registry grid, on EDM ρ = 7 and on power grids of ρ = 1.25 and 1.5; the
 * one with the lowest error is its "best grid").
 */
export const SOLVERS: { label: string; solver: string; derivative?: DerivativeSource }[] = [
  { label: "genie (head)", solver: "genie", derivative: "head" },
  { label: "genie (jvp)", solver: "genie", derivative: "jvp" },
  { label: "genie (fd)", solver: "genie", derivative: "fd" },
  { label: "ddim", solver: "ddim" },
  { label: "heun", solver: "heun" },
  { label: "dpmpp-2m", solver: "dpmpp-2m" },
  { label: "dpmpp-3m", solver: "dpmpp-3m" },
  { label: "unipc", solver: "unipc" },
  { label: "ipndm", solver: "ipndm" },
];
/**
 * The grids every solver also runs on besides its registry grid: EDM ρ = 7 (Karras et al.'s), and power
 * grids with less curvature than the quadratic one (ρ 1.25 and 1.5: closer to uniform in t), which a scan
 * of ρ found best for several solvers on mnist-unet.
 */
const EXTRA_GRIDS: { kind: GridKind; rho: number }[] = [
  { kind: "edm", rho: 7 },
  { kind: "power", rho: 1.25 },
  { kind: "power", rho: 1.5 },
];
/** "edm ρ=7", "power ρ=1.5", or the grid's kind. */
export const gridLabel = (g: { kind: GridKind; rho?: number }) =>
  g.kind === "edm" ? `edm ρ=${g.rho ?? 7}` : g.kind === "power" ? `power ρ=${g.rho ?? 2}` : g.kind;
/** Every solver on its registry grid and on the {@link EXTRA_GRIDS} (once where two are the same). */
export const CONFIGS: Config[] = SOLVERS.flatMap((s) => {
  const own = getSolver(s.solver).grid;
  const grids = [
    { kind: own.kind, rho: own.rho },
    ...EXTRA_GRIDS.filter((g) =>
      !(g.kind === own.kind && g.rho === (own.rho ?? (own.kind === "edm" ? 7 : undefined)))
    ),
  ];
  return grids.map((grid) => ({ ...s, label: `${s.label}, ${gridLabel(grid)}`, grid }));
});

/** The run: its flags, and the model it measures. */
export interface HeadBench {
  f: HeadFlags;
  /** mnist-unet: the digits, the classifier and the guidance section apply. */
  mnist: boolean;
  modelName: string;
  /** The NFEs of section 3. */
  nfes: number[];
  /** Another model's folder and its distillation graphs (sections 1 and 2), loaded once. */
  folder(): Promise<{ model: FolderModel; graphs: FolderGraphs }>;
}

/** The run `argv` asks for. */
export function headBench(argv: readonly string[]): HeadBench {
  const f = parseTrainingFlags(argv, FLAGS, {
    n: 1,
    refSteps: 2,
    threads: 1,
    headEval: 1,
    costRounds: 1,
    seed: 0,
  });
  f.model = resolveModelDir(f.model);
  const MNIST = basename(f.model) === "mnist-unet";
  const MODEL_NAME = basename(f.model);
  f.out ||= MNIST ? "docs/head.md" : `out/head-${MODEL_NAME}.md`;
  // the reference is checked against itself at half the steps
  if (f.refSteps % 2 !== 0) throw new Error(`--ref-steps: expected an even number, got ${f.refSteps}`);
  const NFES = f.nfes.split(",").map((s) => {
    const n = Number(s);
    if (!(Number.isSafeInteger(n) && n >= 1)) {
      throw new Error(`--nfes: expected integers ≥ 1, got ${JSON.stringify(s)}`);
    }
    return n;
  });
  let folder: { model: FolderModel; graphs: FolderGraphs } | undefined;
  const folderGraphs = async (): Promise<{ model: FolderModel; graphs: FolderGraphs }> => {
    if (!folder) {
      const model = readModelFolder(f.model);
      const distilled = JSON.parse(await Deno.readTextFile(`${f.model}/distill.json`).catch(() => "{}"));
      const named = distilled.head?.tensors as { features?: string; temb?: string } | undefined;
      const graphs = await loadFolderGraphs(model, {
        features: named?.features,
        temb: named ? named.temb ?? null : undefined,
      });
      folder = { model, graphs };
    }
    return folder;
  };
  return { f, mnist: MNIST, modelName: MODEL_NAME, nfes: NFES, folder: folderGraphs };
}

/** A number in the report: 3 significant digits (`digits`), exponential outside [1e−3, 1e4); — for none. */
export const fmt = (v: number | undefined, digits = 3) =>
  v === undefined
    ? "—"
    : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4
    ? v.toPrecision(digits)
    : v.toExponential(2);

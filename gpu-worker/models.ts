/**
 * The model registry: the folders under the models directory (GENIE_MODELS_DIR, default `models/`),
 * each validated, and the analytic models built into them on first use.
 *
 * Analytic graphs are generated deterministically from the manifest's `analytic` record and cached in
 * the folder; `built.json` records what they were built from, so a changed manifest rebuilds them.
 * The built-in manifests (`gmm2d`, `mnist-mix`) are written to a folder that lacks them.
 *
 * A model whose manifest names an eps graph but no jvp graph (a user's own ONNX export) gets its JVP graph
 * made from eps.onnx at load (jvp_cache.ts: cached in `<folder>/cache/`, rebuilt when eps.onnx changes), so
 * it serves GENIE's exact `jvp` derivative; when the transform cannot differentiate the graph, the model
 * loads all the same and `ModelInfo.unavailable.jvp` says why, naming the operators.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { GMM2D_SPEC, mixtureFromSource, MNIST_DEFAULTS } from "./analytic.ts";
import { mixtureGraph, type MixtureGraphKind } from "./graphs.ts";
import { checkModelGraphs } from "./graph_check.ts";
import { deriveJvpGraph } from "./jvp_cache.ts";
import { type ModelInfo, type ModelManifest, readManifest } from "./manifest.ts";

/** Bumped whenever the graph builder changes what it writes. */
const BUILDER_VERSION = 3;

/** The default models directory: `models/` at the repository root. */
export function defaultModelsDir(): string {
  return join(dirname(dirname(fileURLToPath(import.meta.url))), "models");
}

const VP_LINEAR = { type: "vp-linear", beta_min: 0.1, beta_max: 20 } as const;

/** The manifests of the models the project generates itself. */
export const BUILTIN_MANIFESTS: ModelManifest[] = [
  {
    name: "gmm2d",
    version: "1",
    description: "A 2-D Gaussian mixture (4 components, 2 classes); exact ε, head and JVP graphs.",
    shape: [2],
    prediction: "eps",
    time: { kind: "continuous", scale: 1 },
    schedule: VP_LINEAR,
    classes: { count: 2, null_class: 2 },
    graphs: { eps: "eps.onnx", head: "head.onnx", jvp: "jvp.onnx" },
    limits: { max_batch: 256 },
    analytic: { kind: "gmm", spec: GMM2D_SPEC },
  },
  {
    name: "mnist-mix",
    version: "1",
    description: "The exact diffusion model of a Gaussian-smoothed mixture over 1000 MNIST digits " +
      "(100 per class, s = 0.1 in [−1, 1] pixel units); class-conditional, null class 10. Its head is " +
      "the exact total derivative dε/dγ, not a distilled network.",
    shape: [1, 28, 28],
    prediction: "eps",
    time: { kind: "continuous", scale: 1 },
    schedule: VP_LINEAR,
    classes: { count: 10, null_class: 10 },
    graphs: { eps: "eps.onnx", head: "head.onnx", jvp: "jvp.onnx" },
    limits: { max_batch: 64 },
    analytic: { kind: "mnist", ...MNIST_DEFAULTS },
  },
];

/** What a folder's analytic graphs were (or would be) built from. */
function buildStamp(m: ModelManifest): string {
  return JSON.stringify({
    builder: BUILDER_VERSION,
    analytic: m.analytic,
    schedule: m.schedule,
    shape: m.shape,
    graphs: m.graphs,
  });
}

/** True when an analytic model's graphs are missing or were built from other settings. */
export function needsBuild(info: ModelInfo): boolean {
  if (!info.manifest.analytic) return false;
  const stamp = join(info.dir, "built.json");
  if (!existsSync(stamp) || readFileSync(stamp, "utf8") !== buildStamp(info.manifest)) return true;
  return Object.values(info.manifest.graphs).some((f) => !existsSync(join(info.dir, f!)));
}

/** Writes bytes atomically (temporary file, then rename), so concurrent builders never see half a file. */
function writeAtomic(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Builds the ONNX graphs of an analytic model into its folder. Returns the files written. */
export async function buildAnalyticModel(info: ModelInfo): Promise<string[]> {
  const m = info.manifest;
  if (!m.analytic) throw new Error(`${m.name}: not an analytic model (no "analytic" in model.json)`);
  const mix = { ...(await mixtureFromSource(m.analytic)), schedule: info.schedule };
  if (mix.dim !== info.dim) {
    throw new Error(`${m.name}: the mixture has dimension ${mix.dim}, shape says ${info.dim}`);
  }
  if (m.classes && mix.classes !== m.classes.count) {
    throw new Error(
      `${m.name}: classes.count is ${m.classes.count}, the mixture has ${mix.classes ?? 0} classes`,
    );
  }
  const written: string[] = [];
  for (const [kind, file] of Object.entries(m.graphs)) {
    if (kind === "features") throw new Error(`${m.name}: analytic models have no features graph`);
    const bytes = mixtureGraph(mix, {
      kind: kind as MixtureGraphKind,
      shape: m.shape,
      name: `${m.name}-${kind}`,
    });
    const path = join(info.dir, file!);
    writeAtomic(path, bytes);
    written.push(path);
  }
  writeAtomic(join(info.dir, "built.json"), buildStamp(m));
  return written;
}

/** Writes the built-in manifests that `dir` lacks. Returns the names written. */
export function writeBuiltinManifests(dir: string): string[] {
  const written: string[] = [];
  for (const m of BUILTIN_MANIFESTS) {
    const folder = join(dir, m.name);
    if (existsSync(join(folder, "model.json"))) continue;
    mkdirSync(folder, { recursive: true });
    writeAtomic(join(folder, "model.json"), JSON.stringify(m, null, 2) + "\n");
    written.push(m.name);
  }
  return written;
}

export interface RegistryOptions {
  /** Write the built-in manifests into the directory when missing (default true). */
  builtins?: boolean;
  /** Build missing or stale analytic graphs (default true). */
  build?: boolean;
  /** Make (or take from the cache) the JVP graph of models that ship only eps (default true). */
  jvp?: boolean;
  /** Only these models (default: every folder). */
  only?: string[];
  /** Check each graph's inputs and outputs against the manifest (graph_check.ts; default true). */
  check?: boolean;
  log?: (line: string) => void;
}

export interface Registry {
  dir: string;
  models: Map<string, ModelInfo>;
  /** Folders that could not be loaded, with the reason (e.g. `graphs.eps: file not found`). */
  errors: { folder: string; message: string }[];
}

/** Adds the derived JVP graph to `info` (graphPaths.jvp, derived), or records why there is none. */
export function withDerivedJvp(info: ModelInfo, log: (line: string) => void = () => {}): ModelInfo {
  const name = info.manifest.name;
  let r: ReturnType<typeof deriveJvpGraph>;
  try {
    r = deriveJvpGraph(info, log);
  } catch (e) {
    const reason = `the JVP graph could not be made: ${e instanceof Error ? e.message : e}`;
    info.unavailable = { ...info.unavailable, jvp: { reason, operators: [] } };
    log(`${name}: ${reason}`);
    return info;
  }
  const how = `${r.cached ? "from the cache" : "built"} in ${r.ms.toFixed(0)} ms`;
  if (r.ok) {
    info.graphPaths.jvp = r.path;
    info.derived = [...(info.derived ?? []), "jvp"];
    log(`${name}: jvp graph derived from eps (${how}): ${r.path}`);
  } else {
    info.unavailable = { ...info.unavailable, jvp: r.unavailable };
    log(`${name}: jvp unavailable (${how}): ${r.unavailable.reason}`);
  }
  return info;
}

/**
 * Scans, builds where needed, and validates every model folder under `dir`: the manifest, the files
 * it names, and each graph's inputs and outputs against the manifest (graph_check.ts). A folder that
 * fails is left out and listed in `errors` (one log line each); the others load.
 */
export async function loadRegistry(dir: string, opts: RegistryOptions = {}): Promise<Registry> {
  const log = opts.log ?? (() => {});
  mkdirSync(dir, { recursive: true });
  if (opts.builtins !== false) {
    for (const name of writeBuiltinManifests(dir)) log(`wrote ${join(dir, name, "model.json")}`);
  }
  const registry: Registry = { dir, models: new Map(), errors: [] };
  const folders = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, "model.json")))
    .map((e) => e.name)
    .filter((name) => !opts.only || opts.only.includes(name))
    .sort();
  for (const folder of folders) {
    const path = join(dir, folder);
    try {
      let info = readManifest(path, { checkFiles: false });
      if (opts.build !== false && needsBuild(info)) {
        const t0 = performance.now();
        await buildAnalyticModel(info);
        log(`built ${info.manifest.name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      info = readManifest(path);
      // the graphs' inputs and outputs against the manifest (names, types, ranks, shape)
      if (opts.check !== false) checkModelGraphs(info);
      if (opts.jvp !== false && !info.graphPaths.jvp) withDerivedJvp(info, log);
      registry.models.set(info.manifest.name, info);
    } catch (e) {
      registry.errors.push({ folder, message: e instanceof Error ? e.message : String(e) });
      log(`skipping model folder ${folder}: ${e instanceof Error ? e.message : e}`);
    }
  }
  if (opts.only) {
    for (const name of opts.only) {
      if (!folders.includes(name)) registry.errors.push({ folder: name, message: `no model folder ${name}` });
    }
  }
  return registry;
}

/**
 * The model registry: the folders under the models directory (GENIE_MODELS_DIR, default `models/`),
 * each validated, and the analytic models built into them on first use.
 *
 * Analytic graphs are generated deterministically from the manifest's `analytic` record and cached in
 * the folder; `built.json` records what they were built from, so a changed manifest rebuilds them.
 * The built-in manifests (`gmm2d`, `mnist-mix`) are written to a folder that lacks them; the committed
 * `models/gmm2d/model.json` and `models/mnist-mix/model.json` are exactly what they write. Both are marked
 * `edge: true`: small enough for the edge to run them itself on WebAssembly (docs/backends.md).
 *
 * A model whose manifest names an eps graph but no jvp graph (a user's own ONNX export) gets its JVP graph
 * made from eps.onnx at load (jvp_cache.ts: cached in `<folder>/cache/`, rebuilt when eps.onnx changes), so
 * it serves GENIE's exact `jvp` derivative; when the transform cannot differentiate the graph, the model
 * loads all the same and `LoadedModel.unavailable.jvp` says why, naming the operators.
 *
 * Each folder also gets a fingerprint ({@link folderFingerprint}) when it loads: a reload
 * (gpu-worker/reload.ts) loads again only the folders whose fingerprint changed, because creating and
 * releasing ONNX Runtime sessions leaks memory.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { GMM2D_SPEC, mixtureFromSource, MNIST_DEFAULTS } from "./analytic.ts";
import { mixtureGraph, type MixtureGraphKind } from "./graphs.ts";
import { checkModelGraphs } from "./graph_check.ts";
import { deriveJvpGraph } from "./jvp_cache.ts";
import { type LoadedModel, type ModelManifest, readManifest } from "./manifest.ts";

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
    edge: true,
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
    edge: true,
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
export function needsBuild(info: LoadedModel): boolean {
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
export async function buildAnalyticModel(info: LoadedModel): Promise<string[]> {
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
function writeBuiltinManifests(dir: string): string[] {
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

export interface ModelRegistryOptions {
  /** Write the built-in manifests into the directory, creating it, when missing (default true; false: no writes). */
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

export interface ModelRegistry {
  dir: string;
  models: Map<string, LoadedModel>;
  /** Folders that could not be loaded, with the reason (e.g. `graphs.eps: file not found`). */
  errors: { folder: string; message: string }[];
  /** Each folder's {@link folderFingerprint} as it was when it was loaded (or failed to). */
  fingerprints: Map<string, string>;
}

/**
 * What a model folder's content is, cheaply: the SHA-256 of model.json's bytes with the name, size and
 * modification time of every other file directly in the folder. Sub-folders (the derived JVP graph's
 * `cache/`, a distillation's checkpoints in `distill/`), hidden files and `*.tmp` files of writes in
 * progress are left out. An empty string when the folder has no model.json.
 */
export function folderFingerprint(path: string): string {
  let manifest: Buffer;
  try {
    manifest = readFileSync(join(path, "model.json"));
  } catch {
    return "";
  }
  const h = createHash("sha256").update(manifest);
  let entries: string[] = [];
  try {
    entries = readdirSync(path).sort();
  } catch {
    // vanished meanwhile: the manifest's hash stands alone
  }
  for (const name of entries) {
    if (name === "model.json" || name.startsWith(".") || name.endsWith(".tmp")) continue;
    try {
      const st = statSync(join(path, name));
      if (st.isFile()) h.update(`\n${name}\u0000${st.size}\u0000${st.mtimeMs}`);
    } catch {
      // removed while listing
    }
  }
  return h.digest("hex");
}

/** The folders of `dir` that hold a model.json (only `only`'s, when given), sorted. */
export function modelFolders(dir: string, only?: readonly string[]): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, "model.json")))
    .map((e) => e.name)
    .filter((name) => !only || only.includes(name))
    .sort();
}

/**
 * Loads one model folder as {@link loadRegistry} does: builds an analytic model's graphs where needed,
 * validates the manifest, checks the graphs against it and derives the JVP graph; throws why it cannot.
 */
export async function loadModelFolder(
  path: string,
  opts: Pick<ModelRegistryOptions, "build" | "check" | "jvp" | "log"> = {},
): Promise<LoadedModel> {
  const log = opts.log ?? (() => {});
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
  if (!info.graphPaths.head && !info.manifest.analytic) {
    const reason =
      `the model has no head graph: distil one with \`deno task distill --model ${info.manifest.name}\``;
    info.unavailable = { ...info.unavailable, head: { reason, operators: [] } };
  }
  return info;
}

/** Adds the derived JVP graph to `info` (graphPaths.jvp, derived), or records why there is none. */
export function withDerivedJvp(info: LoadedModel, log: (line: string) => void = () => {}): LoadedModel {
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
export async function loadRegistry(dir: string, opts: ModelRegistryOptions = {}): Promise<ModelRegistry> {
  const log = opts.log ?? (() => {});
  if (opts.builtins !== false) {
    // Only a registry that writes the built-in manifests creates the directory (a read-only one never writes).
    mkdirSync(dir, { recursive: true });
    for (const name of writeBuiltinManifests(dir)) log(`wrote ${join(dir, name, "model.json")}`);
  }
  const registry: ModelRegistry = { dir, models: new Map(), errors: [], fingerprints: new Map() };
  const folders = modelFolders(dir, opts.only);
  for (const folder of folders) {
    const path = join(dir, folder);
    try {
      const info = await loadModelFolder(path, { ...opts, log });
      registry.models.set(info.manifest.name, info);
    } catch (e) {
      registry.errors.push({ folder, message: e instanceof Error ? e.message : String(e) });
      log(`skipping model folder ${folder}: ${e instanceof Error ? e.message : e}`);
    }
    // after loading: what building an analytic model's graphs wrote is part of it
    registry.fingerprints.set(folder, folderFingerprint(path));
  }
  if (opts.only) {
    for (const name of opts.only) {
      if (!folders.includes(name)) registry.errors.push({ folder: name, message: `no model folder ${name}` });
    }
  }
  return registry;
}

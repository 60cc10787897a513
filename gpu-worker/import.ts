/**
 * `deno task import DIR --name NAME [--out DIR] [--classes N] [--null-class N] [--shape C,H,W]
 * [--max-batch N] [--force]`: turns a diffusers-style export into a model folder (docs/contracts.md §4)
 * in `--out`, else `$GENIE_MODELS_DIR`, else the repository's `models/`.
 *
 * The export is a folder with `scheduler_config.json` (a diffusers scheduler's configuration) and
 * `unet/model.onnx`: inputs `sample` float32 [B, C, H, W], `timestep` [B] float32 or int64, optionally
 * `class_labels` int64 [B]; output `out_sample` (ε, x₀ or v as `prediction_type` says). The graph is
 * copied as `eps.onnx` (with its external-data files, if any) and `model.json` maps the names
 * (`inputs`, `outputs`), the prediction type (diffusers' name), the schedule (`{type: "discrete", …}`) and
 * the time convention: the graph sees the timestep N·t − 1 (the nearest index for an int64 timestep).
 *
 * The shape comes from the graph's `sample` input, else `unet/config.json` (`in_channels`,
 * `sample_size`), else `--shape`; the class count from the class embedding table the graph gathers
 * `class_labels` from, else `unet/config.json` (`num_class_embeds`), else `--classes`. The folder is then
 * checked as the worker checks it at load (manifest.ts, graph_check.ts), its JVP graph derived (or the
 * reason it cannot be), and what was found is printed one fact per line. Configurations that cannot be
 * served are refused with an error naming the configuration field. diffusers.ts reads the export's
 * scheduler configuration, class embedding table and external-data files.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, normalize } from "node:path";
import process from "node:process";
import { parseFlags } from "../core/flags.ts";
import {
  DataType,
  decodeModel,
  type Dim,
  dtypeName,
  type IGraphProto,
  valueInfoType,
} from "../onnx/proto.ts";
import { classTableRows, externalFiles, fromSchedulerConfig, ImportError, readJson } from "./diffusers.ts";
import { checkModelGraphs } from "./graph_check.ts";
import { type ModelManifest, readManifest } from "./manifest.ts";
import { defaultModelsDir, withDerivedJvp } from "./models.ts";

export { ImportError } from "./diffusers.ts";

export interface ImportOptions {
  /** The export's folder (holding scheduler_config.json and unet/model.onnx). */
  source: string;
  /** The model's name (and folder name). */
  name: string;
  /** The models directory to write into. */
  out: string;
  /** The class count, when the graph takes class labels (overrides what the graph or config says). */
  classes?: number;
  /** The class label that means "no class" (classifier-free guidance), if the model has one. */
  nullClass?: number;
  /** The per-sample shape, when neither the graph nor unet/config.json fix it. */
  shape?: number[];
  /** limits.max_batch (default 16). */
  maxBatch?: number;
  /** Replace an existing folder of that name. */
  force?: boolean;
}

export interface ImportResult {
  /** The model folder written. */
  dir: string;
  manifest: ModelManifest;
  /** What the import found, one fact per line. */
  facts: string[];
}

const fmtDims = (dims: (Dim | undefined)[]) => `[${dims.map((d) => d ?? "?").join(", ")}]`;

/** Imports a diffusers-style export as a model folder; throws an {@link ImportError} naming the field. */
export function importDiffusers(opts: ImportOptions): ImportResult {
  const { source, name } = opts;
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) {
    throw new ImportError("--name", "must be a lower-case name of letters, digits, '.', '_' or '-'");
  }
  const config = readJson(join(source, "scheduler_config.json"), "scheduler_config.json");
  if (!config) throw new ImportError("scheduler_config.json", `not found in ${source}`);
  const unetConfig = readJson(join(source, "unet", "config.json"), "unet/config.json") ?? {};
  const graphPath = join(source, "unet", "model.onnx");
  if (!existsSync(graphPath)) throw new ImportError("unet/model.onnx", `not found in ${source}`);
  const sched = fromSchedulerConfig(config);
  const facts: string[] = [
    `source: ${source}${typeof config._class_name === "string" ? ` (${config._class_name})` : ""}`,
  ];

  let graph: IGraphProto;
  try {
    const g = decodeModel(readFileSync(graphPath)).graph;
    if (!g) throw new Error("the ONNX model has no graph");
    graph = g;
  } catch (e) {
    throw new ImportError(
      "unet/model.onnx",
      `not a readable ONNX model (${e instanceof Error ? e.message : e})`,
    );
  }
  const inits = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((i) => !inits.has(i.name ?? ""));
  const inputNames = inputs.map((i) => i.name ?? "");
  const find = (n: string) => inputs.find((i) => i.name === n);
  for (const n of inputNames) {
    if (!["sample", "timestep", "class_labels"].includes(n)) {
      throw new ImportError(
        `unet/model.onnx: input "${n}"`,
        "is not supported (the worker feeds sample, timestep and class_labels only; text-conditioned " +
          "models are not supported)",
      );
    }
  }
  for (const need of ["sample", "timestep"]) {
    if (!find(need)) {
      throw new ImportError(
        "unet/model.onnx",
        `has no input "${need}" (its inputs: ${inputNames.join(", ")})`,
      );
    }
  }
  const sample = valueInfoType(find("sample")!);
  const timestep = valueInfoType(find("timestep")!);
  if (sample.elemType !== undefined && sample.elemType !== DataType.FLOAT) {
    throw new ImportError(
      'unet/model.onnx: input "sample"',
      `is ${dtypeName(sample.elemType) ?? sample.elemType}; export the model in float32`,
    );
  }
  const tType = timestep.elemType === DataType.INT64 ? "int64" : "float32";
  if (
    timestep.elemType !== undefined && timestep.elemType !== DataType.INT64 &&
    timestep.elemType !== DataType.FLOAT
  ) {
    throw new ImportError(
      'unet/model.onnx: input "timestep"',
      `is ${dtypeName(timestep.elemType) ?? timestep.elemType}; it must be float32 or int64`,
    );
  }
  const outputs = (graph.output ?? []).map((o) => o.name ?? "");
  const outName = outputs.includes("out_sample")
    ? "out_sample"
    : outputs.length === 1
    ? outputs[0]
    : undefined;
  if (outName === undefined) {
    throw new ImportError(
      "unet/model.onnx",
      `has no output "out_sample" (its outputs: ${outputs.join(", ")})`,
    );
  }

  // the shape: the graph's, unet/config.json's, or --shape
  let shape: number[] | undefined;
  let shapeFrom = "";
  const dims = sample.shape;
  if (dims && dims.length !== 4 && dims.length !== 2) {
    throw new ImportError(
      'unet/model.onnx: input "sample"',
      `has rank ${dims.length} ${fmtDims(dims)}; expected [B, C, H, W]`,
    );
  }
  if (opts.shape) {
    shape = opts.shape;
    shapeFrom = "--shape";
  } else if (dims && dims.slice(1).every((d) => typeof d === "number" && d > 0)) {
    shape = dims.slice(1) as number[];
    shapeFrom = `the graph's input "sample" ${fmtDims(dims)}`;
  } else if (typeof unetConfig.in_channels === "number" && unetConfig.sample_size !== undefined) {
    const size = unetConfig.sample_size;
    const [h, w] = Array.isArray(size) ? size : [size, size];
    if (typeof h === "number" && typeof w === "number") {
      shape = [unetConfig.in_channels, h, w];
      shapeFrom = "unet/config.json (in_channels, sample_size)";
    }
  }
  if (!shape) {
    throw new ImportError(
      "--shape",
      `the sample shape is not fixed by the graph ${
        dims ? fmtDims(dims) : ""
      } nor by unet/config.json; give --shape C,H,W`,
    );
  }
  const outDims = outputs.length
    ? valueInfoType((graph.output ?? []).find((o) => o.name === outName)!).shape
    : undefined;
  if (outDims && typeof outDims[1] === "number" && outDims[1] === 2 * shape[0]) {
    throw new ImportError(
      `unet/model.onnx: output "${outName}"`,
      `has ${outDims[1]} channels, twice the input's: the model predicts its variance too (variance_type ` +
        `${JSON.stringify(config.variance_type ?? "learned")}), which is not supported`,
    );
  }
  facts.push(`shape: ${JSON.stringify(shape)} (from ${shapeFrom})`);

  // classes: --classes, the embedding table, unet/config.json
  let classes: ModelManifest["classes"];
  if (find("class_labels")) {
    const table = classTableRows(graph, "class_labels");
    let count = opts.classes, from = "--classes";
    if (count === undefined && table) {
      count = table.rows;
      from = `the class embedding table "${table.table}"`;
    } else if (count === undefined && typeof unetConfig.num_class_embeds === "number") {
      count = unetConfig.num_class_embeds;
      from = "unet/config.json num_class_embeds";
    }
    if (count === undefined) {
      throw new ImportError(
        "--classes",
        'the graph takes "class_labels" but its class count cannot be found; give --classes N',
      );
    }
    classes = { count };
    if (opts.nullClass !== undefined) classes.null_class = opts.nullClass;
    facts.push(
      `classes: ${count} (from ${from})${
        opts.nullClass !== undefined ? `, null class ${opts.nullClass}` : ""
      }`,
    );
  } else {
    if (opts.classes !== undefined) {
      throw new ImportError("--classes", 'the graph takes no "class_labels": the model is unconditional');
    }
    facts.push("classes: none (unconditional)");
  }
  facts.push(...sched.facts);
  const steps = sched.schedule.trained_betas?.length ?? sched.schedule.num_train_timesteps!;
  facts.push(
    `time: the graph sees timestep = ${steps}·t − 1 for t in [1/${steps}, 1]` +
      (tType === "int64" ? " (int64: rounded to the nearest index)" : " (float32)"),
  );

  const manifest = {
    name,
    version: "1",
    description: `Imported from ${basename(normalize(source))}` +
      (typeof config._class_name === "string" ? ` (${config._class_name})` : ""),
    shape,
    prediction: sched.prediction,
    schedule: sched.schedule,
    time: { kind: "discrete", scale: steps, offset: -1 },
    inputs: { x: "sample", t: "timestep", ...(classes ? { class: "class_labels" } : {}) },
    outputs: { eps: outName },
    ...(classes ? { classes } : {}),
    graphs: { eps: "eps.onnx" },
    limits: { max_batch: opts.maxBatch ?? 16 },
  } as unknown as ModelManifest;
  facts.push(
    `names: x = sample, t = timestep${classes ? ", class = class_labels" : ""}; eps = ${outName}`,
  );

  // write into a temporary folder, check it as the worker would, then move it into place
  const target = join(opts.out, name);
  if (existsSync(target) && !opts.force) {
    throw new ImportError("--name", `${target} exists (use --force to replace it)`);
  }
  mkdirSync(opts.out, { recursive: true });
  const staging = join(opts.out, `.${name}.import-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    copyFileSync(graphPath, join(staging, "eps.onnx"));
    for (const file of externalFiles(graph)) {
      if (file.includes("..") || file.startsWith("/")) {
        throw new ImportError("unet/model.onnx", `external data outside the unet folder (${file})`);
      }
      mkdirSync(dirname(join(staging, file)), { recursive: true });
      copyFileSync(join(source, "unet", file), join(staging, file));
    }
    writeFileSync(join(staging, "model.json"), JSON.stringify(manifest, null, 2) + "\n");
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
  facts.unshift(`model: ${name} (${target})`);
  facts.push(`graph: unet/model.onnx copied as eps.onnx`);

  // the worker's load-time checks: the manifest, the files, the graph against the manifest
  let info;
  try {
    info = readManifest(target);
    checkModelGraphs(info);
  } catch (e) {
    rmSync(target, { recursive: true, force: true });
    throw new ImportError("check", `the folder fails the worker's load-time check: ${(e as Error).message}`);
  }
  facts.push("check: model.json and eps.onnx pass the worker's load-time check");
  withDerivedJvp(info);
  facts.push(
    info.unavailable?.jvp
      ? `derivatives: fd (jvp unavailable: ${info.unavailable.jvp.reason})`
      : `derivatives: jvp (derived from eps.onnx, cached in ${dirname(info.graphPaths.jvp!)}), fd`,
  );
  return { dir: target, manifest: info.manifest, facts };
}

const USAGE = "usage: deno task import DIR --name NAME [--out DIR] [--classes N] [--null-class N] " +
  "[--shape C,H,W] [--max-batch N] [--force]";

const FLAGS = [
  { flag: "--name", kind: "string" },
  { flag: "--out", kind: "string" },
  { flag: "--classes", kind: "int", min: 1 },
  { flag: "--null-class", kind: "int", min: 0 },
  { flag: "--shape", kind: "list", of: "int", min: 1 },
  { flag: "--max-batch", kind: "int", min: 1 },
  { flag: "--force", kind: "bool" },
] as const;

export function main(argv: string[]): number {
  let parsed;
  try {
    parsed = parseFlags(argv, FLAGS, { positionals: true });
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (parsed.positionals.length !== 1) throw new ImportError("DIR", `give one export folder\n${USAGE}`);
    if (!v.name) throw new ImportError("--name", `is required\n${USAGE}`);
    const result = importDiffusers({
      source: parsed.positionals[0],
      name: v.name,
      out: v.out ?? process.env.GENIE_MODELS_DIR ?? defaultModelsDir(),
      classes: v.classes,
      nullClass: v.nullClass,
      shape: v.shape,
      maxBatch: v.maxBatch,
      force: v.force,
    });
    for (const line of result.facts) console.log(line);
    return 0;
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    return 1;
  }
}

if (import.meta.main) process.exit(main(process.argv.slice(2)));

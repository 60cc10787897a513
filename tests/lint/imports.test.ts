/**
 * The layering rules of docs/architecture.md, enforced: which top-level folders each folder's modules may
 * import from, and which packages. A new import that crosses a layer fails here with the file, the line
 * and the rule it breaks.
 *
 * Deno only (it reads the source tree), hence outside tests/core, which also runs under Node.js.
 */
import { assertEquals, test } from "../testing.ts";
import { codeOnly } from "./portable.test.ts";

const ROOT = new URL("../../", import.meta.url);

/** The folders a module in each layer may import from (its own folder is always allowed). */
export const LAYERS: Record<string, readonly string[]> = {
  core: [],
  onnx: ["core"],
  training: ["core", "onnx"],
  "gpu-worker": ["core", "onnx"],
  functions: ["core"],
  cli: ["core", "onnx", "gpu-worker"],
  bench: ["core", "onnx", "training", "gpu-worker", "functions", "cli", "examples"],
  tools: [],
};

/**
 * Single modules allowed to import single modules of a layer their own layer may not: the edge runs small
 * models itself (docs/backends.md, "Edge-local inference") through the worker's in-process engine, as the
 * command line does, and only functions/local.ts may reach it (it loads the engine when first needed).
 */
export const EXCEPTIONS: Record<string, readonly string[]> = {
  "functions/local.ts": ["gpu-worker/engine.ts"],
};

/** Packages (bare specifiers and `node:` modules) each layer may use; `*` allows any. */
export const PACKAGES: Record<string, readonly string[]> = {
  // msgpack: one library, in one module (core/api/msgpack.ts) that the edge, the worker and the CLI use
  core: ["zod", "fast-png", "@msgpack/msgpack"],
  onnx: ["onnx-proto", "onnxruntime-node", "onnxruntime-web", "onnxruntime-web/*"],
  training: ["mnist", "node:*"],
  "gpu-worker": ["yaml", "mnist", "node:*"],
  functions: ["hono", "hono/*", "zod", "fast-png", "node:*"],
  cli: ["node:*"],
  bench: ["*"],
  tools: ["*"],
};

interface Import {
  file: string;
  line: number;
  specifier: string;
}

/** Every module specifier of static imports/exports and dynamic `import("…")` with a literal. */
export function importsOf(file: string, src: string): Import[] {
  const out: Import[] = [];
  const code = codeOnly(src); // strings blanked: find statement positions in code, read the text from src
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)(["'])/gm;
  for (const m of code.matchAll(re)) {
    const start = m.index! + m[0].length;
    const end = src.indexOf(m[1], start);
    if (end < 0) continue;
    out.push({ file, line: src.slice(0, start).split("\n").length, specifier: src.slice(start, end) });
  }
  return out;
}

/** The repository path a relative specifier in `file` resolves to. */
function pathOf(file: string, specifier: string): string {
  return new URL(specifier, new URL(file, ROOT)).pathname.slice(ROOT.pathname.length);
}

/** The top-level folder a relative specifier in `file` resolves to. */
function folderOf(file: string, specifier: string): string {
  return pathOf(file, specifier).split("/")[0];
}

function packageAllowed(layer: string, specifier: string): boolean {
  return (PACKAGES[layer] ?? []).some((p) =>
    p === "*" || p === specifier || (p.endsWith("*") && specifier.startsWith(p.slice(0, -1)))
  );
}

/** The rule an import breaks, or null. */
export function violation(layer: string, imp: Import): string | null {
  if (imp.specifier.startsWith(".")) {
    const target = folderOf(imp.file, imp.specifier);
    if (target === layer || (LAYERS[layer] ?? []).includes(target)) return null;
    if ((EXCEPTIONS[imp.file] ?? []).includes(pathOf(imp.file, imp.specifier))) return null;
    return `${layer}/ may not import from ${target}/`;
  }
  return packageAllowed(layer, imp.specifier) ? null : `${layer}/ may not use the package "${imp.specifier}"`;
}

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(path);
    else if (/\.(ts|js)$/.test(e.name)) yield path;
  }
}

test("layering: every import of every layer follows docs/architecture.md", async () => {
  const broken: string[] = [];
  let checked = 0;
  for (const layer of Object.keys(LAYERS)) {
    for await (const file of sources(layer)) {
      const src = await Deno.readTextFile(new URL(file, ROOT));
      for (const imp of importsOf(file, src)) {
        checked++;
        const why = violation(layer, imp);
        if (why) broken.push(`${file}:${imp.line} imports "${imp.specifier}": ${why}`);
      }
    }
  }
  assertEquals(broken, []);
  if (checked < 100) throw new Error(`only ${checked} imports found: the scanner is broken`);
});

test("layering: nothing outside tests/ imports from tests/", async () => {
  const broken: string[] = [];
  for (const layer of Object.keys(LAYERS)) {
    for await (const file of sources(layer)) {
      for (const imp of importsOf(file, await Deno.readTextFile(new URL(file, ROOT)))) {
        if (imp.specifier.startsWith(".") && folderOf(file, imp.specifier) === "tests") {
          broken.push(`${file}:${imp.line}`);
        }
      }
    }
  }
  assertEquals(broken, []);
});

test("layering: the scanner finds static, re-exported and dynamic imports and reports crossings", () => {
  const src = [
    `import { a } from "../onnx/x.ts";`,
    `export { b } from "./y.ts";`,
    `// import { c } from "../tests/z.ts";`,
    `const s = "from '../gpu-worker/w.ts'";`,
    `const m = await import("../functions/f.ts");`,
    `import "zod";`,
    `import type { T } from "hono";`,
  ].join("\n");
  const imps = importsOf("core/example.ts", src);
  assertEquals(imps.map((i) => [i.line, i.specifier]), [
    [1, "../onnx/x.ts"],
    [2, "./y.ts"],
    [5, "../functions/f.ts"],
    [6, "zod"],
    [7, "hono"],
  ]);
  assertEquals(imps.map((i) => violation("core", i)), [
    "core/ may not import from onnx/",
    null,
    "core/ may not import from functions/",
    null,
    'core/ may not use the package "hono"',
  ]);
  assertEquals(violation("functions", { file: "functions/app.ts", line: 1, specifier: "hono/cors" }), null);
  assertEquals(
    violation("functions", { file: "functions/app.ts", line: 1, specifier: "../gpu-worker/engine.ts" }),
    "functions/ may not import from gpu-worker/",
  );
  // The one exception: functions/local.ts may import the engine, and nothing else of gpu-worker/.
  assertEquals(
    violation("functions", { file: "functions/local.ts", line: 1, specifier: "../gpu-worker/engine.ts" }),
    null,
  );
  assertEquals(
    violation("functions", { file: "functions/local.ts", line: 1, specifier: "../gpu-worker/models.ts" }),
    "functions/ may not import from gpu-worker/",
  );
});

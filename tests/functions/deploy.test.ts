/**
 * deploy.yml parses, and every entry point, task and file it names — and that its Dockerfile copies
 * or runs — exists in the repository.
 */
import { parse } from "yaml";
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";

const ROOT = new URL("../../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, ROOT));

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(path, ROOT));
    return true;
  } catch {
    return false;
  }
}

/** Every string in a parsed YAML document. */
function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === "string") out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
  else if (v && typeof v === "object") Object.values(v).forEach((x) => strings(x, out));
  return out;
}

/** Tokens of text that look like repository paths (a folder or a file with a known extension). */
function pathsIn(text: string): string[] {
  return [
    ...text.matchAll(
      /(?:^|[\s"'=])((?:[\w.-]+\/)+(?:[\w.-]+\.(?:ts|js|json|html|css|yml|lock)|Dockerfile)?)(?=$|[\s"',])/g,
    ),
  ]
    .map((m) => m[1])
    .filter((p) => !/^(https?:|\/\/)/.test(p) && !p.startsWith("/"));
}

Deno.test("deploy.yml parses and describes both halves", async () => {
  const doc = parse(await read("deploy.yml"));
  assertStrictEquals(doc.version, 1);
  assertStrictEquals(doc.edge.platform, "deno-deploy");
  assertStrictEquals(doc.edge.runtime.entrypoint, "functions/main.ts");
  assertStrictEquals(doc.worker.dockerfile, "gpu-worker/Dockerfile");
  assert(
    strings(doc.edge.commands).every((c) => c.startsWith("deno deploy")),
    "the edge deploys with `deno deploy`",
  );
  assert(!strings(doc).some((s) => /deployctl/.test(s) && !/retired/.test(s)), "deployctl is retired");
  for (const name of ["GENIE_WORKER_URLS", "GENIE_WORKER_SECRET", "GENIE_API_KEYS"]) {
    assert(doc.edge.env[name], name);
  }
  assert(doc.worker.env.GENIE_WORKER_SECRET.secret);
});

Deno.test("every entry point, file and task deploy.yml names exists", async () => {
  const doc = parse(await read("deploy.yml"));
  const tasks = JSON.parse(await read("deno.json")).tasks as Record<string, string>;
  const all = strings(doc);
  const named = new Set<string>([
    doc.edge.runtime.entrypoint,
    doc.edge.runtime.config,
    ...doc.edge.files,
    doc.worker.dockerfile,
    doc.worker.entrypoint,
    doc.worker.models_dir,
    ...all.flatMap(pathsIn),
  ]);
  const missing = [];
  for (const p of named) if (!(await exists(p))) missing.push(p);
  assertEquals(missing, []);
  const taskNames = new Set<string>([
    doc.worker.task,
    doc.worker.build_task,
    ...all.flatMap((s) => [...s.matchAll(/deno task ([\w:-]+)/g)].map((m) => m[1])),
  ]);
  assert(taskNames.has("start") && taskNames.has("worker") && taskNames.has("serve"));
  assertEquals([...taskNames].filter((t) => !(t in tasks)), []);
  // Entry points named by tasks exist too.
  for (const t of taskNames) for (const p of pathsIn(tasks[t])) assert(await exists(p), `${t}: ${p}`);
  // The scaling metric is one the worker exports.
  assert(
    (await read("gpu-worker/metrics.ts")).includes(doc.worker.scaling.metric),
    doc.worker.scaling.metric,
  );
});

Deno.test("the worker's Dockerfile copies existing paths and installs the CUDA provider", async () => {
  const doc = parse(await read("deploy.yml"));
  const dockerfile = await read(doc.worker.dockerfile);
  const lines = dockerfile.replace(/\\\n/g, " ").split("\n").filter((l) => !l.trim().startsWith("#"));
  const copies = lines.filter((l) => /^COPY\s/.test(l) && !/--from=/.test(l));
  assert(copies.length >= 3);
  for (const line of copies) {
    const parts = line.trim().split(/\s+/).slice(1);
    for (const src of parts.slice(0, -1)) assert(await exists(src), `COPY ${src}`);
  }
  assert(/ONNXRUNTIME_NODE_INSTALL=cuda12/.test(dockerfile), "installs the CUDA 12 provider at build time");
  assert(
    /--allow-scripts=npm:onnxruntime-node/.test(dockerfile),
    "lets onnxruntime-node's install script run",
  );
  assert(/FROM nvidia\/cuda:12[^\s]*cudnn/.test(dockerfile), "a CUDA 12 + cuDNN base image");
  const tasks = JSON.parse(await read("deno.json")).tasks as Record<string, string>;
  for (const m of dockerfile.matchAll(/"deno", "task", "([\w:-]+)"|deno task ([\w:-]+)/g)) {
    const t = m[1] ?? m[2];
    assert(t in tasks, `Dockerfile runs missing task ${t}`);
  }
  const entry = /--entrypoint((?:\s+[\w./-]+\.ts)+)/.exec(dockerfile)![1].trim().split(/\s+/);
  for (const e of entry) assert(await exists(e), e);
  assert(new RegExp(`EXPOSE ${doc.worker.port}`).test(dockerfile));
});

/**
 * The solves behind tools/gpu-prepare.sh and tools/gpu-check.sh (docs/backends.md, "GPU check").
 *
 *   deno run -A bench/gpu_check.ts reference --dir .gpu [--providers cpu]
 *   deno run -A bench/gpu_check.ts check --dir .gpu --out OUT [--providers webgpu] [--tol 1e-3]
 *
 * Both start the worker (gpu-worker/main.ts) as a child process on a free port with the given providers,
 * run the same fixed solves through its HTTP API (`POST /v1/batch`, msgpack) and read each model's provider
 * from `/v1/models`. `reference` writes each solve's samples to DIR/ref/NAME.npy (float32, [batch, …shape])
 * and the solves to DIR/ref/solves.json. `check` runs the solves that reference wrote and compares them:
 * max absolute difference and that difference over the samples' scale (max |x|, at least 1), against --tol;
 * it writes OUT/solves.md (a Markdown table) and OUT/solves.json, and the worker's log to OUT/worker.log.
 * Exit status: 0 all match; 1 a mismatch or a failed solve; 2 no model loaded on the first provider asked
 * for (e.g. `webgpu` without a hardware adapter), which is also reported.
 *
 * With `--providers webgpu` the worker is given `webgpu,wasm`: a model whose graphs webgpu cannot load
 * (docs/backends.md, notes per provider) falls back to wasm and is still compared; the table says which
 * provider served each model.
 */
import { decode, encode } from "@msgpack/msgpack";
import { decodeNpy, encodeNpy } from "../core/npy.ts";
import { parseFlags } from "../core/flags.ts";

interface Solve {
  name: string;
  model: string;
  settings: Record<string, unknown>;
}

/** Fixed seeds and settings: NFE 10, batch 4 (seeds 1–4), ddim and GENIE with the head, per model. */
export function solves(models: readonly string[], nfe: number, batch: number): Solve[] {
  const out: Solve[] = [];
  for (const model of models) {
    out.push({ name: `${model}-ddim`, model, settings: { solver: "ddim", nfe, class: 3 } });
    out.push({
      name: `${model}-genie-head`,
      model,
      settings: { solver: "genie", nfe, class: 3, guidance: 1, genie_derivative: "head" },
    });
  }
  return out.map((s) => ({ ...s, settings: { ...s.settings, seeds: seedsOf(batch) } }));
}

function seedsOf(batch: number): number[] {
  return Array.from({ length: batch }, (_, i) => i + 1);
}

interface Worker {
  url: string;
  close(): Promise<void>;
}

/** Starts gpu-worker/main.ts with `providers`, logging to `logFile`; resolves once it listens. */
async function startWorker(providers: string, models: string[], logFile: string): Promise<Worker> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-ffi",
      "--allow-sys",
      "--allow-net",
      "gpu-worker/main.ts",
      "--port",
      "0",
      "--models",
      models.join(","),
      "--providers",
      providers,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = await Deno.open(logFile, { write: true, create: true, truncate: true });
  const enc = new TextEncoder();
  let resolveUrl: (u: string) => void;
  const urlP = new Promise<string>((r) => (resolveUrl = r));
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      await log.write(enc.encode(chunk));
      buf += chunk;
      const m = buf.match(/listening on (http:\/\/\S+)/);
      if (m) resolveUrl(m[1].replace(/\/$/, ""));
      if (buf.length > 8192) buf = buf.slice(-1024);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const exited = child.status.then((s) => {
    throw new Error(`worker exited with code ${s.code} before listening (see ${logFile})`);
  });
  const url = await Promise.race([urlP, exited]);
  exited.catch(() => {});
  return {
    url,
    async close() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await pumps;
      log.close();
    },
  };
}

async function solve(url: string, s: Solve): Promise<Float32Array> {
  const res = await fetch(`${url}/v1/batch`, {
    method: "POST",
    headers: { "content-type": "application/msgpack" },
    body: encode({ v: 1, id: s.name, model: s.model, ...s.settings }) as BodyInit,
  });
  const body = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
  if (res.status !== 200) throw new Error(`${s.name}: HTTP ${res.status}: ${JSON.stringify(body)}`);
  const bytes = body.data as Uint8Array;
  const copy = bytes.slice();
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
}

async function providersOf(url: string): Promise<Record<string, string>> {
  const models = await (await fetch(`${url}/v1/models`)).json() as { name: string; provider?: string }[];
  return Object.fromEntries(models.map((m) => [m.name, m.provider ?? "(not loaded)"]));
}

async function shapeOf(model: string): Promise<number[]> {
  return JSON.parse(await Deno.readTextFile(`models/${model}/model.json`)).shape;
}

const { values: flags, positionals } = parseFlags(Deno.args, [
  { flag: "--dir", kind: "string", default: ".gpu" },
  { flag: "--out", kind: "string", default: ".gpu/out" },
  { flag: "--providers", kind: "string", default: "" },
  { flag: "--models", kind: "list", default: ["mnist-mix", "mnist-unet"] },
  { flag: "--nfe", kind: "int", min: 1, default: 10 },
  { flag: "--batch", kind: "int", min: 1, default: 4 },
  { flag: "--tol", kind: "number", min: 0, positive: true, default: 1e-3 },
], { positionals: true });
const mode = positionals[0];
const refDir = `${flags.dir}/ref`;

if (mode === "reference") {
  const providers = flags.providers || "cpu";
  await Deno.mkdir(refDir, { recursive: true });
  const list = solves(flags.models, flags.nfe, flags.batch);
  const worker = await startWorker(providers, flags.models, `${refDir}/worker.log`);
  try {
    const used = await providersOf(worker.url);
    for (const s of list) {
      const t0 = performance.now();
      const x = await solve(worker.url, s);
      const shape = [flags.batch, ...await shapeOf(s.model)];
      await Deno.writeFile(`${refDir}/${s.name}.npy`, encodeNpy(x, shape));
      console.log(`${s.name}: ${shape.join("×")} in ${(performance.now() - t0).toFixed(0)} ms`);
    }
    const meta = { providers: used, nfe: flags.nfe, batch: flags.batch, solves: list };
    await Deno.writeTextFile(`${refDir}/solves.json`, JSON.stringify(meta, null, 1) + "\n");
  } finally {
    await worker.close();
  }
} else if (mode === "check") {
  const asked = flags.providers || "webgpu";
  const first = asked.split(",")[0].trim();
  const providers = first === "webgpu" && !asked.includes(",") ? "webgpu,wasm" : asked;
  const meta = JSON.parse(await Deno.readTextFile(`${refDir}/solves.json`)) as {
    providers: Record<string, string>;
    solves: Solve[];
  };
  await Deno.mkdir(flags.out, { recursive: true });
  const models = [...new Set(meta.solves.map((s) => s.model))];
  const t0 = performance.now();
  const worker = await startWorker(providers, models, `${flags.out}/worker.log`);
  const startMs = performance.now() - t0;
  const rows: Record<string, unknown>[] = [];
  let mismatch = false;
  let used: Record<string, string> = {};
  try {
    used = await providersOf(worker.url);
    for (const s of meta.solves) {
      const ref = decodeNpy(await Deno.readFile(`${refDir}/${s.name}.npy`));
      const t1 = performance.now();
      let x: Float32Array | undefined, error: string | undefined;
      try {
        x = await solve(worker.url, s);
      } catch (e) {
        error = (e as Error).message;
      }
      const ms = performance.now() - t1;
      let maxAbs = NaN, scale = NaN;
      if (x && x.length === ref.data.length) {
        maxAbs = 0;
        scale = 1;
        for (let i = 0; i < x.length; i++) {
          const d = Math.abs(x[i] - ref.data[i]);
          maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
          scale = Math.max(scale, Math.abs(ref.data[i]));
        }
      } else if (x) error = `length ${x.length}, reference ${ref.data.length}`;
      const rel = maxAbs / scale;
      const ok = !error && rel <= flags.tol;
      if (!ok) mismatch = true;
      rows.push({ name: s.name, provider: used[s.model], ms, maxAbs, scale, rel, ok, error });
    }
  } finally {
    await worker.close();
  }
  const onFirst = Object.values(used).filter((p) => p === first).length;
  const noAdapter = onFirst === 0;
  const lines = [
    `Solves: worker \`--providers ${providers}\` against the references of \`${refDir}\` (providers ` +
    `${
      JSON.stringify(meta.providers)
    }); tolerance ${flags.tol} of the samples' scale (max |x|, at least 1). ` +
    `Worker start (models loaded, warm-up): ${(startMs / 1000).toFixed(1)} s.`,
    "",
    "| solve | provider | ms | max abs diff | scale | diff / scale | result |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.name} | ${r.provider} | ${(r.ms as number).toFixed(0)} | ${
        (r.maxAbs as number).toExponential(2)
      } | ` +
      `${(r.scale as number).toFixed(3)} | ${(r.rel as number).toExponential(2)} | ` +
      `${r.ok ? "match" : `MISMATCH${r.error ? `: ${r.error}` : ""}`} |`
    ),
    "",
    noAdapter
      ? `RESULT: FAIL: no model loaded on ${first} (see worker.log for the reason, e.g. no hardware adapter)`
      : mismatch
      ? "RESULT: MISMATCH"
      : `RESULT: all ${rows.length} solves match (${onFirst} of ${models.length} models on ${first})`,
  ];
  await Deno.writeTextFile(`${flags.out}/solves.md`, lines.join("\n") + "\n");
  await Deno.writeTextFile(
    `${flags.out}/solves.json`,
    JSON.stringify({ providers: used, asked: providers, startMs, rows }, null, 1) + "\n",
  );
  console.log(lines.join("\n"));
  Deno.exit(mismatch ? 1 : noAdapter ? 2 : 0);
} else {
  console.error("usage: bench/gpu_check.ts reference|check [--dir .gpu] [--out DIR] [--providers LIST]");
  Deno.exit(64);
}

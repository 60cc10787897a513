/**
 * `deno task bench:worker [--soak-seconds 10] [--reps 5] [--threads 2] [--model mnist-mix] [--out docs/worker.md]`
 *
 * Measures the worker in-process (the exported fetch handler, msgpack bodies, the scheduler and the
 * inference thread; no sockets) and writes a report:
 *
 * - overhead: sampling wall time ÷ (NFE × forward time at the same batch), batch 1, 8, 32, where the
 *   forward time is one call of the same graph through the inference thread, measured in the same run;
 * - batching: throughput of 32 concurrent single-sample clients ÷ throughput of one 32-sample request;
 * - latency percentiles of single-sample requests under that load;
 * - RSS over a soak of concurrent clients (length set by --soak-seconds).
 *
 * Every number is a median over --reps repetitions measured side by side in one run.
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { decode, encode } from "@msgpack/msgpack";
import { createWorkerApp, type WorkerApp } from "./app.ts";
import { InferenceThread, type WireTensor } from "./inference.ts";
import type { GraphKind } from "./manifest.ts";
import { defaultModelsDir, loadRegistry } from "./models.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    "soak-seconds": { type: "string", default: "10" },
    reps: { type: "string", default: "5" },
    threads: { type: "string", default: "2" },
    model: { type: "string", default: "mnist-mix" },
    nfe: { type: "string", default: "10" },
    out: { type: "string", default: "docs/worker.md" },
  },
});
const SOAK_S = Number(flags["soak-seconds"]);
const REPS = Number(flags.reps);
const THREADS = Number(flags.threads);
const MODEL = flags.model!;
const NFE = Number(flags.nfe);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const fmt = (x: number, digits = 2) => x.toFixed(digits);
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

const registry = await loadRegistry(defaultModelsDir(), { only: [MODEL] });
const info = registry.models.get(MODEL);
if (!info) throw new Error(`model ${MODEL}: ${JSON.stringify(registry.errors)}`);
const thread = await InferenceThread.start([info], { providers: ["cuda", "cpu"], intraOpThreads: THREADS });
const provider = thread.models.get(MODEL)!.provider;
let calls = 0;
const inference = {
  run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
    calls++;
    return thread.run(model, graph, feeds);
  },
  // Two apps share the thread; it is closed once at the end.
  close: () => Promise.resolve(),
};
const app: WorkerApp = await createWorkerApp({
  models: [MODEL],
  inference,
  maxQueue: 1024,
  log: () => {},
});
const dim = info.dim, shape = info.manifest.shape;
const conditional = info.manifest.classes !== undefined;

/** One forward call of `graph` at batch B through the inference thread; returns wall ms. */
async function forward(graph: GraphKind, B: number): Promise<number> {
  const x = new Float32Array(B * dim).map((_, i) => Math.sin(i)), t = new Float32Array(B).fill(0.3);
  const feeds: Record<string, WireTensor> = {
    x: { type: "float32", data: x.buffer, dims: [B, ...shape] },
    t: { type: "float32", data: t.buffer, dims: [B] },
  };
  if (conditional) {
    feeds.class = {
      type: "int64",
      data: new BigInt64Array(B).fill(BigInt(info!.manifest.classes!.null_class ?? 0)).buffer,
      dims: [B],
    };
  }
  const t0 = performance.now();
  await thread.run(MODEL, graph, feeds);
  return performance.now() - t0;
}

async function forwardMedian(graph: GraphKind, B: number, n = 15): Promise<number> {
  await forward(graph, B);
  const times: number[] = [];
  for (let i = 0; i < n; i++) times.push(await forward(graph, B));
  return median(times);
}

interface Sampled {
  ms: number;
  nfe: number;
  steps: number;
}

let seedBase = 1;
async function sample(
  n: number,
  solver: string,
  extra: Record<string, unknown> = {},
  target: WorkerApp = app,
): Promise<Sampled> {
  const seeds = Array.from({ length: n }, () => seedBase++ % 2 ** 32);
  const body = encode({ v: 1, id: `b${seedBase}`, model: MODEL, solver, nfe: NFE, seeds, ...extra });
  const t0 = performance.now();
  const res = await target.request("/v1/batch", {
    method: "POST",
    body,
    headers: { "content-type": "application/msgpack" },
  });
  const out = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`batch failed: ${JSON.stringify(out)}`);
  return { ms, nfe: out.nfe as number, steps: out.steps as number };
}

const lines: string[] = [];
const out = (s = "") => lines.push(s);
const started = new Date().toISOString();
out("# GPU worker benchmark");
out();
out(
  `Generated by \`deno task bench:worker\` (${started}); do not edit by hand. How the worker works: gpu-worker/README.md.`,
);
out();
out(
  `Machine: ${navigator.hardwareConcurrency} logical CPUs, ${process.platform}/${process.arch}; ` +
    `provider **${provider}**, ORT intra-op threads ${THREADS}; Deno ${
      (globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno ?? "?"
    }.`,
);
out(
  `Model \`${MODEL}\` (shape [${shape.join(", ")}], ${
    MODEL === "mnist-mix" ? "1000 components, " : ""
  }float64 inside the graph). ` +
    `Requests go through the in-process fetch handler (msgpack encode/decode, validation, scheduler, inference ` +
    `thread), not through sockets. Medians over ${REPS} repetitions unless noted.`,
);
out(
  `Load average at start (1/5/15 min): ${
    loadavg().map((l) => l.toFixed(2)).join(" / ")
  }; other processes on a ` +
    `shared machine inflate and scatter these timings, so compare rows of one run only.`,
);
out();

// 1. Overhead.
out("## Overhead: sampling wall time ÷ (NFE × forward time at the same batch)");
out();
out(
  `Settings: grid quadratic (ρ 2), no AFS, no denoising, NFE ${NFE}, unconditional, seeds consecutive per request, one request at a time.`,
);
out(
  "GENIE with the `head` derivative makes one `head`-graph call per step; DDIM one `eps`-graph call. The ideal is 1.0.",
);
out();
out("| solver | graph | batch | steps | NFE | forward ms (median) | sampling ms (median) | overhead |");
out("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (
  const [solver, graph, extra] of [["genie", "head", { genie_derivative: "head" }], [
    "ddim",
    "eps",
    {},
  ]] as const
) {
  for (const B of [1, 8, 32]) {
    await sample(B, solver, extra);
    const fw: number[] = [], walls: number[] = [];
    let last: Sampled | undefined;
    for (let r = 0; r < REPS; r++) {
      fw.push(await forwardMedian(graph, B, 7));
      last = await sample(B, solver, extra);
      walls.push(last.ms);
    }
    const f = median(fw), w = median(walls);
    out(
      `| ${solver} | ${graph} | ${B} | ${last!.steps} | ${last!.nfe} | ${fmt(f, 3)} | ${fmt(w, 1)} | ${
        fmt(w / (last!.nfe * f))
      } |`,
    );
  }
}
out();

// 2. Batching: 32 concurrent single-sample clients vs one 32-sample request.
const C = 32;
out(`## Batching: ${C} concurrent single-sample clients vs one ${C}-sample request`);
out();
out(
  `Settings: genie, head, grid quadratic, NFE ${NFE}, unconditional. Each client sends one 1-sample request; ` +
    `all ${C} start together. Throughput = samples ÷ wall time until the last finishes.`,
);
out();
const waitApp = await createWorkerApp({
  models: [MODEL],
  inference,
  maxQueue: 1024,
  maxWaitMs: 2,
  log: () => {},
});
const BATCH_REPS = Math.max(REPS, 9);
const runs = { concurrent: [] as number[], waiting: [] as number[], single: [] as number[] };
const perCall = { concurrent: [] as number[], waiting: [] as number[] };
const clients = (target: WorkerApp) =>
  Promise.all(Array.from({ length: C }, () => sample(1, "genie", {}, target)));
await clients(app);
await clients(waitApp);
await sample(C, "genie");
for (let r = 0; r < BATCH_REPS; r++) {
  // Alternate the order so that drifts of a noisy machine hit every mode alike.
  const modes = r % 2
    ? ["single", "concurrent", "waiting"] as const
    : ["concurrent", "waiting", "single"] as const;
  for (const mode of modes) {
    const c0 = calls, t0 = performance.now();
    if (mode === "single") await sample(C, "genie");
    else await clients(mode === "waiting" ? waitApp : app);
    runs[mode].push(performance.now() - t0);
    if (mode !== "single") perCall[mode].push((C * NFE) / (calls - c0));
  }
}
const concurrent = median(runs.concurrent), waiting = median(runs.waiting), single = median(runs.single);
out(`Medians over ${BATCH_REPS} repetitions, modes interleaved.`);
out();
out("| mode | wall ms (median) | samples/s | mean samples per call |");
out("| --- | ---: | ---: | ---: |");
out(
  `| ${C} clients × 1 sample (max wait 0) | ${fmt(concurrent, 1)} | ${fmt((C / concurrent) * 1000, 1)} | ${
    fmt(median(perCall.concurrent), 1)
  } |`,
);
out(
  `| ${C} clients × 1 sample (max wait 2 ms) | ${fmt(waiting, 1)} | ${fmt((C / waiting) * 1000, 1)} | ${
    fmt(median(perCall.waiting), 1)
  } |`,
);
out(`| 1 request × ${C} samples | ${fmt(single, 1)} | ${fmt((C / single) * 1000, 1)} | ${C} |`);
out();
out(
  `**Ratio (concurrent ÷ single-request throughput): ${fmt(single / concurrent, 3)} with max wait 0, ` +
    `${fmt(single / waiting, 3)} with max wait 2 ms** (1.0 = batching recovers all of it).`,
);
out();
await waitApp.shutdown();

// 3. Latency under load: closed loop, C clients, each sending requests back to back.
const LOAD_S = Math.min(10, Math.max(3, SOAK_S / 2));
out("## Latency under load");
out();
out(
  `Settings: ${C} closed-loop clients, each sending 1-sample genie/head NFE ${NFE} requests back to back for ` +
    `${LOAD_S} s; latency from request to decoded response.`,
);
out();
const latencies: number[] = [];
{
  const stopAt = performance.now() + LOAD_S * 1000;
  await Promise.all(Array.from({ length: C }, async () => {
    while (performance.now() < stopAt) latencies.push((await sample(1, "genie")).ms);
  }));
}
out("| requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms |");
out("| ---: | ---: | ---: | ---: | ---: | ---: |");
out(
  `| ${latencies.length} | ${fmt(latencies.length / LOAD_S, 1)} | ${fmt(quantile(latencies, 0.5), 1)} | ` +
    `${fmt(quantile(latencies, 0.95), 1)} | ${fmt(quantile(latencies, 0.99), 1)} | ${
      fmt(Math.max(...latencies), 1)
    } |`,
);
out();

// 4. Memory over a soak.
out("## Memory over a soak");
out();
out(
  `Settings: ${C} closed-loop clients mixing batch sizes 1–8, genie/ddim, classes and guidance, for ${SOAK_S} s ` +
    `(\`--soak-seconds\`); RSS of the whole process (main thread + inference thread) sampled every second.`,
);
out();
const rss: [number, number][] = [];
let soakRequests = 0;
{
  const t0 = performance.now();
  const stopAt = t0 + SOAK_S * 1000;
  const timer = setInterval(
    () => rss.push([(performance.now() - t0) / 1000, process.memoryUsage().rss]),
    1000,
  );
  rss.push([0, process.memoryUsage().rss]);
  await Promise.all(Array.from({ length: C }, async (_, k) => {
    let i = 0;
    while (performance.now() < stopAt) {
      const n = 1 + ((i + k) % 8);
      const extra = conditional && i % 3 === 0 ? { class: (i + k) % 10, guidance: 1 } : {};
      await sample(n, (i + k) % 4 === 0 ? "ddim" : "genie", extra);
      soakRequests++;
      i++;
    }
  }));
  clearInterval(timer);
  rss.push([(performance.now() - t0) / 1000, process.memoryUsage().rss]);
}
const first = rss[0][1], peak = Math.max(...rss.map((r) => r[1])), last = rss[rss.length - 1][1];
// Growth over the second half (after warm-up), per minute.
const half = rss.filter(([s]) => s >= SOAK_S / 2);
const slope = half.length >= 2
  ? ((half[half.length - 1][1] - half[0][1]) / (half[half.length - 1][0] - half[0][0])) * 60
  : 0;
out("| requests | RSS start MiB | RSS peak MiB | RSS end MiB | growth over 2nd half (MiB/min) |");
out("| ---: | ---: | ---: | ---: | ---: |");
out(`| ${soakRequests} | ${mb(first)} | ${mb(peak)} | ${mb(last)} | ${fmt(slope / 2 ** 20, 1)} |`);
out();
out(`RSS samples (s: MiB): ${rss.map(([s, b]) => `${s.toFixed(0)}: ${mb(b)}`).join(", ")}`);
out();
out(`Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(" / ")}.`);
out();
out("Run a longer soak with `deno task bench:worker --soak-seconds 600` before trusting the growth figure.");

await app.shutdown();
await thread.close();
writeFileSync(flags.out!, lines.join("\n") + "\n");
console.log(lines.join("\n"));

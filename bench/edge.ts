/**
 * `deno task bench:edge [--pairs 240] [--warmup 5] [--n 16] [--n-large 125] [--nfe 10]
 *   [--local-models gmm2d,mnist-mix] [--out docs/edge.md]`
 *
 * The cost of the edge hop (docs/benchmarking.md §2 "Edge hop"): a real worker (`deno task worker`) and the
 * edge (`functions/main.ts`) run as separate processes on loopback; this process is the client. For a
 * 16-sample mnist-mix request it times, interleaved pair by pair (random order within a pair):
 *
 * - direct: signed msgpack `POST /v1/batch` to the worker (raw float32 bytes back);
 * - edge, msgpack: `POST /v1/samples` with `Accept: application/msgpack`, `"output":"tensor"` — the
 *   same bytes back, so the difference is the edge's added latency (validation, auth, signing,
 *   forwarding, re-encoding);
 * - edge, JSON PNG: the default JSON answer with one base64 PNG per sample.
 *
 * Then, per model of `--local-models` (marked `edge` in its model.json), the same n-sample request solved
 * in an edge itself on WebAssembly against the worker hop, p50/p95 side by side and as ratios
 * (bench/edge/local.ts; `--local-models none` skips it).
 *
 * Then msgpack encode+decode throughput of realistic worker responses with the codec of the edge and the
 * worker (@msgpack/msgpack, core/api/msgpack.ts), msgpackr for comparison, and base64 (the JSON path), in
 * this process.
 * Results go to docs/edge.md with the exact settings.
 */
import { decode as mpDecode, encode as mpEncode } from "@msgpack/msgpack";
import { Packr, Unpackr } from "msgpackr";
import { base64ToBytes, bytesToBase64 } from "../core/api/tensor.ts";
import { parseFlags } from "../core/flags.ts";
import { MSGPACK, signRequest } from "../core/api/worker.ts";
import { freePort, spawnListening, taskArgs } from "../functions/child.ts";
import { quantileInterpolated as quantile } from "../core/stats.ts";
import { localSection, measureLocal } from "./edge/local.ts";

const { values: flags } = parseFlags(Deno.args, [
  { flag: "--pairs", kind: "int", min: 1, default: 240 },
  { flag: "--warmup", kind: "int", min: 0, default: 5 },
  { flag: "--n", kind: "int", min: 1, default: 16 },
  { flag: "--n-large", kind: "int", min: 1, default: 125 },
  { flag: "--nfe", kind: "int", min: 1, default: 10 },
  { flag: "--solver", kind: "string", default: "genie" },
  { flag: "--local-models", kind: "list", default: ["gmm2d", "mnist-mix"] },
  { flag: "--out", kind: "string", default: "docs/edge.md" },
], { help: false });
const PAIRS = flags.pairs, WARMUP = flags.warmup, N = flags.n, NFE = flags.nfe, N_LARGE = flags.nLarge;
/** The worker's samples per call for the model (its max_batch): larger requests go as several calls. */
const CHUNK = 64;
const SOLVER = flags.solver;
const MODEL = "mnist-mix";
const SEED = 1234;
const SECRET = "bench-secret";
const LOCAL_MODELS = flags.localModels.filter((m) => m !== "none");

const f = (x: number, d = 2) => x.toFixed(d);
/** Server output worth repeating: errors and warnings, less ORT's provider notices and blank lines. */
const showLine = (line: string) =>
  /error|warn/i.test(line) && !/legacy|onnxruntime|provider|^\s*$|\[m$/.test(line);

/**
 * What one request of a path returned: its size, and the worker's own time for it as the answer states it
 * (the largest queue_ms plus the largest compute_ms over its worker calls, as the edge aggregates them) and,
 * through the edge, the edge's own total_ms.
 */
interface Answer {
  bytes: number;
  workerMs: number;
  edgeTotalMs?: number;
}

async function timed(fn: () => Promise<Answer>): Promise<Answer & { ms: number }> {
  const t0 = performance.now();
  const answer = await fn();
  return { ...answer, ms: performance.now() - t0 };
}

type Timings = { queue_ms: number; compute_ms: number; total_ms?: number };

async function main() {
  console.error(`starting the worker and the edge…`);
  const worker = await spawnListening(
    [...await taskArgs("worker"), "--port", String(freePort())],
    { env: { GENIE_WORKER_SECRET: SECRET }, echo: { name: "worker", show: showLine } },
  );
  /** An edge (functions/main.ts) in front of the worker; `local`: it solves models marked `edge` itself. */
  const startEdge = (name: string, local: "auto" | "off") =>
    spawnListening(
      ["run", "--allow-net", "--allow-env", "--allow-read", "functions/main.ts", "--port", "0"],
      {
        env: {
          GENIE_WORKER_URLS: worker.url,
          GENIE_WORKER_SECRET: SECRET,
          GENIE_EDGE_RATE_PER_MIN: "0",
          GENIE_EDGE_LOCAL: local,
          // every measured model runs in the local edge, mnist-mix (3.1 MiB) above the default bound too
          GENIE_EDGE_LOCAL_MAX_BYTES: String(64 * 1024 * 1024),
        },
        echo: { name, show: showLine },
      },
    );
  const edge = await startEdge("edge", "off");
  const localEdge = LOCAL_MODELS.length ? await startEdge("edge-local", "auto") : undefined;
  try {
    const provider = (await (await fetch(`${worker.url}/healthz`)).json()).providers?.[MODEL] ?? "?";
    let k = 0;
    /** The direct worker calls of an n-sample request: chunks of CHUNK seeds, concurrently, as the edge sends them. */
    const direct = (n: number) => async () => {
      const calls = [];
      for (let from = 0; from < n; from += CHUNK) {
        const seeds = Array.from({ length: Math.min(CHUNK, n - from) }, (_, i) => SEED + from + i);
        calls.push((async () => {
          const body = mpEncode({ v: 1, id: `bench-${k++}`, model: MODEL, solver: SOLVER, nfe: NFE, seeds });
          const res = await fetch(`${worker.url}/v1/batch`, {
            method: "POST",
            headers: {
              "content-type": MSGPACK,
              accept: MSGPACK,
              ...await signRequest(SECRET, { method: "POST", path: "/v1/batch", body }),
            },
            body,
          });
          const bytes = new Uint8Array(await res.arrayBuffer());
          if (!res.ok) throw new Error(`worker ${res.status}`);
          const msg = mpDecode(bytes) as { data: Uint8Array; timings: Timings };
          if (msg.data.byteLength !== seeds.length * 784 * 4) throw new Error("short worker answer");
          return { bytes: bytes.byteLength, timings: msg.timings };
        })());
      }
      const answers = await Promise.all(calls);
      return {
        bytes: answers.reduce((a, b) => a + b.bytes, 0),
        workerMs: Math.max(...answers.map((a) => a.timings.queue_ms)) +
          Math.max(...answers.map((a) => a.timings.compute_ms)),
      };
    };
    const viaEdge = (n: number, accept: string, output?: string) => async () => {
      const res = await fetch(`${edge.url}/v1/samples`, {
        method: "POST",
        headers: { "content-type": "application/json", accept },
        body: JSON.stringify({
          model: MODEL,
          solver: SOLVER,
          nfe: NFE,
          n,
          seed: SEED,
          ...(output ? { output } : {}),
        }),
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (!res.ok) throw new Error(`edge ${res.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
      const { timings } =
        (accept === MSGPACK ? mpDecode(bytes) : JSON.parse(new TextDecoder().decode(bytes))) as {
          timings: Required<Timings>;
        };
      return {
        bytes: bytes.byteLength,
        workerMs: timings.queue_ms + timings.compute_ms,
        edgeTotalMs: timings.total_ms,
      };
    };
    type Key = "direct" | "edgeMsgpack" | "edgeJson";
    /** Interleaved rounds of the paths at n samples: times, response sizes and the paired edge − direct. */
    const measure = async (n: number, keys: Key[]) => {
      const paths: Record<Key, () => Promise<Answer>> = {
        direct: direct(n),
        edgeMsgpack: viaEdge(n, MSGPACK, "tensor"),
        edgeJson: viaEdge(n, "application/json"),
      };
      for (let i = 0; i < WARMUP; i++) for (const key of keys) await paths[key]();
      const times: Record<Key, number[]> = { direct: [], edgeMsgpack: [], edgeJson: [] };
      const sizes: Record<Key, number> = { direct: 0, edgeMsgpack: 0, edgeJson: 0 };
      const added: number[] = [];
      // the edge msgpack path's time beyond the worker's own, split where the edge's total_ms ends, and
      // the direct path's; their paired difference is the hop without the worker's time in it
      const split = {
        direct: [] as number[],
        inEdge: [] as number[],
        toEdge: [] as number[],
        net: [] as number[],
      };
      for (let i = 0; i < PAIRS; i++) {
        const order = [...keys].sort(() => Math.random() - 0.5);
        const got: Partial<Record<Key, Answer & { ms: number }>> = {};
        for (const key of order) {
          const r = await timed(paths[key]);
          times[key].push(r.ms);
          sizes[key] = r.bytes;
          got[key] = r;
        }
        const d = got.direct!, e = got.edgeMsgpack!;
        added.push(e.ms - d.ms);
        split.direct.push(d.ms - d.workerMs);
        split.inEdge.push(e.edgeTotalMs! - e.workerMs);
        split.toEdge.push(e.ms - e.edgeTotalMs!);
        split.net.push((e.ms - e.workerMs) - (d.ms - d.workerMs));
        if ((i + 1) % 10 === 0) console.error(`  n=${n}: ${i + 1}/${PAIRS} rounds`);
      }
      return { times, sizes, added, split };
    };
    const { times, sizes, added } = await measure(N, ["direct", "edgeMsgpack", "edgeJson"]);
    const large = await measure(N_LARGE, ["direct", "edgeMsgpack"]);
    const localSettings = {
      localUrl: localEdge?.url ?? "",
      hopUrl: edge.url,
      models: LOCAL_MODELS,
      solver: SOLVER,
      nfe: NFE,
      n: N,
      seed: SEED,
      warmup: WARMUP,
      pairs: PAIRS,
    };
    const localRows = localEdge ? await measureLocal(localSettings) : [];

    // msgpack and base64 throughput on realistic worker answers.
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
    const tensors = [
      { label: "16 × 1×28×28", shape: [16, 1, 28, 28] },
      { label: "256 × 1×28×28", shape: [256, 1, 28, 28] },
      { label: "64 × 3×64×64", shape: [64, 3, 64, 64] },
    ];
    const codecRows: string[] = [];
    for (const t of tensors) {
      const count = t.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(count).map((_, i) => Math.sin(i));
      const msg = {
        v: 1,
        id: "x",
        shape: t.shape,
        data: new Uint8Array(data.buffer),
        nfe: 10,
        steps: 10,
        timings: { queue_ms: 1, compute_ms: 2 },
      };
      const bytes = data.byteLength;
      const rate = (fn: () => void) => {
        const warm = performance.now();
        while (performance.now() - warm < 200) fn(); // JIT warm-up
        const reps: number[] = [];
        for (let r = 0; r < 7; r++) {
          const iters = Math.max(5, Math.round(6e7 / bytes));
          const t0 = performance.now();
          for (let i = 0; i < iters; i++) fn();
          reps.push((bytes * iters) / 2 ** 20 / ((performance.now() - t0) / 1000));
        }
        return quantile(reps, 0.5);
      };
      const mp = rate(() => mpDecode(mpEncode(msg)));
      const mr = rate(() => unpackr.unpack(packr.pack(msg)));
      const b64 = rate(() => base64ToBytes(bytesToBase64(msg.data)));
      codecRows.push(
        `| ${t.label} | ${f(bytes / 2 ** 10, 0)} KiB | ${f(mp, 0)} | ${f(mr, 0)} | ${f(b64, 0)} |`,
      );
    }

    const cores = navigator.hardwareConcurrency;
    const row = (label: string, key: Key) =>
      `| ${label} | ${f(quantile(times[key], 0.5))} | ${f(quantile(times[key], 0.95))} | ${
        f(sizes[key] / 1024, 1)
      } KiB |`;
    const report = `# Edge hop benchmark

Generated by \`deno task bench:edge\` (bench/edge.ts); do not edit by hand.

What it measures (docs/benchmarking.md §2, "Edge hop"): the latency the edge (functions/) adds on top of
calling the GPU worker directly, small models solved in the edge itself against the worker hop, and
msgpack encode+decode throughput for realistic tensors.

## Settings

- Request: model \`${MODEL}\`, solver \`${SOLVER}\`, grid: the solver's default, ρ: default, AFS off,
  denoise off, NFE ${NFE}, n = ${N} samples (one batch), seeds ${SEED}…${SEED + N - 1}.
- Worker: \`deno task worker\` on loopback, execution provider \`${provider}\`, signed calls
  (HMAC-SHA-256). Edge: \`functions/main.ts\` as its own process on loopback, open mode, rate limit off.
  Both serve behind their connection guard (core/api/guard.ts: each connection relayed to the server on
  loopback, docs/security.md), so every path here pays the worker's relay and the edge path the edge's too.
- Client: this process (fetch, keep-alive). ${WARMUP} warm-up rounds, then ${PAIRS} rounds; each round
  runs the three paths once in random order, so drift affects all paths alike.
- Machine: ${Deno.build.os}/${Deno.build.arch}, ${cores} logical CPUs, Deno ${Deno.version.deno}, load
  average ${Deno.loadavg().map((x) => x.toFixed(1)).join(" / ")} at the end of the run; worker, edge and
  client share these CPUs, so p95 includes scheduling noise. ${new Date().toISOString().slice(0, 10)}.

## Latency (ms, ${PAIRS} requests per path)

| path | p50 | p95 | response |
| --- | ---: | ---: | ---: |
${row("direct: worker \`POST /v1/batch\` (msgpack)", "direct")}
${row("edge: \`POST /v1/samples\`, Accept msgpack, output tensor", "edgeMsgpack")}
${row("edge: \`POST /v1/samples\`, JSON with base64 PNGs", "edgeJson")}

Added latency of the edge hop (edge msgpack − direct, paired by round): **p50 ${
      f(quantile(added, 0.5))
    } ms, p95 ${f(quantile(added, 0.95))} ms** (ratio of medians ${
      f(quantile(times.edgeMsgpack, 0.5) / quantile(times.direct, 0.5), 3)
    }).

## A large output: n = ${N_LARGE} (${f((N_LARGE * 784 * 4) / 2 ** 10, 0)} KiB of float32, ${
      Math.ceil(N_LARGE / CHUNK)
    } worker calls)

The same model and settings at n = ${N_LARGE}: the edge splits the request into calls of at most ${CHUNK}
samples (the model's max_batch), sent concurrently; the direct path makes the same calls itself. The
worker's msgpack \`bin\` bytes are joined and passed through to the msgpack answer without decoding the
floats. ${PAIRS} rounds.

| path | p50 | p95 | response |
| --- | ---: | ---: | ---: |
| direct: the worker calls (msgpack) | ${f(quantile(large.times.direct, 0.5))} | ${
      f(quantile(large.times.direct, 0.95))
    } | ${f(large.sizes.direct / 1024, 1)} KiB |
| edge: \`POST /v1/samples\`, Accept msgpack, output tensor | ${
      f(quantile(large.times.edgeMsgpack, 0.5))
    } | ${f(quantile(large.times.edgeMsgpack, 0.95))} | ${f(large.sizes.edgeMsgpack / 1024, 1)} KiB |

Added latency of the edge hop for the large output (paired by round): **p50 ${
      f(quantile(large.added, 0.5))
    } ms, p95 ${f(quantile(large.added, 0.95))} ms** (target: p50 ≤ 5 ms).

Where it goes. Each answer states the worker's own time for it (the largest \`queue_ms\` plus the largest
\`compute_ms\` of its worker calls, as the edge aggregates them), and the edge's answer its own \`total_ms\`
(from the request's arrival at its handler to the answer's body being ready). Per round, p50 in ms:

| part | p50 | p95 |
| --- | ---: | ---: |
| direct path: wall − the worker's time (the client's calls, the worker's relay and protocol) | ${
      f(quantile(large.split.direct, 0.5))
    } | ${f(quantile(large.split.direct, 0.95))} |
| edge path, inside the edge: total_ms − the worker's time (forwarding the calls, joining, encoding) | ${
      f(quantile(large.split.inEdge, 0.5))
    } | ${f(quantile(large.split.inEdge, 0.95))} |
| edge path, client to edge and back: wall − total_ms (the edge's relay, routing, writing the body) | ${
      f(quantile(large.split.toEdge, 0.5))
    } | ${f(quantile(large.split.toEdge, 0.95))} |
| **the hop without the worker's time**: (edge wall − its worker time) − (direct wall − its worker time) | **${
      f(quantile(large.split.net, 0.5))
    }** | ${f(quantile(large.split.net, 0.95))} |

The first row is what the direct path pays around the worker's compute; the next two are the same for the
edge path; the last, paired per round, removes the worker's own time from both paths, so the spread of the
compute (about ${
      f(quantile(large.times.direct, 0.95) - quantile(large.times.direct, 0.5), 0)
    } ms between p50 and p95 here) no longer hides the hop.

${localEdge ? localSection(localSettings, localRows) : ""}
## Codec throughput (MiB of tensor data per second, encode + decode, median of 7)

| tensor (float32) | size | @msgpack/msgpack (edge, worker) | msgpackr (comparison) | base64 (JSON path) |
| --- | ---: | ---: | ---: | ---: |
${codecRows.join("\n")}

Messages are worker responses \`{v, id, shape, data: bin, nfe, steps, timings}\`; base64 is the
edge's own codec (core/api/tensor.ts) on the same bytes.
`;
    await Deno.writeTextFile(flags.out, report);
    console.log(report);
  } finally {
    await localEdge?.stop();
    await edge.stop();
    await worker.stop();
  }
}

await main();

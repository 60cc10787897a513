/**
 * `deno task bench:jobs [--rounds 15] [--warmup 1] [--samples 512] [--chunk auto] [--parallel 2] [--nfe 10]
 *                       [--out docs/jobs.md]`
 *
 * Job throughput ÷ direct sampling throughput on the same worker (target ≥ 0.9), measured side by side
 * in one run (docs/benchmarking.md: ratios, medians, exact settings). A real worker (`deno task worker`) and
 * the edge (`deno task serve`, KV and results in a temporary folder) run as separate processes on
 * loopback; this process is the client. Each round runs, in random order:
 *
 * - direct: the samples as `POST /v1/samples` requests of `chunk` samples each (msgpack, tensor
 *   output), `parallel` requests in flight at a time — the same worker calls a job makes;
 * - job: one `POST /v1/jobs` of `samples` samples in chunks of `chunk` (default: the job default, the
 *   model's max_batch) with GENIE_JOBS_PARALLEL = `parallel`, timed from submission to the edge's
 *   `finished_at` (same machine clock); the job also writes an .npy and a PNG grid per chunk (fsync on)
 *   and keeps its KV state.
 *
 * The edge's CPU time per path is read from /proc (on this 2-CPU machine it competes with the worker).
 * The report replaces the section between the bench markers in docs/jobs.md.
 */
import { decode as mpDecode } from "@msgpack/msgpack";
import { parseFlags } from "../core/flags.ts";
import { freePort, spawnListening, taskArgs } from "../functions/child.ts";
import { median } from "../core/stats.ts";

const { values: flags } = parseFlags(Deno.args, [
  { flag: "--rounds", kind: "int", min: 1, default: 15 },
  { flag: "--warmup", kind: "int", min: 0, default: 1 },
  { flag: "--samples", kind: "int", min: 1, default: 512 },
  { flag: "--chunk", kind: "string", default: "auto" },
  { flag: "--parallel", kind: "int", min: 1, default: 2 },
  { flag: "--nfe", kind: "int", min: 1, default: 10 },
  { flag: "--solver", kind: "string", default: "genie" },
  { flag: "--out", kind: "string", default: "docs/jobs.md" },
], { help: false });
const ROUNDS = flags.rounds, WARMUP = flags.warmup;
const N = flags.samples, PARALLEL = flags.parallel;
/** Samples per chunk: --chunk, or the job default (the model's max_batch) with "auto". */
let CHUNK = flags.chunk === "auto" ? 0 : Number(flags.chunk);
const NFE = flags.nfe, SOLVER = flags.solver;
const MODEL = "mnist-mix";
const SECRET = "bench-secret";
const START = "<!-- bench:jobs:start -->";
const END = "<!-- bench:jobs:end -->";

const f = (x: number, d = 2) => x.toFixed(d);
/** Server output worth repeating: errors, warnings and job logs, less ORT's provider notices. */
const showLine = (line: string) =>
  /error|warn|jobs:/i.test(line) && !/legacy|onnxruntime|provider|open to anyone/.test(line);

async function main() {
  const dir = await Deno.makeTempDir({ prefix: "genie-bench-jobs-" });
  console.error("starting the worker and the edge…");
  const worker = await spawnListening(
    [...await taskArgs("worker"), "--port", String(freePort())],
    { env: { GENIE_WORKER_SECRET: SECRET }, echo: { name: "worker", show: showLine } },
  );
  const edge = await spawnListening(
    [...await taskArgs("serve"), "--port", "0"],
    {
      env: {
        GENIE_WORKER_URLS: worker.url,
        GENIE_WORKER_SECRET: SECRET,
        GENIE_EDGE_RATE_PER_MIN: "0",
        GENIE_KV_PATH: `${dir}/jobs.kv`,
        GENIE_RESULTS_DIR: `${dir}/results`,
        GENIE_JOBS_PARALLEL: String(PARALLEL),
      },
      echo: { name: "edge", show: showLine },
    },
  );
  try {
    const health = await (await fetch(`${worker.url}/healthz`)).json();
    const provider = health.providers?.[MODEL] ?? "?";
    const models = await (await fetch(`${edge.url}/v1/models`)).json();
    const maxBatch: number = models.find((m: { name: string }) => m.name === MODEL).limits.max_batch;
    if (CHUNK === 0) CHUNK = maxBatch;
    if (N % CHUNK !== 0) throw new Error(`--samples must be a multiple of the chunk (${CHUNK})`);
    let seed = 1;
    const request = () => ({ model: MODEL, solver: SOLVER, nfe: NFE });

    const direct = async (): Promise<number> => {
      const first = seed;
      seed += N;
      let next = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: PARALLEL }, async () => {
        while (next < N) {
          const start = next;
          next += CHUNK;
          const res = await fetch(`${edge.url}/v1/samples`, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/msgpack" },
            body: JSON.stringify({ ...request(), n: CHUNK, seed: first + start, output: "tensor" }),
          });
          const bytes = new Uint8Array(await res.arrayBuffer());
          if (!res.ok) {
            throw new Error(`samples ${res.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
          }
          const body = mpDecode(bytes) as { tensor: { data: Uint8Array } };
          if (body.tensor.data.byteLength !== CHUNK * 784 * 4) throw new Error("short answer");
        }
      }));
      return N / ((performance.now() - t0) / 1000);
    };

    const inside: number[] = [];
    const job = async (): Promise<number> => {
      const first = seed;
      seed += N;
      const submitted = Date.now();
      const res = await fetch(`${edge.url}/v1/jobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          request: { ...request(), seed: first },
          count: N,
          ...(flags.chunk === "auto" ? {} : { chunk: CHUNK }),
        }),
      });
      const created = await res.json();
      if (res.status !== 202) throw new Error(`jobs ${res.status}: ${JSON.stringify(created)}`);
      for (;;) {
        const s = await (await fetch(`${edge.url}/v1/jobs/${created.id}`)).json();
        if (s.status === "succeeded") {
          if (s.done !== N) throw new Error(`job done ${s.done} ≠ ${N}`);
          // Same machine, same clock: from the client's submission to the edge's finish.
          const wall = Date.parse(s.finished_at) - submitted;
          inside.push(Date.parse(s.finished_at) - Date.parse(s.created_at));
          return N / (wall / 1000);
        }
        if (s.status === "failed" || s.status === "canceled") {
          throw new Error(`job ${s.status}: ${JSON.stringify(s.error)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    /** CPU seconds (user + system) the edge process has used so far (Linux), or NaN. */
    const edgeCpu = (): number => {
      try {
        // Read through `cat`: Deno reads /proc/<pid> itself only with --allow-all.
        const out = new Deno.Command("cat", { args: [`/proc/${edge.child.pid}/stat`], stderr: "null" })
          .outputSync();
        const stat = new TextDecoder().decode(out.stdout);
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return (Number(fields[11]) + Number(fields[12])) / 100;
      } catch {
        return NaN;
      }
    };
    const cpu = { direct: [] as number[], job: [] as number[] };
    const withCpu = async (key: "direct" | "job", fn: () => Promise<number>) => {
      const c0 = edgeCpu();
      const tp = await fn();
      cpu[key].push(edgeCpu() - c0);
      return tp;
    };
    for (let i = 0; i < WARMUP; i++) {
      await direct();
      await job();
    }
    const rows: { direct: number; job: number; ratio: number; order: string }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const jobFirst = Math.random() < 0.5;
      let d: number, j: number;
      if (jobFirst) {
        j = await withCpu("job", job);
        d = await withCpu("direct", direct);
      } else {
        d = await withCpu("direct", direct);
        j = await withCpu("job", job);
      }
      rows.push({ direct: d, job: j, ratio: j / d, order: jobFirst ? "job, direct" : "direct, job" });
      console.error(
        `  round ${r + 1}/${ROUNDS}: direct ${f(d, 1)}/s, job ${f(j, 1)}/s, ratio ${f(j / d, 3)}` +
          ` (job ${f(N / (inside[inside.length - 1] / 1000), 1)}/s from creation to finish at the edge;` +
          ` edge CPU ${f(cpu.direct[r] * 1000, 0)} ms direct, ${f(cpu.job[r] * 1000, 0)} ms job)`,
      );
    }
    const ratio = median(rows.map((r) => r.ratio));
    const total = (key: "direct" | "job") => (ROUNDS * N) / rows.reduce((a, r) => a + N / r[key], 0);
    const cpuMs = (key: "direct" | "job") => f((median(cpu[key]) * 1000) / (N / CHUNK), 1);
    const section = `${START}
## Benchmark: job throughput vs direct sampling

Generated by \`deno task bench:jobs\` (bench/jobs.ts); do not edit this section by hand.

**Job throughput ÷ direct throughput: ${f(ratio, 3)}** (median of ${ROUNDS} paired rounds; target ≥ 0.9).
Over all rounds together (total samples ÷ total time of each path): ${f(total("job") / total("direct"), 3)}.

| | samples/s (median) | min | max | edge CPU per chunk (median) |
| --- | ---: | ---: | ---: | ---: |
| direct: \`POST /v1/samples\` × ${N / CHUNK}, ${PARALLEL} in flight | ${
      f(median(rows.map((r) => r.direct)), 1)
    } | ${f(Math.min(...rows.map((r) => r.direct)), 1)} | ${f(Math.max(...rows.map((r) => r.direct)), 1)} | ${
      cpuMs("direct")
    } ms |
| job: \`POST /v1/jobs\` until \`succeeded\` | ${f(median(rows.map((r) => r.job)), 1)} | ${
      f(Math.min(...rows.map((r) => r.job)), 1)
    } | ${f(Math.max(...rows.map((r) => r.job)), 1)} | ${cpuMs("job")} ms |

Per round (order randomised within each round):

| round | order | direct (samples/s) | job (samples/s) | ratio |
| ---: | --- | ---: | ---: | ---: |
${
      rows.map((r, i) => `| ${i + 1} | ${r.order} | ${f(r.direct, 1)} | ${f(r.job, 1)} | ${f(r.ratio, 3)} |`)
        .join("\n")
    }

Settings: model \`${MODEL}\`, solver \`${SOLVER}\`, grid: the solver's default, ρ: default, AFS off, denoise
off, NFE ${NFE}, seeds advancing by ${N} per path per round (sample i of a run: seed first + i), ${N} samples per
path per round in chunks of ${CHUNK} (${
      flags.chunk === "auto" ? "the job default, the model's max_batch" : "--chunk"
    }; one worker call each), ${PARALLEL} chunks in flight for both paths
(GENIE_JOBS_PARALLEL=${PARALLEL}); ${WARMUP} warm-up round(s). A job's time runs from the client's
submission to the edge's \`finished_at\` (same machine clock; the client polls every 100 ms only to learn
that it finished). Edge CPU is the edge process's user + system time (from /proc), per chunk — on this
machine it competes with the CPU-bound worker. Direct answers are msgpack tensors; the job
writes per chunk an .npy and a PNG grid (fsync before rename) and commits its KV state; the KV is a local
file and the ${"`auto`"} driver uses its queue. Worker: \`deno task worker\` on loopback, execution provider
\`${provider}\`, signed calls. Edge: \`deno task serve\` as its own process. Machine: ${Deno.build.os}/${Deno.build.arch},
${navigator.hardwareConcurrency} logical CPUs, Deno ${Deno.version.deno}, load average ${
      Deno.loadavg().map((x) => x.toFixed(1)).join(" / ")
    } at the end; worker, edge and client share these CPUs. ${new Date().toISOString().slice(0, 10)}.
${END}`;
    let doc = "";
    try {
      doc = await Deno.readTextFile(flags.out);
    } catch { /* new file */ }
    const a = doc.indexOf(START), b = doc.indexOf(END);
    doc = a >= 0 && b > a
      ? doc.slice(0, a) + section + doc.slice(b + END.length)
      : doc + "\n" + section + "\n";
    await Deno.writeTextFile(flags.out, doc);
    console.log(section);
  } finally {
    await edge.stop();
    await worker.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await main();

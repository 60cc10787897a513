/**
 * `deno task bench:peer [--setup] [--reps 5] [--batches 1,8,32] [--nfe 10] [--width 64] [--threads N]
 *   [--providers cpu] [--python /usr/bin/python3] [--jvp auto] [--out docs/peer.md] [--keep]`
 *
 * The project against its peer, PyTorch eager, on the same network and the same update rules:
 *
 * 1. bench/peer.py (PyTorch) builds a DDPM-style ε U-Net on 3×32×32 with random weights (4.24 M parameters,
 *    1.95 GFLOP per sample at --width 64) and exports it with torch.onnx.export as a diffusers-style folder;
 *    gpu-worker/import.ts turns that into a model folder in a temporary directory (its JVP graph derived
 *    with onnx/jvp.ts, as the worker does for any model of one's own).
 * 2. Every repetition runs, interleaved (the order rotates), at each batch size and for DPM-Solver++(2M)
 *    and GENIE with the JVP graph at --nfe evaluations of ε: PyTorch eager (the loops of bench/peer.py,
 *    GENIE's derivative by forward-mode AD: functorch.jvp, else torch.autograd.forward_ad), `deno task
 *    sample` (the command line, a process per run: its wall time, and the solve's own `seconds` from its
 *    summary) and the HTTP API (`deno task start`: the edge and a worker, POST /v1/samples with msgpack).
 * 3. All four start from the same float32 latents (core/rng.ts noise of seeds 0…B−1, given as `--latents`
 *    and `latents`) on the same grids (logsnr for DPM-Solver++(2M), quadratic for GENIE, core/grid.ts), and
 *    PyTorch runs the project's update rules on the schedule values the project computes, so the samples
 *    must agree to float32 rounding of two different kernels libraries: the report gives the largest
 *    difference.
 *
 * Needs PyTorch for Python 3 (Debian: `sudo apt-get install -y python3-torch`, about 300 MB; PyTorch 1.13):
 * `--setup` installs it with apt-get when `import torch` fails (through sudo unless root). Not part of the
 * tests or CI. Writes --out (Markdown). Timings from a busy machine are not comparable: run it on an idle
 * one, and compare rows of one run only. With the defaults it takes about 15–20 minutes on 2 CPU cores,
 * mostly at batch 32; `--batches 1 --reps 1 --width 16` is a quick check that everything runs.
 *
 * The parts are in bench/peer/: PyTorch and bench/peer.py as a child process (`torch.ts`), the solves and
 * the three paths that run them (`paths.ts`), and the report (`report.ts`).
 */
import process from "node:process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseFlags, UsageError } from "../core/flags.ts";
import { encodeNpy } from "../core/npy.ts";
import { gaussianBatch } from "../core/rng.ts";
import { freePort, spawnListening, taskArgs } from "../functions/child.ts";
import { importDiffusers } from "../gpu-worker/import.ts";
import { loadRegistry } from "../gpu-worker/models.ts";
import { parseProviders } from "../onnx/ort.ts";
import {
  latentsPathIn,
  openFloor,
  type Path,
  type PathContext,
  PATHS,
  PEER_MODEL,
  runPath,
  type Solve,
  solve,
  type Timing,
} from "./peer/paths.ts";
import { peerReport } from "./peer/report.ts";
import { ensureTorch, exists, Peer, type PeerReady } from "./peer/torch.ts";

const { values: flags } = parseFlags(process.argv.slice(2), [
  { flag: "--setup", kind: "bool", default: false },
  { flag: "--reps", kind: "int", min: 1, default: 5 },
  { flag: "--batches", kind: "list", of: "int", min: 1, default: [1, 8, 32] },
  { flag: "--nfe", kind: "int", min: 1, default: 10 },
  { flag: "--width", kind: "int", min: 1, default: 64 },
  { flag: "--threads", kind: "int", min: 1, default: navigator.hardwareConcurrency || 1 },
  { flag: "--providers", kind: "string", default: "cpu" },
  { flag: "--python", kind: "string" },
  { flag: "--jvp", kind: "string", default: "auto" },
  { flag: "--out", kind: "string", default: "docs/peer.md" },
  { flag: "--keep", kind: "bool", default: false },
], { help: false });
const REPS = flags.reps;
const BATCHES = flags.batches;
const NFE = flags.nfe;
const WIDTH = flags.width;
const THREADS = flags.threads;
const PROVIDERS = flags.providers;
const MODEL = PEER_MODEL;
const started = new Date().toISOString();
const log = (s: string) => console.error(`[bench:peer] ${s}`);
if (WIDTH % 2 !== 0) throw new UsageError("--width", `must be even, got ${WIDTH}`);

// ---------------------------------------------------------------------------------------------
// PyTorch: present, or installed by --setup

const PYTHON = flags.python ?? (await exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
await ensureTorch(PYTHON, flags.setup, log);

// ---------------------------------------------------------------------------------------------
// The network: built and exported by bench/peer.py, imported as a model folder

const tmp = Deno.makeTempDirSync({ dir: tmpdir(), prefix: "genie-peer-" });
const exportDir = join(tmp, "export"), modelsDir = join(tmp, "models");
mkdirSync(modelsDir, { recursive: true });

log(`building the U-Net in PyTorch (width ${WIDTH}) and exporting it to ONNX`);
const peer = new Peer({ python: PYTHON, exportDir, width: WIDTH, threads: THREADS, jvp: flags.jvp });
const ready = await peer.next() as unknown as PeerReady;
log(`${(ready.params / 1e6).toFixed(2)} M parameters, ${ready.gflop.toFixed(2)} GFLOP per sample`);
importDiffusers({ source: exportDir, name: MODEL, out: modelsDir, maxBatch: Math.max(...BATCHES) });
const registry = await loadRegistry(modelsDir, { only: [MODEL], log: () => {} });
const info = registry.models.get(MODEL);
if (!info) throw new Error(`${MODEL}: ${JSON.stringify(registry.errors)}`);
if (!info.graphPaths.jvp) throw new Error(`${MODEL}: no JVP graph: ${info.unavailable?.jvp?.reason}`);
const schedule = info.schedule;
const { scale, offset = 0 } = info.manifest.time;

// ---------------------------------------------------------------------------------------------
// The solves: grids and schedule values from core/, latents from core/rng.ts

const time = { scale, offset };
const SOLVES = [
  solve("dpmpp-2m", "logsnr", NFE, schedule, time),
  solve("genie", "quadratic", NFE, schedule, time),
];
const dim = info.dim, shape = info.manifest.shape;
const latentsPath = (B: number) => latentsPathIn(tmp, B);
for (const B of BATCHES) {
  const noise = Float32Array.from(gaussianBatch(Array.from({ length: B }, (_, i) => i), dim));
  writeFileSync(latentsPath(B), encodeNpy(noise, [B, ...shape]));
}

// ---------------------------------------------------------------------------------------------
// The three ways to run them

const env = {
  GENIE_MODELS_DIR: modelsDir,
  GENIE_PROVIDERS: PROVIDERS,
  GENIE_WORKER_THREADS: String(THREADS),
};
log("starting the HTTP API (deno task start)");
const http = await spawnListening([...await taskArgs("start"), "--port", String(freePort())], {
  env,
  timeoutMs: 300_000,
});
for (let i = 0; i < 600; i++) {
  const r = await fetch(`${http.url}/readyz`).catch(() => undefined);
  await r?.body?.cancel();
  if (r?.ok) break;
  await new Promise((res) => setTimeout(res, 500));
}
const sampleArgs = await taskArgs("sample");
const floor = await openFloor(info, THREADS, parseProviders("--providers", PROVIDERS) ?? ["cpu"], tmp);
const ctx: PathContext = { peer, url: http.url, sampleArgs, env, tmp, nfe: NFE, threads: THREADS, shape };

// ---------------------------------------------------------------------------------------------
// Measure: one saved warm-up run of every (solve, batch, path), then interleaved repetitions

const times = new Map<string, Timing[]>();
const key = (s: Solve, B: number, p: Path) => `${s.solver} ${B} ${p}`;
const loadStart = loadavg();
const t0 = performance.now();
try {
  for (const B of BATCHES) {
    for (const s of SOLVES) {
      for (const p of PATHS) await runPath(ctx, p, s, B, true);
      await floor.run(s, B);
    }
  }
  for (let r = 0; r < REPS; r++) {
    log(`repetition ${r + 1} of ${REPS}`);
    for (const B of BATCHES) {
      for (const s of SOLVES) {
        for (let i = 0; i < PATHS.length; i++) {
          const p = PATHS[(i + r) % PATHS.length];
          const t = await runPath(ctx, p, s, B, false);
          times.set(key(s, B, p), [...times.get(key(s, B, p)) ?? [], t]);
        }
        const f = await floor.run(s, B);
        times.set(key(s, B, "floor"), [...times.get(key(s, B, "floor")) ?? [], f]);
      }
    }
  }
} finally {
  await peer.close();
  await http.stop();
  await floor.close();
}
const seconds = (performance.now() - t0) / 1000;
const loadEnd = loadavg();

// ---------------------------------------------------------------------------------------------
// Agreement and the report

const lines = peerReport({
  started,
  reps: REPS,
  batches: BATCHES,
  nfe: NFE,
  width: WIDTH,
  threads: THREADS,
  providers: PROVIDERS,
  ready,
  solves: SOLVES,
  times,
  key,
  tmp,
  loadStart,
  loadEnd,
  seconds,
});
if (flags.keep) log(`kept ${tmp}`);
else rmSync(tmp, { recursive: true, force: true });
mkdirSync(dirname(flags.out), { recursive: true });
writeFileSync(flags.out, lines.join("\n") + "\n");
console.log(lines.join("\n"));

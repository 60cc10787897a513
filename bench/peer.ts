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
 */
import process from "node:process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { decode, encode } from "@msgpack/msgpack";
import { parseFlags, UsageError } from "../core/flags.ts";
import { type GridKind, makeGrid } from "../core/grid.ts";
import { decodeNpy, encodeNpy } from "../core/npy.ts";
import { gaussianBatch } from "../core/rng.ts";
import { LOWER_ORDER_FINAL_BELOW } from "../core/solvers/multistep.ts";
import { stepsForNfe } from "../core/solvers/registry.ts";
import { median } from "../core/stats.ts";
import { freePort, spawnListening, taskArgs, textLines } from "../functions/child.ts";
import { importDiffusers } from "../gpu-worker/import.ts";
import { loadRegistry } from "../gpu-worker/models.ts";

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
const MODEL = "peer-unet";
const ROOT = new URL("../", import.meta.url).pathname;
const started = new Date().toISOString();
const log = (s: string) => console.error(`[bench:peer] ${s}`);
if (WIDTH % 2 !== 0) throw new UsageError("--width", `must be even, got ${WIDTH}`);

// ---------------------------------------------------------------------------------------------
// PyTorch: present, or installed by --setup

const PYTHON = flags.python ?? (await exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

async function torchVersion(): Promise<string | undefined> {
  try {
    const r = await run(PYTHON, ["-c", "import numpy, torch; print(torch.__version__)"]);
    return r.ok ? r.stdout.trim() : undefined;
  } catch {
    return undefined;
  }
}

if (!(await torchVersion())) {
  const command = "apt-get install -y python3-torch";
  if (!flags.setup) {
    console.error(
      `bench:peer needs PyTorch for ${PYTHON} (import torch failed). Install it with ` +
        `\`sudo ${command}\` (Debian, about 300 MB), or run \`deno task bench:peer --setup\`.`,
    );
    Deno.exit(2);
  }
  const root = Deno.uid?.() === 0;
  log(`installing PyTorch: ${root ? "" : "sudo "}${command}`);
  const r = await run(root ? "apt-get" : "sudo", root ? command.split(" ").slice(1) : command.split(" "), {
    DEBIAN_FRONTEND: "noninteractive",
  });
  if (!r.ok || !(await torchVersion())) {
    console.error(`installing python3-torch failed (${r.code}):\n${r.stderr.slice(-2000)}`);
    Deno.exit(1);
  }
}

// ---------------------------------------------------------------------------------------------
// The network: built and exported by bench/peer.py, imported as a model folder

const tmp = Deno.makeTempDirSync({ dir: tmpdir(), prefix: "genie-peer-" });
const exportDir = join(tmp, "export"), modelsDir = join(tmp, "models");
mkdirSync(modelsDir, { recursive: true });

interface PeerReady {
  params: number;
  gflop: number;
  torch: string;
  threads: number;
  jvp: string;
  python: string;
}

/** bench/peer.py serving JSON lines: one command at a time. */
class Peer {
  #child: Deno.ChildProcess;
  #lines: AsyncGenerator<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly stderr: string[] = [];

  constructor() {
    this.#child = new Deno.Command(PYTHON, {
      args: [
        join(ROOT, "bench/peer.py"),
        "serve",
        "--out",
        exportDir,
        "--width",
        String(WIDTH),
        "--threads",
        String(THREADS),
        "--jvp",
        flags.jvp,
      ],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = textLines(this.#child.stdout);
    this.#writer = this.#child.stdin.getWriter();
    const stderr = this.#child.stderr;
    (async () => {
      for await (const line of textLines(stderr)) this.stderr.push(line);
    })();
  }

  async next(): Promise<Record<string, unknown>> {
    const r = await this.#lines.next();
    if (r.done) throw new Error(`bench/peer.py ended:\n${this.stderr.slice(-30).join("\n")}`);
    return JSON.parse(r.value);
  }

  async send(msg: unknown): Promise<Record<string, unknown>> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
    return await this.next();
  }

  async close(): Promise<void> {
    try {
      await this.#writer.write(new TextEncoder().encode(`{"cmd": "quit"}\n`));
      await this.#writer.close();
    } catch { /* gone */ }
    await this.#child.status;
  }
}

log(`building the U-Net in PyTorch (width ${WIDTH}) and exporting it to ONNX`);
const peer = new Peer();
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

interface Solve {
  solver: "dpmpp-2m" | "genie";
  label: string;
  grid: GridKind;
  steps: number;
  /** What the project's requests add: the derivative source. */
  extra: Record<string, string>;
  plan: Record<string, number[] | number>;
}

function solve(solver: Solve["solver"], grid: GridKind): Solve {
  const derivative = solver === "genie" ? "jvp" as const : undefined;
  const steps = stepsForNfe(solver, NFE, { derivative });
  const t = [...makeGrid(schedule, { kind: grid, steps })];
  return {
    solver,
    label: solver === "genie" ? "GENIE (JVP)" : "DPM-Solver++(2M)",
    grid,
    steps,
    extra: derivative ? { genie_derivative: derivative } : {},
    plan: {
      t,
      alpha: t.map((s) => schedule.alpha(s)),
      gamma: t.map((s) => schedule.gamma(s)),
      lambda: t.map((s) => schedule.lambda(s)),
      timestep: t.map((s) => s * scale + offset),
      dtimestep_dgamma: t.map((s) => schedule.dtDgamma(s) * scale),
      lower_order_final_below: LOWER_ORDER_FINAL_BELOW,
    },
  };
}
const SOLVES = [solve("dpmpp-2m", "logsnr"), solve("genie", "quadratic")];
const dim = info.dim, shape = info.manifest.shape;
const latentsPath = (B: number) => join(tmp, `latents_${B}.npy`);
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

type Path = "pytorch" | "cli" | "http";
const PATHS: Path[] = ["pytorch", "cli", "http"];
interface Timing {
  ms: number;
  /** The CLI's own `seconds` of the solve, in ms. */
  solveMs?: number;
}

const outPath = (s: Solve, B: number, p: Path) => join(tmp, `out_${s.solver}_${B}_${p}.npy`);

async function runPath(p: Path, s: Solve, B: number, save: boolean): Promise<Timing> {
  if (p === "pytorch") {
    const r = await peer.send({
      cmd: "run",
      solver: s.solver,
      latents: latentsPath(B),
      plan: s.plan,
      out: save ? outPath(s, B, p) : null,
    });
    return { ms: r.ms as number };
  }
  if (p === "cli") {
    const args = [
      ...sampleArgs,
      "--model",
      MODEL,
      "--solver",
      s.solver,
      "--nfe",
      String(NFE),
      "--grid",
      s.grid,
      "--latents",
      latentsPath(B),
      "--threads",
      String(THREADS),
      "--out",
      outPath(s, B, p),
      "--json",
      "--quiet",
      ...Object.entries(s.extra).flatMap(([k, v]) => [`--${k.replaceAll("_", "-")}`, v]),
    ];
    const t0 = performance.now();
    const r = await run(Deno.execPath(), args, env);
    const ms = performance.now() - t0;
    if (!r.ok) throw new Error(`deno task sample failed (${r.code}): ${r.stderr.slice(-2000)}`);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    return { ms, solveMs: summary.seconds * 1000 };
  }
  const noise = decodeNpy(new Uint8Array(readFileSync(latentsPath(B)))).data;
  const body = encode({
    model: MODEL,
    solver: s.solver,
    nfe: NFE,
    grid: s.grid,
    afs: false,
    denoise: false,
    output: "tensor",
    latents: {
      shape: [B, ...shape],
      dtype: "float32",
      data: new Uint8Array(Float32Array.from(noise).buffer),
    },
    ...s.extra,
  });
  const t0 = performance.now();
  const res = await fetch(`${http.url}/v1/samples`, {
    method: "POST",
    body,
    headers: { "content-type": "application/msgpack", accept: "application/msgpack" },
  });
  const reply = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`POST /v1/samples: ${res.status} ${JSON.stringify(reply)}`);
  if (save) {
    const t = reply.tensor as { shape: number[]; data: Uint8Array };
    const data = new Float32Array(t.data.slice().buffer);
    writeFileSync(outPath(s, B, p), encodeNpy(data, t.shape));
  }
  return { ms };
}

// ---------------------------------------------------------------------------------------------
// Measure: one saved warm-up run of every (solve, batch, path), then interleaved repetitions

const times = new Map<string, Timing[]>();
const key = (s: Solve, B: number, p: Path) => `${s.solver} ${B} ${p}`;
const loadStart = loadavg();
const t0 = performance.now();
try {
  for (const B of BATCHES) {
    for (const s of SOLVES) for (const p of PATHS) await runPath(p, s, B, true);
  }
  for (let r = 0; r < REPS; r++) {
    log(`repetition ${r + 1} of ${REPS}`);
    for (const B of BATCHES) {
      for (const s of SOLVES) {
        for (let i = 0; i < PATHS.length; i++) {
          const p = PATHS[(i + r) % PATHS.length];
          const t = await runPath(p, s, B, false);
          times.set(key(s, B, p), [...times.get(key(s, B, p)) ?? [], t]);
        }
      }
    }
  }
} finally {
  await peer.close();
  await http.stop();
}
const seconds = (performance.now() - t0) / 1000;
const loadEnd = loadavg();

// ---------------------------------------------------------------------------------------------
// Agreement and the report

function readOut(s: Solve, B: number, p: Path): Float32Array {
  const a = decodeNpy(new Uint8Array(readFileSync(outPath(s, B, p))));
  return new Float32Array(a.data);
}
const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const maxDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

const fmt = (x: number, d = 1) => x.toFixed(d);
const lines: string[] = [];
const out = (s = "") => lines.push(s);
out("# The project against PyTorch eager");
out();
out(
  `Generated by \`deno task bench:peer\` (bench/peer.ts, bench/peer.py) on ${started}; do not edit by hand: ` +
    "rerun the command.",
);
out();
out(
  `Machine: ${navigator.hardwareConcurrency} logical CPUs (${cpus()[0]?.model ?? "?"}), ` +
    `${process.platform}/${process.arch}; Deno ${Deno.version.deno}, onnxruntime-node 1.30 (provider ` +
    `${PROVIDERS}), PyTorch ${ready.torch} (Python ${ready.python}); ${THREADS} compute threads on both ` +
    `sides (ORT intra-op threads: \`--threads\` of the command line, GENIE_WORKER_THREADS of the worker; ` +
    `torch.set_num_threads). Load average (1/5/15 min) at the start: ${
      loadStart.map((l) => l.toFixed(2)).join(" / ")
    }; at the end: ${loadEnd.map((l) => l.toFixed(2)).join(" / ")}. Runtime ${seconds.toFixed(0)} s with ` +
    `--reps ${REPS}.`,
);
out();
out(
  `Network: a DDPM-style ε U-Net on 3×32×32 built by bench/peer.py with random weights (seed 0): width ` +
    `${WIDTH}, channel multipliers 1, 2, 2, one residual block per level, self-attention at 8×8 in the ` +
    `middle, GroupNorm, SiLU, a sinusoidal timestep embedding; ${(ready.params / 1e6).toFixed(2)} M ` +
    `parameters, ${ready.gflop.toFixed(2)} GFLOP per sample (convolutions and dense layers). Exported by ` +
    "torch.onnx.export (opset 17) as a diffusers-style folder and imported with gpu-worker/import.ts: " +
    "DDPM's discrete schedule (linear β 1e-4 to 0.02, 1000 steps; the network sees the timestep 1000·t − 1), " +
    "its JVP graph derived from the ONNX graph by onnx/jvp.ts.",
);
out();
out("Settings, every row:");
out();
out(
  `- NFE ${NFE}, no analytical first step, no final denoising, unconditional; batch ${
    BATCHES.join(", ")
  }; latents: core/rng.ts noise of seeds 0…B−1 as float32, the same file for every path (\`--latents\`, ` +
    "`latents`, numpy).",
);
for (const s of SOLVES) {
  out(
    `- ${s.label}: grid ${s.grid}, ${s.steps} steps from t = ${(s.plan.t as number[])[0]} to ${
      (s.plan.t as number[]).at(-1)
    }${
      s.solver === "genie"
        ? `; per step one ε call and one JVP call (the project's JVP graph computes ε again; PyTorch's ` +
          `${ready.jvp} too), so ${2 * s.steps} network calls`
        : `; one ε call per step. Lower order at the end: core/solvers/dpmpp.ts (core/solvers/multistep.ts ` +
          `stepOrder) warms up with min(2, n + 1) and, with fewer than ${LOWER_ORDER_FINAL_BELOW} steps, ` +
          `takes min(·, N − n) on the final steps (diffusers' lower_order_final, below 15 steps; DPM-Solver's ` +
          `reference code lowers below 10 steps only), so at ${s.steps} steps the last step is first order; ` +
          "bench/peer.py does the same"
    }.`,
  );
}
out(
  "- **PyTorch**: the sampling loop of bench/peer.py in a process started once (eager mode, no_grad, " +
    "solver state float64), timed around the loop alone.",
);
out(
  "- **CLI**: `deno task sample --model peer-unet --solver … --nfe … --grid … --latents … --out … --json` " +
    "as a new process per run: **wall** is the process from start to exit (Deno's start, loading the " +
    "model, ORT's session creation and warm-up, the solve, writing the .npy), **solve** its summary's " +
    "`seconds` (the solve alone).",
);
out(
  "- **HTTP**: `deno task start` (the edge and a worker, one process each, on localhost), `POST /v1/samples` " +
    'with a msgpack body and `output: "tensor"`, from request to decoded answer.',
);
out(
  `Medians and minima over ${REPS} repetitions; the paths take turns in rotating order. **÷ PyTorch** ` +
    "divides the row's median (minimum) by PyTorch's median (minimum) for the same solve and batch.",
);
out();
out("| solver | batch | path | median ms | min ms | ÷ PyTorch (median) | ÷ PyTorch (min) |");
out("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
for (const s of SOLVES) {
  for (const B of BATCHES) {
    const ref = times.get(key(s, B, "pytorch"))!.map((t) => t.ms);
    const row = (name: string, ms: number[]) =>
      out(
        `| ${s.label} | ${B} | ${name} | ${fmt(median(ms))} | ${fmt(Math.min(...ms))} | ${
          fmt(median(ms) / median(ref), 2)
        } | ${fmt(Math.min(...ms) / Math.min(...ref), 2)} |`,
      );
    row("PyTorch eager", ref);
    const cli = times.get(key(s, B, "cli"))!;
    row("CLI, solve", cli.map((t) => t.solveMs!));
    row("CLI, wall", cli.map((t) => t.ms));
    row("HTTP", times.get(key(s, B, "http"))!.map((t) => t.ms));
  }
}
out();
out("## Agreement");
out();
out(
  "Largest absolute difference between the samples of two paths (x at the last grid time, float32), from " +
    "the same latents; **scale** is the largest |x| of PyTorch's samples. Both sides compute in float32 " +
    "with different kernels (oneDNN and ONNX Runtime's MLAS), so differences of rounding size are expected, " +
    "and grow with the steps. The random network's ε does not cancel the noise as a trained one's would, so " +
    "the samples are large (x̄ starts at γ(t_max) ≈ 157 times the latents); the last column is relative.",
);
out();
out("| solver | batch | scale | PyTorch vs CLI | PyTorch vs HTTP | CLI vs HTTP | PyTorch vs CLI ÷ scale |");
out("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const s of SOLVES) {
  for (const B of BATCHES) {
    const [pt, cli, api] = PATHS.map((p) => readOut(s, B, p));
    out(
      `| ${s.label} | ${B} | ${fmt(maxAbs(pt), 2)} | ${maxDiff(pt, cli).toExponential(2)} | ${
        maxDiff(pt, api).toExponential(2)
      } | ${maxDiff(cli, api).toExponential(2)} | ${(maxDiff(pt, cli) / maxAbs(pt)).toExponential(2)} |`,
    );
  }
}
out();
if (flags.keep) log(`kept ${tmp}`);
else rmSync(tmp, { recursive: true, force: true });
mkdirSync(dirname(flags.out), { recursive: true });
writeFileSync(flags.out, lines.join("\n") + "\n");
console.log(lines.join("\n"));

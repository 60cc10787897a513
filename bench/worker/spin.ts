/**
 * The "Spin policy" section of `deno task bench:worker` (bench/worker.ts): GENIE with the JVP graph and
 * DPM-Solver++(2M) at batch 1 under each GENIE_WORKER_SPIN setting, against their floor.
 */
import { createWorkerApp, type WorkerApp } from "../../gpu-worker/app.ts";
import { InferenceThread, type WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { median } from "../../core/stats.ts";
import { benchProviders, copyFeeds, fmt, type Sampled, type WorkerBench } from "./harness.ts";

/**
 * The spin policy, side by side: one inference thread per GENIE_WORKER_SPIN setting (auto, on, off), each
 * holding every graph of --spin-model as the worker would (eps, head, the JVP graph), behind its own worker app.
 * Per repetition and setting, in rotating order: a timed sampling run, the same run again recorded, then its
 * calls replayed one by one in their order and grouped by graph (all eps calls back to back, then all JVP
 * calls): the grouped replay is the run's floor, what its calls cost when no session ever follows another.
 */
export async function spinSection(h: WorkerBench): Promise<void> {
  const { registry, spinModel: SPIN_MODEL, threads: THREADS, reps: REPS, nfe: NFE, out, sample } = h;
  const info = registry.models.get(SPIN_MODEL)!;
  const B = 1;
  out(`## Spin policy: one session or alternating sessions at batch ${B}`);
  out();
  if (!info.graphPaths.jvp) {
    out(`Skipped: \`${SPIN_MODEL}\` has no JVP graph (${info.unavailable?.jvp?.reason ?? "none"}).`);
    out();
    return;
  }
  type Call = { graph: GraphKind; feeds: Record<string, WireTensor> };
  const settings = [
    ["auto", undefined],
    ["on", true],
    ["brief", "brief"],
    ["run", "run"],
    ["off", false],
  ] as const;
  const setups: {
    label: string;
    policy: string;
    thread: InferenceThread;
    app: WorkerApp;
    recorded?: Call[];
  }[] = [];
  for (const [label, spinning] of settings) {
    const t = await InferenceThread.start([info], {
      providers: benchProviders(),
      intraOpThreads: THREADS,
      spinning,
    });
    const setup = { label, policy: t.models.get(SPIN_MODEL)!.spin, thread: t } as (typeof setups)[number];
    const recordingRun = {
      run(model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
        setup.recorded?.push({ graph, feeds: copyFeeds(feeds) });
        return t.run(model, graph, feeds);
      },
      close: () => Promise.resolve(),
    };
    setup.app = await createWorkerApp({
      models: [SPIN_MODEL],
      inference: recordingRun,
      maxQueue: 64,
      log: () => {},
    });
    setups.push(setup);
  }
  const pause = () => new Promise((r) => setTimeout(r, 100));
  /** Σ of the wall times of `calls` made one by one through `t`, in the given order. */
  const replayOn = async (t: InferenceThread, calls: Call[]) => {
    let total = 0;
    for (const { graph, feeds } of calls) {
      const copy = copyFeeds(feeds);
      const t0 = performance.now();
      await t.run(SPIN_MODEL, graph, copy);
      total += performance.now() - t0;
    }
    return total;
  };
  // GENIE (jvp) calls the JVP graph alone, once a step (the graph makes the ODE's tangent from its own ε);
  // guided, its tangent is made from the guided ε̃, so an ε call and a JVP call alternate
  const runs = [
    ["genie", "jvp", { genie_derivative: "jvp" }],
    ["genie", "jvp, guided (w = 1)", { genie_derivative: "jvp", class: 3, guidance: 1 }],
    ["dpmpp-2m", "—", {}],
  ] as const;
  type Row = { walls: number[]; inOrder: number[]; floors: number[]; last?: Sampled };
  const rows = new Map<string, Row>();
  for (const [solver, , extra] of runs) {
    for (const s of setups) await sample(B, solver, extra, s.app, SPIN_MODEL);
  }
  for (let r = 0; r < REPS; r++) {
    const order = setups.map((_, i) => setups[(i + r) % setups.length]);
    for (const [solver, derivative, extra] of runs) {
      for (const s of order) {
        const key = `${solver} ${derivative} ${s.label}`;
        const row = rows.get(key) ?? { walls: [], inOrder: [], floors: [] };
        rows.set(key, row);
        const seeds = Array.from({ length: B }, () => h.nextSeed());
        await pause();
        row.last = await sample(B, solver, extra, s.app, SPIN_MODEL, seeds);
        row.walls.push(row.last.ms);
        s.recorded = [];
        await sample(B, solver, extra, s.app, SPIN_MODEL, seeds);
        const made = s.recorded;
        s.recorded = undefined;
        await pause();
        row.inOrder.push(await replayOn(s.thread, made));
        const graphs = [...new Set(made.map((c) => c.graph))];
        await pause();
        row.floors.push(await replayOn(s.thread, graphs.flatMap((g) => made.filter((c) => c.graph === g))));
      }
    }
  }
  out(
    `Settings: \`${SPIN_MODEL}\`, batch ${B}, NFE ${NFE}, grid quadratic; GENIE with the JVP graph, ` +
      "unconditional (one call of the JVP graph per step: it makes the ODE's tangent from its own ε, " +
      "onnx/ode_jvp.ts) and guided with w = 1 for class 3 (an eps call and a JVP call per step, alternating, " +
      "each of 2 rows: the tangent is made from the guided ε̃), and DPM-Solver++(2M), unconditional (eps " +
      "calls only). Each " +
      "setting of `GENIE_WORKER_SPIN` has its own inference thread holding every graph of the model " +
      `(${
        Object.keys(info.graphPaths).filter((g) => g !== "features").join(", ")
      }), as the worker loads it, ` +
      "and its own worker app; the settings take turns in rotating order with 100 ms pauses between " +
      `measurements, ${REPS} repetitions, medians. **policy** is what each session got (onnx/ort.ts ` +
      "`SpinPolicy`: on spins also between calls, brief for at most 0.5 ms after a call, run only while a " +
      "call runs, off never; auto is the worker's default, which chose the policy shown). **in order** replays " +
      "the run's own calls one by one in their order; **floor** replays the same calls grouped by graph (all " +
      "eps calls back to back, then all JVP calls), so that no session ever follows another: what the calls " +
      "cost without alternation.",
  );
  out();
  out(
    "| solver | derivative | calls | setting | policy | sampling ms | in order ms | floor ms | sampling ÷ floor | sampling ÷ auto's |",
  );
  out("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |");
  const summary: string[] = [];
  for (const [solver, derivative] of runs) {
    const auto = median(rows.get(`${solver} ${derivative} auto`)!.walls);
    const parts: string[] = [];
    for (const s of setups) {
      const row = rows.get(`${solver} ${derivative} ${s.label}`)!;
      const wall = median(row.walls), floor = median(row.floors);
      const ratio = median(row.walls.map((w, i) => w / row.floors[i]));
      out(
        `| ${solver} | ${derivative} | ${row.last!.calls} | ${s.label} | ${s.policy} | ${fmt(wall, 1)} | ${
          fmt(median(row.inOrder), 1)
        } | ${fmt(floor, 1)} | ${fmt(ratio)} | ${fmt(wall / auto)} |`,
      );
      parts.push(`${s.label} ${fmt(wall, 1)} ms (${fmt(ratio)}× its floor)`);
    }
    summary.push(`${solver}${derivative === "—" ? "" : ` (${derivative})`}: ${parts.join(", ")}`);
  }
  out();
  out(`At batch ${B}: ${summary.join("; ")}.`);
  out();
  out(
    "Each session has its own intra-op thread pool (onnxruntime-node creates no shared one). Spinning " +
      "between calls pays where one session runs every call; where calls alternate between sessions, the " +
      "threads of the one that just ran keep spinning through the next one's call and take its cores. " +
      "Auto (gpu-worker/inference.ts `spinPolicy`) spins between calls only when the thread holds a single " +
      "session, and otherwise only while a call runs (run). Brief (0.5 ms after a call) keeps a lone " +
      "stream of one graph's calls on awake threads; beside another model's calls it cost the larger " +
      "request about 10 % (docs/performance.md), so auto leaves it to `GENIE_WORKER_SPIN=brief`.",
  );
  out();
  for (const s of setups) {
    await s.app.shutdown();
    await s.thread.close();
  }
}

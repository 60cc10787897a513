/**
 * The "Fairness" section of `deno task bench:worker` (bench/worker.ts): small requests beside a maximal
 * one, with the scheduler's quantum and without its cut.
 */
import { createWorkerApp } from "../../gpu-worker/app.ts";
import { DEFAULT_QUANTUM_MS } from "../../gpu-worker/scheduler.ts";
import { quantileFloor as quantile } from "../../core/stats.ts";
import { fmt, type WorkerBench } from "./harness.ts";

/**
 * Small requests (1 sample of --load-model, genie NFE --nfe) alone, then in a closed loop while one maximal
 * request runs (max_batch samples of --fair-big-model, ddim, --fair-big-steps steps): their p50/p99 against
 * alone, and what the maximal request pays. Side by side: 2 ms, the default quantum, 20 ms, and an unbounded one
 * (a turn lasts until its request is done: first come, first served).
 */
export async function fairnessSection(h: WorkerBench): Promise<void> {
  const { registry, model: MODEL, nfe: NFE, fairBigModel: FAIR_BIG_MODEL, fairBigSteps: FAIR_BIG_STEPS } = h;
  const { fairAlone: FAIR_ALONE, allModels: ALL_MODELS, inference, out, sample } = h;
  const big = FAIR_BIG_MODEL, bigN = registry.models.get(big)!.manifest.limits.max_batch;
  out("## Fairness: small requests beside a maximal one");
  out();
  out(
    `Settings: small = 1-sample ${MODEL} genie NFE ${NFE}, one closed-loop client; maximal = ${bigN}-sample ` +
      `${big} ddim ${FAIR_BIG_STEPS} steps (its max_batch). "alone" = the small requests with nothing else ` +
      `running (${FAIR_ALONE} requests). Quantum: the scheduler's per-turn inference time (` +
      '`--quantum-ms`, gpu-worker/README.md "Scheduling"); ∞ = no cut: a turn lasts until its request is done.',
  );
  out();
  out(
    "| quantum | small alone p50 ms | p99 ms | small beside maximal p50 ms | p99 ms | p50 ÷ alone | " +
      "small requests served | maximal request s | maximal alone s |",
  );
  out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const bigSteps = { nfe: FAIR_BIG_STEPS };
  for (const quantum of [...new Set([2, DEFAULT_QUANTUM_MS, 20])].sort((a, b) => a - b).concat(1e9)) {
    const fairApp = await createWorkerApp({
      models: ALL_MODELS,
      inference,
      maxQueue: 1024,
      quantumMs: quantum,
      log: () => {},
    });
    await sample(1, "genie", {}, fairApp);
    await sample(bigN, "ddim", { nfe: 2 }, fairApp, big);
    const alone: number[] = [];
    for (let i = 0; i < FAIR_ALONE; i++) alone.push((await sample(1, "genie", {}, fairApp)).ms);
    const bigAlone = (await sample(bigN, "ddim", bigSteps, fairApp, big)).ms;
    const beside: number[] = [];
    let done = false;
    const bigRun = sample(bigN, "ddim", bigSteps, fairApp, big).then((r) => (done = true, r));
    await new Promise((r) => setTimeout(r, 50));
    while (!done) beside.push((await sample(1, "genie", {}, fairApp)).ms);
    const bigMs = (await bigRun).ms;
    await fairApp.shutdown();
    const p50 = quantile(beside, 0.5), a50 = quantile(alone, 0.5);
    out(
      `| ${quantum >= 1e9 ? "∞" : `${quantum} ms${quantum === DEFAULT_QUANTUM_MS ? " (default)" : ""}`} | ${
        fmt(a50, 1)
      } | ${fmt(quantile(alone, 0.99), 1)} | ` +
        `${fmt(p50, 1)} | ${fmt(quantile(beside, 0.99), 1)} | ${fmt(p50 / a50, 1)} | ${beside.length} | ` +
        `${fmt(bigMs / 1000, 2)} | ${fmt(bigAlone / 1000, 2)} |`,
    );
  }
  out();
}

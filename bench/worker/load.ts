/**
 * The sections of `deno task bench:worker` (bench/worker.ts) under concurrent load: batching (concurrent
 * single-sample clients against one request of as many samples), latency percentiles under a closed loop,
 * and the process's memory over a soak.
 */
import process from "node:process";
import { loadavg } from "node:os";
import { createWorkerApp, type WorkerApp } from "../../gpu-worker/app.ts";
import { median, quantileFloor as quantile } from "../../core/stats.ts";
import { fmt, mb, type WorkerBench } from "./harness.ts";

/** Concurrent clients of every section here. */
const C = 32;

/** Batching: C concurrent single-sample clients vs one C-sample request, on each of --models. */
export async function batchingSection(h: WorkerBench): Promise<void> {
  const { app, allModels: ALL_MODELS, overheadModels: OVERHEAD_MODELS, reps: REPS, nfe: NFE } = h;
  const { inference, out, sample } = h;
  out(`## Batching: ${C} concurrent single-sample clients vs one ${C}-sample request`);
  out();
  out(
    `Settings: genie, head, grid quadratic, NFE ${NFE}, unconditional. Each client sends one 1-sample request; ` +
      `all ${C} start together. Throughput = samples ÷ wall time until the last finishes. ` +
      `Medians over ${Math.max(REPS, 9)} repetitions, modes interleaved.`,
  );
  out();
  const waitApp = await createWorkerApp({
    models: ALL_MODELS,
    inference,
    maxQueue: 1024,
    maxWaitMs: 2,
    log: () => {},
  });
  const BATCH_REPS = Math.max(REPS, 9);
  const batchRatios: Record<string, number> = {};
  out("| model | mode | wall ms (median) | samples/s | mean samples per call |");
  out("| --- | --- | ---: | ---: | ---: |");
  for (const model of OVERHEAD_MODELS) {
    const runs = { concurrent: [] as number[], waiting: [] as number[], single: [] as number[] };
    const perCall = { concurrent: [] as number[], waiting: [] as number[] };
    const clients = (target: WorkerApp) =>
      Promise.all(Array.from({ length: C }, () => sample(1, "genie", {}, target, model)));
    await clients(app);
    await clients(waitApp);
    let callsPerRequest = (await sample(C, "genie", {}, app, model)).calls;
    for (let r = 0; r < BATCH_REPS; r++) {
      // Alternate the order so that drifts of a noisy machine hit every mode alike.
      const modes = r % 2
        ? ["single", "concurrent", "waiting"] as const
        : ["concurrent", "waiting", "single"] as const;
      for (const mode of modes) {
        const c0 = h.calls, t0 = performance.now();
        if (mode === "single") callsPerRequest = (await sample(C, "genie", {}, app, model)).calls;
        else await clients(mode === "waiting" ? waitApp : app);
        runs[mode].push(performance.now() - t0);
        // Samples per inference call: C trajectories of `calls` calls each, over the calls made.
        if (mode !== "single") perCall[mode].push((C * callsPerRequest) / (h.calls - c0));
      }
    }
    const concurrent = median(runs.concurrent), waiting = median(runs.waiting), single = median(runs.single);
    batchRatios[model] = single / concurrent;
    batchRatios[`${model} (max wait 2 ms)`] = single / waiting;
    const row = (mode: string, ms: number, perCallSamples: string) =>
      out(`| ${model} | ${mode} | ${fmt(ms, 1)} | ${fmt((C / ms) * 1000, 1)} | ${perCallSamples} |`);
    row(`${C} clients × 1 sample (max wait 0)`, concurrent, fmt(median(perCall.concurrent), 1));
    row(`${C} clients × 1 sample (max wait 2 ms)`, waiting, fmt(median(perCall.waiting), 1));
    row(`1 request × ${C} samples`, single, String(C));
  }
  out();
  out(
    `**Ratio (concurrent ÷ single-request throughput), target ≥ 0.85:** ${
      OVERHEAD_MODELS.map((m) =>
        `${m} ${fmt(batchRatios[m], 3)}${batchRatios[m] >= 0.85 ? " (met)" : " (missed)"}, ${
          fmt(batchRatios[`${m} (max wait 2 ms)`], 3)
        } with max wait 2 ms`
      ).join("; ")
    } (1.0 = batching recovers all of it).`,
  );
  out(
    "Requests that arrive together share their first call (the scheduler dispatches at the end of the event " +
      "loop's turn), so every call carries all 32 samples. What remains is the work done once per request " +
      "instead of once per batch (decoding, validation, the response, each coroutine's step), which weighs " +
      "more where the network is cheap. A max wait only delays calls here: no other request is coming to fill them.",
  );
  out();
  await waitApp.shutdown();
}

/** Latency under load: closed loop, C clients, each sending requests back to back. */
export async function latencySection(h: WorkerBench): Promise<void> {
  const { soakS: SOAK_S, nfe: NFE, out, sample } = h;
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
}

/** Memory over a soak: C closed-loop clients mixing requests, RSS sampled every second. */
export async function soakSection(h: WorkerBench): Promise<void> {
  const { soakS: SOAK_S, conditional, out, sample } = h;
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
  const every = Math.max(1, Math.round(SOAK_S / 40));
  out(
    `RSS every ${every} s (s: MiB): ${
      rss.filter((_, i) => i % every === 0 || i === rss.length - 1).map(([s, b]) =>
        `${s.toFixed(0)}: ${mb(b)}`
      )
        .join(", ")
    }`,
  );
  out();
  out(`Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(" / ")}.`);
  out();
  if (SOAK_S < 600) {
    out(
      "Run a longer soak with `deno task bench:worker --soak-seconds 600` before trusting the growth figure.",
    );
  }
}

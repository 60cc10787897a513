/**
 * The "Overhead" section of `deno task bench:worker` (bench/worker.ts): sampling wall time ÷ the run's own
 * calls replayed through the inference thread, for GENIE with its head graph and DDIM at batch 1, 8, 32 on
 * each of --models; and the worker's own time per request and per step against a stand-in inference that
 * answers at once.
 */
import { createWorkerApp } from "../../gpu-worker/app.ts";
import type { WireTensor } from "../../gpu-worker/inference.ts";
import type { GraphKind } from "../../gpu-worker/manifest.ts";
import { median } from "../../core/stats.ts";
import { costText, fmt, type Sampled, type WorkerBench } from "./harness.ts";

/** Sections 1 (overhead) and 1b (the worker's own time). */
export async function overheadSection(h: WorkerBench): Promise<void> {
  const { app, model: MODEL, overheadModels: OVERHEAD_MODELS, reps: REPS, nfe: NFE } = h;
  const { out, sample, forwardMedian, replay } = h;
  // 1. Overhead.
  out("## Overhead: sampling wall time ÷ (calls × forward time at the same batch)");
  out();
  out(
    `Settings: grid quadratic (ρ 2), no AFS, no denoising, NFE ${NFE}, unconditional, seeds consecutive per request, one request at a time.`,
  );
  out(
    "GENIE with the `head` derivative makes one `head`-graph call per step; DDIM one `eps`-graph call. The ideal is 1.0. " +
      "**NFE** counts ε evaluations, **calls** graph calls of every kind and **cost** their forward-pass equivalents " +
      "(each call × its graph's cost ratio to one eps call from the model's manifest, † where a ratio is the " +
      "fallback estimate), all per sample trajectory as the worker reports them.",
  );
  out(
    "Forward times are wall times of single calls through the inference thread (message round trip included), " +
      "measured in the same run: **replayed** = the sampling run's own calls sent again one by one with the same " +
      "inputs (Σ over its calls; this is the denominator of the overhead), **fixed input** = calls × the median " +
      "of a call at t = 0.3 on a fixed x (shown because a graph's cost can depend on its inputs). " +
      "The overhead is what the worker adds around the model: request decoding and validation, noise, solver " +
      "steps, batching, scheduling and the response.",
  );
  out();
  out(
    "| model | solver | graph | batch | steps | NFE | calls | cost | calls × forward ms, fixed input | Σ forward ms, replayed | sampling ms | overhead | overhead by minima |",
  );
  out("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  /** The two solvers compared: GENIE with its head graph, DDIM with eps. */
  const SOLVERS = [["genie", "head", { genie_derivative: "head" }], ["ddim", "eps", {}]] as const;
  const overheads: Record<string, number> = {}, overheadsByMinima: Record<string, number> = {};
  /** Median over repetitions of sampling ms − replayed Σ forward ms, by "model solver B". */
  const excessMs: Record<string, number> = {};
  for (const model of OVERHEAD_MODELS) {
    for (const [solver, graph, extra] of SOLVERS) {
      for (const B of [1, 8, 32]) {
        await sample(B, solver, extra, app, model);
        const fw: number[] = [], walls: number[] = [], replays: number[] = [], ratios: number[] = [];
        let last: Sampled | undefined;
        for (let r = 0; r < REPS; r++) {
          fw.push(await forwardMedian(model, graph, B, 7));
          // timed without recording; then the same seeds again, recorded, for the replay
          const seeds = Array.from({ length: B }, () => h.nextSeed());
          last = await sample(B, solver, extra, app, model, seeds);
          h.recording = [];
          await sample(B, solver, extra, app, model, seeds);
          const made = h.recording;
          h.recording = undefined;
          const replayed = await replay(model, made);
          walls.push(last.ms);
          replays.push(replayed);
          ratios.push(last.ms / replayed);
        }
        const overhead = median(ratios), byMinima = Math.min(...walls) / Math.min(...replays);
        overheads[`${model} ${solver} batch ${B}`] = overhead;
        overheadsByMinima[`${model} ${solver} batch ${B}`] = byMinima;
        excessMs[`${model} ${solver} ${B}`] = median(walls.map((w, i) => w - replays[i]));
        out(
          `| ${model} | ${solver} | ${graph} | ${B} | ${last!.steps} | ${last!.nfe} | ${last!.calls} | ${
            costText(last!)
          } | ${fmt(last!.calls * median(fw), 1)} | ${fmt(median(replays), 1)} | ${fmt(median(walls), 1)} | ${
            fmt(overhead)
          } | ${fmt(byMinima)} |`,
        );
      }
    }
  }
  out();
  const targetStatus = (values: Record<string, number>) =>
    Object.entries(values).filter(([k]) => !k.endsWith(" 1")).map(([k, v]) =>
      `${k} ${fmt(v)}${v <= 1.05 ? " (met)" : " (missed)"}`
    ).join(", ");
  out(
    `**Overhead** is the median over ${REPS} repetitions of (sampling ms ÷ replayed Σ forward ms) of each ` +
      "repetition; **by minima** is the fastest sampling run ÷ the fastest replay, the estimate least " +
      "inflated by other processes (both can only be slowed down by them, never sped up).",
  );
  out();
  out(`Target ≤ 1.05 at batch ≥ 8, by medians: ${targetStatus(overheads)}.`);
  out();
  out(`By minima: ${targetStatus(overheadsByMinima)}.`);
  out();
  out(
    "The worker's own work per request is about the same for both models (it depends on the batch and the image " +
      "size, not on the network), so the ratio is larger where the network is cheap: `mnist-mix`'s analytic graph " +
      "takes a few ms per call here, `mnist-unet`'s U-Net several times more.",
  );
  out();

  // 1b. The worker's own time, with a stand-in inference that answers at once (zeros).
  {
    const standIn = {
      run(_model: string, graph: GraphKind, feeds: Record<string, WireTensor>) {
        const size = feeds.x.data.byteLength / 4;
        const outputs: Record<string, Float32Array> = { eps: new Float32Array(size) };
        if (graph !== "eps") outputs[graph === "jvp" ? "jvp" : "deriv"] = new Float32Array(size);
        return Promise.resolve({ outputs, ms: 0 });
      },
      close: () => Promise.resolve(),
    };
    const instant = await createWorkerApp({
      models: [MODEL],
      inference: standIn,
      maxQueue: 1024,
      log: () => {},
    });
    const timeAt = async (B: number, solver: string, extra: Record<string, unknown>, nfe: number) => {
      const request = { ...extra, nfe };
      for (let i = 0; i < 5; i++) await sample(B, solver, request, instant);
      const ms: number[] = [];
      for (let i = 0; i < 31; i++) ms.push((await sample(B, solver, request, instant)).ms);
      return median(ms);
    };
    out("### The worker's own time per request");
    out();
    out(
      `The same requests on \`${MODEL}\` against a stand-in inference that answers every call at once with zeros: ` +
        "what remains is the worker's own work on the main thread (request decoding and validation, noise, solver " +
        "steps, batching, the response). Fitted as fixed + NFE × per step from NFE 5 and NFE 40 (medians of 31). " +
        "The last two columns compare it with the overhead table: **sampling − replayed** is what sampling took " +
        "beyond the model's calls there (median over repetitions), and the part of it that is not the worker's own " +
        "work, per inference call, comes from pausing between calls: the two threads hand over a message and wake " +
        "each other, and an ORT call that follows a pause can take longer than the same call made back to back, " +
        "as in the replay. Per call it is about the same for every batch size, so it weighs most on a cheap network.",
    );
    out();
    out(
      "| solver | batch | ms at NFE 10 | fixed ms | per step µs | per step ÷ forward at that batch | sampling − replayed ms | not the worker's own work, µs per call |",
    );
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const [solver, graph, extra] of SOLVERS) {
      for (const B of [1, 8, 32]) {
        const a = await timeAt(B, solver, extra, 5), b = await timeAt(B, solver, extra, 40);
        const at10 = await timeAt(B, solver, extra, 10);
        const step = (b - a) / 35, fixed = a - 5 * step;
        const fwd = await forwardMedian(MODEL, graph, B, 7);
        const excess = excessMs[`${MODEL} ${solver} ${B}`];
        const rest = excess === undefined ? "–" : fmt(((excess - at10) / NFE) * 1000, 0);
        out(
          `| ${solver} | ${B} | ${fmt(at10)} | ${fmt(fixed)} | ${fmt(step * 1000, 0)} | ${
            fmt(step / fwd, 3)
          } | ${excess === undefined ? "–" : fmt(excess)} | ${rest} |`,
        );
      }
    }
    out();
    await instant.shutdown();
  }
}

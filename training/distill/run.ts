/**
 * The training loop of `deno task distill` (training/distill.ts), shared by both programs, with its record:
 * distill.json beside the checkpoints, continued by a resumed run.
 */
import { median } from "../../core/stats.ts";
import {
  formatSeconds,
  gradFormulation,
  log,
  parallelSetup,
  readJsonIfExists,
  type Segment,
  Segments,
  warmupCosine,
  writeAtomic,
} from "../common.ts";
import type { TrainingGraph } from "../../onnx/grad.ts";
import { type Batch, type FloatArray, Trainer } from "../trainer.ts";
import type { LoopFlags } from "./flags.ts";
import { summary } from "./loss.ts";

/** What distill.json holds (the parts a resumed run reads back). */
interface DistillRecord {
  final_loss_ema?: number;
  segments?: Segment[];
  loss_history?: { step: number; loss: number }[];
  eval_history?: { step: number; median: number; below06: number }[];
  heldout_relative_error?: { before_median?: number };
}

/**
 * The training loop with its record: steps, atomic checkpoints with distill.json beside them (a resumed
 * run continues the record), progress lines with the ETA, held-out evaluations.
 */
export class DistillRun {
  readonly history: { step: number; loss: number }[];
  readonly evalHistory: { step: number; median: number; below06: number }[];
  readonly segments: Segments;
  smooth = NaN;

  private constructor(
    readonly f: LoopFlags & Record<string, unknown>,
    readonly trainer: Trainer,
    readonly head: Record<string, unknown>,
    readonly earlier: DistillRecord | undefined,
    readonly first: number,
  ) {
    const upTo = <T extends { step: number }>(v: T[] | undefined) => (v ?? []).filter((h) => h.step <= first);
    this.history = upTo(earlier?.loss_history);
    this.evalHistory = upTo(earlier?.eval_history);
    this.segments = new Segments(
      earlier?.segments,
      first,
      f.threads,
      gradFormulation(f.formulation),
      f.parallel,
    );
  }

  /** The record of the run so far, kept beside the checkpoint: a resumed run continues it. */
  static async start(
    f: LoopFlags & Record<string, unknown>,
    trainer: Trainer,
    head: Record<string, unknown>,
  ): Promise<DistillRun> {
    const first = trainer.state.step;
    const earlier = first > 0 ? await readJsonIfExists<DistillRecord>(`${f.ckpt}/distill.json`) : undefined;
    return new DistillRun(f, trainer, head, earlier, first);
  }

  record(extra: Record<string, unknown> = {}): string {
    return JSON.stringify(
      {
        flags: this.f,
        head: this.head,
        steps_done: this.trainer.state.step,
        final_loss_ema: Number.isNaN(this.smooth) ? this.earlier?.final_loss_ema : this.smooth,
        segments: this.segments.upTo(this.trainer.state.step),
        loss_history: this.history,
        eval_history: this.evalHistory,
        ...extra,
      },
      null,
      2,
    ) + "\n";
  }

  /**
   * Steps until `--steps` (or `--stop-at`, or `--max-minutes`): `prepare(step)` readies the step's batch,
   * `heldOut(params)` gives the held-out relative errors at the times `evalT`.
   */
  async loop(
    prepare: (step: number) => Promise<void>,
    heldOut: (params: Readonly<Record<string, FloatArray>>) => Promise<number[]>,
    evalT: ArrayLike<number>,
    extra: () => Record<string, unknown> = () => ({}),
  ): Promise<void> {
    const { f, trainer } = this;
    const start = performance.now(), first = this.first;
    const deadline = f.maxMinutes > 0 ? Date.now() + f.maxMinutes * 60_000 : Infinity;
    let windowSum = 0, windowN = 0;
    const last = f.stopAt > 0 ? Math.min(f.stopAt, f.steps) : f.steps;
    while (trainer.state.step < last) {
      await prepare(trainer.state.step);
      const res = await trainer.step();
      const done = trainer.state.step;
      this.smooth = Number.isNaN(this.smooth) ? res.loss : 0.98 * this.smooth + 0.02 * res.loss;
      windowSum += res.loss;
      windowN++;
      const stopping = done === last || Date.now() > deadline;
      if (done % f.every === 0 || stopping) {
        await trainer.checkpoint(f.ckpt, 1);
        await writeAtomic(`${f.ckpt}/distill.json`, this.record(extra()));
      }
      if (done % f.progress === 0 || stopping) {
        const elapsed = (performance.now() - start) / 1000, rate = (done - first) / elapsed;
        this.history.push({ step: done, loss: windowSum / windowN });
        log(
          `step ${done}/${f.steps}  loss ${res.loss.toFixed(3)}  avg${windowN} ${
            (windowSum / windowN).toFixed(3)
          }  ` +
            `ema ${this.smooth.toFixed(3)}  |g| ${res.gradNorm.toFixed(2)}  lr ${res.lr.toExponential(2)}  ${
              rate.toFixed(2)
            } it/s  elapsed ${formatSeconds(elapsed)}  ETA ${formatSeconds((f.steps - done) / rate)}`,
        );
        windowSum = 0;
        windowN = 0;
      }
      if (f.evalEvery > 0 && done % f.evalEvery === 0) {
        const errors = await heldOut(trainer.state.ema ?? trainer.params);
        const below = median(errors.filter((_, i) => evalT[i] < 0.6));
        this.evalHistory.push({ step: done, median: median(errors), below06: below });
        log(
          `held-out relative error at step ${done}: median ${median(errors).toFixed(3)}  ${
            summary(errors, evalT)
          }`,
        );
      }
      if (stopping && done < last) {
        log(`--max-minutes ${f.maxMinutes} reached: stopping after step ${done}`);
        break;
      }
    }
  }
}

/**
 * The head's trainer for a distillation run: warm-up + cosine learning rate, gradient clipping at norm 1,
 * the weight average of `f.ema`, resumed from `f.ckpt` when it holds a checkpoint. It trains on the batch
 * last given to `feed` (each step prepares one before the step runs).
 */
export async function headTrainer(
  f: {
    seed: number;
    lr: number;
    warmup: number;
    steps: number;
    minLr: number;
    ema: number;
    threads: number;
    parallel: number;
    ckpt: string;
  },
  graph: TrainingGraph,
): Promise<{ trainer: Trainer; feed(batch: Batch | undefined): void }> {
  let current: Batch | undefined;
  const trainer = await Trainer.create(graph, {
    seed: f.seed,
    lr: warmupCosine(f),
    clipNorm: 1,
    ema: f.ema,
    ...parallelSetup(f.threads, f.parallel),
    batch: () => {
      if (!current) throw new Error("no batch prepared");
      return current;
    },
  });
  if (await trainer.resume(f.ckpt)) log(`resumed from ${f.ckpt} at step ${trainer.state.step}`);
  return { trainer, feed: (batch) => (current = batch) };
}

/**
 * The end of a distillation run: model.json names `head.onnx` as the model's head graph (with
 * `head_space: "eps"` where the network does not predict ε: the head's deriv is dε/dγ whatever it
 * predicts), and the run's record goes to the checkpoint folder and beside the model, atomically.
 */
export async function installHead(
  dir: string,
  ckpt: string,
  record: string,
  headSpace?: "eps",
): Promise<void> {
  const manifestPath = `${dir}/model.json`;
  const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  manifest.graphs = { ...manifest.graphs, head: "head.onnx" };
  if (headSpace) manifest.head_space = headSpace;
  await writeAtomic(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  await writeAtomic(`${ckpt}/distill.json`, record);
  await writeAtomic(`${dir}/distill.json`, record);
}

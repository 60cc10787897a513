/**
 * The worker protocol answered in-process (docs/contracts.md §3): one `POST /v1/batch` or `POST /v1/encode`
 * message, planned by the worker's own {@link planBatch} / {@link planEncode}, its solver driven against an
 * evaluator (the in-process engine's, engine.ts) and answered with the worker's own result and error
 * messages (responses.ts). No HTTP, no scheduler: the edge uses it to run small models itself
 * (functions/local.ts), and gets exactly the bodies a worker would have sent.
 *
 * - Progress: with `onProgress`, one `{step, steps, preview?}` per solver step, as the worker's stream
 *   frames carry them (stream.ts): steps 0 … steps − 1 in order, each once, the last before the result;
 *   a message with `stream: true` and `preview: true` gets x̂₀ previews of its first sample.
 * - Cancellation: the signal stops the solve between evaluations and the call rejects with its reason.
 * - Failures: a refused message answers its error body with the HTTP status the worker would have used;
 *   error code `internal` (500) means the evaluation itself failed (the caller may try elsewhere:
 *   nothing was changed).
 */
import { float32ToBytes } from "../core/api/tensor.ts";
import type { Preview } from "../core/api/worker.ts";
import { type AsyncEvaluator, runSolverAsync } from "../core/solvers/drive.ts";
import { asWorkerError } from "./errors.ts";
import { idOf, planBatch, planEncode, type PlannedSolve } from "./requests.ts";
import { errorMessage, resultMessage } from "./responses.ts";
import type { ServedModel } from "./served.ts";

/** The two routes whose messages can be answered in-process. */
export type SolvePath = "/v1/batch" | "/v1/encode";

export interface AnswerOptions {
  /** Aborts the solve between evaluations; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Per solver step, as a worker's progress frames (`stream: true` adds previews when asked). */
  onProgress?: (p: { step: number; steps: number; preview?: Preview }) => void;
  /** Where an internal failure is described (default: nowhere). */
  log?: (line: string) => void;
  /** Clock in ms (default performance.now). */
  now?: () => number;
}

/** A worker's answer: the HTTP status it would have had and its decoded body. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** Answers one protocol message for `model`, evaluating with `evaluate`. */
export async function answerMessage(
  model: ServedModel,
  evaluate: AsyncEvaluator,
  path: SolvePath,
  message: Record<string, unknown>,
  opts: AnswerOptions = {},
): Promise<Answer> {
  const now = opts.now ?? (() => performance.now());
  const log = opts.log ?? (() => {});
  const submitted = now();
  const models = new Map([[model.info.manifest.name, model]]);
  let plan: PlannedSolve;
  try {
    plan = path === "/v1/batch" ? planBatch(message, models) : planEncode(message, models);
  } catch (e) {
    return { status: asWorkerError(e).status, body: errorMessage(e, idOf(message), { log }) };
  }
  let last = -1, started: number | undefined;
  const onProgress = opts.onProgress;
  const progressTo = (step: number, steps: number) => {
    if (!onProgress) return;
    while (last < Math.min(step, steps - 1)) {
      const p = plan.previews?.latest;
      if (p && plan.previews) plan.previews.latest = undefined;
      const preview = p && { step: p.step, shape: p.shape, data: float32ToBytes(p.data) };
      last++;
      onProgress({ step: last, steps, ...(preview ? { preview } : {}) });
    }
  };
  try {
    const result = await runSolverAsync(plan.run, evaluate, {
      signal: opts.signal,
      onStep: (step, steps) => {
        started ??= now();
        progressTo(step, steps);
      },
    });
    const end = now();
    started ??= end;
    const body = resultMessage(plan, {
      ...result,
      queueMs: started - submitted,
      computeMs: end - started,
    });
    progressTo(plan.steps - 1, plan.steps);
    return { status: 200, body };
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    return { status: asWorkerError(e).status, body: errorMessage(e, plan.id, { log }) };
  }
}

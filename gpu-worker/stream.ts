/**
 * Streamed solves (`stream: true` in a `POST /v1/batch` or `/v1/encode` message; core/api/worker.ts,
 * MSGPACK_STREAM): the response is a sequence of msgpack frames, progress as the solver steps, then the
 * result or the error.
 */
import { float32ToBytes } from "../core/api/tensor.ts";
import { frame, MSGPACK_STREAM } from "../core/api/worker.ts";
import { asWorkerError } from "./errors.ts";
import { encodeMessage } from "./protocol.ts";
import type { PlannedSolve } from "./requests.ts";
import { type ErrorContext, errorMessage, errorResponse, resultMessage } from "./responses.ts";
import type { Scheduler } from "./scheduler.ts";

/** What a streamed solve needs of the worker. */
export interface StreamContext extends ErrorContext {
  scheduler: Scheduler;
  /** Streamed responses → the HTTP status their last frame carries, once the stream has ended. */
  streamEnds: WeakMap<Response, Promise<number>>;
}

/**
 * `stream: true` (core/api/worker.ts, MSGPACK_STREAM): a progress frame per solver step as the
 * request's coroutine starts it, then the result or error frame. The response starts once the
 * request is running, so refusals (queue full, shutting down) and failures before the first step
 * keep their HTTP status. A step without evaluations (AFS) still gets its frame; the final
 * denoising evaluation (step === steps) gets none. Closing the connection cancels the request.
 */
export async function solveStreaming(
  plan: PlannedSolve,
  clientSignal: AbortSignal,
  ctx: StreamContext,
): Promise<Response> {
  const { scheduler, log, streamEnds } = ctx;
  const local = new AbortController();
  const finalStatus = Promise.withResolvers<number>();
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  const early: Uint8Array[] = [];
  const send = (value: unknown) => {
    const f = frame(encodeMessage(value));
    if (!controller) early.push(f);
    else {
      try {
        controller.enqueue(f);
      } catch {
        // the client went away: the stream is closed and the request canceled
      }
    }
  };
  let last = -1;
  const progressTo = (step: number, steps: number) => {
    while (last < Math.min(step, steps - 1)) {
      // The latest preview (`preview: true`, core/preview.ts) rides on the next frame.
      const p = plan.previews?.latest;
      if (p && plan.previews) plan.previews.latest = undefined;
      const preview = p && { step: p.step, shape: p.shape, data: float32ToBytes(p.data) };
      send({ v: 1, id: plan.id, progress: { step: ++last, steps, ...(preview ? { preview } : {}) } });
    }
  };
  const started = Promise.withResolvers<void>();
  const result = scheduler.submit({
    model: plan.model,
    run: plan.run,
    priority: plan.priority,
    deadline: plan.deadline,
    signal: AbortSignal.any([clientSignal, local.signal]),
    onStep: (step, steps) => {
      progressTo(step, steps);
      started.resolve();
    },
  });
  const outcome = await Promise.race([
    started.promise.then(() => undefined),
    result.then(() => undefined, (e: unknown) => ({ error: e })),
  ]);
  if (outcome) return errorResponse(outcome.error, plan.id, ctx);
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      for (const f of early.splice(0)) c.enqueue(f);
      const failed = (e: unknown) => {
        send(errorMessage(e, plan.id, ctx, true));
        return asWorkerError(e).status;
      };
      const last = result.then(
        (r) => {
          let message: Record<string, unknown>;
          try {
            message = resultMessage(plan, r);
          } catch (e) {
            return failed(e);
          }
          progressTo(plan.steps - 1, plan.steps);
          send(message);
          return 200;
        },
        failed,
      ).catch((e: unknown) => {
        // the final frame could not be made: the stream ends without it, the worker goes on
        log(`stream ${plan.id}: ${e instanceof Error ? e.stack ?? e.message : e}`);
        return 500;
      }).finally(() => {
        try {
          c.close();
        } catch {
          // already canceled by the client
        }
      });
      finalStatus.resolve(last);
    },
    cancel() {
      local.abort();
    },
  });
  const response = new Response(body, { status: 200, headers: { "content-type": MSGPACK_STREAM } });
  streamEnds.set(response, finalStatus.promise);
  return response;
}

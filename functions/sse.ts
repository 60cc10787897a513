/** Server-sent events: the `text/event-stream` answer of `/v1/samples` (docs/contracts.md §2). */
import { ApiError, CANCELED } from "./errors.ts";

/**
 * A text/event-stream response around `work`, which emits events; a thrown error becomes a `failed`
 * event. Closing the connection (the request's signal, or the stream's cancel) aborts `work`.
 */
export function sseResponse(
  requestSignal: AbortSignal,
  work: (emit: (event: string, data: unknown) => void, signal: AbortSignal) => Promise<void>,
): Response {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(CANCELED);
  if (requestSignal.aborted) onAbort();
  else requestSignal.addEventListener("abort", onAbort, { once: true });
  const enc = new TextEncoder();
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      let closed = false;
      const write = (text: string) => {
        if (closed) return;
        try {
          controller.enqueue(enc.encode(text));
        } catch {
          closed = true;
        }
      };
      const emit = (event: string, data: unknown) =>
        write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      heartbeat = setInterval(() => write(": keep-alive\n\n"), 15_000);
      work(emit, ctl.signal)
        .catch((e) => {
          const err = e instanceof ApiError ? e : new ApiError(500, "internal", "internal error");
          emit("failed", { status: err.status, ...err.body() });
        })
        .finally(() => {
          clearInterval(heartbeat);
          requestSignal.removeEventListener("abort", onAbort);
          if (!closed) {
            closed = true;
            try {
              controller.close();
            } catch { /* already closed */ }
          }
        });
    },
    cancel() {
      clearInterval(heartbeat);
      ctl.abort(CANCELED);
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    },
  });
}

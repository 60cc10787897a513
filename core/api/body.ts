/** Request bodies read with a size limit, as the edge and the worker both do (web-standard only). */

/**
 * Reads a body stream to its end, or stops as soon as more than `limit` bytes have arrived: the stream
 * is then cancelled and the result is undefined (the caller answers 413). Read errors propagate.
 */
export async function readWithin(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limit: number,
): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** A request body read within a limit: its bytes, or why there are none. */
export type BodyRead =
  | { ok: true; bytes: Uint8Array }
  | { ok: false; reason: "too_large"; declared?: number }
  | { ok: false; reason: "unreadable"; message: string }
  | { ok: false; reason: "timeout"; ms: number };

/** How long a request body may take to arrive by default (ms): a slow or idle client is cut off (408). */
export const DEFAULT_BODY_TIMEOUT_MS = 30_000;

/**
 * Reads a request body of at most `limit` bytes. A Content-Length over the limit is refused before
 * reading (`declared` is set) and a streamed body is cut off as soon as it passes the limit; either way
 * the body is cancelled. A body that fails while being read (the client went away) is "unreadable"; one
 * that has not arrived whole within `timeoutMs` (default {@link DEFAULT_BODY_TIMEOUT_MS}; 0 = no limit)
 * is cancelled and is a "timeout", so a client that sends its body slowly or not at all cannot hold
 * the request open.
 */
export async function readRequestBody(
  req: Request,
  limit: number,
  timeoutMs = DEFAULT_BODY_TIMEOUT_MS,
): Promise<BodyRead> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    await req.body?.cancel().catch(() => {});
    return { ok: false, reason: "too_large", declared };
  }
  if (!req.body) return { ok: true, bytes: new Uint8Array(0) };
  const reader = req.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"timeout">((resolve) => {
    if (timeoutMs > 0) timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const reading = readWithin(reader, limit);
  // after a timeout the read still pending ends with the cancel: its outcome is not wanted
  reading.catch(() => {});
  try {
    const bytes = await Promise.race([reading, expired]);
    if (bytes === "timeout") {
      await reader.cancel().catch(() => {});
      return { ok: false, reason: "timeout", ms: timeoutMs };
    }
    return bytes ? { ok: true, bytes } : { ok: false, reason: "too_large" };
  } catch (e) {
    return { ok: false, reason: "unreadable", message: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
  }
}

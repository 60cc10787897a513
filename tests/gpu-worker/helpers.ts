/**
 * Shared pieces of the worker tests: an independent msgpack implementation (@msgpack/msgpack, not the
 * worker's msgpackr) to build requests and read responses, and a worker app on the repository's models.
 */
import { decode, encode } from "@msgpack/msgpack";
import { createWorkerApp, type WorkerApp, type WorkerConfig } from "../../gpu-worker/app.ts";

export const MSGPACK = "application/msgpack";

/** Worker options for tests: CPU only, 2 ORT threads, quiet. */
export function testConfig(extra: WorkerConfig = {}): WorkerConfig {
  return { providers: ["cpu"], intraOpThreads: 2, log: () => {}, ...extra };
}

export function startApp(extra: WorkerConfig = {}): Promise<WorkerApp> {
  return createWorkerApp(testConfig(extra));
}

export interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** POSTs a msgpack body (encoded with @msgpack/msgpack) and decodes the reply the same way. */
export async function post(
  app: WorkerApp,
  path: string,
  message: unknown,
  init: { headers?: Record<string, string>; signal?: AbortSignal; raw?: Uint8Array } = {},
): Promise<Reply> {
  const body = init.raw ?? encode(message);
  const res = await app.request(path, {
    method: "POST",
    body: body as BodyInit,
    headers: { "content-type": MSGPACK, ...init.headers },
    signal: init.signal,
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body: decode(bytes) as Record<string, unknown> };
}

/** The little-endian float32 values of a `bin` field. */
export function floats(bytes: unknown): Float32Array {
  if (!(bytes instanceof Uint8Array)) throw new Error(`expected bytes, got ${typeof bytes}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

/** Float32 values as little-endian bytes. */
export function bytesOf(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return out;
}

/** The error object of an error reply. */
export function errorOf(r: Reply): { code: string; message: string; field?: string } {
  return r.body.error as { code: string; message: string; field?: string };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `cond()` holds (polling), or fails after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

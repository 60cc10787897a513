/** Shared helpers of the functions/ tests. */
import { decode } from "@msgpack/msgpack";
import { createApp, type EdgeApp } from "../../functions/app.ts";
import type { EdgeConfig } from "../../functions/config.ts";
import { type FakeWorker, type FakeWorkerOptions, startFakeWorker } from "./fake_worker.ts";

export const quiet = () => {};

/** An app in front of a fresh in-process fake worker; both are closed after `fn`. */
export async function withFake(
  fn: (app: EdgeApp, worker: FakeWorker) => Promise<void>,
  config: Partial<EdgeConfig> = {},
  workerOptions: FakeWorkerOptions = {},
): Promise<void> {
  const worker = await startFakeWorker(workerOptions);
  const app = createApp({ workerUrls: [worker.url], log: quiet, ...config });
  try {
    await fn(app, worker);
  } finally {
    await app.close();
    await worker.close();
  }
}

export function post(
  app: EdgeApp,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body as BodyInit : JSON.stringify(body),
  }));
}

/** The error body of a response, checking its shape. */
export async function errorOf(
  res: Response,
): Promise<{ code: string; message: string; details?: { path: unknown[]; message: string }[] }> {
  const body = await res.json();
  if (!body || typeof body.error?.code !== "string" || typeof body.error?.message !== "string") {
    throw new Error(`not an error body: ${JSON.stringify(body)}`);
  }
  return body.error;
}

export async function msgpackOf(res: Response): Promise<Record<string, unknown>> {
  return decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
}

/** Parses a text/event-stream body into events. */
export function parseSse(text: string): { event: string; data: unknown }[] {
  return text.split("\n\n").filter((b) => b.trim() && !b.startsWith(":")).map((block) => {
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    return { event, data: data ? JSON.parse(data) : null };
  });
}

export { freePort } from "../../functions/child.ts";

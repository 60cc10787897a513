/**
 * A small stand-in for the GPU worker speaking the worker protocol (docs/contracts.md §3) on 127.0.0.1:
 * GET /healthz, GET /v1/models, POST /v1/batch, POST /v1/encode, with HMAC verification. Sample i of
 * seed s is a deterministic function of (s, i) so tests can check routing, chunking and seeds.
 *
 * In-process: `startFakeWorker(options)`. As a process (so tests can kill it):
 * `deno run -A tests/functions/fake_worker.ts [--port 0] [--delay-ms 0] [--secret S]`, which prints
 * `listening on http://127.0.0.1:PORT`.
 */
import { decode, encode } from "@msgpack/msgpack";
import {
  BatchRequest,
  EncodeBatchRequest,
  NONCE_HEADER,
  SIGNATURE_HEADER,
  signedPath,
  signRequest,
  TIMESTAMP_HEADER,
} from "../../core/api/worker.ts";
import { float32FromBytes } from "../../core/api/tensor.ts";

export const FAKE_MODEL = {
  name: "mnist-mix",
  version: "1",
  shape: [1, 28, 28],
  classes: { count: 10, null_class: 10 },
  schedule: { type: "vp-linear", beta_min: 0.1, beta_max: 20 },
  solvers: ["ddim", "genie", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "ipndm"],
  derivatives: ["exact", "jvp", "fd"],
  limits: { max_batch: 8, max_n: 64, max_steps: 200, max_nfe: 400, guidance: { min: 0, max: 10 } },
};

export const VECTOR_MODEL = {
  name: "gmm-2d",
  shape: [2],
  schedule: { type: "vp-linear" },
  solvers: ["ddim", "genie"],
  derivatives: ["exact"],
  limits: { max_batch: 64 },
};

/** The fake worker's value of element `i` of the sample with seed `s`. */
export function fakeValue(seed: number, i: number): number {
  return Math.sin(seed * 0.37 + i * 0.05);
}

export interface FakeWorkerOptions {
  port?: number;
  secret?: string;
  models?: unknown[];
  /** Milliseconds each batch takes. */
  delayMs?: number;
  /** Answer every batch with this error instead. */
  fail?: { status: number; code: string; message: string };
  /**
   * Honour `stream: true` on /v1/batch (length-prefixed msgpack frames: one progress frame per step,
   * then the result). Off by default: the fake then answers plainly, like a worker without streaming.
   */
  stream?: boolean;
  /** Streamed progress frames claim this step count (a faulty worker) instead of the request's. */
  claimSteps?: number;
  /**
   * Streamed answers send their progress frames this many milliseconds apart (after `delayMs`), so a
   * request is seen running step by step; a client that goes away stops the stream (counted in
   * `aborted`). Default 0: every frame at once.
   */
  stepMs?: number;
}

export interface FakeWorker {
  url: string;
  port: number;
  options: FakeWorkerOptions;
  /** Batches received (decoded), in arrival order. */
  batches: Record<string, unknown>[];
  /** Batches whose client went away before they finished. */
  aborted: number;
  /** Batches being computed now. */
  active: number;
  close(): Promise<void>;
}

function reply(status: number, body: unknown): Response {
  return new Response(encode(body, { ignoreUndefined: true }) as BodyInit, {
    status,
    headers: { "content-type": "application/msgpack" },
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export function startFakeWorker(options: FakeWorkerOptions = {}): Promise<FakeWorker> {
  const models = options.models ?? [FAKE_MODEL, VECTOR_MODEL];
  const state = { batches: [] as Record<string, unknown>[], aborted: 0, active: 0 };

  async function handler(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/healthz") return Response.json({ ok: true });
    if (req.method === "GET" && path === "/v1/models") return Response.json({ models });
    if (req.method !== "POST" || (path !== "/v1/batch" && path !== "/v1/encode")) {
      return reply(404, { v: 1, error: { code: "not_found", message: path } });
    }
    const body = new Uint8Array(await req.arrayBuffer());
    if (options.secret) {
      const timestamp = Number(req.headers.get(TIMESTAMP_HEADER));
      const nonce = req.headers.get(NONCE_HEADER) ?? "";
      const want = await signRequest(options.secret, {
        method: "POST",
        path: signedPath(req.url),
        body,
        timestamp,
        nonce,
      });
      if (req.headers.get(SIGNATURE_HEADER) !== want[SIGNATURE_HEADER]) {
        return reply(401, { v: 1, error: { code: "unauthorized", message: "bad signature" } });
      }
    }
    let msg: Record<string, unknown>;
    try {
      msg = decode(body) as Record<string, unknown>;
    } catch {
      return reply(400, { v: 1, error: { code: "bad_request", message: "malformed msgpack" } });
    }
    state.batches.push(msg);
    const schema = path === "/v1/batch" ? BatchRequest : EncodeBatchRequest;
    const parsed = schema.safeParse(msg);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      return reply(422, {
        v: 1,
        id: msg.id,
        error: { code: "invalid", message: `${i.path.join(".")}: ${i.message}` },
      });
    }
    if (options.fail) {
      const f = options.fail;
      return reply(f.status, { v: 1, id: msg.id, error: { code: f.code, message: f.message } });
    }
    const model = models.find((m) => (m as { name: string }).name === msg.model) as
      | typeof FAKE_MODEL
      | undefined;
    if (!model) {
      return reply(404, { v: 1, id: msg.id, error: { code: "unknown_model", message: "model: unknown" } });
    }
    state.active++;
    const ok = await sleep(options.delayMs ?? 0, req.signal);
    state.active--;
    if (!ok) {
      state.aborted++;
      return reply(499, { v: 1, id: msg.id, error: { code: "canceled", message: "client went away" } });
    }
    const per = model.shape.reduce((a, b) => a * b, 1);
    const steps = (msg.steps as number | undefined) ?? (msg.nfe as number);
    const jvp = msg.genie_derivative === "jvp";
    let values: Float32Array, n: number;
    if (path === "/v1/batch") {
      const seeds = msg.seeds as number[];
      n = seeds.length;
      values = new Float32Array(n * per);
      if (msg.latents) {
        const lat = float32FromBytes(msg.latents as Uint8Array);
        for (let i = 0; i < values.length; i++) values[i] = Math.max(-1, Math.min(1, lat[i] * 0.5));
      } else {
        seeds.forEach((s, k) => {
          for (let i = 0; i < per; i++) values[k * per + i] = fakeValue(s, i);
        });
      }
    } else {
      const img = float32FromBytes(msg.images as Uint8Array);
      n = img.length / per;
      values = img.map((v) => v * 2);
    }
    const result = {
      v: 1,
      id: msg.id,
      shape: [n, ...model.shape],
      data: new Uint8Array(values.buffer),
      nfe: steps,
      // GENIE's jvp derivative: an eps and a JVP call per step, the JVP priced at an estimated 2.5.
      calls: jvp ? 2 * steps : steps,
      cost: jvp ? 3.5 * steps : steps,
      cost_estimated: jvp,
      steps,
      grid: (msg.grid as string | undefined) ?? "quadratic",
      ...(msg.grid === undefined ? { rho: 2 } : {}),
      timings: { queue_ms: 1, compute_ms: options.delayMs ?? 0 },
    };
    if (!(options.stream && msg.stream === true)) return reply(200, result);
    // With `preview: true`, every frame after the first carries a preview of the previous step: the
    // first sample's final values scaled by how far the run is (a stand-in for x̂₀).
    const previewOf = (step: number) => {
      const x0 = values.slice(0, per).map((v) => v * (step + 1) / steps);
      return { step, shape: model.shape, data: new Uint8Array(x0.buffer) };
    };
    const progress = Array.from(
      { length: steps },
      (_, step) => ({
        v: 1,
        id: msg.id,
        progress: options.claimSteps === undefined
          ? { step, steps, ...(msg.preview === true && step > 0 ? { preview: previewOf(step - 1) } : {}) }
          : { step: options.claimSteps - steps + step, steps: options.claimSteps },
      }),
    );
    const frames = [...progress, result].map((m) => {
      const body = encode(m);
      const out = new Uint8Array(4 + body.byteLength);
      new DataView(out.buffer).setUint32(0, body.byteLength);
      out.set(body, 4);
      return out;
    });
    const stepMs = options.stepMs ?? 0;
    if (stepMs > 0) state.active++;
    const gone = new AbortController();
    const onGone = () => gone.abort();
    req.signal.addEventListener("abort", onGone, { once: true });
    return new Response(
      new ReadableStream({
        async start(c) {
          try {
            for (const [i, f] of frames.entries()) {
              if (stepMs > 0 && i > 0 && !(await sleep(stepMs, gone.signal))) {
                state.aborted++;
                return;
              }
              c.enqueue(f);
            }
            c.close();
          } catch {
            // the client went away
          } finally {
            req.signal.removeEventListener("abort", onGone);
            if (stepMs > 0) state.active--;
          }
        },
        cancel() {
          gone.abort();
        },
      }),
      { status: 200, headers: { "content-type": "application/x-msgpack-stream" } },
    );
  }

  const listening = Promise.withResolvers<number>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen: ({ port }) => listening.resolve(port) },
    handler,
  );
  return listening.promise.then((port) => ({
    url: `http://127.0.0.1:${port}`,
    port,
    options,
    get batches() {
      return state.batches;
    },
    get aborted() {
      return state.aborted;
    },
    get active() {
      return state.active;
    },
    close: async () => {
      await server.shutdown();
    },
  }));
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 ? Deno.args[i + 1] : undefined;
  };
  const w = await startFakeWorker({
    port: Number(arg("--port") ?? 0),
    delayMs: Number(arg("--delay-ms") ?? 0),
    secret: arg("--secret"),
    stream: Deno.args.includes("--stream"),
    stepMs: Number(arg("--step-ms") ?? 0),
  });
  console.log(`listening on ${w.url}`);
}

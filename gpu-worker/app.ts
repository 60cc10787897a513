/**
 * The worker's HTTP application (docs/contracts.md §3) as a fetch handler, so tests call it without
 * sockets and the entry point (main.ts) only serves it:
 *
 *     const app = await createWorkerApp({ modelsDir: "models" });
 *     const res = await app.fetch(new Request("http://worker/v1/batch", { method: "POST", body }));
 *     await app.shutdown();   // drains in-flight requests, then releases the sessions
 *
 * A crashed inference thread is restarted (supervisor.ts); /healthz says "restarting" meanwhile.
 *
 * Routes: `POST /v1/batch`, `POST /v1/encode` (msgpack), `GET /v1/models` (JSON, or msgpack when
 * asked), `GET /healthz`, `GET /metrics` (Prometheus text), `POST /v1/admin/reload` (JSON; see
 * {@link WorkerApp.reload}). With a secret, every route except
 * /healthz and /metrics needs a request signature (protocol.ts): `x-genie-signature: sha256=<hex>`, the
 * HMAC of method, path, `x-genie-timestamp`, `x-genie-nonce` and body; a timestamp outside the window
 * (default ±60 s) or a signature already accepted is refused with 401.
 * Errors are msgpack `{v:1, id, error:{code, message, field?}}` with the matching status.
 *
 * The parts: the configuration (config.ts), the models served and their listing (serving.ts), reloads
 * (reload.ts), response bodies and errors (responses.ts), streamed solves (stream.ts).
 */
import { DEFAULT_BODY_TIMEOUT_MS } from "../core/api/body.ts";
import { MSGPACK } from "../core/api/worker.ts";
import { env, windowFromEnv, type WorkerConfig } from "./config.ts";
import { WorkerError } from "./errors.ts";
import { WorkerMetrics } from "./metrics.ts";
import { defaultModelsDir, type ModelRegistry } from "./models.ts";
import { acceptsMsgpackBody, decodeMessage, readBody, SignatureVerifier } from "./protocol.ts";
import { createReload, type ReloadReport } from "./reload.ts";
import { idOf, planBatch, planEncode, type PlannedSolve } from "./requests.ts";
import { errorResponse, jsonResponse, msgpackResponse, resultMessage, wantsMsgpack } from "./responses.ts";
import { Scheduler } from "./scheduler.ts";
import type { ServedModel } from "./served.ts";
import { describeModels, startServing, type WorkerState } from "./serving.ts";
import { solveStreaming } from "./stream.ts";
import { SupervisedInference } from "./supervisor.ts";

export type { WorkerConfig } from "./config.ts";
export type { ReloadReport } from "./reload.ts";

export interface WorkerApp {
  /** The web-standard fetch handler. */
  fetch(req: Request): Promise<Response>;
  /** `fetch` on a path of this app (`app.request("/healthz")`), for tests. */
  request(path: string, init?: RequestInit): Promise<Response>;
  /** Refuses new work, waits for in-flight requests, then releases the models. */
  shutdown(): Promise<void>;
  readonly scheduler: Scheduler;
  readonly models: Map<string, ServedModel>;
  readonly metrics: WorkerMetrics;
  readonly registry: ModelRegistry;
  /** The execution provider each model runs on. */
  readonly providers: Record<string, string>;
  /**
   * Picks up new, changed and removed model folders without a restart (SIGHUP and `POST
   * /v1/admin/reload`): only folders whose fingerprint changed (models.ts `folderFingerprint`) load again;
   * a changed model's new version serves new requests while the requests in flight finish on the old
   * one, whose sessions are released after its last request; a new version that fails leaves the old one
   * serving (its listing says `reload_error`); a removed folder's model takes no new requests. Reloads
   * run one at a time.
   */
  reload(): Promise<ReloadReport>;
}

/** Loads the models, starts the inference thread and returns the application. */
export async function createWorkerApp(config: WorkerConfig = {}): Promise<WorkerApp> {
  const log = config.log ?? ((line: string) => console.error(line));
  const modelsDir = config.modelsDir ?? env("GENIE_MODELS_DIR") ?? defaultModelsDir();
  const secret = config.secret ?? env("GENIE_WORKER_SECRET") ?? undefined;
  const verifier = secret
    ? new SignatureVerifier(secret, { windowS: config.signatureWindowS ?? windowFromEnv() })
    : undefined;
  const maxBody = config.maxBodyBytes ?? 32 * 1024 * 1024;
  const bodyTimeoutMs = config.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  const retryAfter = String(config.retryAfterS ?? 1);
  const serving = await startServing(config, modelsDir, log);
  const { registry, inference, providers, models, cap } = serving;
  // A restarting inference thread (the default backend, or one given as config.inference).
  const supervised = inference instanceof SupervisedInference ? inference : undefined;
  const metrics = new WorkerMetrics();
  const scheduler = new Scheduler(inference, {
    maxBatch: cap,
    maxWaitMs: config.maxWaitMs,
    maxQueue: config.maxQueue,
    quantumMs: config.quantumMs,
    onBatch: (b) => metrics.batch(b.model, b.graph, b.rows, b.ms),
  });
  let closed: Promise<void> | undefined;
  const state: WorkerState = {
    ...serving,
    config,
    modelsDir,
    log,
    scheduler,
    loading: new Set<string>(),
    reloadErrors: new Map<string, string>(),
    closed: () => closed !== undefined,
  };
  const describe = () => describeModels(state);
  const reload = createReload(state);
  const answer = { log, retryAfter };

  /** Streamed responses → the HTTP status their last frame carries, once the stream has ended. */
  const streamEnds = new WeakMap<Response, Promise<number>>();

  async function solve(req: Request, kind: "batch" | "encode"): Promise<Response> {
    let id: string | undefined;
    try {
      if (!acceptsMsgpackBody(req.headers.get("content-type"))) {
        throw new WorkerError("unsupported_media_type", `the body must be ${MSGPACK}`);
      }
      const body = await readBody(req, maxBody, bodyTimeoutMs);
      if (verifier) await verifier.verify(req, body);
      const msg = decodeMessage(body);
      id = idOf(msg);
      const plan: PlannedSolve = kind === "batch" ? planBatch(msg, models) : planEncode(msg, models);
      if (plan.stream) {
        return await solveStreaming(plan, req.signal, { scheduler, log, retryAfter, streamEnds });
      }
      const result = await scheduler.submit({
        model: plan.model,
        run: plan.run,
        priority: plan.priority,
        deadline: plan.deadline,
        signal: req.signal,
      });
      return msgpackResponse(resultMessage(plan, result));
    } catch (e) {
      return errorResponse(e, id, answer);
    }
  }

  async function authorizeGet(req: Request): Promise<void> {
    if (verifier) await verifier.verify(req, new Uint8Array(0));
  }

  async function route(req: Request, path: string): Promise<Response> {
    const method = req.method.toUpperCase();
    const only = (m: string) => {
      if (method !== m && !(m === "GET" && method === "HEAD")) {
        throw new WorkerError("method_not_allowed", `${path} takes ${m}`);
      }
    };
    switch (path) {
      case "/healthz": {
        only("GET");
        const failure = inference.failure;
        const status = failure
          ? "failed"
          : scheduler.draining
          ? "draining"
          : supervised?.restarting
          ? "restarting"
          : "ok";
        const crash = supervised?.lastCrash;
        return jsonResponse(
          {
            status,
            ...(failure ? { error: `inference thread failed: ${failure.message}` } : {}),
            ...(status === "restarting" ? { error: `inference thread crashed: ${crash}; restarting` } : {}),
            inference_restarts: supervised?.restarts ?? 0,
            ...(crash !== undefined ? { last_crash: crash } : {}),
            models: [...models.keys()],
            providers,
            in_flight: scheduler.inFlight,
            queued_samples: scheduler.queuedSamples,
            auth: secret ? "signed" : "open",
            ...(registry.errors.length ? { skipped_models: registry.errors } : {}),
          },
          status === "ok" ? 200 : 503,
          status === "ok" ? {} : { "retry-after": retryAfter },
        );
      }
      case "/v1/models": {
        only("GET");
        await authorizeGet(req);
        return wantsMsgpack(req) ? msgpackResponse(describe()) : jsonResponse(describe());
      }
      case "/metrics":
        only("GET");
        return new Response(
          metrics.render({
            inFlight: scheduler.inFlight,
            queuedSamples: scheduler.queuedSamples,
            maxQueue: scheduler.maxQueue,
            inferenceRestarts: supervised?.restarts ?? 0,
          }),
          { headers: { "content-type": "text/plain; version=0.0.4" } },
        );
      case "/v1/batch":
        only("POST");
        return await solve(req, "batch");
      case "/v1/encode":
        only("POST");
        return await solve(req, "encode");
      case "/v1/admin/reload": {
        only("POST");
        const body = await readBody(req, maxBody, bodyTimeoutMs);
        if (verifier) await verifier.verify(req, body);
        const report = await reload();
        return jsonResponse({ ...report, models: describe() });
      }
      default:
        throw new WorkerError("not_found", `no route ${path}`);
    }
  }

  async function fetch(req: Request): Promise<Response> {
    const t0 = performance.now();
    const path = new URL(req.url).pathname;
    let res: Response;
    try {
      res = await route(req, path);
    } catch (e) {
      res = errorResponse(e, undefined, answer);
    }
    const known = ["/healthz", "/v1/models", "/metrics", "/v1/batch", "/v1/encode", "/v1/admin/reload"]
      .includes(path);
    const record = (status: number) =>
      metrics.request(known ? path : "other", status, (performance.now() - t0) / 1000);
    // a stream is counted when it ends, with the status of its last frame
    const streamEnd = streamEnds.get(res);
    if (streamEnd) void streamEnd.then(record);
    else record(res.status);
    return res;
  }

  return {
    fetch,
    request: (path, init) => fetch(new Request(new URL(path, "http://worker.local"), init)),
    shutdown: () => {
      closed ??= (async () => {
        await scheduler.drain();
        await inference.close();
      })();
      return closed;
    },
    scheduler,
    models,
    metrics,
    registry,
    providers,
    reload,
  };
}

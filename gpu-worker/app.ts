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
 */
import { DEFAULT_BODY_TIMEOUT_MS } from "../core/api/body.ts";
import { float32ToBytes } from "../core/api/tensor.ts";
import { costFields } from "../core/cost.ts";
import { solverAliases, solverNames } from "../core/solvers/registry.ts";
import type { Provider } from "../onnx/ort.ts";
import { asWorkerError, WorkerError } from "./errors.ts";
import type { Inference, LoadedModelReport } from "./inference.ts";
import { type GraphKind, samplingDefaults } from "./manifest.ts";
import { WorkerMetrics } from "./metrics.ts";
import { join } from "node:path";
import {
  defaultModelsDir,
  folderFingerprint,
  loadModelFolder,
  loadRegistry,
  modelFolders,
  type ModelRegistry,
} from "./models.ts";
import {
  acceptsMsgpackBody,
  decodeMessage,
  DEFAULT_SIGNATURE_WINDOW_S,
  encodeMessage,
  readBody,
  SignatureVerifier,
} from "./protocol.ts";
import { derivativesOf, idOf, modelLimits, planBatch, planEncode, type PlannedSolve } from "./requests.ts";
import { Scheduler, type ServedModel, type SolveResult } from "./scheduler.ts";
import { type RestartPolicy, SupervisedInference } from "./supervisor.ts";
import { frame, MSGPACK, MSGPACK_STREAM } from "../core/api/worker.ts";

export interface WorkerConfig {
  /** The models directory (default GENIE_MODELS_DIR or `models/`). */
  modelsDir?: string;
  /** Serve only these models (default: every valid folder). */
  models?: string[];
  /** Shared secret for request signatures; none = open (default GENIE_WORKER_SECRET). */
  secret?: string;
  /**
   * Signed requests are accepted when their timestamp is within this many seconds of the worker's
   * clock (default GENIE_SIGNATURE_WINDOW_S, else 60); the same signature is accepted once.
   */
  signatureWindowS?: number;
  /** Largest request body in bytes (default 32 MiB). */
  maxBodyBytes?: number;
  /**
   * How long a request body may take to arrive, in ms (default GENIE_WORKER_BODY_TIMEOUT_MS, else
   * 30 000; 0 = no limit): past it the body is cancelled and the answer is 408.
   */
  bodyTimeoutMs?: number;
  /** Samples per inference call (default 64; each model's limits.max_batch applies too). */
  maxBatch?: number;
  /** How long a batch with room left may wait for more samples (default 0 ms). */
  maxWaitMs?: number;
  /** Requests in flight at most before 429 (default 256). */
  maxQueue?: number;
  /** Inference time a request earns per turn when requests compete (ms; scheduler.ts). Default 20. */
  quantumMs?: number;
  /** Retry-After seconds on 429/503 (default 1). */
  retryAfterS?: number;
  /** Execution providers to try in order (default cuda, then cpu). */
  providers?: Provider[];
  /** ORT intra-op threads (default: ORT's choice). */
  intraOpThreads?: number;
  /** Whether ORT's intra-op threads spin-wait after each call (default true: ORT's own default). */
  spinning?: boolean;
  /** Warm-up call per graph at start (default true). */
  warmup?: boolean;
  /** Build missing analytic models at start (default true). */
  build?: boolean;
  /** The inference thread's module (default: inference_thread.ts, or GENIE_INFERENCE_THREAD). */
  threadUrl?: URL;
  /** Restarts of a crashed inference thread: backoff and when to give up (supervisor.ts). */
  restart?: RestartPolicy;
  /** Use this inference backend instead of starting the thread (tests). */
  inference?: Inference;
  log?: (line: string) => void;
}

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

/** What a reload did, by model (folder) name. */
export interface ReloadReport {
  added: string[];
  changed: string[];
  removed: string[];
  unchanged: string[];
  /** Folders that failed to load; `serving` says when the model's previous version still serves. */
  failed: { name: string; error: string; serving?: "previous version" }[];
  ms: number;
}

const env = (name: string): string | undefined => {
  try {
    return (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
  } catch {
    return undefined;
  }
};

/** GENIE_SIGNATURE_WINDOW_S (seconds, > 0), or the default; a bad value throws naming the variable. */
function windowFromEnv(): number {
  const raw = env("GENIE_SIGNATURE_WINDOW_S");
  if (raw === undefined || raw.trim() === "") return DEFAULT_SIGNATURE_WINDOW_S;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(
      `GENIE_SIGNATURE_WINDOW_S: must be a positive number of seconds, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

function jsonResponse(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function msgpackResponse(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(encodeMessage(value) as BodyInit, {
    status,
    headers: { "content-type": MSGPACK, ...headers },
  });
}

function wantsMsgpack(req: Request): boolean {
  const accept = req.headers.get("accept") ?? "";
  return accept.includes("msgpack") && !accept.includes("json");
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
  const registry = await loadRegistry(modelsDir, { only: config.models, build: config.build, log });
  if (registry.models.size === 0) {
    const why = registry.errors.map((e) => `${e.folder}: ${e.message}`).join("; ");
    throw new Error(`no usable model in ${modelsDir}${why ? ` (${why})` : ""}`);
  }
  let infos = [...registry.models.values()];
  let inference: Inference;
  const providers: Record<string, string> = {};
  const inputs = new Map<string, Partial<Record<GraphKind, string[]>>>();
  if (config.inference) {
    inference = config.inference;
    for (const info of infos) {
      providers[info.manifest.name] = "test";
      const cls = info.manifest.classes ? ["class"] : [];
      inputs.set(info.manifest.name, {
        eps: ["x", "t", ...cls],
        head: ["x", "t", ...cls],
        jvp: ["x", "t", ...cls],
      });
    }
  } else {
    const thread = await SupervisedInference.start(infos, {
      providers: config.providers ?? ["cuda", "cpu"],
      intraOpThreads: config.intraOpThreads,
      spinning: config.spinning,
      warmup: config.warmup,
    }, {
      ...config.restart,
      url: config.threadUrl,
      log,
      onRestart: (reports: Map<string, LoadedModelReport>) => {
        for (const [key, report] of reports) {
          // a version loaded by a reload has its own name in the thread (ServedModel.key); one being
          // retired after a reload is not listed
          const name = [...models.values()].find((m) => (m.key ?? m.info.manifest.name) === key)?.info
            .manifest.name;
          if (name === undefined) continue;
          if (providers[name] !== report.provider) {
            log(`model ${name}: ${report.provider} after the restart (was ${providers[name]})`);
            providers[name] = report.provider;
          }
        }
      },
    });
    inference = thread;
    // A model ONNX Runtime refused, or whose batch-1 warm-up failed, is skipped like a bad folder.
    for (const [name, message] of thread.failed) {
      const info = registry.models.get(name);
      const folder = info ? info.dir.split(/[\\/]/).filter(Boolean).pop() ?? name : name;
      registry.models.delete(name);
      registry.errors.push({ folder, message: `${name}: ${message}` });
      log(`skipping model folder ${folder}: ${name}: ${message}`);
    }
    infos = infos.filter((i) => !thread.failed.has(i.manifest.name));
    if (infos.length === 0) {
      await thread.close();
      const why = registry.errors.map((e) => `${e.folder}: ${e.message}`).join("; ");
      throw new Error(`no usable model in ${modelsDir} (${why})`);
    }
    for (const [name, report] of thread.models) {
      providers[name] = report.provider;
      inputs.set(name, report.inputs as Partial<Record<GraphKind, string[]>>);
      const skipped = Object.entries(report.skipped).map(([p, why]) =>
        `${p} unavailable (${why.split("\n")[0]})`
      );
      log(
        `model ${name}: ${report.provider}${skipped.length ? `; ${skipped.join("; ")}` : ""}; ` +
          `loaded in ${report.loadMs.toFixed(0)} ms, warm-up ${report.warmupMs.toFixed(0)} ms`,
      );
    }
  }
  const models = new Map<string, ServedModel>();
  const cap = config.maxBatch ?? 64;
  for (const info of infos) {
    models.set(info.manifest.name, {
      info,
      inputs: inputs.get(info.manifest.name) ?? {},
      maxBatch: Math.min(cap, info.manifest.limits.max_batch),
    });
  }
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
  /** Folders a reload is loading now (a changed model's old version serves meanwhile). */
  const loading = new Set<string>();
  /** Why a changed model's new version failed to load (its previous version serves). */
  const reloadErrors = new Map<string, string>();

  const describe = () => [
    ...[...models.values()].map((m) => {
      const man = m.info.manifest;
      return {
        name: man.name,
        version: man.version,
        shape: man.shape,
        prediction: man.prediction,
        ...(man.classes ? { classes: man.classes } : {}),
        schedule: man.schedule,
        time: man.time,
        solvers: solverNames(),
        // other names requests may give a solver, e.g. {"DPM++ 2M": "dpmpp-2m", euler: "ddim"}
        solver_aliases: solverAliases(),
        derivatives: derivativesOf(m),
        // e.g. {jvp: {reason: "cannot differentiate operator(s) Elu: …", operators: ["Elu"]}}
        ...(m.info.unavailable ? { unavailable_derivatives: m.info.unavailable } : {}),
        graphs: Object.keys(man.graphs),
        // graphs the worker made itself (the JVP graph of a model that ships only eps)
        ...(m.info.derived?.length ? { derived_graphs: m.info.derived } : {}),
        limits: modelLimits(m),
        // default_grids, costs, estimated_costs
        ...samplingDefaults(m.info, solverNames()),
        provider: providers[man.name],
        ...(man.analytic ? { analytic: true, head: "exact" } : {}),
        ...(man.description ? { description: man.description } : {}),
        status: "ready",
        // a reload is loading its new version, or failed to (this version still serves)
        ...(loading.has(man.name) ? { reload: "loading" } : {}),
        ...(reloadErrors.has(man.name) ? { reload_error: reloadErrors.get(man.name) } : {}),
      };
    }),
    // new folders a reload is loading
    ...[...loading].filter((n) => !models.has(n)).map((name) => ({ name, status: "loading" })),
    // folders that could not be loaded: named, with why (clients skip entries whose status is not ready)
    ...registry.errors.filter((e) => !loading.has(e.folder)).map((e) => ({
      name: e.folder,
      status: "failed",
      error: e.message,
    })),
  ];

  /** Releases a model version's sessions once no request uses it any more. */
  const retire = (m: ServedModel) => {
    const key = m.key ?? m.info.manifest.name;
    void scheduler.whenIdle(m).then(() => inference.unload?.([key])).then(
      () =>
        log(`model ${m.info.manifest.name}: released ${key === m.info.manifest.name ? "its" : key} sessions`),
      (e) => log(`model ${m.info.manifest.name}: releasing ${key}: ${e instanceof Error ? e.message : e}`),
    );
  };
  let generation = 0;

  async function reloadNow(): Promise<ReloadReport> {
    if (scheduler.draining || closed) throw new WorkerError("unavailable", "the worker is shutting down");
    const t0 = performance.now();
    const report: ReloadReport = { added: [], changed: [], removed: [], unchanged: [], failed: [], ms: 0 };
    let folders: string[];
    try {
      folders = modelFolders(modelsDir, config.models);
    } catch (e) {
      throw new WorkerError("internal", `cannot read ${modelsDir}: ${e instanceof Error ? e.message : e}`);
    }
    for (const [name, m] of [...models]) {
      if (folders.includes(name)) continue;
      models.delete(name);
      registry.models.delete(name);
      registry.fingerprints.delete(name);
      reloadErrors.delete(name);
      delete providers[name];
      retire(m);
      report.removed.push(name);
    }
    for (const e of [...registry.errors]) {
      if (folders.includes(e.folder)) continue;
      registry.errors.splice(registry.errors.indexOf(e), 1);
      registry.fingerprints.delete(e.folder);
      report.removed.push(e.folder);
    }
    for (const folder of folders) {
      const path = join(modelsDir, folder);
      if (registry.fingerprints.get(folder) === folderFingerprint(path)) {
        report.unchanged.push(folder);
        continue;
      }
      const served = models.get(folder);
      loading.add(folder);
      try {
        const info = await loadModelFolder(path, { build: config.build, log });
        const name = info.manifest.name; // the folder's name (manifest.ts checks it)
        // its own name in the thread: a new version runs beside the old one until the old one's last
        // request ends, and a folder removed and added again does not meet its old sessions
        const key = `${name}#${++generation}`;
        let modelInputs: Partial<Record<GraphKind, string[]>>, provider: string;
        if (inference.load) {
          const keyed = { ...info, manifest: { ...info.manifest, name: key } };
          const r = await inference.load([keyed]);
          const rep = r.models.get(key);
          if (!rep) throw new Error(r.failed.get(key) ?? "the inference thread did not load it");
          modelInputs = rep.inputs as Partial<Record<GraphKind, string[]>>;
          provider = rep.provider;
          log(
            `model ${name}: ${provider}; loaded in ${rep.loadMs.toFixed(0)} ms, warm-up ${
              rep.warmupMs.toFixed(0)
            } ms`,
          );
        } else if (config.inference) {
          const cls = info.manifest.classes ? ["class"] : [];
          modelInputs = { eps: ["x", "t", ...cls], head: ["x", "t", ...cls], jvp: ["x", "t", ...cls] };
          provider = "test";
        } else throw new Error("the inference backend cannot load models while running");
        const next: ServedModel = {
          info,
          inputs: modelInputs,
          maxBatch: Math.min(cap, info.manifest.limits.max_batch),
          ...(key !== name ? { key } : {}),
        };
        models.set(name, next);
        registry.models.set(name, info);
        providers[name] = provider;
        reloadErrors.delete(name);
        const failedBefore = registry.errors.findIndex((e) => e.folder === folder);
        if (failedBefore >= 0) registry.errors.splice(failedBefore, 1);
        if (served) {
          retire(served);
          report.changed.push(name);
        } else report.added.push(name);
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        if (served) {
          reloadErrors.set(folder, error);
          report.failed.push({ name: folder, error, serving: "previous version" });
          log(`model ${folder}: its new version failed to load (the previous one serves): ${error}`);
        } else {
          const at = registry.errors.findIndex((x) => x.folder === folder);
          if (at >= 0) registry.errors.splice(at, 1);
          registry.errors.push({ folder, message: error });
          report.failed.push({ name: folder, error });
          log(`skipping model folder ${folder}: ${error}`);
        }
      } finally {
        loading.delete(folder);
        // as loaded (building an analytic model writes into its folder); a failed one is retried once it changes
        registry.fingerprints.set(folder, folderFingerprint(path));
      }
    }
    report.ms = Math.round(performance.now() - t0);
    log(
      `reload: ${
        (["added", "changed", "removed"] as const).map((k) => `${k} ${report[k].join(", ") || "-"}`).join(
          "; ",
        )
      }; ${report.failed.length} failed; ${report.unchanged.length} unchanged (${report.ms} ms)`,
    );
    return report;
  }
  let reloads: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<ReloadReport> => {
    const next = reloads.then(reloadNow);
    reloads = next.catch(() => {});
    return next;
  };

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
      if (plan.stream) return await solveStreaming(plan, req.signal);
      const result = await scheduler.submit({
        model: plan.model,
        run: plan.run,
        priority: plan.priority,
        deadline: plan.deadline,
        signal: req.signal,
      });
      return msgpackResponse(resultMessage(plan, result));
    } catch (e) {
      return errorResponse(e, id);
    }
  }

  /**
   * `stream: true` (core/api/worker.ts, MSGPACK_STREAM): a progress frame per solver step as the
   * request's coroutine starts it, then the result or error frame. The response starts once the
   * request is running, so refusals (queue full, shutting down) and failures before the first step
   * keep their HTTP status. A step without evaluations (AFS) still gets its frame; the final
   * denoising evaluation (step === steps) gets none. Closing the connection cancels the request.
   */
  async function solveStreaming(plan: PlannedSolve, clientSignal: AbortSignal): Promise<Response> {
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
    if (outcome) return errorResponse(outcome.error, plan.id);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        for (const f of early.splice(0)) c.enqueue(f);
        const failed = (e: unknown) => {
          send(errorMessage(e, plan.id, true));
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

  /** The success message of a finished solve; a result with NaN or ±∞ (in float32) is an error instead. */
  function resultMessage(plan: PlannedSolve, result: SolveResult): Record<string, unknown> {
    const data = Float32Array.from(result.x);
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      const per = data.length / Math.max(1, plan.shape[0]);
      throw new WorkerError(
        "non_finite_result",
        `the solve produced a non-finite value (${data[bad]}) in sample ${Math.floor(bad / per)}; ` +
          "no data is returned (the model or solver diverged on this input)",
      );
    }
    return {
      v: 1,
      id: plan.id,
      shape: plan.shape,
      data: float32ToBytes(data),
      // nfe, calls, cost, cost_estimated, graph_calls: per sample trajectory, priced with model.json `costs`.
      ...costFields(result.stats, plan.model.info.manifest.costs),
      steps: plan.steps,
      solver: plan.solver,
      grid: plan.grid,
      ...(plan.rho !== undefined ? { rho: plan.rho } : {}),
      ...(plan.derivative && plan.solver === "genie" ? { genie_derivative: plan.derivative } : {}),
      deriv_evals: result.stats.derivEvals,
      timings: { queue_ms: round(result.queueMs), compute_ms: round(result.computeMs) },
    };
  }

  /** The error message of a failure (with its HTTP status as `status` inside a stream). */
  function errorMessage(e: unknown, id: string | undefined, streamed = false): Record<string, unknown> {
    const err = asWorkerError(e);
    if (err.code === "internal" || err.code === "non_finite_result") {
      log(`${err.code} error: ${e instanceof Error ? e.stack ?? e.message : e}`);
    }
    const error: Record<string, string> = { code: err.code, message: err.message };
    if (err.field) error.field = err.field;
    return { v: 1, ...(id !== undefined ? { id } : {}), error, ...(streamed ? { status: err.status } : {}) };
  }

  function errorResponse(e: unknown, id?: string): Response {
    const err = asWorkerError(e);
    const headers: Record<string, string> = err.status === 429 || err.status === 503
      ? { "retry-after": retryAfter }
      : {};
    return msgpackResponse(errorMessage(e, id), err.status, headers);
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
      res = errorResponse(e);
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

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

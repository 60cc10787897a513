/**
 * `deno task worker [--host 127.0.0.1] [--port 8700]` (docs/contracts.md §5): serves the worker app and
 * prints `listening on http://HOST:PORT` once the models are loaded. SIGINT/SIGTERM drain the requests
 * in flight, then exit; SIGHUP reloads the model folders (new, changed, removed; app.ts `reload`).
 *
 * Environment: GENIE_WORKER_HOST, GENIE_WORKER_PORT, GENIE_WORKER_SECRET, GENIE_MODELS_DIR, and the
 * tuning knobs GENIE_WORKER_MAX_BATCH, GENIE_WORKER_MAX_WAIT_MS, GENIE_WORKER_MAX_QUEUE, GENIE_WORKER_QUANTUM_MS,
 * GENIE_SIGNATURE_WINDOW_S (seconds a signed request's timestamp may be off, default 60),
 * GENIE_WORKER_THREADS (ORT intra-op threads), GENIE_WORKER_PROVIDERS (e.g. "cpu" or "cuda,cpu"; else
 * GENIE_PROVIDERS; names: webgpu, cuda, cpu, wasm, tried in order, docs/backends.md),
 * GENIE_WORKER_BODY_TIMEOUT_MS (how long a request body may take to arrive, default 30000; 408 after),
 * GENIE_WORKER_SPIN (auto, on, off, brief or run, default auto: how ORT's threads wait for work; auto
 * spins between calls only where one session serves every call and otherwise only while a call runs (run),
 * on always spins as ORT does by default, brief for 0.5 ms after a call, off never spins; see spinPolicy
 * in inference.ts). Flags of the same names
 * (--max-batch, --max-wait-ms, --max-queue, --quantum-ms, --threads, --providers, --spin, --body-timeout-ms,
 * --models-dir, --models a,b)
 * override them.
 *
 * Under Node.js the same file serves through node:http (see docs/worker.md).
 */
import process from "node:process";
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { type FlagSpec, parseFlags, parseFlagValue, UsageError } from "../core/flags.ts";
import { parseOnOff } from "../core/api/switch.ts";
import { parseProviders } from "../onnx/ort.ts";
import { type GuardLimits, guardLimitsFromEnv, WORKER_GUARD_DEFAULTS } from "../core/api/guard.ts";
import { ListenError, serveResilient } from "../core/api/serve.ts";
import { createWorkerApp, type WorkerApp, type WorkerConfig } from "./app.ts";

export interface ServeOptions extends WorkerConfig {
  host: string;
  port: number;
  /** The connection guard's caps and timeouts (GENIE_MAX_CONNECTIONS…, core/api/guard.ts). */
  connections?: GuardLimits;
}

const PORT = { flag: "--port", kind: "int", min: 0, max: 65535 } as const;
const MAX_BATCH = { flag: "--max-batch", kind: "number", min: 0 } as const;
const MAX_WAIT_MS = { flag: "--max-wait-ms", kind: "number", min: 0 } as const;
const MAX_QUEUE = { flag: "--max-queue", kind: "number", min: 0 } as const;
const QUANTUM_MS = { flag: "--quantum-ms", kind: "number", min: 0 } as const;
const THREADS = { flag: "--threads", kind: "number", min: 0 } as const;
const BODY_TIMEOUT_MS = { flag: "--body-timeout-ms", kind: "number", min: 0 } as const;
const SIGNATURE_WINDOW_S = {
  flag: "GENIE_SIGNATURE_WINDOW_S",
  kind: "number",
  min: 0,
  positive: true,
} as const;

/** The worker's flags, read by core/flags.ts (each but --models also has its environment variable). */
const FLAGS = [
  { flag: "--host", kind: "string" },
  PORT,
  { flag: "--models-dir", kind: "string" },
  { flag: "--models", kind: "list" },
  MAX_BATCH,
  MAX_WAIT_MS,
  QUANTUM_MS,
  MAX_QUEUE,
  THREADS,
  { flag: "--providers", kind: "string" },
  { flag: "--spin", kind: "string" },
  BODY_TIMEOUT_MS,
] as const;

/**
 * A number setting: the flag's value when given, else the environment variable's (blank: unset), checked
 * by the flag's spec; a bad value names the flag either way.
 */
function numberSetting(
  given: number | undefined,
  spec: FlagSpec,
  raw: string | undefined,
): number | undefined {
  if (given !== undefined) return given;
  const value = raw?.trim();
  return value ? parseFlagValue(spec, value) as number : undefined;
}

/**
 * `--spin` / GENIE_WORKER_SPIN: on (true), off (false), auto (undefined, also when unset), or the name of
 * a policy for every session, brief or run (onnx/ort.ts `SpinPolicy`); on/off take the spellings of
 * core/api/switch.ts.
 */
function parseSpin(name: string, value: string | undefined): boolean | "brief" | "run" | undefined {
  const word = value?.trim().toLowerCase();
  if (word === "auto") return undefined;
  if (word === "brief" || word === "run") return word;
  try {
    return parseOnOff(name, value);
  } catch {
    throw new UsageError(name, `expected auto, on, off, brief or run, got ${JSON.stringify(value)}`);
  }
}

/** Options from flags and environment (flags win). Throws a UsageError naming the bad flag. */
export function serveOptions(argv: string[], env: Record<string, string | undefined>): ServeOptions {
  const { values } = parseFlags(argv, FLAGS, { help: false });
  const providers = values.providers !== undefined
    ? parseProviders("--providers", values.providers)
    : env.GENIE_WORKER_PROVIDERS
    ? parseProviders("GENIE_WORKER_PROVIDERS", env.GENIE_WORKER_PROVIDERS)
    : parseProviders("GENIE_PROVIDERS", env.GENIE_PROVIDERS);
  if (values.providers !== undefined && !providers?.length) {
    throw new UsageError("--providers", "name at least one provider");
  }
  const quantumMs = numberSetting(values.quantumMs, QUANTUM_MS, env.GENIE_WORKER_QUANTUM_MS);
  if (quantumMs === 0) throw new UsageError("--quantum-ms", "must be positive, got 0");
  return {
    host: values.host ?? env.GENIE_WORKER_HOST ?? "127.0.0.1",
    port: numberSetting(values.port, PORT, env.GENIE_WORKER_PORT) ?? 8700,
    modelsDir: values.modelsDir ?? env.GENIE_MODELS_DIR,
    models: values.models,
    secret: env.GENIE_WORKER_SECRET || undefined,
    signatureWindowS: numberSetting(undefined, SIGNATURE_WINDOW_S, env.GENIE_SIGNATURE_WINDOW_S),
    maxBatch: numberSetting(values.maxBatch, MAX_BATCH, env.GENIE_WORKER_MAX_BATCH),
    maxWaitMs: numberSetting(values.maxWaitMs, MAX_WAIT_MS, env.GENIE_WORKER_MAX_WAIT_MS),
    maxQueue: numberSetting(values.maxQueue, MAX_QUEUE, env.GENIE_WORKER_MAX_QUEUE),
    quantumMs,
    intraOpThreads: numberSetting(values.threads, THREADS, env.GENIE_WORKER_THREADS),
    spinning: parseSpin(
      values.spin !== undefined ? "--spin" : "GENIE_WORKER_SPIN",
      values.spin ?? env.GENIE_WORKER_SPIN,
    ),
    providers,
    bodyTimeoutMs: numberSetting(values.bodyTimeoutMs, BODY_TIMEOUT_MS, env.GENIE_WORKER_BODY_TIMEOUT_MS),
    connections: guardLimitsFromEnv((name) => env[name], WORKER_GUARD_DEFAULTS),
  };
}

/**
 * Fails fast, before the models load, when the port is taken (the bind after loading still checks).
 * Port 0 always binds.
 */
async function checkPort(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno) {
    try {
      deno.listen({ hostname: host, port }).close();
    } catch (e) {
      throw new ListenError(host, port, e);
    }
    return;
  }
  const net = await import("node:net");
  await new Promise<void>((resolve, reject) => {
    const s = net.createServer();
    s.once(
      "error",
      (e: Error & { code?: string }) =>
        reject(
          new ListenError(host, port, e.code === "EADDRINUSE" ? Object.assign(e, { name: "AddrInUse" }) : e),
        ),
    );
    s.listen(port, host, () => s.close(() => resolve()));
  });
}

/**
 * Serves with Deno.serve, or node:http under Node.js. Resolves once listening. A port that cannot be
 * bound is a {@link ListenError} (one line naming it). Under Deno, running out of file handles does
 * not end the process: the server listens again (core/api/serve.ts).
 */
async function serve(
  opts: ServeOptions,
): Promise<{ url: string; close(): Promise<void>; reload: WorkerApp["reload"] }> {
  await checkPort(opts.host, opts.port);
  const app = await createWorkerApp(opts);
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno) {
    const ac = new AbortController();
    let url = "";
    let server;
    try {
      server = serveResilient({
        hostname: opts.host,
        port: opts.port,
        signal: ac.signal,
        log: opts.log,
        limits: opts.connections,
        onListen: ({ hostname, port }) => void (url = `http://${hostname}:${port}`),
      }, (req) => app.fetch(req));
    } catch (e) {
      await app.shutdown();
      throw e;
    }
    return {
      get url() {
        return url;
      },
      reload: app.reload,
      close: async () => {
        await app.shutdown();
        ac.abort();
        await server.finished;
      },
    };
  }
  const http = await import("node:http");
  const { Readable } = await import("node:stream");
  const server = http.createServer(async (req, res) => {
    const ac = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) ac.abort();
    });
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const method = req.method ?? "GET";
    // The body streams into the app, which enforces its size limit while reading.
    const body = method === "GET" || method === "HEAD"
      ? undefined
      : Readable.toWeb(req) as ReadableStream<Uint8Array>;
    const init = { method, headers, body, signal: ac.signal, duplex: "half" } as RequestInit;
    const response = await app.fetch(new Request(`http://${opts.host}${req.url}`, init));
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(new Uint8Array(await response.arrayBuffer()));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await app.shutdown();
    const err = e as Error & { code?: string };
    throw new ListenError(
      opts.host,
      opts.port,
      err.code === "EADDRINUSE" ? Object.assign(err, { name: "AddrInUse" }) : err,
    );
  }
  const addr = server.address() as { port: number };
  return {
    url: `http://${opts.host}:${addr.port}`,
    reload: app.reload,
    close: async () => {
      await app.shutdown();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** True when this module is the program (Deno's import.meta.main, or Node's argv[1]). */
function isMain(): boolean {
  const main = (import.meta as { main?: boolean }).main;
  if (main !== undefined) return main;
  const script = process.argv[1];
  return script !== undefined && import.meta.url === pathToFileURL(realpathSync(script)).href;
}

if (isMain()) {
  let opts: ServeOptions;
  try {
    opts = serveOptions(process.argv.slice(2), process.env);
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(2);
  }
  let server: Awaited<ReturnType<typeof serve>>;
  try {
    server = await serve(opts);
  } catch (e) {
    // a port in use is one line naming it
    if (!(e instanceof ListenError)) throw e;
    console.error(e.message);
    process.exit(1);
  }
  console.log(`listening on ${server.url}`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: draining requests in flight`);
    await server.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  // the model folders again: new, changed and removed ones (the app logs what changed)
  process.on("SIGHUP", () => {
    if (stopping) return;
    server.reload().catch((e) =>
      console.error(`SIGHUP: reload failed: ${e instanceof Error ? e.message : e}`)
    );
  });
}

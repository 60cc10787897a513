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
 * GENIE_WORKER_SPIN (auto, on or off, default auto: how ORT's threads wait for work; auto spins between
 * calls only where one session serves every call and otherwise only while a call runs, on always spins
 * as ORT does by default, off never spins; see spinPolicy in inference.ts). Flags of the same names
 * (--max-batch, --max-wait-ms, --max-queue, --quantum-ms, --threads, --providers, --spin, --body-timeout-ms,
 * --models-dir, --models a,b)
 * override them.
 *
 * Under Node.js the same file serves through node:http (see docs/worker.md).
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseOnOff } from "../core/api/switch.ts";
import { parseProviders } from "../onnx/ort.ts";
import { ListenError, serveResilient } from "../core/api/serve.ts";
import { createWorkerApp, type WorkerApp, type WorkerConfig } from "./app.ts";

export interface ServeOptions extends WorkerConfig {
  host: string;
  port: number;
}

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    throw new Error(`${flag}: must be a non-negative number, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** A number that must be above zero when given. */
function positive(flag: string, n: number | undefined): number | undefined {
  if (n === 0) throw new Error(`${flag}: must be positive, got 0`);
  return n;
}

/**
 * `--spin` / GENIE_WORKER_SPIN: on (true), off (false) or auto (undefined, also when unset); on/off take
 * the spellings of core/api/switch.ts.
 */
export function parseSpin(name: string, value: string | undefined): boolean | undefined {
  if (value !== undefined && value.trim().toLowerCase() === "auto") return undefined;
  try {
    return parseOnOff(name, value);
  } catch {
    throw new Error(`${name}: expected auto, on or off, got ${JSON.stringify(value)}`);
  }
}

function signatureWindow(v: string | undefined): number | undefined {
  const n = num("GENIE_SIGNATURE_WINDOW_S", v);
  if (n === 0) throw new Error("GENIE_SIGNATURE_WINDOW_S: must be a positive number of seconds, got 0");
  return n;
}

/** Options from flags and environment (flags win). Throws naming the bad flag. */
export function serveOptions(argv: string[], env: Record<string, string | undefined>): ServeOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      "models-dir": { type: "string" },
      models: { type: "string" },
      "max-batch": { type: "string" },
      "max-wait-ms": { type: "string" },
      "quantum-ms": { type: "string" },
      "max-queue": { type: "string" },
      threads: { type: "string" },
      providers: { type: "string" },
      spin: { type: "string" },
      "body-timeout-ms": { type: "string" },
    },
    strict: true,
  });
  const port = num("--port", values.port ?? env.GENIE_WORKER_PORT) ?? 8700;
  if (!Number.isInteger(port) || port > 65535) throw new Error(`--port: must be an integer port number`);
  const providers = values.providers !== undefined
    ? parseProviders("--providers", values.providers)
    : env.GENIE_WORKER_PROVIDERS
    ? parseProviders("GENIE_WORKER_PROVIDERS", env.GENIE_WORKER_PROVIDERS)
    : parseProviders("GENIE_PROVIDERS", env.GENIE_PROVIDERS);
  if (values.providers !== undefined && !providers) {
    throw new Error(`--providers: name at least one provider`);
  }
  return {
    host: values.host ?? env.GENIE_WORKER_HOST ?? "127.0.0.1",
    port,
    modelsDir: values["models-dir"] ?? env.GENIE_MODELS_DIR,
    models: values.models?.split(",").map((m) => m.trim()).filter(Boolean),
    secret: env.GENIE_WORKER_SECRET || undefined,
    signatureWindowS: signatureWindow(env.GENIE_SIGNATURE_WINDOW_S),
    maxBatch: num("--max-batch", values["max-batch"] ?? env.GENIE_WORKER_MAX_BATCH),
    maxWaitMs: num("--max-wait-ms", values["max-wait-ms"] ?? env.GENIE_WORKER_MAX_WAIT_MS),
    maxQueue: num("--max-queue", values["max-queue"] ?? env.GENIE_WORKER_MAX_QUEUE),
    quantumMs: positive(
      "--quantum-ms",
      num("--quantum-ms", values["quantum-ms"] ?? env.GENIE_WORKER_QUANTUM_MS),
    ),
    intraOpThreads: num("--threads", values.threads ?? env.GENIE_WORKER_THREADS),
    spinning: parseSpin(
      values.spin !== undefined ? "--spin" : "GENIE_WORKER_SPIN",
      values.spin ?? env.GENIE_WORKER_SPIN,
    ),
    providers,
    bodyTimeoutMs: num("--body-timeout-ms", values["body-timeout-ms"] ?? env.GENIE_WORKER_BODY_TIMEOUT_MS),
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
export async function serve(
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

/**
 * `deno task start [--host 127.0.0.1] [--port 8000]` (docs/contracts.md §5): the worker and the edge
 * together in one command.
 *
 * Unless GENIE_WORKER_URLS names external workers, a worker is started as a child process
 * (`deno task -q worker --host 127.0.0.1 --port <free port>`, or the deno arguments in
 * GENIE_WORKER_COMMAND) with a shared GENIE_WORKER_SECRET (a random one when none is set). The edge
 * is served once the worker prints `listening on …`; `listening on http://HOST:PORT` is printed once
 * the edge is up and the worker's models are ready.
 *
 * The output is quiet: one line per model with its execution provider (`mnist-mix: cpu`, from the
 * worker's load report), warnings and errors, and the `listening on` line. The worker's other lines
 * go to stderr prefixed with `[worker]`, except what it says while starting normally
 * ({@link quietWorkerLine}). GENIE_START_VERBOSE=1 shows everything: the worker's lines as they are and
 * what this command does (`[start] worker at …`).
 * The edge runs the models marked `edge` itself, on WebAssembly (functions/local.ts): GENIE_EDGE_LOCAL
 * defaults to `auto` here (`off` turns it off), and their engines are opened in the background once the
 * edge is ready.
 * SIGINT/SIGTERM stop the edge, then the worker (SIGTERM, SIGKILL after 10 s). If the worker dies,
 * the edge stops too and the command exits with status 1. An edge port that cannot be bound (in use) is
 * one line naming it, the worker is stopped and the status is 1.
 */
import { randomHex } from "../core/hex.ts";
import { configFromEnv } from "./config.ts";
import { freePort, textLines } from "./child.ts";
import { startJobs } from "./jobs/cron.ts";
import { authNotice, onSignals, parseServeArgs, serveEdge } from "./serve.ts";

const WORKER_START_TIMEOUT_MS = 180_000;
const READY_TIMEOUT_MS = 60_000;

const verbose = (() => {
  try {
    return Deno.env.get("GENIE_START_VERBOSE") === "1";
  } catch {
    return false;
  }
})();

/** A problem: always shown. */
function log(message: string): void {
  console.error(`[start] ${message}`);
}

/** What the command does: shown with GENIE_START_VERBOSE=1. */
function info(message: string): void {
  if (verbose) log(message);
}

/**
 * A line of the worker's output as `deno task start` shows it: a model's load report
 * (`model NAME: PROVIDER[; P unavailable (…)]…; loaded in …`, gpu-worker/serving.ts) as `NAME: PROVIDER`
 * (with the providers that were unavailable); nothing for what a normal start says (`listening on …`,
 * a JVP graph derived or found unavailable for a model, gpu-worker/models.ts); any other line as it is.
 */
export function quietWorkerLine(line: string): string | undefined {
  const model = /^model (\S+): ([^;\s]+)(.*)$/.exec(line);
  if (model) {
    const missing = [...model[3].matchAll(/;\s*(\S+) unavailable \(/g)].map((m) => m[1]);
    return `${model[1]}: ${model[2]}${missing.length ? ` (${missing.join(", ")} unavailable)` : ""}`;
  }
  if (/^listening on /.test(line)) return undefined;
  if (/^\S+: jvp (graph derived from eps|unavailable) \(/.test(line)) return undefined;
  return `[worker] ${line}`;
}

function randomSecret(): string {
  return randomHex(32);
}

interface WorkerChild {
  url: string;
  child: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
}

/** Forwards a stream's lines to stderr with a prefix; resolves `onListen` with the first `listening on` URL. */
async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  onListen?: (url: string) => void,
): Promise<void> {
  const enc = new TextEncoder();
  for await (const line of textLines(stream)) {
    const shown = verbose ? `[worker] ${line}` : quietWorkerLine(line);
    if (shown !== undefined) await Deno.stderr.write(enc.encode(`${shown}\n`));
    const m = /listening on (http:\/\/\S+)/.exec(line);
    if (m && onListen) onListen(m[1]);
  }
}

async function startWorker(secret: string): Promise<WorkerChild> {
  const host = "127.0.0.1";
  const port = freePort(host);
  const custom = Deno.env.get("GENIE_WORKER_COMMAND");
  const args = custom ? custom.split(/\s+/).filter(Boolean) : ["task", "-q", "worker"];
  args.push("--host", host, "--port", String(port));
  info(`starting the worker: deno ${args.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env: { GENIE_WORKER_SECRET: secret, GENIE_WORKER_HOST: host, GENIE_WORKER_PORT: String(port) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const listening = Promise.withResolvers<string>();
  void forwardLines(child.stdout, listening.resolve);
  void forwardLines(child.stderr);
  const exited = child.status;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const url = await Promise.race([
      listening.promise,
      exited.then((s) =>
        Promise.reject(new Error(`the worker exited with status ${s.code} before listening`))
      ),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the worker did not start in time")),
          WORKER_START_TIMEOUT_MS,
        );
      }),
    ]);
    return { url, child, exited };
  } catch (e) {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

async function stopWorker(w: WorkerChild): Promise<void> {
  try {
    w.child.kill("SIGTERM");
  } catch {
    return; // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log("the worker did not stop in 10 s: killing it");
      try {
        w.child.kill("SIGKILL");
      } catch { /* gone */ }
      resolve();
    }, 10_000);
  });
  await Promise.race([w.exited, killed]);
  clearTimeout(timer);
  await w.exited;
}

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseServeArgs(Deno.args, { host: "127.0.0.1", port: 8000 });
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    return 2;
  }
  const config = configFromEnv(undefined, { edgeLocal: "auto" });
  let worker: WorkerChild | undefined;
  if (config.workerUrls.length === 0) {
    config.workerSecret ??= randomSecret();
    try {
      worker = await startWorker(config.workerSecret);
    } catch (e) {
      log(e instanceof Error ? e.message : String(e));
      return 1;
    }
    config.workerUrls = [worker.url];
    info(`worker at ${worker.url}`);
  } else {
    info(`external workers: ${config.workerUrls.join(", ")}`);
  }
  // Until it is ready, the pool's notes of workers coming up are part of a normal start.
  let starting = true;
  const poolLog = config.log ?? ((m: string) => console.error(m));
  config.log = (m: string) => {
    if (verbose || !starting || !/^worker \d+ \(.*\) is up: /.test(m)) poolLog(m);
  };
  let edge: Awaited<ReturnType<typeof serveEdge>>;
  try {
    edge = await serveEdge(config, opts);
  } catch (e) {
    // e.g. the port is in use: one line, and the worker started above is stopped, not left behind
    log(e instanceof Error ? e.message : String(e));
    if (worker) await stopWorker(worker);
    return 1;
  }
  const done = Promise.withResolvers<number>();
  let stopping = false;
  const stop = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    if (code !== 0) log(`${why}: stopping`);
    else info(`${why}: stopping`);
    await edge.shutdown();
    if (worker) await stopWorker(worker);
    done.resolve(code);
  };
  onSignals((sig) => void stop(sig, 0));
  worker?.exited.then((s) => void stop(`the worker exited (status ${s.code})`, 1));

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!stopping && !edge.app.pool.ready()) {
    await edge.app.pool.refresh(true);
    if (edge.app.pool.ready()) break;
    if (Date.now() > deadline) {
      log("no worker became ready in time");
      await stop("not ready", 1);
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!stopping) {
    starting = false;
    // Warnings (an open server, batch jobs unavailable) always; the rest with GENIE_START_VERBOSE=1.
    for (const notice of [authNotice(edge.app), await startJobs(edge.app.jobs)]) {
      if (verbose || notice.startsWith("warning:")) console.error(notice);
    }
    console.log(`listening on ${edge.url}`);
    // Open the engines of the models this edge runs itself, so the first request does not wait for them.
    const local = edge.app.local;
    if (local) void edge.app.pool.models().then((ms) => local.warm(ms.map((m) => m.name))).catch(() => {});
  }
  return await done.promise;
}

if (import.meta.main) Deno.exit(await main());

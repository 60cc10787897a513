/**
 * `deno task start [--host 127.0.0.1] [--port 8000]` (docs/contracts.md §5): the worker and the edge
 * together in one command.
 *
 * Unless GENIE_WORKER_URLS names external workers, a worker is started as a child process
 * (`deno task worker --host 127.0.0.1 --port <free port>`, or the deno arguments in
 * GENIE_WORKER_COMMAND) with a shared GENIE_WORKER_SECRET (a random one when none is set). The edge
 * is served once the worker prints `listening on …`; `listening on http://HOST:PORT` is printed once
 * the edge is up and the worker's models are ready. The worker's output goes to stderr, prefixed.
 * SIGINT/SIGTERM stop the edge, then the worker (SIGTERM, SIGKILL after 10 s). If the worker dies,
 * the edge stops too and the command exits with status 1. An edge port that cannot be bound (in use) is
 * one line naming it, the worker is stopped and the status is 1.
 */
import { configFromEnv } from "./config.ts";
import { freePort, textLines } from "./child.ts";
import { startJobs } from "./jobs/cron.ts";
import { authNotice, onSignals, parseServeArgs, serveEdge } from "./serve.ts";

const WORKER_START_TIMEOUT_MS = 180_000;
const READY_TIMEOUT_MS = 60_000;

function log(message: string): void {
  console.error(`[start] ${message}`);
}

function randomSecret(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
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
    await Deno.stderr.write(enc.encode(`[worker] ${line}\n`));
    const m = /listening on (http:\/\/\S+)/.exec(line);
    if (m && onListen) onListen(m[1]);
  }
}

async function startWorker(secret: string): Promise<WorkerChild> {
  const host = "127.0.0.1";
  const port = freePort(host);
  const custom = Deno.env.get("GENIE_WORKER_COMMAND");
  const args = custom ? custom.split(/\s+/).filter(Boolean) : ["task", "worker"];
  args.push("--host", host, "--port", String(port));
  log(`starting the worker: deno ${args.join(" ")}`);
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
  const config = configFromEnv();
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
    log(`worker at ${worker.url}`);
  } else {
    log(`external workers: ${config.workerUrls.join(", ")}`);
  }
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
    log(`${why}: stopping`);
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
    console.error(authNotice(edge.app));
    console.error(await startJobs(edge.app.jobs));
    console.log(`listening on ${edge.url}`);
  }
  return await done.promise;
}

if (import.meta.main) Deno.exit(await main());

/**
 * Idle, half-open and slow connections against the edge (`deno task serve`) and the worker
 * (`deno task worker`), each run as a process with `ulimit -n 256`:
 *
 * - 300 connections that send `GET /healthz HTTP/1.1\r\nHost: x\r\n` and nothing more exhaust the
 *   process's file handles; the process must not exit ("Too many open files" used to end it) and must
 *   answer /healthz again once they are closed.
 * - A request whose body does not arrive within the body timeout is answered 408 (the handler and
 *   what it holds are released; the socket itself stays until the client closes it).
 */
import { assert, assertMatch } from "../testing.ts";
import { textLines } from "../../functions/child.ts";
import { taskArgs } from "./processes.ts";

const ROOT = new URL("../../", import.meta.url);

interface Server {
  url: string;
  port: number;
  child: Deno.ChildProcess;
  output: string[];
  exited(): boolean;
  stop(): Promise<void>;
}

/** `deno <args>` under `ulimit -n <fds>`, once it prints `listening on`. */
async function spawnLimited(args: string[], env: Record<string, string>, fds: number): Promise<Server> {
  const quoted = [Deno.execPath(), ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const child = new Deno.Command("bash", {
    args: ["-c", `ulimit -n ${fds} && exec ${quoted}`],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  const found = Promise.withResolvers<string>();
  let done = false;
  const status = child.status.then((s) => {
    done = true;
    found.reject(new Error(`exited with ${s.code} before listening:\n${output.join("\n")}`));
    return s;
  });
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const line of textLines(s)) {
      output.push(line);
      const m = /^listening on (http:\/\/\S+)/.exec(line);
      if (m) found.resolve(m[1]);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const timer = setTimeout(() => found.reject(new Error(`not listening:\n${output.join("\n")}`)), 120_000);
  try {
    const url = await found.promise;
    return {
      url,
      port: Number(new URL(url).port),
      child,
      output,
      exited: () => done,
      stop: async () => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
        await status;
        await pumps;
      },
    };
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await status;
    await pumps;
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function healthy(url: string): Promise<number> {
  try {
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
    await r.body?.cancel();
    return r.status;
  } catch {
    return 0;
  }
}

/** Opens `n` connections that send an unfinished request head; returns them (some may fail to connect). */
async function idleConnections(port: number, n: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  const head = new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\n");
  for (let i = 0; i < n; i++) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(c);
      await c.write(head).catch(() => 0);
    } catch {
      // the backlog is full or the listener is momentarily closed: keep going
    }
  }
  return conns;
}

async function survivesExhaustion(server: Server): Promise<void> {
  assert((await healthy(server.url)) === 200, "healthy before");
  const conns = await idleConnections(server.port, 300);
  await sleep(1500);
  assert(!server.exited(), `the process exited while file handles ran out:\n${server.output.join("\n")}`);
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed by the server */ }
  }
  // it listens again within its retry pause (1 s, doubling while it keeps failing)
  const end = Date.now() + 30_000;
  let status = 0;
  while (Date.now() < end && (status = await healthy(server.url)) !== 200) await sleep(250);
  assert(status === 200, `no /healthz answer after the connections closed:\n${server.output.join("\n")}`);
  assert(!server.exited(), server.output.join("\n"));
  // said once, in one line, not a stack trace
  assert(!server.output.some((l) => /^\s+at /.test(l)), server.output.join("\n"));
}

/** Sends a request head announcing a body of `declared` bytes, a part of it, then nothing. */
async function slowBody(port: number, path: string, type: string): Promise<{ response: string }> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(
      new TextEncoder().encode(
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\nContent-Length: 100\r\n\r\n{"mo`,
      ),
    );
    const chunks: string[] = [];
    const buf = new Uint8Array(4096);
    const dec = new TextDecoder();
    // the status line and headers, then what of the body follows within 300 ms
    let end = Date.now() + 10_000;
    while (Date.now() < end) {
      const n = await Promise.race([c.read(buf), sleep(end - Date.now()).then(() => undefined)]);
      if (n === undefined || n === null) break;
      chunks.push(dec.decode(buf.subarray(0, n)));
      if (chunks.join("").includes("\r\n\r\n")) end = Math.min(end, Date.now() + 300);
    }
    return { response: chunks.join("") };
  } finally {
    try {
      c.close();
    } catch { /* closed */ }
  }
}

Deno.test({
  name: "edge: out of file handles it keeps running and answers again; a slow body gets 408",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await spawnLimited(["run", ...(await taskArgs("serve")).slice(1), "--port", "0"], {
      GENIE_WORKER_URLS: "",
      GENIE_JOBS: "off",
      GENIE_EDGE_BODY_TIMEOUT_MS: "500",
    }, 256);
    try {
      await survivesExhaustion(server);
      const slow = await slowBody(server.port, "/v1/samples", "application/json");
      assertMatch(slow.response, /^HTTP\/1\.1 408/);
      assertMatch(slow.response, /request_timeout/);
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "worker: out of file handles it keeps running and answers again; a slow body gets 408",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "genie-conns-" });
    const server = await spawnLimited(
      [
        ...(await taskArgs("worker")),
        "--port",
        "0",
        "--models-dir",
        dir,
        "--models",
        "gmm2d",
        "--providers",
        "cpu",
        "--threads",
        "1",
        "--body-timeout-ms",
        "500",
      ],
      {},
      256,
    );
    try {
      await survivesExhaustion(server);
      const slow = await slowBody(server.port, "/v1/batch", "application/msgpack");
      assertMatch(slow.response, /^HTTP\/1\.1 408/);
    } finally {
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * A connection guard in front of `Deno.serve`: connection caps, a header timeout and an idle timeout,
 * which Deno.serve lacks (it has no hook before a request's head is complete and never closes an idle
 * connection).
 *
 * The guard owns the public listener. Each client connection is relayed byte for byte to a private
 * `Deno.serve` on 127.0.0.1 (an ephemeral port), which runs the real handler; the handler sees the
 * client's own address (the relay's outgoing port maps back to it). Per connection the guard tracks one
 * deadline:
 *
 * - **Header timeout**: a request head must be complete (its blank line received) within
 *   `headerTimeoutMs` of the connection opening, or of the first byte of a later request on it.
 * - **Idle timeout**: after the server has sent bytes, the connection is closed when neither side
 *   sends anything for `idleTimeoutMs`: a kept-alive connection nobody uses, or a client that stops
 *   reading an answer. While a request is being worked on (its head in, no answer yet) nothing is
 *   timed here; the handlers bound request bodies themselves (core/api/body.ts) and a streamed answer
 *   must send something at least every idle timeout (the SSE streams send a comment every 15 s).
 * - **Caps**: at most `maxConnections` open connections, at most `maxPerClient` from one address; a
 *   connection over a cap is answered `503` (JSON, `Retry-After: 1`, `Connection: close`) and closed.
 *
 * When accepting fails (EMFILE, "Too many open files"), the guard logs one line and tries again after a
 * pause (50 ms, doubling up to 1 s while it keeps failing); the listener stays open, so nothing exits.
 * Each relayed connection holds three file handles (client, relay, the private server's side): keep
 * `maxConnections` below a third of the process's open-files limit.
 */

/** The guard's limits (docs/security.md). */
export interface GuardLimits {
  /** Open client connections at once; one more is answered 503 and closed. */
  maxConnections: number;
  /** Open client connections from one address at once. */
  maxPerClient: number;
  /** A request head must be complete within this many ms of its connection or its first byte. */
  headerTimeoutMs: number;
  /** A connection that has been answered closes after this many ms with no bytes either way. */
  idleTimeoutMs: number;
}

export const GUARD_DEFAULTS: Readonly<GuardLimits> = {
  maxConnections: 256,
  maxPerClient: 64,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
};

/**
 * The worker's defaults: its clients are edges, each of which may hold a connection per call in flight
 * (up to its GENIE_EDGE_MAX_QUEUE, 256), so one client may use every connection; the worker's own queue
 * limit answers 429 beyond its capacity.
 */
export const WORKER_GUARD_DEFAULTS: Readonly<GuardLimits> = {
  ...GUARD_DEFAULTS,
  maxPerClient: GUARD_DEFAULTS.maxConnections,
};

/** The environment variable of each limit. */
export const GUARD_ENV: Readonly<Record<keyof GuardLimits, string>> = {
  maxConnections: "GENIE_MAX_CONNECTIONS",
  maxPerClient: "GENIE_MAX_CONNECTIONS_PER_CLIENT",
  headerTimeoutMs: "GENIE_HEADER_TIMEOUT_MS",
  idleTimeoutMs: "GENIE_IDLE_TIMEOUT_MS",
};

/**
 * The limits from `get` (an environment lookup) over `defaults`: each variable of {@link GUARD_ENV} that
 * is set must be a whole number ≥ 1; an error names the variable otherwise.
 */
export function guardLimitsFromEnv(
  get: (name: string) => string | undefined,
  defaults: Readonly<GuardLimits> = GUARD_DEFAULTS,
): GuardLimits {
  const limits = { ...defaults };
  for (const key of Object.keys(GUARD_ENV) as (keyof GuardLimits)[]) {
    const name = GUARD_ENV[key], raw = get(name)?.trim();
    if (raw === undefined || raw === "") continue;
    const v = Number(raw);
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(v) || v < 1) {
      throw new Error(`${name} must be a whole number ≥ 1, got ${JSON.stringify(raw)}`);
    }
    limits[key] = v;
  }
  return limits;
}

/** The limits from the process environment (defaults where there is no access to it). */
export function guardLimitsFromProcess(): GuardLimits {
  return guardLimitsFromEnv((name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  });
}

const BUSY_BODY = JSON.stringify({
  error: { code: "too_many_connections", message: "too many open connections; retry shortly" },
});
const BUSY = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n" +
    `Connection: close\r\nContent-Length: ${BUSY_BODY.length}\r\n\r\n${BUSY_BODY}`,
);

/** Where a relayed connection stands. */
type Phase = "head" | "working" | "answered";

interface Relay {
  client: Deno.TcpConn;
  inner?: Deno.TcpConn;
  address: string;
  phase: Phase;
  /** Epoch ms when the connection is closed unless something resets it; Infinity: none. */
  deadline: number;
  /** The last 3 bytes of the head so far (a blank line may straddle two reads). */
  tail: number[];
  closed: boolean;
}

export interface GuardedServerOptions {
  hostname: string;
  port: number;
  limits: GuardLimits;
  onListen?: (addr: { hostname: string; port: number }) => void;
  onError?: (error: unknown) => Response | Promise<Response>;
  log: (line: string) => void;
}

export interface GuardedServer {
  /** The bound address (port 0 resolved). */
  readonly addr: { hostname: string; port: number };
  /** Open client connections now. */
  readonly open: number;
  /** Resolves once the server is closed. */
  readonly finished: Promise<void>;
  /** Stops accepting, lets running requests finish, then closes every connection. */
  shutdown(): Promise<void>;
  /** Closes the listener and every connection now. */
  close(): void;
}

type Handler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pauses between retries of something that keeps failing: 50 ms, doubling up to 1 s. */
class Backoff {
  #ms = 50;
  reset(): void {
    this.#ms = 50;
  }
  async pause(): Promise<void> {
    await sleep(this.#ms);
    this.#ms = Math.min(1000, this.#ms * 2);
  }
}

/** True when `chunk` (after the head's last bytes `tail`) completes a head: "\r\n\r\n" or "\n\n". */
function endsHead(relay: Relay, chunk: Uint8Array): boolean {
  const t = relay.tail;
  for (const b of chunk) {
    t.push(b);
    if (t.length > 4) t.shift();
    const n = t.length;
    if (b === 10 && n >= 2 && (t[n - 2] === 10 || (n >= 4 && t[n - 2] === 13 && t[n - 3] === 10))) {
      t.length = 0;
      return true;
    }
  }
  return false;
}

/**
 * A relay's read buffer: 16 KiB, growing ×4 (up to 1 MiB) whenever a read fills it, so that a large body
 * crosses in few reads and writes (each a turn of the event loop, which a busy machine may delay) while
 * an idle connection holds little memory.
 */
class RelayBuffer {
  bytes = new Uint8Array(16 * 1024);
  /** The bytes of a read of `n`; a full read grows the buffer for the next one (after the chunk is used). */
  filled(n: number): Uint8Array {
    const chunk = this.bytes.subarray(0, n);
    if (n === this.bytes.length && n < 1024 * 1024) this.bytes = new Uint8Array(n * 4);
    return chunk;
  }
}

const HTTP1 = new TextEncoder().encode("HTTP/1.");

/** Whether a server's chunk starts an interim (1xx) response: `HTTP/1.x 1..`. */
function isInterim(chunk: Uint8Array): boolean {
  return chunk.length > 9 && HTTP1.every((b, i) => chunk[i] === b) && chunk[9] === 0x31;
}

/** Answers 503 (retry shortly) before anything is read, and closes the connection. */
async function refuse(client: Deno.Conn): Promise<void> {
  try {
    await writeAll(client, BUSY);
  } catch { /* the client left, or close() already closed it */ }
  try {
    client.close();
  } catch { /* closed */ }
}

function noDelay(conn: Deno.TcpConn): void {
  try {
    conn.setNoDelay(true);
  } catch { /* the socket is already gone */ }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

/**
 * Listens on hostname:port (throws what Deno.listen throws when it cannot) and serves `handler` behind
 * the guard.
 */
export function serveGuarded(opts: GuardedServerOptions, handler: Handler): GuardedServer {
  const { limits, log } = opts;
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  const addr = {
    hostname: (listener.addr as Deno.NetAddr).hostname,
    port: (listener.addr as Deno.NetAddr).port,
  };
  const relays = new Set<Relay>();
  const perClient = new Map<string, number>();
  /** The relay's outgoing port → the client it relays, for the handler's `remoteAddr`. */
  const byRelayPort = new Map<number, Deno.NetAddr>();
  const startInner = () =>
    Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      onError: opts.onError,
    }, (req, info) => {
      const client = byRelayPort.get(info.remoteAddr.port);
      return handler(req, client ? { ...info, remoteAddr: client } : info);
    });
  let inner: Deno.HttpServer<Deno.NetAddr>;
  try {
    inner = startInner();
  } catch (e) {
    listener.close();
    throw e;
  }
  let accepting = true;
  /** One line per run of failures of a kind, not one per connection. */
  const failing = new Set<string>();
  const failed = (kind: string, e: unknown) => {
    if (failing.has(kind)) return;
    failing.add(kind);
    log(
      `${kind} on ${opts.hostname}:${addr.port} failed (${
        e instanceof Error ? e.message.split("\n")[0] : e
      }); retrying`,
    );
  };
  const recovered = (kind: string) => {
    if (failing.delete(kind)) log(`${kind} on ${opts.hostname}:${addr.port} works again`);
  };
  // the private server stops when its own accept fails (out of file handles): start another
  const innerWatch = (async () => {
    for (;;) {
      try {
        await inner.finished;
        return;
      } catch (e) {
        if (!accepting) return;
        failed("the private server", e);
      }
      for (const backoff = new Backoff(); accepting;) {
        await backoff.pause();
        try {
          inner = startInner();
          recovered("the private server");
          break;
        } catch { /* still out of handles */ }
      }
    }
  })();

  const close = (r: Relay) => {
    if (r.closed) return;
    r.closed = true;
    relays.delete(r);
    const left = (perClient.get(r.address) ?? 1) - 1;
    if (left > 0) perClient.set(r.address, left);
    else perClient.delete(r.address);
    if (r.inner) byRelayPort.delete((r.inner.localAddr as Deno.NetAddr).port);
    for (const c of [r.client, r.inner]) {
      try {
        c?.close();
      } catch { /* already closed */ }
    }
  };

  // one sweep closes every connection past its deadline
  const sweepMs = Math.max(
    20,
    Math.min(1000, Math.floor(Math.min(limits.headerTimeoutMs, limits.idleTimeoutMs) / 4)),
  );
  const sweeper = setInterval(() => {
    const t = Date.now();
    for (const r of relays) if (r.deadline <= t) close(r);
  }, sweepMs);
  Deno.unrefTimer(sweeper);

  const upstream = async (r: Relay) => {
    const buf = new RelayBuffer();
    try {
      for (;;) {
        const n = await r.client.read(buf.bytes);
        if (n === null) break;
        const chunk = buf.filled(n);
        if (r.phase === "answered") {
          // the first byte of the next request on a kept-alive connection
          r.phase = "head";
          r.tail.length = 0;
          r.deadline = Date.now() + limits.headerTimeoutMs;
        }
        if (r.phase === "head" && endsHead(r, chunk)) {
          r.phase = "working";
          r.deadline = Infinity;
        }
        await writeAll(r.inner!, chunk);
      }
      // the client is done sending: let the server finish its answer
      await r.inner!.closeWrite().catch(() => {});
    } catch {
      close(r);
    }
  };

  const downstream = async (r: Relay) => {
    const buf = new RelayBuffer();
    try {
      for (;;) {
        const n = await r.inner!.read(buf.bytes);
        if (n === null) break;
        const chunk = buf.filled(n);
        // "100 Continue" answers nothing yet: the body it asks for is still part of the request
        const interim = r.phase === "working" && isInterim(chunk);
        // a client that stops reading is idle too
        if (r.phase !== "head") r.deadline = Date.now() + limits.idleTimeoutMs;
        await writeAll(r.client, chunk);
        if (interim) r.deadline = Infinity;
        else if (r.phase !== "head") {
          r.phase = "answered";
          r.deadline = Date.now() + limits.idleTimeoutMs;
        }
      }
    } catch { /* either side went away */ }
    close(r);
  };

  const admit = async (client: Deno.TcpConn) => {
    const address = (client.remoteAddr as Deno.NetAddr).hostname;
    const mine = perClient.get(address) ?? 0;
    if (!accepting || relays.size >= limits.maxConnections || mine >= limits.maxPerClient) {
      await refuse(client);
      return;
    }
    // no Nagle delay: a relayed answer written in parts (head, then body) must not wait for an ACK
    noDelay(client);
    const r: Relay = {
      client,
      address,
      phase: "head",
      deadline: Date.now() + limits.headerTimeoutMs,
      tail: [],
      closed: false,
    };
    relays.add(r);
    perClient.set(address, mine + 1);
    try {
      r.inner = await Deno.connect({ hostname: "127.0.0.1", port: inner.addr.port });
      noDelay(r.inner);
      byRelayPort.set((r.inner.localAddr as Deno.NetAddr).port, client.remoteAddr as Deno.NetAddr);
      recovered("relaying a connection");
    } catch (e) {
      // out of file handles, or the private server restarting: the client gets the same 503 as over a cap
      failed("relaying a connection", e);
      await refuse(client);
      close(r);
      return;
    }
    if (r.closed) {
      // the deadline passed while connecting
      try {
        r.inner.close();
      } catch { /* closed */ }
      return;
    }
    void upstream(r);
    void downstream(r);
  };

  const finished = (async () => {
    const backoff = new Backoff();
    while (accepting) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept() as Deno.TcpConn;
        backoff.reset();
        recovered("accepting connections");
      } catch (e) {
        if (!accepting || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break;
        failed("accepting connections", e);
        await backoff.pause();
        continue;
      }
      void admit(client);
    }
    await innerWatch;
    await inner.finished.catch(() => {});
  })();

  opts.onListen?.(addr);

  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    try {
      listener.close();
    } catch { /* closed */ }
  };
  return {
    addr,
    get open() {
      return relays.size;
    },
    finished,
    shutdown: async () => {
      stopAccepting();
      // Deno.serve's shutdown waits for the requests in flight, then closes its side of every connection
      await inner.shutdown().catch(() => {});
      // the answers just written still pass through the relays: let them drain (briefly) before closing
      for (let waited = 0; relays.size > 0 && waited < 1000; waited += 10) await sleep(10);
      for (const r of [...relays]) close(r);
      clearInterval(sweeper);
      await finished;
    },
    close: () => {
      stopAccepting();
      for (const r of [...relays]) close(r);
      clearInterval(sweeper);
      void inner.shutdown().catch(() => {});
    },
  };
}

/**
 * `Deno.serve` made to survive running out of file handles, shared by the edge and the worker.
 *
 * When accepting a connection fails (EMFILE, "Too many open files": every descriptor is held, e.g. by
 * idle or half-open connections), Deno.serve stops: its listener closes and `finished` rejects, which
 * unhandled ends the process. {@link serveResilient} logs one line instead and listens again on the
 * same address after a pause (1 s, doubling up to 10 s while it keeps failing), so the process keeps
 * its state and its work and answers again once descriptors are free. Deno.serve has no header, idle
 * or keep-alive timeouts; request bodies are bounded in time by the handlers (core/api/body.ts).
 *
 * A failure to listen the first time (a port in use) throws a {@link ListenError}: one line naming
 * the address.
 */

/** The address could not be bound (a port in use, an address not on this machine): a one-line message. */
export class ListenError extends Error {
  constructor(readonly host: string, readonly port: number, cause: unknown) {
    super(
      `cannot listen on ${host}:${port}: ${
        cause instanceof Error && cause.name === "AddrInUse"
          ? `port ${port} is already in use (choose another with --port)`
          : cause instanceof Error
          ? cause.message.split("\n")[0]
          : String(cause)
      }`,
    );
    this.name = "ListenError";
  }
}

export interface ResilientServeOptions {
  hostname: string;
  port: number;
  /** Called each time the server listens (again); `port` is the one bound (also for port 0). */
  onListen?: (addr: { hostname: string; port: number }) => void;
  /** Aborting closes the server and every connection (as Deno.serve's own `signal`). */
  signal?: AbortSignal;
  /** Where the one-line notices go (default console.error). */
  log?: (line: string) => void;
  /** First pause before listening again after the server stopped (ms, default 1000). */
  retryMs?: number;
}

export interface ResilientServer {
  /** Resolves once the server is shut down or aborted (never rejects). */
  readonly finished: Promise<void>;
  /** Stops accepting, lets running requests finish, closes the server. */
  shutdown(): Promise<void>;
}

type Handler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>;

const MAX_RETRY_MS = 10_000;

/** Serves `handler` on hostname:port, listening again whenever accepting connections fails. */
export function serveResilient(opts: ResilientServeOptions, handler: Handler): ResilientServer {
  const log = opts.log ?? ((line: string) => console.error(line));
  let port = opts.port;
  let stopped = false;
  const start = (): Deno.HttpServer<Deno.NetAddr> =>
    Deno.serve({
      hostname: opts.hostname,
      port,
      signal: opts.signal,
      onListen: (addr) => {
        port = addr.port;
        opts.onListen?.(addr);
      },
      // a handler that throws (it should not) answers 500 rather than ending anything
      onError: (e) => {
        log(`internal error: ${e instanceof Error ? e.stack ?? e.message : e}`);
        return new Response("internal error", { status: 500 });
      },
    }, handler);
  let current: Deno.HttpServer<Deno.NetAddr>;
  try {
    current = start();
  } catch (e) {
    throw new ListenError(opts.hostname, opts.port, e);
  }
  const wake = new Set<() => void>();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        wake.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      wake.add(done);
    });
  const stop = () => {
    stopped = true;
    for (const w of [...wake]) w();
  };
  opts.signal?.addEventListener("abort", stop, { once: true });
  const retryMs = opts.retryMs ?? 1000;
  const finished = (async () => {
    for (;;) {
      try {
        await current.finished;
        return; // shut down or aborted
      } catch (e) {
        if (stopped) return;
        const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
        log(`the server on ${opts.hostname}:${port} stopped accepting connections (${why}); listening again`);
      }
      for (let delay = retryMs;; delay = Math.min(MAX_RETRY_MS, delay * 2)) {
        await pause(delay);
        if (stopped) return;
        try {
          current = start();
          break;
        } catch (e) {
          const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
          log(`listening again on ${opts.hostname}:${port} failed (${why}); retrying`);
        }
      }
    }
  })();
  return {
    finished,
    shutdown: async () => {
      stop();
      await current.shutdown().catch(() => {});
      await finished;
    },
  };
}

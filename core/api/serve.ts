/**
 * The edge's and the worker's HTTP server: `Deno.serve` behind the connection guard of
 * core/api/guard.ts (connection caps, header and idle timeouts, and an accept loop that survives
 * running out of file handles: when accepting fails it logs one line and tries again, so the process
 * keeps its state and its work and answers again once descriptors are free). Request bodies are bounded
 * in time by the handlers (core/api/body.ts).
 *
 * A failure to listen (a port in use) throws a {@link ListenError}: one line naming the address.
 */
import { type GuardedServer, type GuardLimits, guardLimitsFromProcess, serveGuarded } from "./guard.ts";

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
  /** Called once listening; `port` is the one bound (also for port 0). */
  onListen?: (addr: { hostname: string; port: number }) => void;
  /** Aborting closes the server and every connection (as Deno.serve's own `signal`). */
  signal?: AbortSignal;
  /** Where the one-line notices go (default console.error). */
  log?: (line: string) => void;
  /** The guard's limits (default: from the environment, core/api/guard.ts). */
  limits?: GuardLimits;
}

export interface ResilientServer {
  /** Resolves once the server is shut down or aborted (never rejects). */
  readonly finished: Promise<void>;
  /** Stops accepting, lets running requests finish, closes the server. */
  shutdown(): Promise<void>;
}

type Handler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>;

/** Serves `handler` on hostname:port behind the connection guard. */
export function serveResilient(opts: ResilientServeOptions, handler: Handler): ResilientServer {
  const log = opts.log ?? ((line: string) => console.error(line));
  const limits = opts.limits ?? guardLimitsFromProcess();
  let server: GuardedServer;
  try {
    server = serveGuarded({
      hostname: opts.hostname,
      port: opts.port,
      limits,
      log,
      onListen: opts.onListen,
      // a handler that throws (it should not) answers 500 rather than ending anything
      onError: (e) => {
        log(`internal error: ${e instanceof Error ? e.stack ?? e.message : e}`);
        return new Response("internal error", { status: 500 });
      },
    }, handler);
  } catch (e) {
    throw new ListenError(opts.hostname, opts.port, e);
  }
  if (opts.signal?.aborted) server.close();
  else opts.signal?.addEventListener("abort", () => server.close(), { once: true });
  return { finished: server.finished, shutdown: () => server.shutdown() };
}

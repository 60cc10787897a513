/** Serving the edge app on a socket: shared by functions/main.ts and functions/start.ts. */
import { parseFlags, parseFlagValue } from "../core/flags.ts";
import { type ResilientServer, serveResilient } from "../core/api/serve.ts";
import { createApp, type EdgeApp } from "./app.ts";
import type { EdgeConfigInput } from "./config.ts";

export interface ServeOptions {
  host: string;
  port: number;
}

const PORT = { flag: "--port", kind: "int", min: 0, max: 65535 } as const;
const FLAGS = [{ flag: "--host", kind: "string" }, PORT] as const;

/** `--host H --port P` (with PORT from the environment as the port's default), read by core/flags.ts. */
export function parseServeArgs(argv: string[], defaults: ServeOptions): ServeOptions {
  const { values } = parseFlags(argv, FLAGS, { help: false });
  let envPort: string | undefined;
  try {
    envPort = Deno.env.get("PORT");
  } catch { /* no env access */ }
  const port = values.port ??
    (envPort ? parseFlagValue({ ...PORT, flag: "PORT" }, envPort) as number : defaults.port);
  return { host: values.host ?? defaults.host, port };
}

export interface RunningEdge {
  app: EdgeApp;
  url: string;
  /** Stops accepting connections, lets running requests finish (up to `graceMs`), closes the pool. */
  shutdown(graceMs?: number): Promise<void>;
  finished: Promise<void>;
}

/**
 * Serves a new app for `config` on host:port (port 0 picks a free one). A port that cannot be bound
 * throws a ListenError of core/api/serve.ts (after closing the app). Running out of file handles does not stop the
 * server: it listens again (core/api/serve.ts).
 */
export async function serveEdge(config: EdgeConfigInput, opts: ServeOptions): Promise<RunningEdge> {
  const app = createApp(config);
  const listening = Promise.withResolvers<string>();
  let server: ResilientServer;
  try {
    server = serveResilient({
      hostname: opts.host,
      port: opts.port,
      log: config.log,
      onListen: ({ hostname, port }) => {
        const host = hostname.includes(":") ? `[${hostname}]` : hostname;
        listening.resolve(`http://${host}:${port}`);
      },
    }, (req, info) => app.fetch(req, info));
  } catch (e) {
    await app.close();
    throw e;
  }
  const url = await listening.promise;
  app.pool.startBackground();
  let stopping: Promise<void> | undefined;
  const shutdown = (graceMs = 5000) =>
    stopping ??= (async () => {
      const timer = setTimeout(() => void server.shutdown(), graceMs);
      await Promise.race([server.shutdown(), server.finished]);
      clearTimeout(timer);
      await app.close();
    })();
  return { app, url, shutdown, finished: server.finished };
}

/** The start-up notice about authentication (docs/contracts.md §2: an open server says so). */
export function authNotice(app: EdgeApp): string {
  return app.open
    ? "warning: no API keys configured (GENIE_API_KEYS): the server is open to anyone"
    : "API keys required (Authorization: Bearer <key>)";
}

/** Runs `stop` once on the first SIGINT or SIGTERM. */
export function onSignals(stop: (signal: string) => void): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(sig, () => stop(sig));
    } catch { /* signal not supported here */ }
  }
}

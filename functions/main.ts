/**
 * Serves the edge app alone: `deno task serve [--host 127.0.0.1] [--port 8000]` with workers from
 * GENIE_WORKER_URLS (see functions/config.ts for every variable). Prints `listening on http://HOST:PORT`.
 * `deno task start` (functions/start.ts) also starts a worker.
 */
import { configFromEnv } from "./config.ts";
import { DEFAULT_JOBS_CONFIG } from "./jobs/config.ts";
import { registerJobsCron, startJobs } from "./jobs/cron.ts";
import { authNotice, onSignals, parseServeArgs, serveEdge } from "./serve.ts";

/** Deno Deploy sets DENO_DEPLOYMENT_ID and chooses the address itself. */
function onDenoDeploy(): boolean {
  try {
    return Boolean(Deno.env.get("DENO_DEPLOYMENT_ID"));
  } catch {
    return false;
  }
}

// Deno Deploy discovers cron jobs at the module's top level: the batch-jobs tick (functions/jobs/cron.ts).
if (import.meta.main) {
  let spec: string | undefined;
  try {
    spec = Deno.env.get("GENIE_JOBS_CRON");
  } catch { /* no env access */ }
  registerJobsCron(spec || DEFAULT_JOBS_CONFIG.cronSpec);
}

if (import.meta.main && onDenoDeploy()) {
  const { createApp } = await import("./app.ts");
  const app = createApp(configFromEnv());
  app.pool.startBackground();
  if (app.open) {
    console.error("warning: no API keys configured (GENIE_API_KEYS): the server is open to anyone");
  }
  console.error(await startJobs(app.jobs));
  Deno.serve((req, info) => app.fetch(req, info));
} else if (import.meta.main) {
  let opts;
  try {
    opts = parseServeArgs(Deno.args, { host: "127.0.0.1", port: 8000 });
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    Deno.exit(2);
  }
  const config = configFromEnv();
  if (config.workerUrls.length === 0) {
    console.error("warning: GENIE_WORKER_URLS is empty: no worker to forward to");
  }
  let edge;
  try {
    edge = await serveEdge(config, opts);
  } catch (e) {
    // e.g. the port is in use: one line naming it
    console.error(e instanceof Error ? e.message : e);
    Deno.exit(1);
  }
  console.error(authNotice(edge.app));
  console.error(await startJobs(edge.app.jobs));
  console.log(`listening on ${edge.url}`);
  onSignals(async () => {
    await edge.shutdown();
    Deno.exit(0);
  });
}

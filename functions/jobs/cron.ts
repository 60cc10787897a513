/**
 * The Deno.cron tick of batch jobs. Deno Deploy discovers cron jobs when the entry point's module is
 * evaluated, so functions/main.ts calls {@link registerJobsCron} at its top level, with the tick spec
 * from configuration (GENIE_JOBS_CRON, default every minute). User schedules are not Deno.cron jobs:
 * each recurring job keeps its own spec in KV, and every tick runs the job systems' sweep, which
 * starts the runs that are due (functions/jobs/runner.ts `tick`), re-kicks stalled jobs and expires
 * old ones.
 *
 * Where Deno.cron is missing (locally without --unstable-cron) nothing is registered: each job
 * system's sweeper timer checks due schedules every GENIE_JOBS_SWEEP_MS instead.
 */
import type { JobSystem } from "./system.ts";

const systems = new Set<JobSystem>();

/** Lets the cron tick reach `system` until the returned function is called. */
export function attachToCron(system: JobSystem): () => void {
  systems.add(system);
  return () => systems.delete(system);
}

/** One tick: sweeps every attached job system (errors are logged, never thrown). */
export async function cronTick(log: (m: string) => void = console.error): Promise<void> {
  await Promise.all([...systems].map((s) => s.sweep().catch((e) => log(`jobs: cron tick failed: ${e}`))));
}

/**
 * Registers the tick with Deno.cron when it exists; returns whether it did. Call at module top level,
 * once per process.
 */
export function registerJobsCron(spec: string, name = "genie-jobs-tick"): boolean {
  const cron = (Deno as unknown as {
    cron?: (name: string, schedule: string, handler: () => Promise<void>) => Promise<void>;
  }).cron;
  if (typeof cron !== "function") return false;
  try {
    void cron(name, spec, () => cronTick()).catch(() => {});
    return true;
  } catch (e) {
    console.error(`jobs: could not register Deno.cron ${JSON.stringify(spec)}: ${e}`);
    return false;
  }
}

/**
 * Starts a server's job system (opens KV, resumes unfinished jobs) and attaches it to the cron tick;
 * returns a one-line notice for the start-up log. A failure leaves `/v1/jobs` answering 503.
 */
export async function startJobs(system: JobSystem | undefined): Promise<string> {
  if (!system) return "batch jobs: off (GENIE_JOBS=off)";
  try {
    await system.start();
  } catch (e) {
    return `warning: batch jobs are unavailable: ${e instanceof Error ? e.message : e}`;
  }
  attachToCron(system);
  const c = system.config;
  return `batch jobs: KV ${
    c.kvPath ?? "(default database)"
  }, ${system.driver} driver, results in ${c.resultsDir}`;
}

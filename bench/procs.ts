/**
 * Server processes for the benchmarks that time real HTTP hops (`bench:edge`, `bench:jobs`): each
 * server runs as a separate `deno` process on loopback and is ready once it prints `listening on <url>`.
 */
import { textLines } from "../functions/child.ts";
export { freePort } from "../functions/child.ts";

/** A started server: its base URL and the process. */
export interface Proc {
  url: string;
  child: Deno.ChildProcess;
}

/**
 * Starts `deno <args>` with `env` (NO_COLOR set) and resolves once its stdout announces
 * `listening on <url>`; rejects when it exits first. Output lines for which `echo` is true (stdout lines
 * other than the announcement, and stderr lines) are repeated on stderr as `[name] line`.
 */
export async function spawnServer(
  args: string[],
  env: Record<string, string>,
  name: string,
  echo: (line: string) => boolean,
): Promise<Proc> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const found = Promise.withResolvers<string>();
  const pump = async (s: ReadableStream<Uint8Array>, out: boolean) => {
    for await (const line of textLines(s)) {
      const m = out ? /^listening on (http:\/\/\S+)/.exec(line) : null;
      if (m) found.resolve(m[1]);
      else if (echo(line)) console.error(`[${name}] ${line}`);
    }
  };
  void pump(child.stdout, true);
  void pump(child.stderr, false);
  const url = await Promise.race([
    found.promise,
    child.status.then((s) => Promise.reject(new Error(`${name} exited with ${s.code}`))),
  ]);
  return { url, child };
}

/** Sends SIGTERM to each server (if still running) and waits for it to exit. */
export async function stopServers(procs: Proc[]): Promise<void> {
  for (const p of procs) {
    try {
      p.child.kill("SIGTERM");
    } catch { /* gone */ }
    await p.child.status;
  }
}

/** The `deno` arguments of a task in deno.json (its command line without the leading `deno`). */
export async function taskArgs(name: string): Promise<string[]> {
  const tasks = JSON.parse(await Deno.readTextFile("deno.json")).tasks;
  return (tasks[name] as string).split(/\s+/).slice(1);
}

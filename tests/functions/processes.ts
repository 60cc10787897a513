/** Child processes that print `listening on http://HOST:PORT` (workers, the edge, `deno task start`). */
import { textLines } from "../../functions/child.ts";

export interface Listening {
  url: string;
  child: Deno.ChildProcess;
  /** Everything the process wrote so far (stdout and stderr, interleaved by line). */
  output(): string;
  /** Sends `signal` and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

const ROOT = new URL("../../", import.meta.url);

/** Starts `deno <args>` in the repository root and waits for its `listening on` line on stdout. */
export async function spawnListening(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Listening> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const found = Promise.withResolvers<string>();
  const pump = async (stream: ReadableStream<Uint8Array>, isStdout: boolean) => {
    for await (const line of textLines(stream)) {
      lines.push(line);
      const m = isStdout ? /^listening on (http:\/\/\S+)\s*$/.exec(line) : null;
      if (m) found.resolve(m[1]);
    }
  };
  const pumps = Promise.all([pump(child.stdout, true), pump(child.stderr, false)]);
  const status = child.status;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const url = await Promise.race([
      found.promise,
      status.then((s) => {
        throw new Error(`exited with ${s.code} before listening:\n${lines.join("\n")}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`not listening after ${opts.timeoutMs ?? 60000} ms:\n${lines.join("\n")}`)),
          opts.timeoutMs ?? 60_000,
        );
      }),
    ]);
    return {
      url,
      child,
      output: () => lines.join("\n"),
      stop: async (signal: Deno.Signal = "SIGTERM") => {
        try {
          child.kill(signal);
        } catch { /* already gone */ }
        const s = await status;
        await pumps;
        return s;
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

/** The `deno run …` arguments of a task in deno.json (e.g. "worker"), so tests can signal the process itself. */
export async function taskArgs(name: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: string | undefined = config.tasks?.[name];
  if (!task || !task.startsWith("deno ")) throw new Error(`no "deno …" task ${name}`);
  return task.split(/\s+/).slice(1);
}

/** Whether a file exists relative to the repository root. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(path, ROOT));
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns true or `timeoutMs` passes. */
export async function eventually(
  fn: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  stepMs = 50,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(stepMs);
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

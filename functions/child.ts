/**
 * Helpers for child processes: reading their output by lines, a port for them to listen on, and
 * starting a server process that announces `listening on http://HOST:PORT` (benchmarks, tests).
 */

/** The lines of a UTF-8 byte stream (a child process's output), without their "\n"; a last unterminated line too. */
export async function* textLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

/** A TCP port on `host` that was free a moment ago (bound, then released). */
export function freePort(host = "127.0.0.1"): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A server process started by {@link spawnListening}. */
export interface Listening {
  url: string;
  child: Deno.ChildProcess;
  /** Everything the process wrote so far (stdout and stderr, interleaved by line). */
  output(): string;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Sends `signal` (if still running) and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

const ROOT = new URL("../", import.meta.url);

/**
 * Starts `deno <args>` in the repository root with `env` (NO_COLOR set) and resolves once its stdout
 * announces `listening on <url>`; rejects, with the output so far, when it exits first or is not
 * listening after `timeoutMs`. With `echo`, output lines it accepts are repeated on stderr as
 * `[name] line`. With `openFiles`, the process runs under `ulimit -n openFiles` (through bash).
 */
export async function spawnListening(
  args: string[],
  opts: {
    env?: Record<string, string>;
    timeoutMs?: number;
    echo?: { name: string; show: (line: string) => boolean };
    openFiles?: number;
  } = {},
): Promise<Listening> {
  const quoted = () => [Deno.execPath(), ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const [command, commandArgs] = opts.openFiles === undefined
    ? [Deno.execPath(), args]
    : ["bash", ["-c", `ulimit -n ${opts.openFiles} && exec ${quoted()}`]];
  const child = new Deno.Command(command, {
    args: commandArgs,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    // its own process group, so that whatever it starts can be stopped with it
    detached: true,
  }).spawn();
  const killGroup = (signal: Deno.Signal) => {
    try {
      Deno.kill(-child.pid, signal);
    } catch { /* the group is gone */ }
  };
  const lines: string[] = [];
  const found = Promise.withResolvers<string>();
  const pump = async (stream: ReadableStream<Uint8Array>, isStdout: boolean) => {
    for await (const line of textLines(stream)) {
      lines.push(line);
      const m = isStdout ? /^listening on (http:\/\/\S+)\s*$/.exec(line) : null;
      if (m) found.resolve(m[1]);
      else if (opts.echo?.show(line)) console.error(`[${opts.echo.name}] ${line}`);
    }
  };
  const pumps = Promise.all([pump(child.stdout, true), pump(child.stderr, false)]);
  /**
   * Waits for the output to end. Processes the child started and that outlived it (a task runner's
   * children after a SIGKILL) hold the pipes open: after 5 s they are killed with the group.
   */
  const drain = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000)));
    const ended = await Promise.race([pumps.then(() => true), late]);
    clearTimeout(timer);
    if (!ended) {
      killGroup("SIGKILL");
      await pumps;
    }
  };
  let done = false;
  const status = child.status.then((s) => {
    done = true;
    return s;
  });
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const url = await Promise.race([
      found.promise,
      status.then((s) => {
        throw new Error(`exited with ${s.code} before listening:\n${lines.join("\n")}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`not listening after ${timeoutMs} ms:\n${lines.join("\n")}`)),
          timeoutMs,
        );
      }),
    ]);
    return {
      url,
      child,
      output: () => lines.join("\n"),
      exited: () => done,
      stop: async (signal: Deno.Signal = "SIGTERM") => {
        try {
          child.kill(signal);
        } catch { /* already gone */ }
        const s = await status;
        await drain();
        return s;
      },
    };
  } catch (e) {
    killGroup("SIGKILL");
    await status;
    await drain();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** The `deno …` arguments of a task in deno.json (its command line without the leading `deno`). */
export async function taskArgs(name: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: string | undefined = config.tasks?.[name];
  if (!task || !task.startsWith("deno ")) throw new Error(`no "deno …" task ${name}`);
  return task.split(/\s+/).slice(1);
}

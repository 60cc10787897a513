/**
 * A port already in use: `deno task start --port P` and `deno task worker --port P` each exit with a
 * status ≠ 0 and a one-line message naming the port (no stack trace), and `start` leaves no worker
 * process behind.
 */
import { assert, assertMatch, assertNotEquals } from "../testing.ts";
import { taskArgs } from "./processes.ts";

const ROOT = new URL("../../", import.meta.url);

async function run(args: string[], env: Record<string, string>, timeoutMs = 120_000) {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function refused(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
    await r.body?.cancel();
    return false;
  } catch {
    return true;
  }
}

/** The lines of `stderr` that are not the start command's own progress lines or the worker's output. */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim() && !l.startsWith("[worker]"));
}

Deno.test("deno task start on a busy port: one line naming the port, exit ≠ 0, no worker left", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const dir = await Deno.makeTempDir({ prefix: "genie-port-" });
  try {
    // the real worker through `deno task`, as `deno task start` runs it (a task process and its child)
    const r = await run([...(await taskArgs("start")), "--port", String(port)], {
      GENIE_WORKER_COMMAND: "task worker --models gmm2d --providers cpu",
      GENIE_MODELS_DIR: dir,
      GENIE_WORKER_URLS: "",
      GENIE_JOBS: "off",
      GENIE_START_VERBOSE: "1",
    });
    assertNotEquals(r.code, 0, r.stderr);
    const lines = errorLines(r.stderr);
    const message = lines.filter((l) => l.includes(String(port)));
    assert(message.length === 1, `one line naming port ${port}:\n${r.stderr}`);
    assertMatch(message[0], /already in use/);
    assert(!/^\s+at /m.test(r.stderr), `no stack trace:\n${r.stderr}`);
    assert(!/uncaught/i.test(r.stderr), r.stderr);
    const worker = /\[start\] worker at (http:\/\/\S+)/.exec(r.stderr);
    assert(worker, `the worker was started:\n${r.stderr}`);
    // the worker this command started is gone: its port no longer answers
    assert(await refused(worker[1]), `the worker at ${worker[1]} is still running`);
  } finally {
    taken.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task worker on a busy port: one line naming the port, exit ≠ 0", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const dir = await Deno.makeTempDir({ prefix: "genie-port-" });
  try {
    const r = await run([
      ...(await taskArgs("worker")),
      "--port",
      String(port),
      "--models-dir",
      dir,
      "--models",
      "gmm2d",
      "--providers",
      "cpu",
    ], {});
    assertNotEquals(r.code, 0, r.stderr);
    const lines = errorLines(r.stderr).filter((l) => l.includes(String(port)));
    assert(lines.length === 1, `one line naming port ${port}:\n${r.stderr}`);
    assertMatch(lines[0], /already in use/);
    assert(!/^\s+at /m.test(r.stderr), `no stack trace:\n${r.stderr}`);
    assert(!r.stdout.includes("listening on"), r.stdout);
  } finally {
    taken.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * PyTorch for `deno task bench:peer` (bench/peer.ts): present, or installed by `--setup`, and bench/peer.py
 * as a child process serving JSON lines.
 */
import { join } from "node:path";
import { textLines } from "../../functions/child.ts";

/** The repository's root: commands run there. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** Whether a file exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs a command in the repository's root and collects its output. */
export async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** The version of PyTorch `python` imports, or undefined when it cannot. */
export async function torchVersion(python: string): Promise<string | undefined> {
  try {
    const r = await run(python, ["-c", "import numpy, torch; print(torch.__version__)"]);
    return r.ok ? r.stdout.trim() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Exits unless `python` imports PyTorch: with a hint (2), or, with `setup`, after installing it with
 * apt-get (through sudo unless root; 1 when that fails).
 */
export async function ensureTorch(python: string, setup: boolean, log: (s: string) => void): Promise<void> {
  if (!(await torchVersion(python))) {
    const command = "apt-get install -y python3-torch";
    if (!setup) {
      console.error(
        `bench:peer needs PyTorch for ${python} (import torch failed). Install it with ` +
          `\`sudo ${command}\` (Debian, about 300 MB), or run \`deno task bench:peer --setup\`.`,
      );
      Deno.exit(2);
    }
    const root = Deno.uid?.() === 0;
    log(`installing PyTorch: ${root ? "" : "sudo "}${command}`);
    const r = await run(root ? "apt-get" : "sudo", root ? command.split(" ").slice(1) : command.split(" "), {
      DEBIAN_FRONTEND: "noninteractive",
    });
    if (!r.ok || !(await torchVersion(python))) {
      console.error(`installing python3-torch failed (${r.code}):\n${r.stderr.slice(-2000)}`);
      Deno.exit(1);
    }
  }
}

/** What bench/peer.py reports once the network is built and exported. */
export interface PeerReady {
  params: number;
  gflop: number;
  torch: string;
  threads: number;
  jvp: string;
  python: string;
}

/** How bench/peer.py builds and exports the network. */
export interface PeerOptions {
  python: string;
  /** Where the export goes. */
  exportDir: string;
  width: number;
  threads: number;
  /** Its forward-mode AD (--jvp). */
  jvp: string;
}

/** bench/peer.py serving JSON lines: one command at a time. */
export class Peer {
  #child: Deno.ChildProcess;
  #lines: AsyncGenerator<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly stderr: string[] = [];

  constructor(o: PeerOptions) {
    this.#child = new Deno.Command(o.python, {
      args: [
        join(ROOT, "bench/peer.py"),
        "serve",
        "--out",
        o.exportDir,
        "--width",
        String(o.width),
        "--threads",
        String(o.threads),
        "--jvp",
        o.jvp,
      ],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = textLines(this.#child.stdout);
    this.#writer = this.#child.stdin.getWriter();
    const stderr = this.#child.stderr;
    (async () => {
      for await (const line of textLines(stderr)) this.stderr.push(line);
    })();
  }

  async next(): Promise<Record<string, unknown>> {
    const r = await this.#lines.next();
    if (r.done) throw new Error(`bench/peer.py ended:\n${this.stderr.slice(-30).join("\n")}`);
    return JSON.parse(r.value);
  }

  async send(msg: unknown): Promise<Record<string, unknown>> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
    return await this.next();
  }

  async close(): Promise<void> {
    try {
      await this.#writer.write(new TextEncoder().encode(`{"cmd": "quit"}\n`));
      await this.#writer.close();
    } catch { /* gone */ }
    await this.#child.status;
  }
}

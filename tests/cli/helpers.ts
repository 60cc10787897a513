/** Running the CLI entry points as subprocesses, with the permissions their deno.json tasks grant. */

const ROOT = new URL("../../", import.meta.url);

/** The `--allow-*` flags of a deno.json task, so that tests run with exactly what the task grants. */
async function taskPermissions(task: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const command: string = config.tasks[task];
  return command.split(/\s+/).filter((w) => w.startsWith("--allow-") || w === "-A");
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deno task <task> …args` (as `deno run <task permissions> cli/<task>.ts …args`) from the repository
 * root, with `env` added to the environment.
 */
export async function runCli(
  task: "sample" | "encode",
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const perms = await taskPermissions(task);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...perms, `cli/${task}.ts`, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A temporary directory for one test, removed afterwards. */
export async function withTempDir<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "genie-cli-" });
  try {
    return await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A 2-D mixture of two Gaussians. */
export const MIXTURE_2D = {
  weights: [0.3, 0.7],
  means: [[1, -0.5], [-0.8, 0.6]],
  stds: [0.1, 0.2],
};

/** A mixture of two 1×2×2 "images" (for PNG output). */
export const MIXTURE_IMAGES = {
  weights: [0.5, 0.5],
  means: [[1, -1, 1, -1], [-1, 1, -1, 1]],
  stds: [0.05, 0.05],
  shape: [1, 2, 2],
};

/** Writes a mixture spec into `dir` and returns its `--model` value. */
export async function writeSpec(dir: string, name: string, spec: unknown): Promise<string> {
  const path = `${dir}/${name}.json`;
  await Deno.writeTextFile(path, JSON.stringify(spec));
  return `gmm:${path}`;
}

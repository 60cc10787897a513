/**
 * The README's shell commands (its fenced `sh` blocks) work as written: every `deno task X` names a task
 * of deno.json, every file they read exists, every file they write goes under the git-ignored `out/`,
 * Deno is pinned to the version CI installs, and the commands on the analytic 2-D mixture run.
 */
import { assert, assertEquals, assertStrictEquals, test } from "../testing.ts";
import { runCli, withTempDir } from "../cli/helpers.ts";

const ROOT = new URL("../../", import.meta.url);
const README = await Deno.readTextFile(new URL("README.md", ROOT));
const TASKS: Record<string, string> = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))).tasks;

/** The commands of the README's ```sh blocks: continuation lines joined, comments dropped. */
function shellCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    const joined = m[1].replace(/\\\n\s*/g, " ");
    for (const line of joined.split("\n")) {
      const cmd = stripComment(line).trim();
      if (cmd) out.push(cmd);
    }
  }
  return out;
}

/** A line without its `# comment` (a # that starts a word outside quotes). */
function stripComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

/** Shell words of a command (quotes removed; no expansions in these commands). */
function words(cmd: string): string[] {
  return [...cmd.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]);
}

/** `deno task X …` or `npx -y deno@V task X …`: the task and its arguments, else undefined. */
function denoTask(w: string[]): { task: string; args: string[]; version?: string } | undefined {
  if (w[0] === "deno" && w[1] === "task") return { task: w[2], args: w.slice(3) };
  if (w[0] === "npx" && w[1] === "-y" && w[2]?.startsWith("deno@") && w[3] === "task") {
    return { task: w[4], args: w.slice(5), version: w[2].slice(5) };
  }
  return undefined;
}

/** The Deno version .ci/run installs. */
async function ciDenoVersion(): Promise<string> {
  const m = /^DENO_VERSION=(\S+)$/m.exec(await Deno.readTextFile(new URL(".ci/run", ROOT)));
  assert(m, ".ci/run sets DENO_VERSION");
  return m[1];
}

function exists(path: string): boolean {
  try {
    Deno.statSync(new URL(path, ROOT));
    return true;
  } catch {
    return false;
  }
}

/** Flags whose value is a file the command writes, and (curl) the output flag. */
const OUTPUT_FLAGS = new Set(["--out", "-o"]);
/** Flags whose value is a file the command reads. */
const INPUT_FLAGS = new Set(["--images", "--latents", "--model"]);

const COMMANDS = shellCommands(README);

test("the README has the quick start and more shell commands", () => {
  assert(COMMANDS.includes("npx -y deno@2.9.6 task start"), "quick start: start");
  assert(COMMANDS.includes("npx -y deno@2.9.6 task test"), "quick start: test");
  assert(COMMANDS.length >= 10, `${COMMANDS.length} commands`);
});

test("every deno task of the README exists, and npx pins the Deno version CI installs", async () => {
  const version = await ciDenoVersion();
  let tasks = 0;
  for (const cmd of COMMANDS) {
    const w = words(cmd);
    if (w[0] === "npm" && w[1] === "install") {
      assert(w.includes(`deno@${version}`), `${cmd}: installs deno@${version}`);
    }
    const t = denoTask(w);
    if (!t) {
      // Anything else that starts with deno must be a task (the README runs nothing else through deno).
      assert(w[0] !== "deno" && !(w[0] === "npx" && w[2]?.startsWith("deno@")), `${cmd}: not a task`);
      continue;
    }
    tasks++;
    assert(t.task in TASKS, `${cmd}: deno.json has no task ${JSON.stringify(t.task)}`);
    if (t.version !== undefined) assertStrictEquals(t.version, version, cmd);
  }
  assert(tasks >= 8, `${tasks} task commands`);
});

test("files the README's commands read exist; files they write go under out/", () => {
  const written = new Set<string>();
  for (const cmd of COMMANDS) {
    const w = words(cmd);
    for (let i = 0; i < w.length; i++) {
      const flag = w[i], value = w[i + 1];
      if (value === undefined) continue;
      if (OUTPUT_FLAGS.has(flag)) {
        assert(value.startsWith("out/"), `${cmd}: writes ${value} outside out/`);
        written.add(value);
      } else if (INPUT_FLAGS.has(flag) && /[./]/.test(value)) {
        const path = value.replace(/^gmm:/, "");
        assert(written.has(path) || exists(path), `${cmd}: ${path} does not exist`);
      }
    }
    // Paths given as plain arguments (deno task test FILE, bash SCRIPT).
    const t = denoTask(w);
    const plain = t?.task === "test" ? t.args : w[0] === "bash" ? w.slice(1) : [];
    for (const p of plain.filter((a) => !a.startsWith("-"))) assert(exists(p), `${cmd}: ${p} does not exist`);
  }
  assert(written.size >= 4, `${written.size} outputs`);
});

test("out/ is ignored by git", async () => {
  const ignore = (await Deno.readTextFile(new URL(".gitignore", ROOT))).split("\n").map((l) => l.trim());
  assert(ignore.includes("out/") || ignore.includes("/out/"), ".gitignore lists out/");
});

test("the README's sample and encode commands on analytic mixtures run as written", async () => {
  await withTempDir(async (dir) => {
    let ran = 0;
    for (const cmd of COMMANDS) {
      const t = denoTask(words(cmd));
      if (!t || (t.task !== "sample" && t.task !== "encode")) continue;
      const model = t.args[t.args.indexOf("--model") + 1] ?? "";
      if (!model.startsWith("gmm:")) continue; // ONNX models are covered by their own tests
      // Outputs (and inputs written by earlier commands) go to a temporary out/.
      const args = t.args.map((a) => (a.startsWith("out/") ? `${dir}/${a}` : a));
      const r = await runCli(t.task, args);
      assertStrictEquals(r.code, 0, `${cmd}\n${r.stderr}`);
      if (args.includes("--json")) {
        const line = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
        assertEquals(typeof line.nfe, "number", cmd);
      }
      ran++;
    }
    assert(ran >= 4, `${ran} commands ran`);
  });
});

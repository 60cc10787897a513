/**
 * The project's test runner: `deno task test [PATH…] [deno test flags…]`.
 *
 * 1. Deno: `deno test` over tests/ (or the given paths); results are read back from its JUnit report.
 * 2. Node.js: each test under tests/core is bundled to plain ESM (node:test and node:assert stay
 *    external) and run by `node --test`, proving that core/ is runtime-neutral; results are read back
 *    from its TAP report. Flags are for the Deno run; paths select the core tests for both.
 *
 * Prints one line per runtime and, last, `N passed, N failed` over both. Only tests that were seen to
 * run are counted. Exits non-zero when a test failed or a runner did not finish.
 */

const OUT = ".test";
const JUNIT = `${OUT}/junit.xml`;
const NODE_DIR = `${OUT}/node`;
const TAP = `${OUT}/node.tap`;
const CORE_TESTS = "tests/core";

interface Tally {
  runtime: string;
  passed: number;
  failed: number;
  skipped: number;
  /** Why the runner's result is incomplete, if it is. */
  problem?: string;
}

/** Runs a command with the terminal attached; returns its exit code, or null when it cannot start. */
async function run(
  cmd: string,
  args: string[],
  quiet = false,
): Promise<{ code: number | null; log: string }> {
  const output = quiet ? "piped" : "inherit";
  try {
    const r = await new Deno.Command(cmd, { args, stdin: "null", stdout: output, stderr: output }).output();
    const log = quiet ? new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr) : "";
    return { code: r.code, log };
  } catch (e) {
    return { code: null, log: `cannot run ${cmd}: ${e instanceof Error ? e.message : e}` };
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Test files (`*.test.ts`) under a folder, sorted. */
function testFiles(dir: string): string[] {
  if (!exists(dir)) return [];
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...testFiles(path));
    else if (entry.isFile && entry.name.endsWith(".test.ts")) out.push(path);
  }
  return out.sort();
}

const unescapeXml = (s: string) =>
  s.replace(
    /&(lt|gt|quot|apos|amp);/g,
    (_, e) => ({ lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" })[e as "lt"],
  );

/**
 * Counts a Deno JUnit report. Tests with steps (describe blocks, t.step) appear as a testcase
 * followed by one testcase per step named "parent > step"; only leaves are counted, and a parent
 * counts as a failure only when it failed for a reason other than its steps.
 */
function countJunit(xml: string): { passed: number; failed: number; skipped: number } {
  const cases = [...xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)].map((m) => ({
    name: unescapeXml(/\bname="([^"]*)"/.exec(m[1])?.[1] ?? ""),
    body: m[2] ?? "",
  }));
  const names = cases.map((c) => c.name);
  let passed = 0, failed = 0, skipped = 0;
  for (const { name, body } of cases) {
    const failure = /<(failure|error)\b(?:[^>]*\bmessage="([^"]*)")?/.exec(body);
    const isParent = names.some((n) => n.startsWith(`${name} > `));
    if (isParent) {
      if (failure && !/^\d+ test steps? failed/.test(failure[2] ?? "")) failed++;
    } else if (failure) failed++;
    else if (/<skipped\b/.test(body)) skipped++;
    else passed++;
  }
  return { passed, failed, skipped };
}

/** Counts the summary of a `node --test` TAP report (`# pass N`, `# fail N`, …). */
function countTap(tap: string): { passed: number; failed: number; skipped: number } | undefined {
  const get = (key: string) => {
    const m = new RegExp(`^# ${key} (\\d+)\\s*$`, "m").exec(tap);
    return m ? Number(m[1]) : undefined;
  };
  const passed = get("pass"), failed = get("fail");
  if (passed === undefined || failed === undefined) return undefined;
  return {
    passed,
    failed: failed + (get("cancelled") ?? 0),
    skipped: (get("skipped") ?? 0) + (get("todo") ?? 0),
  };
}

async function denoTests(paths: string[], flags: string[]): Promise<Tally> {
  const deno = Deno.execPath();
  const args = [
    "test",
    "-A",
    "--unstable-kv",
    `--junit-path=${JUNIT}`,
    ...flags,
    ...(paths.length ? paths : ["tests/"]),
  ];
  console.log(`\n== deno ${args.join(" ")}`);
  const { code, log } = await run(deno, args);
  const xml = await readText(JUNIT);
  const tally: Tally = { runtime: "deno", ...(xml ? countJunit(xml) : { passed: 0, failed: 0, skipped: 0 }) };
  if (code === null) tally.problem = log;
  else if (!xml) tally.problem = `deno test exited with code ${code} without a report`;
  else if (code !== 0 && tally.failed === 0) tally.problem = `deno test exited with code ${code}`;
  return tally;
}

async function nodeTests(files: string[]): Promise<Tally> {
  const tally: Tally = { runtime: "node", passed: 0, failed: 0, skipped: 0 };
  console.log(`\n== node --test: ${files.length} core test file(s), bundled to ${NODE_DIR}/`);
  if (files.length === 0) return tally;
  const bundles: string[] = [], broken: string[] = [];
  for (const file of files) {
    const name = file.slice(CORE_TESTS.length + 1).replaceAll("/", "__").replace(/\.ts$/, ".mjs");
    const out = `${NODE_DIR}/${name}`;
    const { code, log } = await run(Deno.execPath(), ["bundle", "--platform", "deno", "-o", out, file], true);
    if (code === 0) bundles.push(out);
    else {
      console.error(`bundling ${file} failed:\n${log}`);
      broken.push(file);
    }
  }
  if (bundles.length > 0) {
    const reporters = ["--test-reporter=spec", "--test-reporter-destination=stdout"];
    reporters.push("--test-reporter=tap", `--test-reporter-destination=${TAP}`);
    const { code, log } = await run("node", ["--test", ...reporters, ...bundles]);
    const counts = countTap((await readText(TAP)) ?? "");
    if (counts) Object.assign(tally, counts);
    if (code === null) tally.problem = log;
    else if (!counts) tally.problem = `node --test exited with code ${code} without a summary`;
    else if (code !== 0 && tally.failed === 0) tally.problem = `node --test exited with code ${code}`;
  }
  if (broken.length > 0) {
    tally.problem = [`could not bundle ${broken.join(", ")}`, tally.problem].filter(Boolean).join("; ");
  }
  return tally;
}

if (import.meta.main) {
  const paths = Deno.args.filter(exists), flags = Deno.args.filter((a) => !exists(a));
  await Deno.remove(OUT, { recursive: true }).catch(() => {});
  await Deno.mkdir(NODE_DIR, { recursive: true });

  const real = (p: string) => Deno.realPathSync(p);
  const selected = (file: string) =>
    paths.length === 0 || paths.some((p) => real(file) === real(p) || real(file).startsWith(`${real(p)}/`));
  const tallies = [await denoTests(paths, flags), await nodeTests(testFiles(CORE_TESTS).filter(selected))];

  console.log("");
  for (const t of tallies) {
    const skipped = t.skipped ? `, ${t.skipped} skipped` : "";
    console.log(
      `${t.runtime}: ${t.passed} passed, ${t.failed} failed${skipped}${t.problem ? ` (${t.problem})` : ""}`,
    );
  }
  const passed = tallies.reduce((n, t) => n + t.passed, 0),
    failed = tallies.reduce((n, t) => n + t.failed, 0);
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed > 0 || tallies.some((t) => t.problem) ? 1 : 0);
}

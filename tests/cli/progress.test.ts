/** The command line's progress bar: its rendering, when it shows, and that piped runs stay quiet. */
import { assert, assertEquals, assertStrictEquals, test } from "../testing.ts";
import { formatSeconds, progressBar, renderBar, showProgress } from "../../cli/progress.ts";
import { MIXTURE_2D, runCli, withTempDir, writeSpec } from "./helpers.ts";

test("renderBar: steps done of the total, percentage, elapsed time and ETA", () => {
  assertStrictEquals(renderBar(0, 10, 0, 10), "[··········]  0/10 steps   0%  0.0 s, ETA ?");
  assertStrictEquals(renderBar(5, 10, 1.2, 10), "[#####·····]  5/10 steps  50%  1.2 s, ETA 1.2 s");
  assertStrictEquals(renderBar(10, 10, 3, 10), "[##########] 10/10 steps 100%  3.0 s, done");
  // ETA = elapsed / done × remaining: 1 of 40 steps in 2 s leaves 78 s.
  assertStrictEquals(renderBar(1, 40, 2, 4), "[····]  1/40 steps   2%  2.0 s, ETA 1 min 18 s");
  // Out-of-range counts are clamped.
  assertStrictEquals(renderBar(12, 10, 1, 4), "[####] 10/10 steps 100%  1.0 s, done");
  assertEquals([formatSeconds(0.44), formatSeconds(12.4), formatSeconds(125), formatSeconds(NaN)], [
    "0.4 s",
    "12 s",
    "2 min 05 s",
    "?",
  ]);
});

test("showProgress: only on a terminal, and never with --json or --quiet", () => {
  assertStrictEquals(showProgress({ json: false, quiet: false, isTerminal: true }), true);
  assertStrictEquals(showProgress({ json: true, quiet: false, isTerminal: true }), false);
  assertStrictEquals(showProgress({ json: false, quiet: true, isTerminal: true }), false);
  assertStrictEquals(showProgress({ json: false, quiet: false, isTerminal: false }), false);
});

test("progressBar: silent for the first second, then redraws one line and ends it", () => {
  let t = 0;
  const out: string[] = [];
  const bar = progressBar({ enabled: true, write: (s) => out.push(s), now: () => t });
  bar.onStep(0, 4);
  t = 500;
  bar.onStep(1, 4);
  assertStrictEquals(out.length, 0, "nothing before 1 s");
  t = 1500;
  bar.onStep(2, 4);
  assertStrictEquals(out.length, 1);
  assert(out[0].startsWith("\r[") && out[0].includes(" 2/4 steps  50%  1.5 s, ETA 1.5 s"), out[0]);
  bar.finish();
  assert(out.at(-2)!.includes(" 4/4 steps 100%"), out.at(-2));
  assertStrictEquals(out.at(-1), "\n");

  // A run that ends within the first second leaves nothing; a disabled bar never writes.
  const quick: string[] = [];
  const q = progressBar({ enabled: true, write: (s) => quick.push(s), now: () => 0 });
  q.onStep(0, 2);
  q.finish();
  const off = progressBar({ enabled: false, write: (s) => quick.push(s), now: () => 1e9 });
  off.onStep(1, 2);
  off.finish();
  assertEquals(quick, []);
});

test("a piped run writes no progress to stderr, with or without --json and --quiet", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const base = ["--model", model, "--solver", "ddim", "--steps", "400", "--n", "64"];
    for (const extra of [[], ["--json"], ["--quiet"]]) {
      const r = await runCli("sample", [...base, ...extra]);
      assertStrictEquals(r.code, 0, r.stderr);
      assertStrictEquals(r.stderr, "", `stderr with ${extra.join(" ") || "no flags"}`);
    }
  });
});

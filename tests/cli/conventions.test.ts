/**
 * What users of other diffusion tools expect from `deno task sample`: `--guidance-scale` (diffusers'
 * s = 1 + w), `--seed -1` for a random seed, PNGs with an A1111-style `parameters` text chunk, `--scale`
 * upscaling, and output folders created on demand.
 */
import { decode } from "fast-png";
import { assert, assertEquals, assertMatch, assertStrictEquals, test } from "../testing.ts";
import { decodeNpy } from "../../core/npy.ts";
import { MIXTURE_IMAGES, runCli, withTempDir, writeSpec } from "./helpers.ts";

/** MIXTURE_IMAGES with a class per component (class 2 is the unconditional null class). */
const CLASSED = { ...MIXTURE_IMAGES, labels: [0, 1], classes: 2 };

function summaryLine(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

test("--guidance-scale S samples exactly as --guidance S − 1", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "classed", CLASSED);
    const common = ["--model", model, "--solver", "genie", "--nfe", "6", "--n", "3", "--class", "1"];
    const w = await runCli("sample", [...common, "--guidance", "1.5", "--out", `${dir}/w.npy`, "--json"]);
    const s = await runCli("sample", [
      ...common,
      "--guidance-scale",
      "2.5",
      "--out",
      `${dir}/s.npy`,
      "--json",
    ]);
    assertStrictEquals(w.code, 0, w.stderr);
    assertStrictEquals(s.code, 0, s.stderr);
    assertEquals(
      Array.from(decodeNpy(await Deno.readFile(`${dir}/s.npy`)).data),
      Array.from(decodeNpy(await Deno.readFile(`${dir}/w.npy`)).data),
    );
    const line = summaryLine(s.stdout);
    assertEquals([line.guidance, line.guidance_scale], [1.5, 2.5]);
    const both = await runCli("sample", [...common, "--guidance", "1", "--guidance-scale", "2"]);
    assertStrictEquals(both.code, 2);
    assertMatch(both.stderr, /^error: --guidance-scale: cannot be combined with --guidance/);
  });
});

test("--seed -1 draws a seed and reports it; the PNG carries its parameters and --scale", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "classed", CLASSED);
    const out = `${dir}/new/folder/grid.png`;
    const args = ["--model", model, "--solver", "ddim", "--steps", "5", "--n", "5", "--seed", "-1"];
    const r = await runCli("sample", [...args, "--class", "0", "--guidance", "1", "--out", out, "--json"]);
    assertStrictEquals(r.code, 0, r.stderr);
    const seed = summaryLine(r.stdout).seed as number;
    assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, `seed ${seed}`);
    const png = decode(await Deno.readFile(out));
    // ⌈√5⌉ = 3 columns and 2 rows of 2×2 tiles with 2-px padding: 14 × 10.
    assertEquals([png.width, png.height], [14, 10]);
    assertStrictEquals(
      png.text.parameters,
      `Steps: 5, Sampler: ddim, NFE: 5, Seed: ${seed}, Batch size: 5, Model: ${model}, Class: 0, ` +
        `Guidance: 1, CFG scale: 2, Grid: quadratic, Rho: 2`, // ρ as the API reports it (core/plan.ts)
    );

    const big = `${dir}/big.png`;
    const s = await runCli("sample", [...args.slice(0, -1), "7", "--out", big, "--scale", "3"]);
    assertStrictEquals(s.code, 0, s.stderr);
    assertMatch(s.stdout, /seed 7/);
    const up = decode(await Deno.readFile(big));
    assertEquals([up.width, up.height], [42, 30]);
    assertMatch(up.text.parameters, /Seed: 7, .*Upscale: 3$/);
  });
});

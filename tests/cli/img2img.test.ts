/**
 * img2img on the command line (`deno task sample --images IN.npy|IN.png --strength S`, docs/contracts.md
 * §1): encoded to t = S · t_max and sampled back from there with the same settings. On the analytic
 * gmm2d mixture: the round trip returns the images, strength 1 is sampling from the encoded latents,
 * a small strength barely moves them; PNG inputs (one image, or a grid as --out writes it) for `sample`
 * and `encode`; flag errors name the flag.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, maxAbsDiff, test } from "../testing.ts";
import { decodeNpy } from "../../core/npy.ts";
import { resolveModel } from "../../cli/models.ts";
import { encodeOnce, img2imgOnce, sampleOnce } from "../../cli/run.ts";
import { runCli, withTempDir } from "./helpers.ts";

const GMM2D = "gmm:examples/gmm2d.json";

test("img2img on gmm2d: the round trip returns the images; strength 1 is sampling from the latents", async () => {
  const model = await resolveModel(GMM2D);
  const settings = { solver: "genie", steps: 40, derivative: "exact" as const };
  const data = await sampleOnce(model, { ...settings, n: 16, seed: 4 });
  for (const strength of [1, 0.5]) {
    const back = await img2imgOnce(model, { ...settings, images: data, strength });
    const err = maxAbsDiff(back.data, data.data);
    assert(err < 1e-2, `strength ${strength}: round trip error ${err}`);
    // Both legs are counted: 40 evaluations each way.
    assertEquals([back.plan.steps, back.stats.nfe, back.plan.tMax], [40, 80, strength]);
  }
  const z = await encodeOnce(model, { ...settings, images: data });
  const fromLatents = await sampleOnce(model, { ...settings, latents: z });
  const img2img = await img2imgOnce(model, { ...settings, images: data, strength: 1 });
  assertEquals(Array.from(img2img.data), Array.from(fromLatents.data));
  const near = await img2imgOnce(model, { ...settings, images: data, strength: 0.05 });
  assert(maxAbsDiff(near.data, data.data) < 1e-3);
});

test("deno task sample --images --strength, .npy and .png; encode reads PNGs too", async () => {
  await withTempDir(async (dir) => {
    const x = `${dir}/x.npy`, y = `${dir}/y.npy`;
    const solve = ["--model", GMM2D, "--solver", "genie", "--steps", "20"];
    assertStrictEquals((await runCli("sample", [...solve, "--n", "4", "--seed", "1", "--out", x])).code, 0);
    const r = await runCli("sample", [...solve, "--images", x, "--strength", "0.5", "--out", y, "--json"]);
    assertStrictEquals(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout.trim());
    assertEquals([s.steps, s.nfe, s.t_max, s.strength, s.images, s.seed], [20, 40, 0.5, 0.5, x, undefined]);
    const a = decodeNpy(await Deno.readFile(x)), b = decodeNpy(await Deno.readFile(y));
    assert(maxAbsDiff(a.data, b.data) < 1e-2);

    // PNGs: a grid of 3 digits as --out writes it, then img2img and encode from it.
    const png = `${dir}/digits.png`, out = `${dir}/out.npy`, z = `${dir}/z.npy`;
    const mnist = ["--model", "mnist-mix", "--solver", "ddim", "--steps", "4"];
    assertStrictEquals(
      (await runCli("sample", [...mnist, "--n", "3", "--class", "2", "--out", png])).code,
      0,
    );
    const v = await runCli("sample", [
      ...mnist,
      "--images",
      png,
      "--strength",
      "0.3",
      "--out",
      out,
      "--json",
    ]);
    assertStrictEquals(v.code, 0, v.stderr);
    assertEquals(decodeNpy(await Deno.readFile(out)).shape, [3, 1, 28, 28]);
    const e = await runCli("encode", [...mnist, "--images", png, "--out", z]);
    assertStrictEquals(e.code, 0, e.stderr);
    assertEquals(decodeNpy(await Deno.readFile(z)).shape, [3, 1, 28, 28]);
  });
});

test("img2img flag errors name the flag", async () => {
  const base = ["--model", GMM2D, "--steps", "10"];
  const cases: [string[], RegExp][] = [
    [["--strength", "0.5"], /^error: --strength: needs --images/],
    [["--images", "x.npy"], /^error: --strength: is required with --images/],
    [["--images", "x.txt", "--strength", "0.5"], /^error: --images: must be a \.npy or \.png file/],
    [["--images", "x.npy", "--strength", "1.5"], /^error: --strength: must be ≤ 1/],
    [["--images", "x.npy", "--strength", "0"], /^error: --strength: must be > 0/],
    [
      ["--images", "x.npy", "--latents", "z.npy", "--strength", "0.5"],
      /^error: --images: cannot be combined/,
    ],
  ];
  for (const [args, want] of cases) {
    const r = await runCli("sample", [...base, ...args]);
    assertStrictEquals(r.code, 2, args.join(" "));
    assertMatch(r.stderr, want);
  }
  // A strength that starts at or below t_min names --strength.
  const model = await resolveModel(GMM2D);
  const data = await sampleOnce(model, { steps: 4, n: 1 });
  let message = "";
  try {
    await img2imgOnce(model, { steps: 4, images: data, strength: 1e-4 });
  } catch (e) {
    message = e instanceof Error ? e.message : String(e);
  }
  assertMatch(message, /^--strength: /);
});

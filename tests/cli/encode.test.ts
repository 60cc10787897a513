import { assert, assertEquals, assertMatch, assertStrictEquals, maxAbsDiff, test } from "../testing.ts";
import { decodeNpy, encodeNpy } from "../../core/npy.ts";
import { resolveModel } from "../../cli/models.ts";
import { encodeOnce, sampleOnce } from "../../cli/run.ts";
import { MIXTURE_2D, runCli, withTempDir, writeSpec } from "./helpers.ts";

test("encode then sample --latents returns the data (CLI, .npy both ways)", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const images = `${dir}/x.npy`, latents = `${dir}/z.npy`, decoded = `${dir}/x2.npy`;
    const solve = ["--model", model, "--solver", "genie", "--steps", "40"];
    const made = await runCli("sample", [...solve, "--n", "4", "--seed", "11", "--out", images]);
    assertStrictEquals(made.code, 0, made.stderr);

    const enc = await runCli("encode", [...solve, "--images", images, "--out", latents, "--json"]);
    assertStrictEquals(enc.code, 0, enc.stderr);
    const s = JSON.parse(enc.stdout.trim());
    assertEquals([s.solver, s.steps, s.nfe, s.n, s.shape, s.model], ["genie", 40, 40, 4, [4, 2], model]);
    assert(typeof s.seconds === "number");

    const dec = await runCli("sample", [...solve, "--latents", latents, "--out", decoded, "--json"]);
    assertStrictEquals(dec.code, 0, dec.stderr);
    const x = decodeNpy(await Deno.readFile(images)), z = decodeNpy(await Deno.readFile(latents));
    const x2 = decodeNpy(await Deno.readFile(decoded));
    assertEquals([z.shape, x2.shape], [[4, 2], [4, 2]]);
    // Latents look like noise at t_max, not like the data.
    assert(maxAbsDiff(z.data, x.data) > 0.1);
    const err = maxAbsDiff(x2.data, x.data);
    assert(err < 1e-2, `round-trip error ${err}`);
  });
});

test("encode/decode round-trip error falls at second order for GENIE (in process)", async () => {
  await withTempDir(async (dir) => {
    const model = await resolveModel(await writeSpec(dir, "mix", MIXTURE_2D));
    const data = await sampleOnce(model, { solver: "genie", steps: 60, n: 6, seed: 5 });
    const roundTrip = async (steps: number) => {
      const z = await encodeOnce(model, { solver: "genie", steps, images: data });
      assertStrictEquals(z.stats.nfe, steps);
      const back = await sampleOnce(model, { solver: "genie", steps, latents: z });
      return maxAbsDiff(back.data, data.data);
    };
    const e40 = await roundTrip(40), e80 = await roundTrip(80);
    assert(e80 < e40 / 4, `errors ${e40} → ${e80} when the steps double`);
  });
});

test("encode exits 2 naming the bad flag", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const wrong = `${dir}/wrong.npy`;
    await Deno.writeFile(wrong, encodeNpy(new Float32Array(3), [3]));
    const base = ["--model", model, "--solver", "genie"];
    const io = ["--images", wrong, "--out", `${dir}/z.npy`];
    const cases: [string[], string][] = [
      [[...base, ...io], "--steps"],
      [[...base, "--steps", "5", "--images", wrong, "--out", `${dir}/z.png`], "--out"],
      [[...base, "--steps", "5", ...io], "--images"],
      [[...base, "--steps", "5", "--images", `${dir}/missing.npy`, "--out", `${dir}/z.npy`], "--images"],
      [[...base, "--steps", "5", "--afs", ...io], "--afs"],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli("encode", args)));
    results.forEach((r, i) => {
      const [args, flag] = cases[i];
      assertStrictEquals(r.code, 2, `encode ${args.join(" ")}: ${r.stderr}`);
      assertMatch(r.stderr, new RegExp(`^error: ${flag}: [^\\n]*\\n?$`));
    });
  });
});

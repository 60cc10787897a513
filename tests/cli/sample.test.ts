import { assert, assertEquals, assertMatch, assertStrictEquals, test } from "../testing.ts";
import { decode } from "fast-png";
import { unpack } from "msgpackr";
import { decodeNpy, encodeNpy } from "../../core/npy.ts";
import { gaussianBatch, gaussianNoise } from "../../core/rng.ts";
import { resolveModel } from "../../cli/models.ts";
import { planSolve, sampleOnce, summary } from "../../cli/run.ts";
import { MIXTURE_2D, MIXTURE_IMAGES, runCli, withTempDir, writeSpec } from "./helpers.ts";

/** The one JSON line a --json run prints on stdout. */
function summaryLine(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split("\n");
  assertStrictEquals(lines.length, 1, `one line on stdout, got ${JSON.stringify(stdout)}`);
  return JSON.parse(lines[0]);
}

test("sample --json: success with the summary's shape and NFE fields", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const r = await runCli("sample", [
      "--model",
      model,
      "--solver",
      "genie",
      "--nfe",
      "6",
      "--n",
      "3",
      "--json",
    ]);
    assertStrictEquals(r.code, 0, r.stderr);
    assertStrictEquals(r.stderr, "");
    const s = summaryLine(r.stdout);
    for (const key of ["solver", "steps", "nfe", "seconds", "n", "shape", "model"]) assert(key in s, key);
    assertEquals(
      { solver: s.solver, steps: s.steps, nfe: s.nfe, n: s.n, shape: s.shape, model: s.model },
      { solver: "genie", steps: 6, nfe: 6, n: 3, shape: [3, 2], model },
    );
    assert(typeof s.seconds === "number" && s.seconds >= 0);
    // On a mixture GENIE's default derivative is the JVP, which the analytic model answers exactly.
    assertStrictEquals(s.genie_derivative, "jvp");

    // AFS saves one evaluation and denoising adds one: --nfe 6 takes 6 steps; --steps 4 costs 4.
    const afs = await runCli("sample", [
      ...["--model", model, "--solver", "genie", "--nfe", "6", "--afs", "--denoise", "--json"],
    ]);
    assertStrictEquals(afs.code, 0, afs.stderr);
    assertEquals([summaryLine(afs.stdout).steps, summaryLine(afs.stdout).nfe], [6, 6]);
    const ddim = await runCli("sample", [
      "--model",
      model,
      "--solver",
      "ddim",
      "--steps",
      "4",
      "--afs",
      "--json",
    ]);
    assertStrictEquals(ddim.code, 0, ddim.stderr);
    assertEquals([summaryLine(ddim.stdout).steps, summaryLine(ddim.stdout).nfe], [4, 3]);
  });
});

test("sample --out .npy equals the in-process sampler, and --latents round-trips through .npy", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const common = ["--model", model, "--solver", "genie", "--steps", "5", "--grid", "edm"];
    const bySeed = `${dir}/seed.npy`, byLatents = `${dir}/latents.npy`, latents = `${dir}/z.npy`;

    // The latents of --seed 7 --n 2: seeds are per-sample, sample i starts from gaussianNoise(7 + i, 0, dim).
    const noise = Float32Array.from(gaussianBatch([7, 8], 2));
    assertEquals(Array.from(noise.subarray(2)), Array.from(Float32Array.from(gaussianNoise(8, 0, 2))));
    await Deno.writeFile(latents, encodeNpy(noise, [2, 2]));

    const a = await runCli("sample", [...common, "--seed", "7", "--n", "2", "--out", bySeed, "--json"]);
    assertStrictEquals(a.code, 0, a.stderr);
    // --latents overrides --seed and --n.
    const b = await runCli("sample", [
      ...[...common, "--latents", latents, "--seed", "99", "--n", "5", "--out", byLatents, "--json"],
    ]);
    assertStrictEquals(b.code, 0, b.stderr);
    assertEquals(summaryLine(b.stdout).shape, [2, 2]);

    const fromSeed = decodeNpy(await Deno.readFile(bySeed));
    const fromLatents = decodeNpy(await Deno.readFile(byLatents));
    assertEquals(fromSeed.shape, [2, 2]);
    assertStrictEquals(fromSeed.dtype, "<f4");
    assertEquals(Array.from(fromLatents.data), Array.from(fromSeed.data));

    // The CLI and the shared sampling function agree bit for bit (float64 state, float32 output).
    const resolved = await resolveModel(model);
    const inProcess = await sampleOnce(resolved, { solver: "genie", steps: 5, grid: "edm", seed: 7, n: 2 });
    assertEquals(Array.from(fromSeed.data), Array.from(inProcess.data));
    assertEquals(inProcess.stats.nfe, 5);
  });
});

test("seeds are per-sample: sample i of --seed S --n N is the sample of --seed S+i (mod 2^32)", async () => {
  await withTempDir(async (dir) => {
    const model = await resolveModel(await writeSpec(dir, "mix", MIXTURE_2D));
    const opts = { solver: "genie", nfe: 6 };
    const many = await sampleOnce(model, { ...opts, seed: 4294967294, n: 4 });
    for (const [i, seed] of [4294967294, 4294967295, 0, 1].entries()) {
      const one = await sampleOnce(model, { ...opts, seed, n: 1 });
      assertEquals(Array.from(many.data.subarray(2 * i, 2 * i + 2)), Array.from(one.data), `seed ${seed}`);
    }
    const r = await runCli("sample", [
      ...["--model", model.name, "--solver", "genie", "--nfe", "6", "--seed", "4294967295", "--n", "2"],
      ...["--out", `${dir}/wrap.npy`, "--json"],
    ]);
    assertStrictEquals(r.code, 0, r.stderr);
    assertEquals(
      Array.from(decodeNpy(await Deno.readFile(`${dir}/wrap.npy`)).data),
      Array.from(many.data.subarray(2, 6)),
    );
  });
});

test("sample writes a PNG grid for image samples and plain msgpack tensors", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "images", MIXTURE_IMAGES);
    const common = ["--model", model, "--solver", "genie", "--nfe", "8", "--n", "5", "--seed", "3"];
    const png = `${dir}/grid.png`, mp = `${dir}/s.msgpack`, npy = `${dir}/s.npy`;
    for (const out of [png, mp, npy]) {
      const r = await runCli("sample", [...common, "--out", out, "--json"]);
      assertStrictEquals(r.code, 0, r.stderr);
      assertEquals(summaryLine(r.stdout).shape, [5, 1, 2, 2]);
    }
    const samples = decodeNpy(await Deno.readFile(npy));
    // ⌈√5⌉ = 3 columns and 2 rows of 2×2 tiles with 2-px padding.
    const grid = decode(await Deno.readFile(png));
    assertEquals([grid.width, grid.height, grid.channels], [14, 10, 1]);
    const toByte = (v: number) => Math.min(255, Math.max(0, Math.round((v + 1) * 127.5)));
    assertStrictEquals(grid.data[2 * 14 + 2], toByte(samples.data[0]));
    assertStrictEquals(grid.data[(2 + 4 + 1) * 14 + 2 + 4 + 1], toByte(samples.data[4 * 4 + 3]));

    const msg = unpack(await Deno.readFile(mp)) as { shape: number[]; dtype: string; data: Uint8Array };
    assertEquals([msg.shape, msg.dtype], [[5, 1, 2, 2], "float32"]);
    assert(msg.data instanceof Uint8Array, "data is a raw bin field");
    const view = new DataView(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    const floats = Array.from({ length: 20 }, (_, i) => view.getFloat32(4 * i, true));
    assertEquals(floats, Array.from(samples.data));
  });
});

test("sample exits 2 with a one-line error naming the bad flag", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const badLatents = `${dir}/bad.npy`;
    await Deno.writeFile(badLatents, encodeNpy(new Float32Array(6), [2, 3]));
    await Deno.writeTextFile(`${dir}/junk.npy`, "not numpy");
    const m = ["--model", model];
    const cases: [string[], string][] = [
      [[...m, "--solver", "genie", "--stepz", "3"], "--stepz"],
      [[...m, "--solver", "genie", "--steps"], "--steps"],
      [[...m, "--solver", "genie", "--steps", "two"], "--steps"],
      [[...m, "--solver", "genie", "--steps", "4", "--nfe", "4"], "--nfe"],
      [[...m, "--solver", "nope"], "--solver"],
      [[...m, "--solver", ""], "--solver"],
      [["--solver", "genie"], "--model"],
      [["--model", `gmm:${dir}/missing.json`, "--solver", "genie"], "--model"],
      [["--model", "no-such-model", "--solver", "genie"], "--model"],
      [[...m, "--solver", "genie", "--genie-derivative", "head"], "--genie-derivative"],
      [[...m, "--solver", "genie", "--genie-derivative", "fd", "--nfe", "7"], "--nfe"],
      [[...m, "--solver", "genie", "--out", `${dir}/x.png`], "--out"],
      [[...m, "--solver", "genie", "--out", `${dir}/x.txt`], "--out"],
      [[...m, "--solver", "genie", "--latents", badLatents], "--latents"],
      [[...m, "--solver", "genie", "--latents", `${dir}/junk.npy`], "--latents"],
      [[...m, "--solver", "genie", "--class", "0"], "--class"],
      [[...m, "--solver", "genie", "--t-min", "0.5", "--t-max", "0.1"], "--t-max"],
      [[...m, "--solver", "ddim", "--order", "2"], "--order"],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli("sample", args)));
    results.forEach((r, i) => {
      const [args, flag] = cases[i];
      const what = `sample ${args.join(" ")}`;
      assertStrictEquals(r.code, 2, `${what}: exit ${r.code}, stderr ${r.stderr}`);
      assertStrictEquals(r.stdout, "", what);
      const lines = r.stderr.trim().split("\n");
      assertStrictEquals(lines.length, 1, `${what}: one line, got ${r.stderr}`);
      assertMatch(lines[0], new RegExp(`^error: ${flag}: `), what);
    });
  });
});

test("sample exits 1 on other failures and 0 with --help", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    // A missing folder is created; a folder that is a file cannot be.
    await Deno.writeTextFile(`${dir}/plain`, "");
    const r = await runCli("sample", [
      "--model",
      model,
      "--solver",
      "ddim",
      "--out",
      `${dir}/plain/x.npy`,
    ]);
    assertStrictEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr.trim(), /^error: .+/);
    const help = await runCli("sample", ["--help"]);
    assertStrictEquals(help.code, 0);
    assertMatch(help.stdout, /Usage: deno task sample/);
    assertMatch(help.stdout, /genie/);
  });
});

test("sample --json reports nfe, calls and cost: GENIE with the jvp derivative makes 1 call a step", async () => {
  await withTempDir(async (dir) => {
    const model = await writeSpec(dir, "mix", MIXTURE_2D);
    const r = await runCli("sample", [
      ...["--model", model, "--solver", "genie", "--genie-derivative", "jvp", "--nfe", "6", "--json"],
    ]);
    assertStrictEquals(r.code, 0, r.stderr);
    const s = summaryLine(r.stdout);
    // ε and its JVP along the ODE's tangent come from one call. A mixture records no cost ratios: the
    // JVP is priced at the fallback 3, so the cost is estimated.
    assertEquals(
      [s.nfe, s.calls, s.cost, s.cost_estimated, s.graph_calls],
      [6, 6, 18, true, { jvp: 6 }],
    );
  });
});

test("a model's default grid and costs apply to the CLI's runs; --grid and --rho still win", async () => {
  await withTempDir(async (dir) => {
    const plain = await resolveModel(await writeSpec(dir, "mix", MIXTURE_2D));
    const model = {
      ...plain,
      defaults: { grid: "power" as const, rho: 3, solvers: { genie: { grid: "edm" as const, rho: 5 } } },
      costs: { jvp: 2.5 },
    };
    const plan = (opts: Parameters<typeof planSolve>[1]) => {
      const p = planSolve(model, opts, "sample").plan;
      return [p.grid, p.rho];
    };
    assertEquals(plan({ solver: "genie", steps: 4 }), ["edm", 5]);
    assertEquals(plan({ solver: "ddim", steps: 4 }), ["power", 3]);
    assertEquals(plan({ solver: "genie", steps: 4, grid: "logsnr" }), ["logsnr", undefined]);
    assertEquals(plan({ solver: "genie", steps: 4, grid: "edm" }), ["edm", 7]);
    assertEquals(plan({ solver: "genie", steps: 4, rho: 4 }), ["edm", 4]);
    assertEquals(planSolve(plain, { solver: "genie", steps: 4 }, "sample").plan.grid, "quadratic");
    const result = await sampleOnce(model, { solver: "genie", steps: 4, derivative: "jvp", n: 2 });
    const explicit = await sampleOnce(plain, {
      solver: "genie",
      steps: 4,
      derivative: "jvp",
      n: 2,
      grid: "edm",
      rho: 5,
    });
    assertEquals(Array.from(result.data), Array.from(explicit.data));
    const line = summary(model, result);
    assertEquals([line.grid, line.rho, line.nfe, line.calls, line.cost, line.cost_estimated], [
      "edm",
      5,
      4,
      4,
      10,
      false,
    ]);
  });
});

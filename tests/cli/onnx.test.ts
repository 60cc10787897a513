/**
 * The command line on ONNX models (mnist-mix, gmm2d) through gpu-worker's engine: PNG grids and the
 * JSON summary, unknown names, and the same float32 samples as the worker for the same model,
 * settings and seeds (docs/contracts.md §2: seeds are per-sample, whatever the batch, worker or runtime).
 */
import { decode as decodePng } from "fast-png";
import { decodeNpy } from "../../core/npy.ts";
import { resolveModel } from "../../cli/models.ts";
import { sampleOnce } from "../../cli/run.ts";
import { floats, post, startApp } from "../gpu-worker/helpers.ts";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { runCli, withTempDir } from "./helpers.ts";

/** The subprocess runs on the CPU, like the worker in these tests. */
const CPU = { GENIE_PROVIDERS: "cpu" };

function summaryLine(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split("\n");
  assertStrictEquals(lines.length, 1, `one line on stdout, got ${JSON.stringify(stdout)}`);
  return JSON.parse(lines[0]);
}

/** The bytes of float32 numbers, for bit-for-bit comparisons. */
const bits = (a: ArrayLike<number>) => new Uint8Array(Float32Array.from(a).buffer);

Deno.test("sample --model mnist-mix writes a PNG grid and the --json summary", async () => {
  await withTempDir(async (dir) => {
    const out = `${dir}/digits.png`;
    const r = await runCli("sample", [
      ...["--model", "mnist-mix", "--solver", "genie", "--nfe", "6", "--n", "4", "--seed", "5"],
      ...["--class", "3", "--guidance", "1", "--out", out, "--json"],
    ], CPU);
    assertStrictEquals(r.code, 0, r.stderr);
    const s = summaryLine(r.stdout);
    assertEquals(
      [s.model, s.solver, s.steps, s.nfe, s.n, s.shape, s.genie_derivative, s.provider, s.seed, s.class],
      ["mnist-mix", "genie", 6, 6, 4, [4, 1, 28, 28], "head", "cpu", 5, 3],
    );
    // 2 × 2 tiles of 28 × 28 with 2-px padding.
    const png = decodePng(await Deno.readFile(out));
    assertEquals([png.width, png.height, png.channels], [62, 62, 1]);
    assert(png.data.some((v) => v > 128) && png.data.some((v) => v < 128), "an image, not a flat tile");

    const jvp = await runCli("sample", [
      ...["--model", "gmm2d", "--solver", "genie", "--genie-derivative", "jvp", "--steps", "4", "--json"],
    ], CPU);
    assertStrictEquals(jvp.code, 0, jvp.stderr);
    assertEquals([summaryLine(jvp.stdout).genie_derivative, summaryLine(jvp.stdout).shape], ["jvp", [1, 2]]);
  });
});

Deno.test("sample --model with an unknown name exits 2 naming --model and the models available", async () => {
  for (const name of ["no-such-model", "../models/mnist-mix"]) {
    const r = await runCli("sample", ["--model", name, "--solver", "genie"], CPU);
    assertStrictEquals(r.code, 2, r.stderr);
    assertStrictEquals(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assertStrictEquals(lines.length, 1, r.stderr);
    assertMatch(lines[0], /^error: --model: unknown model .*mnist-mix.*gmm:SPEC\.json/);
  }
});

/** The worker's /v1/batch samples (in-process app, CPU) for these seeds and settings. */
async function workerSamples(
  app: Awaited<ReturnType<typeof startApp>>,
  model: string,
  seeds: number[],
  settings: Record<string, unknown>,
): Promise<Float32Array> {
  const r = await post(app, "/v1/batch", { v: 1, id: `s${seeds[0]}`, model, seeds, ...settings });
  assertStrictEquals(r.status, 200, JSON.stringify(r.body));
  return floats(r.body.data);
}

Deno.test({
  name: "the CLI and the worker give bit-identical float32 samples for the same model, settings and seeds",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["mnist-mix", "gmm2d"] });
    try {
      await withTempDir(async (dir) => {
        const cases = [
          {
            model: "mnist-mix",
            seed: 40,
            n: 3,
            flags: ["--solver", "genie", "--nfe", "6", "--class", "7", "--guidance", "1"],
            settings: { solver: "genie", nfe: 6, class: 7, guidance: 1 },
            options: { solver: "genie", nfe: 6, class: 7, guidance: 1 },
          },
          {
            model: "gmm2d",
            seed: 4294967294, // seeds wrap: 4294967294, 4294967295, 0, 1, 2
            n: 5,
            flags: ["--solver", "genie", "--genie-derivative", "jvp", "--steps", "7", "--grid", "edm"],
            settings: { solver: "genie", steps: 7, grid: "edm", genie_derivative: "jvp" },
            options: { solver: "genie", steps: 7, grid: "edm" as const, derivative: "jvp" as const },
          },
        ];
        for (const c of cases) {
          const out = `${dir}/${c.model}.npy`;
          const r = await runCli("sample", [
            ...["--model", c.model, ...c.flags, "--seed", String(c.seed), "--n", String(c.n), "--out", out],
          ], CPU);
          assertStrictEquals(r.code, 0, r.stderr);
          const cli = decodeNpy(await Deno.readFile(out));
          const seeds = Array.from({ length: c.n }, (_, i) => (c.seed + i) >>> 0);
          const dim = cli.data.length / c.n;
          const worker = await workerSamples(app, c.model, seeds, c.settings);
          assertEquals(bits(cli.data), bits(worker), `${c.model}: CLI --n ${c.n} = worker seeds ${seeds}`);
          // Each sample alone (batch 1, another position) is the same sample too.
          const resolved = await resolveModel(c.model, { providers: ["cpu"], threads: 2 });
          try {
            for (const [i, seed] of seeds.entries()) {
              const row = bits(cli.data.slice(i * dim, (i + 1) * dim));
              const alone = await workerSamples(app, c.model, [seed], c.settings);
              assertEquals(bits(alone), row, `${c.model}: worker seed ${seed} alone`);
              const inProcess = await sampleOnce(resolved, { ...c.options, seed, n: 1 });
              assertEquals(bits(inProcess.data), row, `${c.model}: CLI --seed ${seed} --n 1`);
            }
          } finally {
            await resolved.close?.();
          }
        }
      });
    } finally {
      await app.shutdown();
    }
  },
});

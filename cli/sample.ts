/**
 * `deno task sample`: draws samples from a model in-process (docs/contracts.md §1).
 *
 *     deno task sample --model gmm:spec.json --solver genie --nfe 10 --n 4 --out samples.npy --json
 *     deno task sample --model mnist-mix --solver genie --nfe 10 --n 16 --class 3 --out digits.png
 *     deno task sample --model mnist-mix --images digit.png --strength 0.6 --out variation.png
 */
import { parseSampleArgs, sampleHelp, withExitCode } from "./args.ts";
import { resolveModel } from "./models.ts";
import { checkOutput, readImages, readNpy, writeOutput } from "./output.ts";
import { img2imgOnce, sampleOnce, solveOptionsFrom, summary } from "./run.ts";
import { getSolver, solverNames } from "../core/solvers/registry.ts";
import { randomSeed } from "../core/api/samples.ts";
import { pngParameters } from "../core/image.ts";
import { commandProgress } from "./progress.ts";

/** Runs the command on its arguments and returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  return await withExitCode(async () => {
    const args = parseSampleArgs(argv);
    if ("help" in args) {
      console.log(sampleHelp(solverNames().map(getSolver)));
      return;
    }
    const model = await resolveModel(args.model, { threads: args.threads });
    try {
      if (args.out !== undefined) checkOutput(args.out, model.shape);
      const latents = args.latents === undefined ? undefined : await readNpy(args.latents, "--latents");
      const images = args.images === undefined
        ? undefined
        : await readImages(args.images, "--images", model.shape);
      // --seed -1 draws the seed here; the summary and the PNG text report the one drawn.
      const seed = args.seed === -1 ? randomSeed() : args.seed;
      const bar = commandProgress(args);
      const options = { ...solveOptionsFrom(args), afs: args.afs, denoise: args.denoise, onStep: bar.onStep };
      // img2img (--images, --strength): encoded to t = strength · t_max, then sampled back from there.
      const result = await (images
        ? img2imgOnce(model, { ...options, images, strength: args.strength! })
        : sampleOnce(model, { ...options, n: args.n, seed, latents })).finally(() =>
          bar.finish()
        );
      const given = latents !== undefined || images !== undefined;
      const { plan } = result;
      const parameters = pngParameters({
        model: model.name,
        solver: plan.solver,
        steps: plan.steps,
        nfe: result.stats.nfe,
        seed: given ? undefined : seed,
        n: result.shape[0],
        class: args.class,
        guidance: args.guidance,
        grid: plan.grid,
        rho: plan.rho,
        genieDerivative: plan.derivative,
        afs: plan.afs,
        denoise: plan.denoise,
        strength: args.strength,
        scale: args.scale,
      });
      if (args.out !== undefined) {
        await writeOutput(args.out, result.data, result.shape, { scale: args.scale, parameters });
      }
      const line = summary(model, result, {
        seed: given ? undefined : seed,
        latents: args.latents,
        images: args.images,
        strength: args.strength,
        class: args.class,
        guidance: args.guidance,
        guidance_scale: args.guidanceScale,
        out: args.out,
      });
      if (args.json) console.log(JSON.stringify(line));
      else {
        console.log(
          `${line.solver}: ${line.steps} steps, ${line.nfe} NFE, ${line.calls} calls, cost ${line.cost}` +
            `${line.cost_estimated ? " (estimated)" : ""}, ${line.seconds} s; ` +
            `${line.n} sample(s) of shape [${model.shape.join(", ")}]` +
            (given ? "" : `, seed ${seed}`) +
            (args.out === undefined ? " (no --out: nothing written)" : ` → ${args.out}`),
        );
      }
    } finally {
      await model.close?.();
    }
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));

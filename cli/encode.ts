/**
 * `deno task encode`: maps data to latents by integrating the probability-flow ODE forwards
 * (docs/contracts.md §1). Decoding the latents with `deno task sample --latents` on the same grid
 * returns the data up to the solver's error.
 *
 *     deno task encode --model gmm:spec.json --solver genie --steps 20 --images x.npy --out z.npy --json
 */
import { encodeHelp, parseEncodeArgs, withExitCode } from "./args.ts";
import { resolveModel } from "./models.ts";
import { checkOutput, readImages, writeOutput } from "./output.ts";
import { encodeOnce, solveOptionsFrom, summary } from "./run.ts";
import { getSolver, solverNames } from "../core/solvers/registry.ts";
import { commandProgress } from "./progress.ts";

/** Runs the command on its arguments and returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  return await withExitCode(async () => {
    const args = parseEncodeArgs(argv);
    if ("help" in args) {
      console.log(encodeHelp(solverNames().map(getSolver)));
      return;
    }
    const model = await resolveModel(args.model, { threads: args.threads });
    try {
      checkOutput(args.out, model.shape);
      const images = await readImages(args.images, "--images", model.shape);
      const bar = commandProgress(args);
      const result = await encodeOnce(model, {
        ...solveOptionsFrom(args),
        images,
        onStep: bar.onStep,
      }).finally(() => bar.finish());
      await writeOutput(args.out, result.data, result.shape);
      const line = summary(model, result, {
        images: args.images,
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
            `${line.n} latent(s) of shape [${model.shape.join(", ")}] → ${args.out}`,
        );
      }
    } finally {
      await model.close?.();
    }
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));

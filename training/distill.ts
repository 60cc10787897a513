/**
 * `deno task distill`: distils the GENIE derivative head of a model and ships it as `<model>/head.onnx`,
 * the graph the worker runs in ONE call per GENIE step (x, t, class → eps, deriv): the score network
 * exposing its features, then the head (training/head.ts). Without `--model`, or with `--model mnist-unet`,
 * it distils mnist-unet's head on the digits, as below; any other model folder is the second program at the
 * end of this comment.
 *
 *     deno task distill [--steps 20000] [--batch 32] [--lr 1e-3] [--min-lr 1e-5] [--warmup 200]
 *                       [--ema 0.999] [--width 64] [--depth 3] [--kernel 3] [--stride 2] [--derived true]
 *                       [--coarse 2]
 *                       [--targets 32768] [--refresh 0] [--focus 0.7 [--focus-from 0.25] [--focus-to 0.85]]
 *                       [--seed 1]
 *                       [--threads 2] [--model models/mnist-unet] [--ckpt training/checkpoints/mnist-unet-head]
 *                       [--eval-every 1000] [--max-minutes 0] [--stop-at 0] [--formulation 3] [--parallel 1]
 *
 * The defaults are the shipped head's recipe (its distill.json records the flags), except `--formulation`:
 * how the gradients are computed (training/common.ts; 3, the default, is the fastest, 1 reproduces the
 * shipped head bit for bit). `--parallel P` splits every batch over P sessions sharing `--threads`
 * (training/parallel.ts); a head's graph is small enough that 1, the default, is as fast. `--width`, `--depth`,
 * `--kernel`, `--stride`, `--derived` and `--coarse` shape the head (training/head.ts); `--targets N` computes N samples' targets
 * once and draws every batch from them, `--refresh S` replaces them by the next N samples every S steps
 * (more distinct samples, one set in memory), and `--focus P` draws a sample with t in
 * [`--focus-from`, `--focus-to`) with probability P (training/distill/dataset.ts).
 *
 * Per sample (random numbers from rngStream(seed, step) for a step's fresh batch, from rngStream(seed +
 * 104729, i·N + first) for a chunk of target set i): x₀ from the digits, class (null class 10 with probability
 * 0.1), t ~ U[t_min, 1], x_t = α x₀ + σ ε; the frozen network gives ε̂, features, temb (and the coarse
 * maps) (ORT), its JVP graph the exact target τ = dε̂/dγ along the probability-flow ODE (training/targets.ts).
 * The loss is the mean squared relative error mean_b ‖k_b − τ_b‖²/‖τ_b‖² (the measure the head is judged
 * by), with ‖τ_b‖² floored where τ is negligible ({@link relativeWeights}); Adam, warm-up and cosine
 * decay, global gradient-norm clip 1.0, fp32; only the head trains (its output conv starts near zero, so
 * it starts as DDIM). An exponential moving average of the head's weights (`--ema`) is what is evaluated
 * and shipped.
 *
 * Progress on stderr; checkpoints (atomic, the newest kept) in `--ckpt`, with distill.json (flags, every
 * segment run, loss and held-out histories) beside them, continued automatically by a run with the same
 * flags; `--max-minutes`/`--stop-at` stop early with a checkpoint. A held-out evaluation batch
 * (its own random stream, t stratified over [t_min, 1]) reports the median relative error ‖k − τ‖/‖τ‖ at the
 * start and the end, overall and per range of t. Writes head.onnx, adds `head` to model.json's graphs and
 * records distill.json (flags, error, loss history, time).
 *
 * Any other model folder (`--model NAME` in GENIE_MODELS_DIR or models/, or a path), e.g. one made by
 * `deno task import`, whose JVP can be derived (training/model_folder.ts):
 *
 *     deno task distill --model NAME [--features TENSOR] [--temb TENSOR|none] [--data X0.npy [--labels L.npy]]
 *                       [--pool 256] [--pool-nfe 20] [--steps 2000] [--batch 16] [--ckpt <model>/distill] …
 *
 * The head reads the input of the last convolution before the output and the network's time embedding
 * when one is found (onnx/features.ts; `--features`/`--temb` name them, `--temb none` makes the head embed
 * γ itself); the facts are printed. The data are `--data` (x₀ in model space, [N, C, H, W]; classes from
 * `--labels`, else the null class, or a random class where the model has none) or the model's own samples (`--pool` of them from DPM-Solver++(2M) at
 * `--pool-nfe`, made once and kept in the checkpoint folder as pool.npy). The same loss, optimiser,
 * checkpoints, progress and held-out evaluation as above, with defaults that finish in minutes on a small
 * model (training/distill/flags.ts `FOLDER_DISTILL_DEFAULTS`). At the end head.onnx (inputs x, t, class
 * under the standard names; outputs eps and deriv) is checked against eps.onnx and named in model.json
 * (`graphs.head`, and `head_space: "eps"` for x₀ and v models), so the worker serves
 * `genie_derivative: "head"` for it.
 *
 * The parts are in training/distill/: the flags (`flags.ts`), the head's training graph, feeds and
 * held-out measures (`loss.ts`), the training loop and its record (`run.ts`), and the two programs
 * (`mnist.ts`, `folder.ts`).
 */
import { basename } from "node:path";
import { UsageError } from "../core/flags.ts";
import { log } from "./common.ts";
import { FolderError, resolveModelDir } from "./model_folder.ts";
import { DISTILL_DEFAULTS, FOLDER_ONLY } from "./distill/flags.ts";
import { distillFolder } from "./distill/folder.ts";
import { distillMnist } from "./distill/mnist.ts";

export { headFeeds, headTrainingGraph, relativeWeights } from "./distill/loss.ts";

/** Which program `argv` asks for: mnist-unet's (the digits) unless another model or a data flag is named. */
export function distillTarget(argv: readonly string[]): { dir: string; mnist: boolean } {
  const at = argv.indexOf("--model");
  const named = argv.find((a) => a.startsWith("--model="))?.slice("--model=".length) ??
    (at >= 0 ? argv[at + 1] : undefined);
  const dir = named !== undefined ? resolveModelDir(named) : DISTILL_DEFAULTS.model;
  // a flag is named as `--flag value` or `--flag=value` (core/flags.ts)
  const mnist = basename(dir) === "mnist-unet" && !argv.some((a) => FOLDER_ONLY.includes(a.split("=")[0]));
  return { dir, mnist };
}

if (import.meta.main) {
  const { dir, mnist } = distillTarget(Deno.args);
  try {
    if (mnist) await distillMnist(Deno.args);
    else await distillFolder(Deno.args, dir);
  } catch (e) {
    if (!(e instanceof FolderError || e instanceof UsageError)) throw e;
    log(`distill: ${e.message}`);
    Deno.exit(1);
  }
}

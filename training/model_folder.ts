/**
 * Any model folder (docs/contracts.md §4) as the GENIE head's distillation sees it: `deno task distill
 * --model NAME` for a model other than mnist-unet (training/distill.ts), and the head graph it serves.
 *
 * - {@link readModelFolder}: model.json and eps.onnx, read with core/ only (the worker's own validation is
 *   gpu-worker/manifest.ts; this reads the same fields: names by role, prediction, schedule, time). A model
 *   whose JVP cannot be derived is refused with the reason (an integer timestep, an operator without a
 *   derivative rule), as are graphs with external data and image shapes other than [C, H, W].
 * - {@link loadFolderGraphs}: the eps graph exposing the head's inputs (onnx/features.ts `findHeadTensors`:
 *   the input of the last convolution before the output, and the time embedding when one is found) and its
 *   JVP graph (onnx/jvp.ts), as ONNX Runtime sessions; the tensors' shapes are checked on a run.
 * - {@link folderHeadData}: ε̂ (converted to ε from x₀ or v), features, temb and the exact target
 *   τ = dε̂/dγ along the probability-flow ODE, from the JVP of the raw output converted by the product rule
 *   (core/prediction.ts), for points x_t = α x₀ + σ ε.
 * - {@link samplePool}: x₀ for those points when no data are given: the model's own samples (DPM-Solver++
 *   2M on its registry grid), balanced over the classes.
 * - {@link combinedFolderHead}: the served `head` graph: inputs x, t, class (standard names, t as the model
 *   sees it, t × scale + offset), outputs eps (the raw prediction) and deriv (dε/dγ: `head_space: "eps"`
 *   for x₀ and v models), with γ(t) of the model's schedule computed in float64 inside the graph.
 *
 * The parts are in training/model_folder/: reading the folder (`read.ts`), the sessions and the data
 * (`graphs.ts`), the pool of the model's own samples (`pool.ts`) and the served head graph (`head.ts`).
 * This module is their entry: import from here.
 */
export { combinedFolderHead } from "./model_folder/head.ts";
export { type FolderGraphs, folderHeadData, loadFolderGraphs } from "./model_folder/graphs.ts";
export { type DataPool, drawFromPool, samplePool } from "./model_folder/pool.ts";
export { FolderError, type FolderModel, readModelFolder, resolveModelDir } from "./model_folder/read.ts";

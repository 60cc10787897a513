/**
 * Sections 2 and 3 of `deno task bench:jvp` (bench/jvp.ts): every solver on the ONNX mnist-mix model at
 * each NFE, without and with AFS, against a reference solution of the same ODE from the analytic mixture
 * (RK4, float64); then the same runs timed, interleaved.
 */
import { makeGrid } from "../../core/grid.ts";
import { gaussianBatch } from "../../core/rng.ts";
import { runSolverAsync } from "../../core/solvers/drive.ts";
import { getSolver, nfeFor, stepsForNfe } from "../../core/solvers/registry.ts";
import type { DerivativeSource, EvalRequest, EvalResult } from "../../core/solvers/types.ts";
import { median } from "../../core/stats.ts";
import { JVP_INPUTS } from "../../gpu-worker/graphs.ts";
import { ODE_TANGENT_INPUTS, odeJvpBytes } from "../../onnx/ode_jvp.ts";
import type { OrtTensor } from "../../onnx/ort.ts";
import { rk4Reference, rmsePerSample } from "../reference.ts";
import type { CostModel } from "./cost.ts";
import type { JvpModels } from "./models.ts";
import { log, NFES, REF_STEPS, sci } from "./settings.ts";

export interface Config {
  label: string;
  solver: string;
  derivative?: DerivativeSource;
}

/** The solvers compared. */
export const CONFIGS: Config[] = [
  { label: "genie (jvp)", solver: "genie", derivative: "jvp" },
  { label: "ddim", solver: "ddim" },
  { label: "dpmpp-2m", solver: "dpmpp-2m" },
  { label: "unipc", solver: "unipc" },
  { label: "ipndm", solver: "ipndm" },
  { label: "heun", solver: "heun" },
  { label: "genie (fd)", solver: "genie", derivative: "fd" },
];

export interface Run {
  config: Config;
  afs: boolean;
  nfe: number;
  steps: number;
  error: number;
  /** Median wall seconds of the whole solve ÷ samples. */
  secondsPerSample: number;
  /** ORT calls of one solve: eps graph, JVP graph. */
  calls: { eps: number; jvp: number };
}

interface Planned {
  run: Run;
  solve: () => ReturnType<typeof runSolverAsync>;
}

/** What sections 2 and 3 measured. */
export interface SolverRuns {
  /** The samples' seeds. */
  seeds: number[];
  /** The reference against itself at half the steps, per sample; and its time in seconds. */
  refSelf: number[];
  refSeconds: number;
  runs: Run[];
}

/**
 * Every run once for its error and calls, then `timingReps` timing repetitions, on `samples` samples;
 * `mnist` is the cost section's mnist-mix model, whose eps and JVP sessions the runs use.
 */
export async function solverRuns(
  m: JvpModels,
  mnist: CostModel,
  samples: number,
  timingReps: number,
): Promise<SolverRuns> {
  const { info, ort, mix, nullClass: NULL_CLASS } = m;
  const SAMPLES = samples, TIMING_REPS = timingReps;
  const dim = info.dim;
  const schedule = info.schedule;
  const seeds = Array.from({ length: SAMPLES }, (_, i) => i);
  const latents = gaussianBatch(seeds, dim);

  // The reference: RK4 on the analytic mixture with every component (the null class).
  const refStart = performance.now();
  const reference = rk4Reference(mix, latents, SAMPLES, REF_STEPS, NULL_CLASS);
  const half = rk4Reference(mix, latents, SAMPLES, REF_STEPS / 2, NULL_CLASS);
  const refSelf = rmsePerSample(half, reference, SAMPLES, dim);
  const refSeconds = (performance.now() - refStart) / 1000;
  log(`reference: ${REF_STEPS} RK4 steps, vs ${REF_STEPS / 2}: median ${sci(median(refSelf))}`);

  const epsSession = mnist.forward, jvpSession = mnist.graphs[0].session;
  // the transformed graph as the worker loads it: it also makes the ODE's tangent from its own ε
  const odeSession = await m.open(
    odeJvpBytes(m.mnistJvp, { x: "x", out: "eps", dx: "dx" }),
  );
  let ortCalls = { eps: 0, jvp: 0 };
  /**
   * The ONNX model as the solvers' evaluator: eps.onnx for ε, the transformed graph for JVPs along a given
   * tangent, the same graph making the ODE's tangent itself for GENIE's one call per step.
   */
  async function onnxEvaluate(req: EvalRequest): Promise<EvalResult> {
    const rows = req.t.length, dims = [rows, ...info.manifest.shape];
    const feeds: Record<string, OrtTensor> = {
      x: new ort.Tensor("float32", Float32Array.from(req.x), dims),
      t: new ort.Tensor("float32", Float32Array.from(req.t), [rows]),
      class: new ort.Tensor("int64", new BigInt64Array(rows).fill(BigInt(NULL_CLASS)), [rows]),
    };
    if (req.want === "eps") {
      ortCalls.eps++;
      return { eps: (await epsSession.run(feeds)).eps.data as Float32Array };
    }
    if (req.odeTangent) {
      feeds[JVP_INPUTS.x] = new ort.Tensor("float32", new Float32Array(req.x.length), dims);
      feeds[JVP_INPUTS.t] = new ort.Tensor("float32", Float32Array.from(req.odeTangent.t), [rows]);
      feeds[ODE_TANGENT_INPUTS.out] = new ort.Tensor("float32", Float32Array.from(req.odeTangent.eps), [
        rows,
      ]);
      feeds[ODE_TANGENT_INPUTS.x] = new ort.Tensor("float32", Float32Array.from(req.odeTangent.x), [rows]);
      ortCalls.jvp++;
      const out = await odeSession.run(feeds);
      return { eps: out.eps.data as Float32Array, deriv: out.jvp.data as Float32Array };
    }
    if (!req.tangent) throw new Error("the ONNX model answers derivatives along a tangent only (jvp)");
    feeds[JVP_INPUTS.x] = new ort.Tensor("float32", Float32Array.from(req.tangent.x), dims);
    feeds[JVP_INPUTS.t] = new ort.Tensor("float32", Float32Array.from(req.tangent.t), [rows]);
    ortCalls.jvp++;
    const out = await jvpSession.run(feeds);
    return { eps: out.eps.data as Float32Array, deriv: out.jvp.data as Float32Array };
  }

  // Every run once for its error and calls; then the timing repetitions, interleaved over all runs so that
  // a change of load on the shared machine hits every solver alike.
  const planned: Planned[] = [];
  for (const config of CONFIGS) {
    const solver = getSolver(config.solver);
    for (const afs of [false, true]) {
      for (const nfe of NFES) {
        const opts = { afs, denoise: false, derivative: config.derivative };
        let steps: number;
        try {
          steps = stepsForNfe(config.solver, nfe, opts);
        } catch {
          continue; // no step count gives this NFE
        }
        const grid = makeGrid(schedule, { kind: solver.grid.kind, steps, rho: solver.grid.rho });
        const input = {
          schedule,
          grid,
          x: latents,
          batch: SAMPLES,
          dim,
          afs,
          derivative: config.derivative,
          odeJvp: true,
        };
        const solve = () => runSolverAsync(solver.fn(input), onnxEvaluate);
        ortCalls = { eps: 0, jvp: 0 };
        const result = await solve();
        if (result.stats.nfe !== nfe || nfeFor(config.solver, steps, opts) !== nfe) {
          throw new Error(`${config.label}: counted ${result.stats.nfe} evaluations, expected ${nfe}`);
        }
        planned.push({
          run: {
            config,
            afs,
            nfe,
            steps,
            error: median(rmsePerSample(result.x, reference, SAMPLES, dim)),
            secondsPerSample: NaN,
            calls: { ...ortCalls },
          },
          solve,
        });
      }
    }
    log(`error: ${config.label} done`);
  }
  const walls = planned.map(() => [] as number[]);
  for (let r = 0; r < TIMING_REPS; r++) {
    for (const [i, p] of planned.entries()) {
      const t0 = performance.now();
      await p.solve();
      walls[i].push((performance.now() - t0) / 1000);
    }
  }
  planned.forEach((p, i) => (p.run.secondsPerSample = median(walls[i]) / SAMPLES));
  const runs: Run[] = planned.map((p) => p.run);
  log("timing done");
  return { seeds, refSelf, refSeconds, runs };
}

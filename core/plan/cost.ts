/**
 * The predicted price of a planned solve (core/plan.ts): the graph calls per sample trajectory the
 * drivers will count (core/solvers/drive.ts), priced by core/cost.ts.
 */
import { type CostRatios, runCost } from "../cost.ts";
import type { CallGraph } from "../solvers/drive.ts";
import type { SolverInfo } from "../solvers/registry.ts";
import type { DerivativeSource } from "../solvers/types.ts";
import type { PlanCost } from "./types.ts";

/** What of a planned run decides its calls. */
export interface PlannedRun {
  steps: number;
  nfe: number;
  afs: boolean;
  denoise: boolean;
  derivative: DerivativeSource | undefined;
  /** Classifier-free guidance is on (GENIE then asks for the exact derivative along its tangent). */
  guided: boolean;
  /** The model answers ε and its JVP along the ODE's tangent in one call (SolveInput `odeJvp`). */
  odeJvp: boolean;
}

/** Graph calls per sample trajectory of a planned run (what the drivers count, core/solvers/drive.ts). */
function predictedCalls(info: SolverInfo, run: PlannedRun): Record<CallGraph, number> {
  const { steps, nfe, afs, denoise, derivative, guided, odeJvp } = run;
  const calls: Record<CallGraph, number> = { eps: 0, head: 0, jvp: 0 };
  if (info.name !== "genie" || derivative === undefined) {
    calls.eps = nfe;
    return calls;
  }
  // GENIE: one step per grid interval, the first free with AFS (core/solvers/genie.ts).
  const evaluated = steps - (afs ? 1 : 0);
  if (derivative === "fd") calls.eps = 2 * evaluated;
  else if (derivative === "jvp" && odeJvp && !guided) calls.jvp = evaluated;
  else if (derivative === "jvp" || (derivative === "exact" && guided)) {
    calls.eps = evaluated;
    calls.jvp = evaluated;
  } else calls.head = evaluated;
  if (denoise) calls.eps++;
  return calls;
}

/**
 * The price of a planned run per sample trajectory, as the response will report it: its graph calls and
 * their cost with the model's measured ratios (`costs`; missing ones use the fallback of core/cost.ts).
 */
export function planCost(info: SolverInfo, run: PlannedRun, costs: CostRatios | undefined): PlanCost {
  const graphCalls = predictedCalls(info, run);
  const calls = graphCalls.eps + graphCalls.head + graphCalls.jvp;
  const price = runCost({ nfe: run.nfe, calls, graphCalls }, costs);
  return {
    calls,
    cost: price.cost,
    cost_estimated: price.costEstimated,
    graph_calls: price.graphCalls,
  };
}

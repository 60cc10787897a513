/**
 * What a sampling run costs, beyond its NFE. NFE counts evaluations of ε; a run may also call graphs
 * that are not ε evaluations (GENIE's JVP along the ODE's tangent) or that do more than one (a head
 * graph returns ε and the derivative in one call). The honest price of a run is therefore reported as
 * three numbers:
 *
 * - `nfe`: evaluations of ε (a head call counts as one; a JVP call does not);
 * - `calls`: graph calls of every kind per sample trajectory (not multiplied by the batch);
 * - `cost`: forward-pass equivalents, Σ over the calls of that graph's cost ratio to one eps call at
 *   the same batch.
 *
 * The ratios are measured per model and recorded in its manifest (`costs`); a graph without a recorded
 * ratio is priced with {@link FALLBACK_COSTS} and the cost is reported as estimated.
 */
import { CALL_GRAPHS, type CallGraph, type RunStats } from "./solvers/drive.ts";

/** A model's cost of one call of each graph, as a ratio to one eps call at the same batch. */
export type CostRatios = Partial<Record<CallGraph, number>>;

/**
 * The ratios used where a model records none: eps 1 (the unit); head 1 (ε with a small derivative
 * network on top, close to one eps call); jvp 3 (a forward-mode JVP costs about three forward passes).
 */
export const FALLBACK_COSTS: Readonly<Record<CallGraph, number>> = { eps: 1, head: 1, jvp: 3 };

/** A graph's cost ratio: the recorded one, else the fallback (then `estimated`; eps is the unit). */
function costRatio(graph: CallGraph, costs?: CostRatios): { ratio: number; estimated: boolean } {
  const recorded = costs?.[graph];
  if (recorded !== undefined) return { ratio: recorded, estimated: false };
  return { ratio: FALLBACK_COSTS[graph], estimated: graph !== "eps" };
}

/** The accounts of a run, priced. */
export interface RunCost {
  /** Evaluations of ε. */
  nfe: number;
  /** Graph calls of every kind, per sample trajectory. */
  calls: number;
  /** Forward-pass equivalents (rounded to 6 decimals). */
  cost: number;
  /** Whether a graph the run called had no recorded ratio, so that `cost` uses a fallback. */
  costEstimated: boolean;
  /** Calls per graph, only the graphs called. */
  graphCalls: Partial<Record<CallGraph, number>>;
}

/** Prices a run's accounts with a model's cost ratios. */
export function runCost(stats: Pick<RunStats, "nfe" | "calls" | "graphCalls">, costs?: CostRatios): RunCost {
  let cost = 0, costEstimated = false;
  const graphCalls: Partial<Record<CallGraph, number>> = {};
  for (const graph of CALL_GRAPHS) {
    const n = stats.graphCalls[graph];
    if (!n) continue;
    graphCalls[graph] = n;
    const { ratio, estimated } = costRatio(graph, costs);
    cost += n * ratio;
    costEstimated ||= estimated;
  }
  return { nfe: stats.nfe, calls: stats.calls, cost: round6(cost), costEstimated, graphCalls };
}

/**
 * The fields a response reports for a run: `nfe`, `calls`, `cost`, `cost_estimated` and `graph_calls`
 * (calls per graph, only those called).
 */
export function costFields(
  stats: Pick<RunStats, "nfe" | "calls" | "graphCalls">,
  costs?: CostRatios,
): {
  nfe: number;
  calls: number;
  cost: number;
  cost_estimated: boolean;
  graph_calls: Record<string, number>;
} {
  const c = runCost(stats, costs);
  return {
    nfe: c.nfe,
    calls: c.calls,
    cost: c.cost,
    cost_estimated: c.costEstimated,
    graph_calls: c.graphCalls,
  };
}

/**
 * The ratios a model's runs are priced with, for the graphs it calls (eps, and head/jvp where served):
 * recorded ones, else the fallbacks, listed in `estimated`.
 */
export function effectiveCosts(
  graphs: readonly CallGraph[],
  costs?: CostRatios,
): { costs: Partial<Record<CallGraph, number>>; estimated: CallGraph[] } {
  const out: Partial<Record<CallGraph, number>> = {}, estimated: CallGraph[] = [];
  for (const graph of CALL_GRAPHS) {
    if (!graphs.includes(graph)) continue;
    const r = costRatio(graph, costs);
    out[graph] = r.ratio;
    if (r.estimated) estimated.push(graph);
  }
  return { costs: out, estimated };
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

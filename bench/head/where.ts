/**
 * Where along the trajectory the head's derivative matters (a part of `deno task bench:head`'s section 3):
 * GENIE with its head on its best grid, with the head's k replaced by the exact JVP (or by 0, a DDIM step)
 * only at the steps whose time lies in one range of t. The error that falls most when the exact derivative
 * is used in a range marks the times where a better head pays: the head's distillation favours them
 * (`deno task distill --focus`, training/distill/dataset.ts).
 */
import { odeTangent } from "../../core/solvers/genie.ts";
import type { AsyncEvaluator } from "../../core/solvers/drive.ts";
import { stepsForNfe } from "../../core/solvers/registry.ts";
import type { EvalRequest, EvalResult } from "../../core/solvers/types.ts";
import { median } from "../../core/stats.ts";
import { rmsePerSample } from "../reference.ts";
import { sample, type Sampled, type SampleSetup } from "./solvers.ts";
import type { Config } from "./settings.ts";

/** The ranges of t, and the NFEs, of the section. */
export const WHERE_RANGES: [number, number][] = [[0, 0.1], [0.1, 0.3], [0.3, 0.6], [0.6, 0.8], [0.8, 1.01]];
export const WHERE_NFES = [6, 8, 10];

/** One row: what replaced the head's k, where; the error at each of {@link WHERE_NFES}. */
export interface WhereRow {
  label: string;
  errors: number[];
}

/** What answers a head request at a time inside the range: the exact JVP, or k = 0. */
type Substitute = "jvp" | "zero";

/**
 * `evaluate` with the head's derivative replaced inside [from, to) by `as`: the exact JVP along the ODE
 * tangent at the request's point (an ε call, then a JVP call), or 0.
 */
export function substituted(
  setup: SampleSetup,
  evaluate: AsyncEvaluator,
  range: [number, number],
  as: Substitute,
): AsyncEvaluator {
  const { schedule } = setup.model;
  return async (req: EvalRequest): Promise<EvalResult> => {
    const t = req.t[0];
    const inside = req.want === "eps+deriv" && !req.tangent && t >= range[0] && t < range[1];
    if (!inside) return await evaluate(req);
    if (req.t.some((v) => v !== t)) throw new Error("substituted: a batch with several times");
    const { eps } = await evaluate({ ...req, want: "eps" });
    if (as === "zero") return { eps, deriv: new Float64Array(eps.length) };
    const alpha = schedule.alpha(t);
    const xbar = req.x.map((v) => v / alpha);
    const { deriv } = await evaluate({ ...req, tangent: odeTangent(schedule, xbar, eps, t, req.t.length) });
    return { eps, deriv };
  };
}

/** The section's rows for GENIE with its head (`head`, on its best grid) against the reference `ref`. */
export async function whereItMatters(
  setup: SampleSetup,
  head: Config,
  ref: Sampled,
  latents: Float64Array,
  classes: Int32Array | undefined,
): Promise<WhereRow[]> {
  const { n: N, dim: DIM, denoise } = setup;
  const rows: WhereRow[] = [];
  const row = async (label: string, evaluate: AsyncEvaluator) => {
    const errors: number[] = [];
    for (const nfe of WHERE_NFES) {
      const steps = stepsForNfe(head.solver, nfe, { afs: true, denoise, derivative: head.derivative });
      const s = await sample({ ...setup, evaluate }, head, steps, latents, classes);
      errors.push(median(rmsePerSample(s.x, ref.x, N, DIM)));
    }
    rows.push({ label, errors });
  };
  const all: [number, number] = [0, Infinity];
  await row("the head everywhere", setup.model.evaluate);
  await row("k = 0 everywhere (DDIM steps)", substituted(setup, setup.model.evaluate, all, "zero"));
  await row("the exact JVP everywhere", substituted(setup, setup.model.evaluate, all, "jvp"));
  for (const range of WHERE_RANGES) {
    const to = range[1] > 1 ? 1 : range[1];
    await row(
      `the exact JVP for t ∈ [${range[0]}, ${to}${range[1] > 1 ? "]" : ")"}`,
      substituted(setup, setup.model.evaluate, range, "jvp"),
    );
  }
  return rows;
}

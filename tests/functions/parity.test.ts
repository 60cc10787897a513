/**
 * The command line and the HTTP API plan a solve the same way (core/plan.ts): every combination of
 * solver × grid × ρ (given or not) × steps or NFE × t_min/t_max (given or not) × GENIE's derivative on
 * the analytic gmm2d model, run through both paths in-process —
 *
 * - the CLI's `sampleOnce` (cli/run.ts) on gmm2d through the worker's engine (ONNX Runtime, CPU);
 * - `POST /v1/samples` on the edge app (functions/app.ts) in front of a worker app (gpu-worker/app.ts,
 *   CPU) reached through an injected fetch —
 *
 * gives the same float32 bits, steps, NFE, calls, cost, grid and ρ, or the same refusal naming the same
 * field. The plan's predicted price is checked against the measured one on the way.
 */
import { FIELD_FLAGS, UsageError } from "../../cli/args.ts";
import { resolveModel } from "../../cli/models.ts";
import { sampleOnce, type SampleOptions, summary } from "../../cli/run.ts";
import { base64ToBytes } from "../../core/api/tensor.ts";
import { GRID_KINDS } from "../../core/grid.ts";
import { solverNames } from "../../core/solvers/registry.ts";
import { createApp } from "../../functions/app.ts";
import { startApp } from "../gpu-worker/helpers.ts";
import { assertEquals } from "../testing.ts";
import { post, quiet } from "./helpers.ts";

/** A solve's settings by their API names. */
interface Case {
  solver: string;
  grid?: string;
  rho?: number;
  steps?: number;
  nfe?: number;
  t_min?: number;
  t_max?: number;
  genie_derivative?: string;
}

/** What a path made of a case: the run's bits and accounts, or the field its refusal names. */
type Outcome =
  | {
    ok: true;
    bits: string;
    steps: number;
    nfe: number;
    calls: number;
    cost: number;
    grid: string;
    rho?: number;
  }
  | { ok: false; field: string; message: string };

const N = 2, SEED = 11;

function cases(): Case[] {
  const out: Case[] = [];
  for (const solver of solverNames()) {
    const derivatives = solver === "genie" ? [undefined, "head", "jvp", "fd", "exact"] : [undefined, "jvp"];
    for (const grid of [undefined, ...GRID_KINDS]) {
      for (const rho of [undefined, 3]) {
        for (const count of [{ steps: 3 }, { nfe: 4 }]) {
          for (const ends of [{}, { t_min: 0.002, t_max: 0.9 }]) {
            for (const genie_derivative of derivatives) {
              out.push({ solver, grid, rho, ...count, ...ends, genie_derivative });
            }
          }
        }
      }
    }
  }
  // Refusals of settings beyond the table: the schedule's end, t_min at or above t_max, an NFE a solver
  // cannot use, an order out of range, both steps and nfe.
  out.push(
    { solver: "genie", nfe: 4, t_max: 1.5 },
    { solver: "genie", nfe: 4, t_min: 0.5, t_max: 0.5 },
    { solver: "genie", nfe: 4, t_min: 1 },
    { solver: "heun", nfe: 3 },
    { solver: "genie", nfe: 7, genie_derivative: "fd" },
    { solver: "genie", steps: 3, nfe: 4 },
  );
  return out.map((c) => Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)) as Case);
}

const FIELD_OF_FLAG = Object.fromEntries(
  Object.entries(FIELD_FLAGS).filter(([f]) => f !== "derivative").map(([field, flag]) => [flag, field]),
);

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

Deno.test({
  name: "the CLI and the API give the same samples or the same refusal for every solve setting on gmm2d",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const worker = await startApp({ models: ["gmm2d"] });
    const edge = createApp({
      workerUrls: ["http://worker.test"],
      fetch: (input, init) => worker.fetch(new Request(input, init)),
      rateLimit: { perMinute: 0, burst: 0 },
      log: quiet,
    });
    const model = await resolveModel("gmm2d", { providers: ["cpu"], threads: 1 });
    try {
      const viaCli = async (c: Case): Promise<Outcome> => {
        const opts: SampleOptions = {
          solver: c.solver,
          steps: c.steps,
          nfe: c.nfe,
          grid: c.grid as SampleOptions["grid"],
          rho: c.rho,
          tMin: c.t_min,
          tMax: c.t_max,
          derivative: c.genie_derivative as SampleOptions["derivative"],
          n: N,
          seed: SEED,
        };
        try {
          const r = await sampleOnce(model, opts);
          const s = summary(model, r);
          // The plan's predicted price is what the run measured.
          assertEquals(
            [r.plan.core.cost.calls, r.plan.core.cost.cost, r.plan.core.nfe],
            [s.calls, s.cost, s.nfe],
            JSON.stringify(c),
          );
          return {
            ok: true,
            bits: hex(new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength)),
            steps: r.plan.steps,
            nfe: s.nfe as number,
            calls: s.calls as number,
            cost: s.cost as number,
            grid: r.plan.grid,
            ...(r.plan.rho !== undefined ? { rho: r.plan.rho } : {}),
          };
        } catch (e) {
          if (!(e instanceof UsageError)) throw e;
          return { ok: false, field: FIELD_OF_FLAG[e.flag] ?? e.flag, message: e.message };
        }
      };
      const viaApi = async (c: Case): Promise<Outcome> => {
        const res = await post(edge, "/v1/samples", {
          model: "gmm2d",
          n: N,
          seed: SEED,
          output: "tensor",
          ...c,
        });
        const body = await res.json();
        if (res.status === 422) {
          return { ok: false, field: body.error.details[0].path.join("."), message: body.error.message };
        }
        if (res.status !== 200) {
          throw new Error(`${JSON.stringify(c)}: ${res.status} ${JSON.stringify(body)}`);
        }
        return {
          ok: true,
          bits: hex(base64ToBytes(body.tensor.data)),
          steps: body.steps,
          nfe: body.nfe,
          calls: body.calls,
          cost: body.cost,
          grid: body.grid,
          ...(body.rho !== undefined ? { rho: body.rho } : {}),
        };
      };
      const all = cases();
      const mismatches: string[] = [];
      let ran = 0, refused = 0;
      // A few at a time: the worker batches concurrent requests (results do not depend on it).
      for (let i = 0; i < all.length; i += 8) {
        await Promise.all(
          all.slice(i, i + 8).map(async (c) => {
            const [cli, api] = await Promise.all([viaCli(c), viaApi(c)]);
            const same = cli.ok && api.ok
              ? JSON.stringify(cli) === JSON.stringify(api)
              : !cli.ok && !api.ok && cli.field === api.field;
            if (!same) {
              mismatches.push(
                `${JSON.stringify(c)}\n  cli: ${JSON.stringify(cli)}\n  api: ${JSON.stringify(api)}`,
              );
            } else if (cli.ok) ran++;
            else refused++;
          }),
        );
      }
      assertEquals(mismatches.slice(0, 5), [], `${mismatches.length} of ${all.length} cases differ`);
      // Both kinds of outcome are exercised.
      assertEquals([ran > 100, refused > 100], [true, true], `${ran} ran, ${refused} refused`);
    } finally {
      await model.close?.();
      await edge.close();
      await worker.shutdown();
    }
  },
});

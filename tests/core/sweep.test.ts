/**
 * Every registered solver (solverNames(), so solvers added later are swept too) × steps 1–25 × every
 * grid kind × AFS on/off × denoise on/off, plus each solver's orders and variants and, for GENIE, each
 * derivative source: the output is finite, the NFE counted by the driver equals nfeFor(...) exactly,
 * and stepsForNfe inverts nfeFor. Also the option errors name the offending field.
 */
import { assert, assertStrictEquals, test } from "../testing.ts";
import { gmmEvaluator, parseGmmSpec } from "../../core/gmm.ts";
import { GRID_KINDS, makeGrid, reversedGrid } from "../../core/grid.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";
import { runSolver } from "../../core/solvers/drive.ts";
import { getSolver, nfeFor, type SolverInfo, solverNames, stepsForNfe } from "../../core/solvers/registry.ts";
import { DERIVATIVE_SOURCES, type SolveInput, SolverError } from "../../core/solvers/types.ts";
import { SPEC_2D } from "./fixtures.ts";

const schedule = vpLinearSchedule();
const mix = parseGmmSpec(SPEC_2D);
// The head is answered by the analytic model's closed-form total derivative.
const evaluate = gmmEvaluator(mix);
const BATCH = 2, DIM = 2;
const x = Float64Array.of(0.3, -1.2, 1.7, 0.4);
const STEPS = Array.from({ length: 25 }, (_, i) => i + 1);

/** The option sets worth sweeping for one solver: its orders, variants and derivative sources. */
function optionSets(name: string, info: SolverInfo): Partial<SolveInput>[] {
  const sets: Partial<SolveInput>[] = [{}];
  if (info.orders) {
    for (let k = info.orders.min; k <= info.orders.max; k++) sets.push({ order: k });
  }
  for (const variant of info.variants?.values ?? []) {
    if (variant !== info.variants!.default) sets.push({ variant });
  }
  if (name === "unipc") sets.push({ variant: "bh2", order: 2 }, { lowerOrderFinal: false });
  if (name === "ipndm") sets.push({ lowerOrderFinal: true });
  if (name === "genie") return DERIVATIVE_SOURCES.map((derivative) => ({ derivative }));
  return sets;
}

test("sweep: every solver × steps 1–25 × grid × AFS × denoise: finite output and exact NFE", () => {
  const names = solverNames();
  assert(names.includes("ddim") && names.includes("genie"), `registered: ${names}`);
  let runs = 0;
  for (const name of names) {
    const info = getSolver(name);
    for (const opts of optionSets(name, info)) {
      for (const kind of GRID_KINDS) {
        for (const steps of STEPS) {
          const grid = makeGrid(schedule, { kind, steps });
          for (const afs of [false, true]) {
            for (const denoise of [false, true]) {
              const what = `${name} ${
                JSON.stringify(opts)
              } ${kind} steps=${steps} afs=${afs} denoise=${denoise}`;
              const input: SolveInput = { schedule, grid, x, batch: BATCH, dim: DIM, afs, denoise, ...opts };
              const { x: out, stats } = runSolver(info.fn(input), evaluate);
              runs++;
              assertStrictEquals(out.length, BATCH * DIM, what);
              assert(out.every(Number.isFinite), `${what}: non-finite output`);
              const nfeOpts = { afs, denoise, derivative: opts.derivative };
              const nfe = nfeFor(name, steps, nfeOpts);
              assertStrictEquals(stats.nfe, nfe, `${what}: counted NFE`);
              if (nfe >= 1) {
                assertStrictEquals(stepsForNfe(name, nfe, nfeOpts), steps, `${what}: stepsForNfe`);
              } else {
                // Only GENIE with AFS and one step evaluates nothing; no NFE request can ask for it.
                assert(afs && !denoise && steps === 1, `${what}: NFE ${nfe}`);
              }
            }
          }
        }
      }
    }
  }
  assert(runs >= names.length * STEPS.length * GRID_KINDS.length * 4, `runs ${runs}`);
});

test("sweep: every encoding solver runs on increasing grids with exact NFE", () => {
  for (const name of solverNames()) {
    const info = getSolver(name);
    if (!info.encodes) continue;
    for (const opts of optionSets(name, info)) {
      for (const kind of GRID_KINDS) {
        for (const steps of [1, 2, 3, 7, 16]) {
          const grid = reversedGrid(makeGrid(schedule, { kind, steps }));
          const what = `${name} ${JSON.stringify(opts)} ${kind} steps=${steps} encoding`;
          const { x: out, stats } = runSolver(
            info.fn({ schedule, grid, x, batch: BATCH, dim: DIM, ...opts }),
            evaluate,
          );
          assert(out.every(Number.isFinite), `${what}: non-finite output`);
          assertStrictEquals(stats.nfe, nfeFor(name, steps, { derivative: opts.derivative }), what);
        }
      }
    }
  }
});

test("sweep: stepsForNfe inverts nfeFor and rejects impossible NFE naming 'nfe'", () => {
  for (const name of solverNames()) {
    const derivs = name === "genie" ? DERIVATIVE_SOURCES : [undefined];
    for (const derivative of derivs) {
      for (const afs of [false, true]) {
        for (const denoise of [false, true]) {
          const opts = { afs, denoise, derivative };
          const reachable = new Set<number>();
          for (let steps = 1; steps <= 40; steps++) {
            const nfe = nfeFor(name, steps, opts);
            if (nfe >= 1) {
              assertStrictEquals(
                stepsForNfe(name, nfe, opts),
                steps,
                `${name} ${JSON.stringify(opts)} ${steps}`,
              );
            }
            reachable.add(nfe);
          }
          for (let nfe = 1; nfe <= 30; nfe++) {
            if (reachable.has(nfe)) continue;
            try {
              stepsForNfe(name, nfe, opts);
              throw new Error(`${name} ${JSON.stringify(opts)}: NFE ${nfe} should be impossible`);
            } catch (e) {
              assert(e instanceof SolverError && e.field === "nfe", `${name} NFE ${nfe}: ${e}`);
            }
          }
          for (const bad of [0, -1, 2.5, NaN]) {
            try {
              stepsForNfe(name, bad, opts);
              throw new Error(`NFE ${bad} accepted`);
            } catch (e) {
              assert(e instanceof SolverError && e.field === "nfe", `NFE ${bad}: ${e}`);
            }
          }
        }
      }
    }
  }
});

/** The SolverError a solver raises for these options (on its first step). */
function solverError(
  name: string,
  opts: Partial<SolveInput>,
  grid = makeGrid(schedule, { kind: "quadratic", steps: 4 }),
) {
  try {
    runSolver(getSolver(name).fn({ schedule, grid, x, batch: BATCH, dim: DIM, ...opts }), evaluate);
  } catch (e) {
    assert(e instanceof SolverError, `${name} ${JSON.stringify(opts)}: expected SolverError, got ${e}`);
    return e;
  }
  throw new Error(`${name} accepted ${JSON.stringify(opts)}`);
}

test("sweep: bad order, variant, derivative and inputs give a SolverError naming the field", () => {
  for (const name of solverNames()) {
    const info = getSolver(name);
    const badOrders = info.orders ? [info.orders.min - 1, info.orders.max + 1, 1.5] : [7];
    for (const order of badOrders) {
      assertStrictEquals(solverError(name, { order }).field, "order", `${name} order ${order}`);
    }
    // A variant of another solver, and one of no solver.
    const foreign = info.variants?.values.includes("bh2") ? "quadratic-exact" : "bh2";
    assertStrictEquals(solverError(name, { variant: foreign }).field, "variant", `${name} variant`);
    const none = "bh3" as unknown as "bh1";
    assertStrictEquals(solverError(name, { variant: none }).field, "variant", `${name} variant bh3`);
    for (const variant of info.variants?.values ?? []) {
      runSolver(
        info.fn({
          schedule,
          grid: makeGrid(schedule, { kind: "quadratic", steps: 4 }),
          x,
          batch: BATCH,
          dim: DIM,
          variant,
        }),
        evaluate,
      );
    }
    // Inputs every solver checks.
    assertStrictEquals(solverError(name, { batch: 3 }).field, "x", name);
    assertStrictEquals(solverError(name, { batch: 0 }).field, "batch", name);
    const up = reversedGrid(makeGrid(schedule, { kind: "quadratic", steps: 4 }));
    assertStrictEquals(solverError(name, { afs: true }, up).field, "afs", name);
    assertStrictEquals(solverError(name, { denoise: true }, up).field, "denoise", name);
  }
  assertStrictEquals(
    solverError("genie", { derivative: "autodiff" as unknown as "jvp" }).field,
    "derivative",
    "genie derivative",
  );
  try {
    getSolver("euler-maruyama");
    throw new Error("unknown solver accepted");
  } catch (e) {
    assert(e instanceof SolverError && e.field === "solver", `${e}`);
  }
});

/**
 * Solver names as users type them (core/solvers/registry.ts): aliases and spellings from other tools
 * resolve to the canonical names wherever a solver is looked up, and nothing else does.
 */
import { assert, assertEquals, assertStrictEquals, assertThrows, test } from "../testing.ts";
import {
  defaultGrid,
  getSolver,
  nfeFor,
  normalSolverName,
  resolveSolverName,
  solverAliases,
  solverNames,
  stepsForNfe,
} from "../../core/solvers/registry.ts";
import { SolverError } from "../../core/solvers/types.ts";

const TYPED: Record<string, string> = {
  "dpmpp_2m": "dpmpp-2m",
  "DPM++ 2M": "dpmpp-2m",
  "dpm++2m": "dpmpp-2m",
  "dpm++ 2m": "dpmpp-2m",
  "DPMPP-2M": "dpmpp-2m",
  "k_dpmpp_2m": "dpmpp-2m",
  "DPM-Solver++(2M)": "dpmpp-2m",
  "dpmpp_3m": "dpmpp-3m",
  "DPM++ 3M": "dpmpp-3m",
  "dpm++3m": "dpmpp-3m",
  "unipc": "unipc",
  "uni_pc": "unipc",
  "UniPC": "unipc",
  "Uni-PC": "unipc",
  "euler": "ddim",
  "Euler": "ddim",
  "k_euler": "ddim",
  "DDIM": "ddim",
  "heun": "heun",
  "Heun": "heun",
  "k_heun": "heun",
  "ipndm": "ipndm",
  "iPNDM": "ipndm",
  "ipndm_v": "ipndm-v",
  "iPNDM-v": "ipndm-v",
  "IPNDM V": "ipndm-v",
  "genie": "genie",
  " GENIE ": "genie",
};

test("names: canonical names resolve to themselves", () => {
  for (const name of solverNames()) {
    assertStrictEquals(resolveSolverName(name), name);
    assertStrictEquals(getSolver(name).name, name);
  }
});

test("names: the spellings users type resolve to the canonical name", () => {
  for (const [typed, canonical] of Object.entries(TYPED)) {
    assertStrictEquals(resolveSolverName(typed), canonical, typed);
    assertStrictEquals(getSolver(typed).name, canonical, typed);
    assertStrictEquals(getSolver(typed).fn, getSolver(canonical).fn, typed);
  }
  assertStrictEquals(normalSolverName("DPM-Solver++ (3M)"), "dpmsolverpp3m");
});

test("names: every lookup accepts aliases (NFE accounting, default grids)", () => {
  assertStrictEquals(nfeFor("DPM++ 2M", 10, { afs: true }), nfeFor("dpmpp-2m", 10, { afs: true }));
  assertStrictEquals(stepsForNfe("k_heun", 9, { afs: true }), stepsForNfe("heun", 9, { afs: true }));
  assertEquals(defaultGrid("ipndm_v"), defaultGrid("ipndm-v"));
  // A model default stored under the canonical name applies to its aliases.
  const defaults = { solvers: { "dpmpp-2m": { grid: "edm" as const, rho: 7 } } };
  assertEquals(defaultGrid("dpmpp_2m", defaults), { kind: "edm", rho: 7, source: "model" });
  assertEquals(defaultGrid("euler", { grid: "uniform" }), { kind: "uniform", source: "model" });
});

test("names: unknown names, near misses and other samplers stay errors naming 'solver'", () => {
  for (
    const bad of ["", "dpmpp", "dpmpp-2s", "DPM++ 2M Karras", "dpmpp_3m_sde", "euler_a", "lms", "plms", "x"]
  ) {
    assertStrictEquals(resolveSolverName(bad), undefined, bad);
    assertThrows(() => getSolver(bad), (e) => e instanceof SolverError && e.field === "solver", bad);
  }
});

test("names: the listed aliases resolve to what they list, name only known solvers, and filter", () => {
  const all = solverAliases();
  assert(Object.keys(all).length >= 10, `aliases: ${JSON.stringify(all)}`);
  for (const [alias, canonical] of Object.entries(all)) {
    assert(solverNames().includes(canonical), `${alias} → ${canonical}`);
    assertStrictEquals(resolveSolverName(alias), canonical, alias);
    assert(!solverNames().includes(alias), `${alias} is a canonical name`);
  }
  for (const typed of ["dpmpp_2m", "DPM++ 2M", "dpmpp_3m", "DPM++ 3M", "uni_pc", "euler", "ipndm_v"]) {
    assert(typed in all, `${typed} is not listed`);
  }
  const some = solverAliases(["ddim", "genie"]);
  assertEquals(some, Object.fromEntries(Object.entries(all).filter(([, c]) => c === "ddim")));
});

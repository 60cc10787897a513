/**
 * Solver aliases outside core/solvers: `GET /v1/models` lists them (`solver_aliases`, gpu-worker/serving.ts),
 * the edge keeps or fills them when it reads a worker's list (core/api/models.ts), a model's manifest
 * may name a solver by an alias in `defaults.solvers` (gpu-worker/manifest.ts), and a request's alias
 * reaches the solver it names.
 */
import { modelSolverName, normalizeModelInfo } from "../../core/api/models.ts";
import { resolveSolverName, solverAliases, solverNames } from "../../core/solvers/registry.ts";
import { validateManifest } from "../../gpu-worker/manifest.ts";
import { BUILTIN_MANIFESTS } from "../../gpu-worker/models.ts";
import { assert, assertEquals, assertStrictEquals, assertThrows } from "../testing.ts";
import { floats, post, startApp } from "./helpers.ts";

const GMM2D = BUILTIN_MANIFESTS.find((m) => m.name === "gmm2d")!;

Deno.test("aliases: a manifest's defaults.solvers may name a solver by an alias", () => {
  const info = validateManifest({
    ...structuredClone(GMM2D),
    defaults: { solvers: { "DPM++ 2M": { grid: "edm", rho: 7 }, ipndm_v: { grid: "uniform" } } },
  });
  assertEquals(info.manifest.defaults?.solvers, {
    "dpmpp-2m": { grid: "edm", rho: 7 },
    "ipndm-v": { grid: "uniform" },
  });
  assertThrows(
    () =>
      validateManifest({
        ...structuredClone(GMM2D),
        defaults: { solvers: { dpmpp_2m: { grid: "edm" }, "dpmpp-2m": { grid: "logsnr" } } },
      }),
    /given twice/,
  );
  assertThrows(
    () =>
      validateManifest({ ...structuredClone(GMM2D), defaults: { solvers: { euler_a: { grid: "edm" } } } }),
    /unknown solver/,
  );
});

Deno.test("aliases: the edge keeps a worker's solver_aliases, or fills them for the solvers it lists", () => {
  const listed = normalizeModelInfo({ name: "a", shape: [2], solvers: ["ddim", "dpmpp-2m"] })!;
  assertEquals(listed.solver_aliases, solverAliases(["ddim", "dpmpp-2m"]));
  assertStrictEquals(listed.solver_aliases!["DPM++ 2M"], "dpmpp-2m");
  assertStrictEquals(listed.solver_aliases!["euler"], "ddim");
  assert(!Object.values(listed.solver_aliases!).includes("unipc"), "an unlisted solver's aliases");
  const own = normalizeModelInfo({
    name: "b",
    shape: [2],
    solvers: ["ddim", "fancy"],
    solver_aliases: { "Fancy Solver": "fancy", gone: "unipc" },
  })!;
  assertEquals(own.solver_aliases, { "Fancy Solver": "fancy" });
  const bad = normalizeModelInfo({ name: "c", shape: [2], solvers: ["genie"], solver_aliases: 3 })!;
  assertStrictEquals(bad.name, "c");
  assertStrictEquals(bad.solver_aliases, undefined); // genie has no listed aliases

  // What a request's solver means on a model.
  assertStrictEquals(modelSolverName(listed, "dpmpp-2m"), "dpmpp-2m");
  assertStrictEquals(modelSolverName(listed, "DPM++ 2M"), "dpmpp-2m");
  assertStrictEquals(modelSolverName(listed, "dpm++2m"), "dpmpp-2m");
  assertStrictEquals(modelSolverName(listed, "Euler"), "ddim");
  assertStrictEquals(modelSolverName(listed, "unipc"), undefined);
  assertStrictEquals(modelSolverName(listed, "uni_pc"), undefined);
  assertStrictEquals(modelSolverName(own, "fancy_solver"), "fancy");
  assertStrictEquals(modelSolverName(own, "FANCY"), "fancy");
});

Deno.test({
  name: "aliases: GET /v1/models lists solver_aliases, and a request's alias runs the solver it names",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const app = await startApp({ models: ["gmm2d"] });
    try {
      const [m] = await (await app.request("/v1/models")).json();
      assertEquals(m.solvers, solverNames());
      assert(m.solvers.includes("ipndm-v"), `solvers: ${m.solvers}`);
      assertEquals(m.solver_aliases, solverAliases());
      for (const [alias, canonical] of Object.entries(m.solver_aliases as Record<string, string>)) {
        assert(m.solvers.includes(canonical), `${alias} → ${canonical}`);
        assertStrictEquals(resolveSolverName(alias), canonical);
      }
      const ask = async (solver: string) => {
        const r = await post(app, "/v1/batch", {
          v: 1,
          id: "a",
          model: "gmm2d",
          seeds: [1, 2],
          solver,
          steps: 6,
        });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        return r.body;
      };
      for (
        const [alias, canonical] of [["DPM++ 2M", "dpmpp-2m"], ["euler", "ddim"], ["ipndm_v", "ipndm-v"]]
      ) {
        const a = await ask(alias), c = await ask(canonical);
        assertStrictEquals(a.solver, canonical, alias);
        assertEquals([a.grid, a.rho], [c.grid, c.rho], alias);
        assertEquals(Array.from(floats(a.data)), Array.from(floats(c.data)), alias);
      }
    } finally {
      await app.shutdown();
    }
  },
});

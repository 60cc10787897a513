/** Model folders (docs/contracts.md §4): manifest validation names the offending field. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { ManifestError, readManifest, validateManifest } from "../../gpu-worker/manifest.ts";
import { BUILTIN_MANIFESTS, loadRegistry } from "../../gpu-worker/models.ts";
import { assert, assertEquals, assertThrows } from "../testing.ts";

const base = () => structuredClone(BUILTIN_MANIFESTS[0]) as unknown as Record<string, unknown>;

function fieldOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert(e instanceof ManifestError, `expected a ManifestError, got ${e}`);
    return e.field;
  }
  throw new Error("expected an error");
}

Deno.test("valid built-in manifests pass", () => {
  for (const m of BUILTIN_MANIFESTS) {
    const info = validateManifest(structuredClone(m));
    assertEquals(info.manifest.name, m.name);
    assertEquals(info.dim, m.shape.reduce((a, b) => a * b, 1));
  }
});

Deno.test("the committed built-in manifests are what the generator writes (edge: true included)", () => {
  for (const m of BUILTIN_MANIFESTS) {
    const committed = Deno.readTextFileSync(new URL(`../../models/${m.name}/model.json`, import.meta.url));
    assertEquals(committed, JSON.stringify(m, null, 2) + "\n", `models/${m.name}/model.json`);
    assertEquals(validateManifest(JSON.parse(committed)).manifest.edge, true, m.name);
  }
});

Deno.test("edge: a non-boolean is an error naming the field", () => {
  const m = { ...base(), edge: 1 };
  assertThrows(() => validateManifest(m), ManifestError, "gmm2d: edge: must be true or false");
  assertEquals(validateManifest({ ...base(), edge: false }).manifest.edge, false);
});

Deno.test("invalid manifests name the field", () => {
  const cases: [string, (m: Record<string, unknown>) => void][] = [
    ["name", (m) => (m.name = "Bad Name!")],
    ["version", (m) => delete m.version],
    ["shape", (m) => (m.shape = [])],
    ["shape[1]", (m) => (m.shape = [1, 0])],
    ["prediction", (m) => (m.prediction = "score")],
    ["time.kind", (m) => (m.time = { kind: "later", scale: 1 })],
    ["time.scale", (m) => (m.time = { kind: "continuous", scale: -1 })],
    ["schedule.type", (m) => (m.schedule = { type: "cosmic" })],
    ["schedule.beta_max", (m) => (m.schedule = { type: "vp-linear", beta_max: "x" })],
    ["classes.count", (m) => (m.classes = { count: 0 })],
    ["classes.null_class", (m) => (m.classes = { count: 2, null_class: 5 })],
    ["graphs.eps", (m) => (m.graphs = { head: "head.onnx" })],
    ["graphs.extra", (m) => (m.graphs = { eps: "eps.onnx", extra: "x.onnx" })],
    ["graphs.head", (m) => (m.graphs = { eps: "eps.onnx", head: "../escape.onnx" })],
    ["limits.max_batch", (m) => (m.limits = { max_batch: 1.5 })],
    ["head_space", (m) => (m.head_space = "x")],
    ["edge", (m) => (m.edge = "yes")],
  ];
  for (const [field, mutate] of cases) {
    const m = base();
    mutate(m);
    assertEquals(fieldOf(() => validateManifest(m)), field, `mutation for ${field}`);
  }
  assertThrows(() => validateManifest([]), /manifest: must be a JSON object/);
});

Deno.test("model folders: missing graph files and mismatched names are reported, others still load", async () => {
  const dir = mkdtempSync(join(tmpdir(), "genie-models-"));
  try {
    const m = { ...base(), name: "broken", analytic: undefined };
    mkdirSync(join(dir, "broken"));
    writeFileSync(join(dir, "broken", "model.json"), JSON.stringify(m));
    assertThrows(() => readManifest(join(dir, "broken")), /broken: graphs\.eps: file not found/);
    mkdirSync(join(dir, "elsewhere"));
    writeFileSync(join(dir, "elsewhere", "model.json"), JSON.stringify({ ...m, name: "other" }));
    assertEquals(fieldOf(() => readManifest(join(dir, "elsewhere"), { checkFiles: false })), "name");
    mkdirSync(join(dir, "notjson"));
    writeFileSync(join(dir, "notjson", "model.json"), "{");
    assertEquals(fieldOf(() => readManifest(join(dir, "notjson"))), "model.json");

    // The registry builds the built-in analytic models and skips the broken folders with their reasons.
    const reg = await loadRegistry(dir, { only: ["gmm2d", "broken", "notjson"] });
    assertEquals([...reg.models.keys()], ["gmm2d"]);
    const reasons = Object.fromEntries(reg.errors.map((e) => [e.folder, e.message]));
    assert(/graphs\.eps: file not found/.test(reasons.broken), reasons.broken);
    assert(/model\.json: is not valid JSON/.test(reasons.notjson), reasons.notjson);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("defaults and costs: valid blocks are kept, models without them are unchanged", () => {
  const m = base();
  m.defaults = {
    grid: "power",
    rho: 3,
    solvers: { genie: { grid: "edm", rho: 7 }, ddim: { grid: "logsnr" } },
  };
  m.costs = { eps: 1, head: 1.05, jvp: 2.9 };
  const info = validateManifest(m);
  assertEquals(info.manifest.defaults, {
    grid: "power",
    rho: 3,
    solvers: { genie: { grid: "edm", rho: 7 }, ddim: { grid: "logsnr" } },
  });
  assertEquals(info.manifest.costs, { eps: 1, head: 1.05, jvp: 2.9 });
  // jvp may be priced on a model that ships only eps (the worker derives its JVP graph).
  const epsOnly = base();
  epsOnly.graphs = { eps: "eps.onnx" };
  epsOnly.costs = { jvp: 2.4 };
  assertEquals(validateManifest(epsOnly).manifest.costs, { jvp: 2.4 });
  const plain = validateManifest(base()).manifest;
  assert(!("defaults" in plain) && !("costs" in plain), JSON.stringify(Object.keys(plain)));
});

Deno.test("defaults and costs: each bad field is named", () => {
  const cases: [string, (m: Record<string, unknown>) => void][] = [
    ["defaults", (m) => (m.defaults = "edm")],
    ["defaults.grid", (m) => (m.defaults = { grid: "spiral" })],
    ["defaults.rho", (m) => (m.defaults = { grid: "edm", rho: 0 })],
    ["defaults.rho", (m) => (m.defaults = { grid: "edm", rho: "7" })],
    ["defaults.rho", (m) => (m.defaults = { grid: "power", rho: Infinity })],
    ["defaults.rho", (m) => (m.defaults = { rho: 7 })],
    ["defaults.rho", (m) => (m.defaults = { grid: "logsnr", rho: 7 })],
    ["defaults.rho", (m) => (m.defaults = { grid: "quadratic", rho: 3 })],
    ["defaults.steps", (m) => (m.defaults = { grid: "edm", steps: 10 })],
    ["defaults.solvers", (m) => (m.defaults = { solvers: ["genie"] })],
    ["defaults.solvers.rk99", (m) => (m.defaults = { solvers: { rk99: { grid: "edm" } } })],
    ["defaults.solvers.genie", (m) => (m.defaults = { solvers: { genie: "edm" } })],
    ["defaults.solvers.genie.grid", (m) => (m.defaults = { solvers: { genie: { rho: 7 } } })],
    ["defaults.solvers.genie.grid", (m) => (m.defaults = { solvers: { genie: { grid: "edm7" } } })],
    ["defaults.solvers.genie.rho", (m) => (m.defaults = { solvers: { genie: { grid: "edm", rho: -1 } } })],
    ["defaults.solvers.genie.order", (m) => (m.defaults = { solvers: { genie: { grid: "edm", order: 2 } } })],
    ["costs", (m) => (m.costs = [1, 2])],
    ["costs.eps", (m) => (m.costs = { eps: 2 })],
    ["costs.head", (m) => (m.costs = { head: 0 })],
    ["costs.jvp", (m) => (m.costs = { jvp: NaN })],
    ["costs.jvp", (m) => (m.costs = { jvp: "3" })],
    ["costs.features", (m) => (m.costs = { features: 1 })],
    ["costs.unet", (m) => (m.costs = { unet: 1 })],
    ["costs.head", (m) => {
      m.graphs = { eps: "eps.onnx" };
      m.costs = { head: 1.1 };
    }],
  ];
  for (const [field, mutate] of cases) {
    const m = base();
    mutate(m);
    assertEquals(
      fieldOf(() => validateManifest(m)),
      field,
      `mutation for ${field}: ${JSON.stringify(m.defaults ?? m.costs)}`,
    );
  }
  assertThrows(
    () => validateManifest({ ...base(), defaults: { grid: "spiral" } }),
    /gmm2d: defaults\.grid: unknown grid "spiral" \(one of uniform, quadratic, power, logsnr, edm\)/,
  );
});

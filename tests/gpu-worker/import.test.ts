/**
 * Bring your own diffusers model: `deno task import` (gpu-worker/import.ts) turns a diffusers-style export
 * (scheduler_config.json + unet/model.onnx with inputs `sample`, `timestep`, `class_labels` and output
 * `out_sample`) into a model folder, and the worker serves it under the manifest's name mappings and the
 * discrete time convention (the graph sees the timestep N·t − 1; an int64 timestep the nearest index).
 *
 * The tiny exports are built here: out_sample = sample · k(timestep) (+ a class embedding), with
 * k(τ) = 0.5 + τ·10⁻⁴ computed in the graph (float timestep) or gathered from a per-timestep table (int64
 * timestep), so the timestep the graph was fed can be read back from its output at sample = 1.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { importDiffusers, ImportError, main as importMain } from "../../gpu-worker/import.ts";
import { openModel } from "../../gpu-worker/engine.ts";
import { modelTime, validateManifest } from "../../gpu-worker/manifest.ts";
import { GraphBuilder } from "../../onnx/proto.ts";
import { SUPPORTED_OPERATORS } from "../../onnx/jvp.ts";
import { normalizeModelInfo } from "../../core/api/models.ts";
import { checkSamplesForModel, SamplesRequest } from "../../core/api/samples.ts";
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "../testing.ts";
import { errorOf, floats, post, startApp } from "./helpers.ts";

const N = 1000;
const SHAPE = [1, 4, 4];
/** An operator without a JVP rule, for the model whose jvp is unavailable. */
const UNSUPPORTED = ["Elu", "Selu", "HardSigmoid", "Mish"].find((op) => !SUPPORTED_OPERATORS.includes(op))!;

interface ExportOptions {
  timestep: "int64" | "float32";
  /** Rows of the class embedding table (class-conditional when set). */
  classes?: number;
  /** Use class_labels without an embedding table (its count cannot be read from the graph). */
  tablelessClasses?: boolean;
  /** Apply an operator without a derivative rule to the output. */
  unsupported?: boolean;
  /** An extra input, as a text-conditioned UNet has. */
  extraInput?: string;
}

/** A tiny diffusers-style UNet export: out_sample = sample · (0.5 + timestep·10⁻⁴) (+ class term). */
function unetGraph(o: ExportOptions): Uint8Array {
  const g = new GraphBuilder("tiny-diffusers-unet", { opset: 17 });
  const sample = g.input("sample", "float32", ["batch", ...SHAPE]);
  const timestep = g.input("timestep", o.timestep, ["batch"]);
  let k: string;
  if (o.timestep === "int64") {
    const table = Float32Array.from({ length: N }, (_, n) => 0.5 + n * 1e-4);
    k = g.op("Gather", [g.initializer("time_table", table, [N]), timestep], { axis: 0 });
  } else {
    k = g.op("Add", [
      g.op("Mul", [timestep, g.constant(1e-4, [], "float32")]),
      g.constant(0.5, [], "float32"),
    ]);
  }
  const col = g.constant(BigInt64Array.of(-1n, 1n, 1n, 1n), [4], "int64", "col");
  let out = g.op("Mul", [sample, g.op("Reshape", [k, col])]);
  if (o.classes !== undefined || o.tablelessClasses) {
    const labels = g.input("class_labels", "int64", ["batch"]);
    const term = o.tablelessClasses
      ? g.op("Mul", [g.op("Cast", [labels], { to: 1 }), g.constant(0.01, [], "float32")])
      : g.op("Gather", [
        g.initializer(
          "class_embedding.weight",
          Float32Array.from({ length: o.classes! }, (_, c) => 0.01 * c),
          [o.classes!, 1],
        ),
        labels,
      ], { axis: 0 });
    out = g.op("Add", [out, g.op("Reshape", [term, col])]);
  }
  if (o.extraInput) {
    out = g.op("Add", [
      out,
      g.op("ReduceMean", [g.input(o.extraInput, "float32", ["batch", 8])], { keepdims: 0 }),
    ]);
  }
  if (o.unsupported) out = g.op(UNSUPPORTED, [out]);
  g.node("Identity", [out], ["out_sample"]);
  g.output("out_sample", "float32", ["batch", ...SHAPE]);
  return g.bytes();
}

const LINEAR_CONFIG = {
  _class_name: "DDPMScheduler",
  beta_schedule: "linear",
  beta_start: 0.0001,
  beta_end: 0.02,
  num_train_timesteps: N,
  prediction_type: "epsilon",
  clip_sample: true,
  variance_type: "fixed_small",
};

/** Writes an export folder and returns its path. */
function exportFolder(root: string, name: string, o: ExportOptions, config: object = LINEAR_CONFIG): string {
  const dir = join(root, name);
  mkdirSync(join(dir, "unet"), { recursive: true });
  writeFileSync(join(dir, "scheduler_config.json"), JSON.stringify(config));
  writeFileSync(join(dir, "unet", "model.onnx"), unetGraph(o));
  return dir;
}

/** The timestep index the graph was fed, read back from eps at sample = 1 (class term 0). */
const fedTimestep = (eps: number) => (eps - 0.5) * 1e4;

Deno.test({
  name: "import a diffusers export and serve it (ddim, genie) under the discrete time convention",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = Deno.makeTempDirSync({ prefix: "genie-import-" });
    const models = join(root, "models");
    const facts: Record<string, string[]> = {};

    await t.step("import: float timestep, int64 timestep with classes, an undifferentiable graph", () => {
      const cases: [string, ExportOptions][] = [
        ["float-t", { timestep: "float32" }],
        ["int-t", { timestep: "int64", classes: 10 }],
        ["no-jvp", { timestep: "float32", unsupported: true }],
      ];
      for (const [name, o] of cases) {
        const r = importDiffusers({ source: exportFolder(root, `export-${name}`, o), name, out: models });
        facts[name] = r.facts;
        const json = JSON.parse(readFileSync(join(models, name, "model.json"), "utf8"));
        assertEquals(json.schedule, {
          type: "discrete",
          beta_schedule: "linear",
          num_train_timesteps: N,
          beta_start: 0.0001,
          beta_end: 0.02,
        });
        assertEquals(json.prediction, "epsilon");
        assertEquals(json.time, { kind: "discrete", scale: N, offset: -1 });
        assertEquals(json.outputs, { eps: "out_sample" });
        assertEquals(json.shape, SHAPE);
      }
      const has = (name: string, re: RegExp) =>
        assert(facts[name].some((l) => re.test(l)), `${name}: ${re}\n${facts[name].join("\n")}`);
      has("float-t", /^derivatives: jvp \(derived/);
      has("float-t", /^classes: none/);
      has("float-t", /^time: the graph sees timestep = 1000·t − 1 .*float32/);
      has("float-t", /^ignored: clip_sample=true/);
      has("int-t", /^classes: 10 \(from the class embedding table "class_embedding.weight"\)/);
      has("int-t", /^time: .*int64: rounded to the nearest index/);
      has("int-t", /^derivatives: fd \(jvp unavailable: the time input "timestep" is int64/);
      has(
        "no-jvp",
        new RegExp(
          `^derivatives: fd \\(jvp unavailable: cannot differentiate operator\\(s\\) ${UNSUPPORTED}`,
        ),
      );
      const json = JSON.parse(readFileSync(join(models, "int-t", "model.json"), "utf8"));
      assertEquals(json.inputs, { x: "sample", t: "timestep", class: "class_labels" });
      assertEquals(json.classes, { count: 10 });
    });

    await t.step("the graph is fed N·t − 1 (float) or the nearest index (int64)", async () => {
      const ts = [1, 0.5, 0.001, 0.0123, 0.0127, 0.25];
      for (const [name, integer] of [["float-t", false], ["int-t", true]] as const) {
        const model = await openModel(name, models, { providers: ["cpu"], threads: 1 });
        try {
          const dim = 16;
          const res = await model.evaluate({
            x: new Float64Array(ts.length * dim).fill(1),
            t: Float64Array.from(ts),
            want: "eps",
            step: 0,
            steps: 1,
          });
          ts.forEach((tv, i) => {
            const expected = integer ? Math.round(N * tv - 1) : N * tv - 1;
            const got = fedTimestep(res.eps[i * dim]);
            if (integer) assertStrictEquals(Math.round(got), expected, `${name}: timestep at t = ${tv}`);
            assert(Math.abs(got - expected) < 0.02, `${name}: timestep at t = ${tv}: ${got} ≠ ${expected}`);
          });
          assertEquals(model.schedule.tMin, 1 / N);
        } finally {
          await model.close();
        }
      }
    });

    const app = await startApp({ modelsDir: models, models: ["float-t", "int-t", "no-jvp"] });
    try {
      await t.step("/v1/models: derivatives, and those unavailable with the reason", async () => {
        const list = await (await app.request("/v1/models")).json() as Record<string, unknown>[];
        const byName = new Map(list.map((m) => [m.name as string, m]));
        assertEquals(byName.get("float-t")!.derivatives, ["jvp", "fd"]);
        assertEquals(byName.get("float-t")!.prediction, "eps");
        for (
          const [name, re] of [["int-t", /time input "timestep" is int64/], [
            "no-jvp",
            /cannot differentiate/,
          ]] as const
        ) {
          const m = byName.get(name)!;
          assertEquals(m.derivatives, ["fd"]);
          const why =
            (m.unavailable_derivatives as Record<string, { reason: string; operators: string[] }>).jvp;
          assertMatch(why.reason, re);
          if (name === "no-jvp") assertEquals(why.operators, [UNSUPPORTED]);
        }
      });

      const sample = async (model: string, extra: Record<string, unknown>) => {
        const r = await post(app, "/v1/batch", { v: 1, id: "i", model, nfe: 6, seeds: [1, 2], ...extra });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        const x = floats(r.body.data);
        assertEquals(x.length, 2 * 16);
        assert(x.every(Number.isFinite), `${model}: finite samples`);
        return r;
      };
      await t.step("ddim and genie (jvp) on the float-timestep model", async () => {
        await sample("float-t", { solver: "ddim" });
        const r = await sample("float-t", { solver: "genie", genie_derivative: "jvp" });
        assertEquals(r.body.genie_derivative, "jvp");
      });
      await t.step("ddim and genie (fd) on the int64-timestep model, with a class", async () => {
        await sample("int-t", { solver: "ddim", class: 3 });
        const r = await sample("int-t", { solver: "genie", class: 3 });
        assertEquals(r.body.genie_derivative, "fd");
      });
      await t.step("a refused genie_derivative: 422 naming the reason", async () => {
        for (
          const [model, re] of [["int-t", /is int64/], [
            "no-jvp",
            new RegExp(`operator\\(s\\) ${UNSUPPORTED}`),
          ]] as const
        ) {
          const r = await post(app, "/v1/batch", {
            v: 1,
            id: "e",
            model,
            solver: "genie",
            genie_derivative: "jvp",
            nfe: 4,
            seeds: [1],
          });
          assertEquals(r.status, 422, JSON.stringify(r.body));
          assertEquals(errorOf(r).field, "genie_derivative");
          assertMatch(
            errorOf(r).message,
            new RegExp(`jvp is unavailable for ${model}: .*\\(available: fd\\)`),
          );
          assertMatch(errorOf(r).message, re);
        }
      });
    } finally {
      await app.shutdown();
    }
  },
});

Deno.test("import refuses what it cannot serve, naming the field", () => {
  const root = Deno.makeTempDirSync({ prefix: "genie-import-bad-" });
  const out = join(root, "models");
  const cases: [string, ExportOptions, object, Record<string, unknown>, string][] = [
    [
      "sigmoid",
      { timestep: "float32" },
      { ...LINEAR_CONFIG, beta_schedule: "sigmoid" },
      {},
      "scheduler_config.json: beta_schedule",
    ],
    [
      "pred",
      { timestep: "float32" },
      { ...LINEAR_CONFIG, prediction_type: "flow" },
      {},
      "scheduler_config.json: prediction_type",
    ],
    [
      "zsnr",
      { timestep: "float32" },
      { ...LINEAR_CONFIG, rescale_betas_zero_snr: true },
      {},
      "scheduler_config.json: rescale_betas_zero_snr",
    ],
    [
      "var",
      { timestep: "float32" },
      { ...LINEAR_CONFIG, variance_type: "learned_range" },
      {},
      "scheduler_config.json: variance_type",
    ],
    [
      "beta",
      { timestep: "float32" },
      { ...LINEAR_CONFIG, beta_start: -1 },
      {},
      "scheduler_config.json: beta_start",
    ],
    ["nocount", { timestep: "int64", tablelessClasses: true }, LINEAR_CONFIG, {}, "--classes"],
    [
      "text",
      { timestep: "float32", extraInput: "encoder_hidden_states" },
      LINEAR_CONFIG,
      {},
      'unet/model.onnx: input "encoder_hidden_states"',
    ],
    ["badname", { timestep: "float32" }, LINEAR_CONFIG, { name: "Bad Name" }, "--name"],
  ];
  for (const [name, o, config, extra, field] of cases) {
    const source = exportFolder(root, name, o, config);
    assertThrows(() => importDiffusers({ source, name, out, ...extra }), (e: unknown) => {
      assert(e instanceof ImportError, `${name}: expected an ImportError, got ${e}`);
      assertStrictEquals(e.field, field, `${name}: ${e.message}`);
      return true;
    });
  }
  // the class count of a graph without an embedding table comes from --classes
  const source = exportFolder(root, "counted", { timestep: "int64", tablelessClasses: true });
  const r = importDiffusers({ source, name: "counted", out, classes: 5, nullClass: 5 });
  assertEquals(r.manifest.classes, { count: 5, null_class: 5 });
  assert(r.facts.includes("classes: 5 (from --classes), null class 5"), r.facts.join("\n"));
  // an existing folder is not replaced without --force
  assertThrows(() => importDiffusers({ source, name: "counted", out, classes: 5 }), ImportError, "--force");
  importDiffusers({ source, name: "counted", out, classes: 5, force: true });
  // the command line: usage errors and a missing export
  assertStrictEquals(importMain([root]), 1);
  assertStrictEquals(importMain([join(root, "missing"), "--name", "x", "--out", out]), 1);
});

Deno.test("manifest: name mappings, diffusers aliases and the discrete time default", () => {
  const base = {
    name: "m",
    version: "1",
    shape: [2],
    prediction: "v_prediction",
    schedule: { type: "discrete", num_train_timesteps: 100 },
    graphs: { eps: "eps.onnx" },
    limits: { max_batch: 4 },
  };
  const info = validateManifest({ ...base, inputs: { x: "sample" }, outputs: { eps: "out" } });
  assertEquals(info.manifest.prediction, "v");
  assertEquals(info.manifest.time, { kind: "discrete", scale: 100, offset: -1 });
  assertEquals(info.names, { x: "sample", t: "t", class: "class", eps: "out" });
  assertStrictEquals(modelTime(info, 1), 99);
  assertStrictEquals(modelTime(info, 0.01), 0);
  // int64 timesteps: nearest index, halves to even, clamped to [0, N − 1]
  info.timestep = "int64";
  for (
    const [t, n] of [[0.125, 12], [0.375, 36], [0.625, 62], [0.875, 86], [0.001, 0], [1, 99], [0.4449, 43]]
  ) {
    assertStrictEquals(modelTime(info, t), n, `t = ${t}`);
  }
  const bad: [Record<string, unknown>, string][] = [
    [{ inputs: { y: "a" } }, "inputs.y"],
    [{ inputs: { x: 3 } }, "inputs.x"],
    [{ inputs: { x: "dx" } }, "inputs.x"],
    [{ inputs: { x: "a", t: "a" } }, "inputs"],
    [{ outputs: { eps: "jvp" } }, "outputs.eps"],
    [{ outputs: "eps" }, "outputs"],
    [{ time: { kind: "discrete", scale: 100, offset: "x" } }, "time.offset"],
    [{ prediction: "flow" }, "prediction"],
    [{ schedule: { type: "discrete", beta_schedule: "cubic" } }, "schedule.beta_schedule"],
  ];
  for (const [extra, field] of bad) {
    assertThrows(() => validateManifest({ ...base, ...extra }), (e: unknown) => {
      assertStrictEquals((e as { field?: string }).field, field, (e as Error).message);
      return true;
    });
  }
});

Deno.test("the edge keeps unavailable_derivatives and its 422 on genie_derivative names the reason", () => {
  const reason = `cannot differentiate operator(s) ${UNSUPPORTED}: …`;
  const model = normalizeModelInfo({
    name: "no-jvp",
    shape: [1, 4, 4],
    derivatives: ["fd"],
    unavailable_derivatives: { jvp: { reason, operators: [UNSUPPORTED] } },
  })!;
  assertEquals(model.unavailable_derivatives, { jvp: { reason, operators: [UNSUPPORTED] } });
  const issues = checkSamplesForModel(
    SamplesRequest.parse({ model: "no-jvp", solver: "genie", genie_derivative: "jvp" }),
    model,
  );
  assertEquals(issues.map((i) => i.path.join(".")), ["genie_derivative"]);
  assertMatch(
    issues[0].message,
    new RegExp(`jvp is unavailable for no-jvp: cannot differentiate.*\\(available: fd\\)`),
  );
  // a malformed entry is dropped, not the model
  assertEquals(
    normalizeModelInfo({ name: "m", shape: [2], unavailable_derivatives: { jvp: 3 } })!
      .unavailable_derivatives,
    undefined,
  );
});

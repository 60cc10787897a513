/**
 * Bring your own model, end to end: a tiny diffusers-shaped export (tests/gpu-worker/fixtures/
 * diffusers_unet.ts, v-prediction, class-conditional with a null class) is imported, `deno task distill
 * --model` distils its head for a handful of steps (stopped and resumed), and the worker serves it with
 * `genie_derivative: "head"`. The head's inputs are found by their place in the graph (its values are
 * not called features or temb). Quality is not asserted after so few steps.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { importDiffusers } from "../../gpu-worker/import.ts";
import { readManifest } from "../../gpu-worker/manifest.ts";
import { findHeadTensors } from "../../onnx/features.ts";
import { decodeModel, GraphBuilder } from "../../onnx/proto.ts";
import { distillTarget } from "../../training/distill.ts";
import { writeDiffusersExport } from "../gpu-worker/fixtures/diffusers_unet.ts";
import { floats, post, startApp } from "../gpu-worker/helpers.ts";
import { assert, assertEquals, assertMatch, test } from "../testing.ts";

const ROOT = new URL("../../", import.meta.url);

/** `deno task distill …args` with the task's permissions. */
async function distill(args: string[]): Promise<{ code: number; stderr: string }> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const perms = (config.tasks.distill as string).split(/\s+/).filter((w) => w.startsWith("--allow-"));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...perms, "training/distill.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

test("which program: mnist-unet's by default and by name, any other folder the model-folder one", () => {
  assertEquals(distillTarget([]), { dir: "models/mnist-unet", mnist: true });
  assertEquals(distillTarget(["--model", "models/mnist-unet"]).mnist, true);
  assertEquals(distillTarget(["--model", "x/mnist-unet", "--data", "d.npy"]).mnist, false);
  assertEquals(distillTarget(["--model", "some/dir/tiny"]), { dir: "some/dir/tiny", mnist: false });
});

test("the head's inputs are found in the export: the last conv's input and the time embedding", () => {
  const root = Deno.makeTempDirSync({ prefix: "genie-distill-" });
  try {
    const dir = writeDiffusersExport(root, "export", { classes: 4 });
    const model = decodeModel(readFileSync(join(dir, "unet", "model.onnx")));
    const found = findHeadTensors(model, { x: "sample", t: "timestep", eps: "out_sample" });
    assertEquals([found.features, found.temb], ["/conv_act/Mul_output_0", "/time_embedding/emb"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

test("distill refuses a model whose JVP cannot be derived (an int64 timestep), saying why", async () => {
  const root = Deno.makeTempDirSync({ prefix: "genie-distill-" });
  try {
    const g = new GraphBuilder("int-t", { opset: 17 });
    g.input("sample", "float32", ["B", 1, 4, 4]);
    g.input("timestep", "int64", ["B"]);
    g.node("Identity", ["sample"], ["out_sample"]);
    g.output("out_sample", "float32", ["B", 1, 4, 4]);
    Deno.mkdirSync(join(root, "export", "unet"), { recursive: true });
    Deno.writeTextFileSync(
      join(root, "export", "scheduler_config.json"),
      JSON.stringify({ beta_schedule: "linear" }),
    );
    Deno.writeFileSync(join(root, "export", "unet", "model.onnx"), g.bytes());
    importDiffusers({ source: join(root, "export"), name: "int-t", out: join(root, "models") });
    const r = await distill(["--model", join(root, "models", "int-t"), "--steps", "2"]);
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr, /^distill: int-t: the time input "timestep" is int64/m);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name: "import → distill --model (stopped, resumed) → the worker serves genie with the head",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = Deno.makeTempDirSync({ prefix: "genie-distill-" });
    const models = join(root, "models");
    const dir = join(models, "tiny");
    const ckpt = join(root, "ckpt");
    try {
      importDiffusers({
        source: writeDiffusersExport(root, "export", { classes: 4, prediction: "v_prediction" }),
        name: "tiny",
        out: models,
        classes: 3,
        nullClass: 3,
      });
      const common = [
        "--model",
        dir,
        "--ckpt",
        ckpt,
        ...["--steps", "6", "--batch", "4", "--pool", "6", "--pool-nfe", "3", "--eval-batch", "4"],
        ...["--eval-every", "3", "--every", "3", "--progress", "3", "--threads", "1"],
        // a fixed target set with a focus, and a head of 3 hidden 3×3 layers reading x̂₀ and dx/dγ
        ...["--targets", "8", "--focus", "0.5", "--depth", "3", "--kernel", "3", "--derived"],
      ];

      await t.step("distil 3 steps, stop; progress with ETA; the head's inputs found", async () => {
        const r = await distill([...common, "--stop-at", "3"]);
        assertEquals(r.code, 0, r.stderr);
        assertMatch(r.stderr, /features: '\/conv_act\/Mul_output_0' \(the input of the last convolution/);
        assertMatch(r.stderr, /temb: '\/time_embedding\/emb'/);
        assertMatch(r.stderr, /data: 6\/6 samples .*ETA/);
        assertMatch(r.stderr, /distillation targets: 8\/8 .*ETA/);
        assertMatch(r.stderr, /step 3\/6 .* it\/s .*ETA/);
        assertEquals(
          JSON.parse(Deno.readTextFileSync(join(ckpt, "latest.json"))).checkpoint,
          "step-000000003",
        );
      });

      await t.step(
        "resume to the end: head.onnx named in model.json, the record covers every step",
        async () => {
          const r = await distill(common);
          assertEquals(r.code, 0, r.stderr);
          assertMatch(r.stderr, /resumed from .* at step 3/);
          assertMatch(r.stderr, /data: 6 samples of the model from/);
          assertMatch(
            r.stderr,
            /head\.onnx: median relative error [0-9.]+; max \|Δε\| vs eps\.onnx 0\.00e\+0/,
          );
          const manifest = JSON.parse(Deno.readTextFileSync(join(dir, "model.json")));
          assertEquals(manifest.graphs.head, "head.onnx");
          assertEquals(manifest.head_space, "eps");
          const record = JSON.parse(Deno.readTextFileSync(join(dir, "distill.json")));
          assertEquals(record.steps_done, 6);
          assertEquals(
            record.segments.map((s: { from_step: number; to_step: number }) => [s.from_step, s.to_step]),
            [
              [0, 3],
              [3, 6],
            ],
          );
          assertEquals([record.head.depth, record.head.kernel, record.head.derived], [3, 3, true]);
          assertEquals([record.flags.targets, record.flags.focus], [8, 0.5]);
          assertEquals(record.head.tensors, {
            features: "/conv_act/Mul_output_0",
            temb: "/time_embedding/emb",
          });
          // the worker's load-time check accepts the folder with its head graph
          assert(readManifest(dir).graphPaths.head);
        },
      );

      await t.step(
        "the worker serves genie_derivative head (guided too): one head call per step",
        async () => {
          const app = await startApp({ modelsDir: models, models: ["tiny"] });
          try {
            const list = await (await app.request("/v1/models")).json() as Record<string, unknown>[];
            const tiny = list.find((m) => m.name === "tiny")!;
            assertEquals(tiny.status, "ready");
            assertEquals((tiny.derivatives as string[])[0], "head");
            for (const extra of [{ class: 1 }, { class: 2, guidance: 1.5 }]) {
              const r = await post(app, "/v1/batch", {
                v: 1,
                id: "h",
                model: "tiny",
                solver: "genie",
                genie_derivative: "head",
                nfe: 4,
                seeds: [1, 2],
                ...extra,
              });
              assertEquals(r.status, 200, JSON.stringify(r.body));
              assertEquals(r.body.genie_derivative, "head");
              assertEquals(r.body.deriv_evals, 4);
              const data = floats(r.body.data);
              assertEquals(data.length, 2 * 64);
              assert(data.every(Number.isFinite));
            }
          } finally {
            await app.shutdown();
          }
        },
      );
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

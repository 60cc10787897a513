/**
 * A model folder whose manifest disagrees with its graph (here `"shape": [1, 28, 28]` over the 2-D
 * gmm2d graphs) used to end the worker at start-up (`Invalid rank for input: x …`). It is now checked
 * at load against the graph's inputs and outputs: skipped with one log line naming the folder and the
 * mismatch, listed by `/v1/models` with `status: "failed"` and its error, while the other models
 * serve; `deno task models` reports it as not ok.
 */
import { decode, encode } from "@msgpack/msgpack";
import { createWorkerApp } from "../../gpu-worker/app.ts";
import { checkModelGraphs } from "../../gpu-worker/graph_check.ts";
import { loadRegistry } from "../../gpu-worker/models.ts";
import { readManifest } from "../../gpu-worker/manifest.ts";
import { normalizeModelList } from "../../core/api/models.ts";
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "../testing.ts";
import { taskArgs } from "../functions/processes.ts";
import { MSGPACK, testConfig } from "./helpers.ts";

const ROOT = new URL("../../", import.meta.url);

/** A models folder with gmm2d (built) and `broken`: gmm2d's graphs under a manifest edited by `edit`. */
async function brokenModels(edit: (m: Record<string, unknown>) => void): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "genie-broken-" });
  await loadRegistry(dir, { only: ["gmm2d"], jvp: false });
  await Deno.mkdir(`${dir}/broken`);
  for (const f of ["eps.onnx", "head.onnx", "jvp.onnx"]) {
    await Deno.copyFile(`${dir}/gmm2d/${f}`, `${dir}/broken/${f}`);
  }
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/gmm2d/model.json`));
  delete manifest.analytic; // its graphs are given, not generated
  manifest.name = "broken";
  edit(manifest);
  await Deno.writeTextFile(`${dir}/broken/model.json`, JSON.stringify(manifest, null, 2));
  return dir;
}

Deno.test({
  name: "a folder whose shape disagrees with its graph is skipped with one line; the others serve",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await brokenModels((m) => (m.shape = [1, 28, 28]));
    const lines: string[] = [];
    try {
      const app = await createWorkerApp(
        testConfig({ modelsDir: dir, models: ["gmm2d", "broken"], log: (l) => lines.push(l) }),
      );
      try {
        assertEquals([...app.models.keys()], ["gmm2d"]);
        const about = lines.filter((l) => l.includes("broken"));
        assertStrictEquals(about.length, 1, lines.join("\n"));
        assertMatch(about[0], /skipping model folder broken: .*graphs\.eps.*input "x" has rank 2/);
        assertMatch(about[0], /\[1,28,28\]/);
        // /v1/models names it, with why; clients of the list leave it out
        const res = await app.request("/v1/models");
        const list = await res.json() as Record<string, unknown>[];
        const bad = list.find((m) => m.name === "broken")!;
        assertStrictEquals(bad.status, "failed");
        assertMatch(String(bad.error), /input "x" has rank 2/);
        assertStrictEquals(list.find((m) => m.name === "gmm2d")!.status, "ready");
        assertEquals(normalizeModelList(list).map((m) => m.name), ["gmm2d"]);
        // the good model samples
        const r = await app.request("/v1/batch", {
          method: "POST",
          headers: { "content-type": MSGPACK },
          body: encode({ v: 1, id: "a", model: "gmm2d", solver: "ddim", steps: 4, seeds: [1] }) as BodyInit,
        });
        const body = decode(new Uint8Array(await r.arrayBuffer())) as Record<string, unknown>;
        assertStrictEquals(r.status, 200, JSON.stringify(body));
      } finally {
        await app.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("graph checks name the graph, the input or output, and the mismatch", async () => {
  const cases: [string, (m: Record<string, unknown>) => void, RegExp][] = [
    [
      "wider shape",
      (m) => (m.shape = [3]),
      /graphs\.eps: eps\.onnx: input "x" has shape \[B, 2\].*means \[N, 3\]/,
    ],
    ["rank", (m) => (m.shape = [2, 1]), /input "x" has rank 2/],
    [
      "jvp as head",
      (m) => (m.graphs = { eps: "eps.onnx", head: "jvp.onnx" }),
      /graphs\.head: jvp\.onnx: unexpected input "dx"/,
    ],
    [
      "eps as jvp",
      (m) => (m.graphs = { eps: "eps.onnx", jvp: "eps.onnx" }),
      /graphs\.jvp: eps\.onnx: the graph has no input "dx"/,
    ],
    [
      "head output",
      (m) => (m.graphs = { eps: "eps.onnx", head: "eps.onnx" }),
      /graphs\.head: eps\.onnx: the graph has no output "deriv"/,
    ],
  ];
  for (const [what, edit, want] of cases) {
    const dir = await brokenModels(edit);
    try {
      const info = readManifest(`${dir}/broken`);
      assertThrows(() => checkModelGraphs(info), want, what);
      // the good folder passes
      checkModelGraphs(readManifest(`${dir}/gmm2d`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("deno task models reports the bad folder as not ok (status 1), the good one ok", async () => {
  const dir = await brokenModels((m) => (m.shape = [1, 28, 28]));
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...(await taskArgs("models")), "--dir", dir, "gmm2d", "broken"],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
    assertStrictEquals(out.code, 1, stdout + stderr);
    assertMatch(stdout, /^gmm2d: ok/m);
    assertMatch(stderr, /^broken: not ok \(.*input "x" has rank 2/m);
    assert(!/^\s+at /m.test(stderr), stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

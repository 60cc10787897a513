/**
 * The worker under Node.js: bundled by gpu-worker/node_bundle.ts, onnxruntime-node installed from the
 * local package cache, started with `node main.mjs`, it serves the same bytes as the worker under Deno.
 * Skipped when `node` is not on PATH.
 */
import { decode, encode } from "@msgpack/msgpack";
import { bundleForNode } from "../../gpu-worker/node_bundle.ts";
import { defaultModelsDir } from "../../gpu-worker/models.ts";
import { assert, assertEquals } from "../testing.ts";
import { post, startApp } from "./helpers.ts";

const hasNode = await new Deno.Command("node", { args: ["--version"], stdout: "null", stderr: "null" })
  .output()
  .then((o) => o.success, () => false);

Deno.test({
  name: "the worker runs under Node.js and answers bit-identically to Deno",
  ignore: !hasNode,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "genie-node-worker-" });
    let child: Deno.ChildProcess | undefined;
    try {
      await bundleForNode(dir);
      const install = await new Deno.Command(Deno.execPath(), {
        args: ["install", "--quiet", "--node-modules-dir=auto"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert(install.success, new TextDecoder().decode(install.stderr));
      child = new Deno.Command("node", {
        args: ["main.mjs", "--port", "0", "--providers", "cpu", "--models", "gmm2d", "--threads", "2"],
        cwd: dir,
        env: { GENIE_MODELS_DIR: defaultModelsDir() },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const deadline = Date.now() + 30_000;
      while (!/listening on (http:\/\/\S+)/.test(text)) {
        assert(Date.now() < deadline, `no "listening on" line: ${text}`);
        const { value, done } = await reader.read();
        assert(!done, `node exited: ${text}`);
        text += value;
      }
      reader.releaseLock();
      const url = /listening on (http:\/\/\S+)/.exec(text)![1];
      const request = {
        v: 1,
        id: "node",
        model: "gmm2d",
        solver: "genie",
        nfe: 6,
        seeds: [3, 4],
        class: 0,
        guidance: 1,
      };
      const res = await fetch(`${url}/v1/batch`, {
        method: "POST",
        body: encode(request),
        headers: { "content-type": "application/msgpack" },
      });
      const fromNode = decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>;
      assertEquals(res.status, 200, JSON.stringify(fromNode));
      const app = await startApp({ models: ["gmm2d"] });
      try {
        const fromDeno = await post(app, "/v1/batch", request);
        assertEquals(fromNode.data, fromDeno.body.data, "same bytes under Node and Deno");
      } finally {
        await app.shutdown();
      }
      child.kill("SIGTERM");
      const status = await child.status;
      assertEquals(status.code, 0, "SIGTERM drains and exits cleanly");
      child = undefined;
    } finally {
      if (child) {
        child.kill("SIGKILL");
        await child.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

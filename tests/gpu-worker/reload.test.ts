/**
 * Hot reload (gpu-worker/app.ts `reload`, `POST /v1/admin/reload`): a model folder added to a running
 * worker is listed and serves after a reload; a folder changed while a request is in flight serves new
 * requests with its new graph while that request finishes on the old one, whose sessions are released
 * after it; an unchanged folder is not loaded again; a removed folder's model is gone from the listing.
 * The admin call needs the worker's signature when the worker has a secret.
 */
import { encode } from "@msgpack/msgpack";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { signRequest } from "../../core/api/worker.ts";
import { importDiffusers } from "../../gpu-worker/import.ts";
import { assert, assertEquals, test } from "../testing.ts";
import { writeDiffusersExport } from "./fixtures/diffusers_unet.ts";
import { floats, MSGPACK, post, startApp, until } from "./helpers.ts";

const SECRET = "reload-secret";

Deno.test({
  name: "reload: add a model, change it under a request in flight, leave it unchanged, remove one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = Deno.makeTempDirSync({ prefix: "genie-reload-" });
    const models = join(root, "models");
    const add = (name: string, seed: number) =>
      importDiffusers({
        source: writeDiffusersExport(root, `export-${name}-${seed}`, { seed }),
        name,
        out: models,
        force: true,
      });
    add("a", 1);
    const lines: string[] = [];
    // build: false leaves the built-in analytic folders unbuilt (listed as failed): only a and b serve
    const app = await startApp({
      modelsDir: models,
      build: false,
      secret: SECRET,
      log: (l) => lines.push(l),
    });
    const signed = async (method: string, path: string, body?: Uint8Array) => ({
      ...(await signRequest(SECRET, { method, path, body })),
      ...(body ? { "content-type": MSGPACK } : {}),
    });
    const list = async () => {
      const res = await app.request("/v1/models", { headers: await signed("GET", "/v1/models") });
      return await res.json() as { name: string; status: string; error?: string }[];
    };
    const reload = async () => {
      const res = await app.request("/v1/admin/reload", {
        method: "POST",
        headers: await signed("POST", "/v1/admin/reload"),
      });
      assertEquals(res.status, 200);
      return await res.json() as Record<string, string[]>;
    };
    const sample = async (model: string, extra: Record<string, unknown> = {}) => {
      const message = { v: 1, id: "r", model, solver: "ddim", steps: 8, seeds: [1, 2], ...extra };
      const body = encode(message);
      return await post(app, "/v1/batch", message, {
        raw: body,
        headers: await signed("POST", "/v1/batch", body),
      });
    };
    try {
      await t.step("at start: a is ready; the unbuilt analytic folders are failed, with why", async () => {
        const l = await list();
        assertEquals(l.find((m) => m.name === "a")?.status, "ready");
        const failed = l.filter((m) => m.status === "failed");
        assert(failed.length >= 1 && failed.every((m) => m.error), JSON.stringify(failed));
      });

      await t.step("the admin call needs the worker's signature", async () => {
        const res = await app.request("/v1/admin/reload", { method: "POST" });
        assertEquals(res.status, 401);
        await res.body?.cancel();
      });

      await t.step("a folder added is listed and serves after a reload", async () => {
        add("b", 2);
        const r = await reload();
        assertEquals(r.added, ["b"]);
        assertEquals(r.changed, []);
        assert(r.unchanged.includes("a"));
        assertEquals((await list()).find((m) => m.name === "b")?.status, "ready");
        const res = await sample("b");
        assertEquals(res.status, 200, JSON.stringify(res.body));
        assert(floats(res.body.data).every(Number.isFinite));
      });

      await t.step("a folder changed under a request in flight: it finishes on the old graph", async () => {
        const long = { steps: 400 };
        const before = await sample("a", long);
        assertEquals(before.status, 200);
        const old = app.models.get("a")!;
        let finished = false;
        const inFlight = sample("a", long).then((r) => (finished = true, r));
        await until(() => app.scheduler.inFlight > 0, 5000, "the request to start");
        add("a", 7); // other weights
        const r = await reload();
        assertEquals(r.changed, ["a"]);
        assert(!finished, "the request finished before the reload; make it longer");
        assert(app.models.get("a") !== old && app.models.get("a")!.key !== undefined);
        const done = await inFlight;
        assertEquals(done.status, 200);
        assertEquals(floats(done.body.data), floats(before.body.data), "the request changed graphs");
        const after = await sample("a", long);
        assertEquals(after.status, 200);
        assert(
          floats(after.body.data).some((v, i) => v !== floats(before.body.data)[i]),
          "new requests should use the new graph",
        );
        await until(() => lines.some((l) => /model a: released its sessions/.test(l)), 5000, "the release");
      });

      await t.step("an unchanged folder is not loaded again", async () => {
        const current = app.models.get("a");
        const r = await reload();
        assertEquals([r.added, r.changed, r.removed], [[], [], []]);
        assert(app.models.get("a") === current);
      });

      await t.step("a folder removed is gone from the listing and refused", async () => {
        rmSync(join(models, "b"), { recursive: true });
        const r = await reload();
        assertEquals(r.removed, ["b"]);
        assertEquals((await list()).find((m) => m.name === "b"), undefined);
        assertEquals((await sample("b")).status, 404);
      });
    } finally {
      await app.shutdown();
      rmSync(root, { recursive: true, force: true });
    }
  },
});

test("reload: a folder that fails to load is listed as failed; a changed one keeps serving its old version", async () => {
  const root = Deno.makeTempDirSync({ prefix: "genie-reload-" });
  const models = join(root, "models");
  try {
    importDiffusers({ source: writeDiffusersExport(root, "export-a", { seed: 1 }), name: "a", out: models });
    const app = await startApp({ modelsDir: models, build: false });
    try {
      Deno.mkdirSync(join(models, "broken"));
      Deno.writeTextFileSync(join(models, "broken", "model.json"), "{ not json");
      // the manifest of a now names a graph that is not there
      const manifest = JSON.parse(Deno.readTextFileSync(join(models, "a", "model.json")));
      Deno.writeTextFileSync(
        join(models, "a", "model.json"),
        JSON.stringify({ ...manifest, graphs: { eps: "missing.onnx" } }),
      );
      const r = await app.reload();
      assertEquals(r.failed.map((f) => [f.name, f.serving]).sort(), [["a", "previous version"], [
        "broken",
        undefined,
      ]]);
      const l = await (await app.request("/v1/models")).json() as Record<string, unknown>[];
      const a = l.find((m) => m.name === "a")!;
      assertEquals(a.status, "ready");
      assert(/missing\.onnx/.test(String(a.reload_error)), String(a.reload_error));
      assertEquals(l.find((m) => m.name === "broken")?.status, "failed");
      const res = await post(app, "/v1/batch", {
        v: 1,
        id: "x",
        model: "a",
        solver: "ddim",
        nfe: 4,
        seeds: [1],
      });
      assertEquals(res.status, 200, JSON.stringify(res.body));
    } finally {
      await app.shutdown();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/**
 * `deno task start`: worker and edge in one command, `listening on` once both are ready, and
 * SIGTERM/SIGINT stopping both (the worker's port is closed afterwards). Its output is quiet: one line
 * per model with its provider, warnings and the `listening on` line (GENIE_START_VERBOSE=1 says more).
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { quietWorkerLine } from "../../functions/start.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { exists, spawnListening } from "./processes.ts";

async function refused(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/healthz`);
    await r.body?.cancel();
    return false;
  } catch {
    return true;
  }
}

async function checkServing(url: string, headers: Record<string, string> = {}): Promise<void> {
  const ready = await fetch(`${url}/readyz`);
  assertStrictEquals(ready.status, 200);
  await ready.body?.cancel();
  const res = await fetch(`${url}/v1/samples`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "mnist-mix", n: 2, seed: 3 }),
  });
  assertStrictEquals(res.status, 200);
  assertStrictEquals((await res.json()).images.length, 2);
}

Deno.test({
  name: "deno task start: the real worker and the edge; SIGTERM stops both",
  ignore: !(await exists("gpu-worker/main.ts")),
  fn: async () => {
    const p = await spawnListening(["task", "start", "--port", "0"], {
      env: { GENIE_WORKER_PROVIDERS: "cpu", GENIE_WORKER_URLS: "", GENIE_START_VERBOSE: "1" },
      timeoutMs: 180_000,
    });
    try {
      await checkServing(p.url);
      assertMatch(p.output(), /server is open/);
      assertMatch(p.output(), /\[worker\] model mnist-mix: cpu/);
      const workerUrl = /\[start\] worker at (http:\/\/\S+)/.exec(p.output())![1];
      assert(!(await refused(workerUrl)));
      const status = await p.stop("SIGTERM");
      assertStrictEquals(status.code, 0);
      assert(await refused(workerUrl), "the worker still answers after SIGTERM");
      assert(await refused(p.url), "the edge still answers after SIGTERM");
    } finally {
      await p.stop("SIGKILL");
    }
  },
});

Deno.test("deno task start with a custom worker command and API keys; SIGINT stops both", async () => {
  const p = await spawnListening(["task", "start", "--port", "0"], {
    env: {
      GENIE_WORKER_COMMAND: "run -A tests/functions/fake_worker.ts",
      GENIE_API_KEYS: "start-key",
      GENIE_WORKER_URLS: "",
      GENIE_START_VERBOSE: "1",
    },
  });
  try {
    const unauth = await fetch(`${p.url}/v1/models`);
    assertStrictEquals(unauth.status, 401);
    await unauth.body?.cancel();
    await checkServing(p.url, { authorization: "Bearer start-key" });
    assertMatch(p.output(), /API keys required/);
    const workerUrl = /\[start\] worker at (http:\/\/\S+)/.exec(p.output())![1];
    assertStrictEquals((await p.stop("SIGINT")).code, 0);
    assert(await refused(workerUrl));
  } finally {
    await p.stop("SIGKILL");
  }
});

Deno.test("deno task start with GENIE_WORKER_URLS uses the external workers", async () => {
  const worker = await startFakeWorker();
  const p = await spawnListening(["task", "start", "--port", "0"], {
    env: { GENIE_WORKER_URLS: worker.url, GENIE_START_VERBOSE: "1" },
  });
  try {
    await checkServing(p.url);
    assertMatch(p.output(), /external workers/);
    assert(!/starting the worker/.test(p.output()));
    assertStrictEquals((await p.stop("SIGTERM")).code, 0);
    assert(!(await refused(worker.url)), "an external worker must not be stopped");
  } finally {
    await p.stop("SIGKILL");
    await worker.close();
  }
});

Deno.test("deno task start is quiet: warnings and the listening line, nothing else", async () => {
  const p = await spawnListening(["task", "-q", "start", "--port", "0"], {
    env: { GENIE_WORKER_COMMAND: "run -A tests/functions/fake_worker.ts", GENIE_WORKER_URLS: "" },
  });
  try {
    await checkServing(p.url);
    const lines = p.output().split("\n").map((l) => l.trim()).filter(Boolean);
    assertEquals(lines, [
      "warning: no API keys configured (GENIE_API_KEYS): the server is open to anyone",
      `listening on ${p.url}`,
    ]);
    assertStrictEquals((await p.stop("SIGTERM")).code, 0);
  } finally {
    await p.stop("SIGKILL");
  }
});

Deno.test("deno task start shows the worker's load report as one line per model", () => {
  assertEquals(
    quietWorkerLine(
      "model mnist-mix: cpu; cuda unavailable (OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to " +
        "load shared library); loaded in 104 ms, warm-up 12 ms",
    ),
    "mnist-mix: cpu (cuda unavailable)",
  );
  assertEquals(quietWorkerLine("model gmm2d: cuda; loaded in 88 ms, warm-up 21 ms"), "gmm2d: cuda");
  assertEquals(quietWorkerLine("listening on http://127.0.0.1:1234"), undefined);
  assertEquals(
    quietWorkerLine(
      "mnist-unet: jvp graph derived from eps (from the cache in 6 ms): models/x/cache/jvp.onnx",
    ),
    undefined,
  );
  assertEquals(
    quietWorkerLine("skipping model folder bad: oops"),
    "[worker] skipping model folder bad: oops",
  );
});

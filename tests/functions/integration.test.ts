/**
 * The edge over real sockets in front of fake workers (in-process, or as processes that the tests
 * kill): failover, recovery, least-loaded routing, and cancellation when the client goes away.
 */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { freePort, parseSse, quiet } from "./helpers.ts";
import { eventually, sleep, spawnListening } from "./processes.ts";

const BODY = JSON.stringify({ model: "mnist-mix", n: 2, seed: 1, output: "tensor" });

function sample(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/v1/samples`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(init.headers ?? {}) },
    body: BODY,
    ...init,
  });
}

function fakeProcess(port: number, delayMs = 0) {
  return spawnListening([
    "run",
    "-A",
    "tests/functions/fake_worker.ts",
    "--port",
    String(port),
    "--delay-ms",
    String(delayMs),
  ]);
}

Deno.test("a worker killed mid-request gives 503 + Retry-After, then the edge recovers", async () => {
  const port = freePort();
  let worker = await fakeProcess(port, 800);
  const edge = await serveEdge({ workerUrls: [worker.url], log: quiet, healthIntervalMs: 1000 }, {
    host: "127.0.0.1",
    port: 0,
  });
  try {
    const pending = sample(edge.url);
    await sleep(300);
    await worker.stop("SIGKILL");
    const res = await pending;
    assertStrictEquals(res.status, 503);
    assertStrictEquals(res.headers.get("retry-after"), "1");
    const err = (await res.json()).error;
    assertStrictEquals(err.code, "worker_lost", "a call lost after delivery is worker_lost, not no_worker");
    // While it is down: 503 with Retry-After, and the edge keeps serving other routes.
    const down = await sample(edge.url);
    assertStrictEquals(down.status, 503);
    assert(down.headers.get("retry-after"));
    await down.body?.cancel();
    const health = await fetch(`${edge.url}/healthz`);
    assertStrictEquals(health.status, 200);
    await health.body?.cancel();
    // Back on the same address: the next requests succeed.
    worker = await fakeProcess(port, 0);
    await eventually(
      async () => {
        const r = await sample(edge.url);
        await r.body?.cancel();
        return r.status === 200;
      },
      10_000,
      100,
    );
  } finally {
    await worker.stop("SIGKILL");
    await edge.shutdown();
  }
});

Deno.test("a second worker takes over when the first dies", async () => {
  const a = await fakeProcess(0), b = await fakeProcess(0);
  const edge = await serveEdge({ workerUrls: [a.url, b.url], log: quiet }, { host: "127.0.0.1", port: 0 });
  try {
    for (let i = 0; i < 4; i++) {
      const r = await sample(edge.url);
      assertStrictEquals(r.status, 200);
      await r.body?.cancel();
    }
    const before = edge.app.pool.snapshot();
    assert(before.every((w) => w.up && w.calls > 0), JSON.stringify(before));
    await a.stop("SIGKILL");
    // The pool still believes worker 0 is up: the refused connection is retried on worker 1.
    for (let i = 0; i < 6; i++) {
      const r = await sample(edge.url);
      assertStrictEquals(r.status, 200, `request ${i}`);
      await r.body?.cancel();
    }
    const after = edge.app.pool.snapshot();
    assertStrictEquals(after[0].up, false);
    assert(after[1].calls >= before[1].calls + 5);
    const ready = await (await fetch(`${edge.url}/readyz`)).json();
    assertEquals(ready.workers.map((w: { up: boolean }) => w.up), [false, true]);
  } finally {
    await a.stop("SIGKILL");
    await b.stop("SIGKILL");
    await edge.shutdown();
  }
});

Deno.test("a call lost after delivery is not run again on another worker", async () => {
  for (let trial = 0; trial < 3; trial++) {
    const a = await fakeProcess(0, 800), b = await startFakeWorker({ delayMs: 800 });
    const edge = await serveEdge({ workerUrls: [a.url, b.url], log: quiet }, { host: "127.0.0.1", port: 0 });
    try {
      await (await fetch(`${edge.url}/readyz`)).body?.cancel();
      // two concurrent requests: least-loaded routing gives one to each worker
      const pending = [sample(edge.url), sample(edge.url)];
      await sleep(300);
      assertStrictEquals(b.batches.length, 1, "each worker has one call");
      await a.stop("SIGKILL");
      const codes = await Promise.all(pending.map(async (r) => {
        const res = await r;
        return res.status === 200 ? (await res.body?.cancel(), "ok") : (await res.json()).error.code;
      }));
      assertEquals(codes.sort(), ["ok", "worker_lost"]);
      assertStrictEquals(b.batches.length, 1, "the lost call was not repeated on the other worker");
    } finally {
      await a.stop("SIGKILL");
      await b.close();
      await edge.shutdown();
    }
  }
});

Deno.test("least-loaded routing spreads concurrent requests over the workers", async () => {
  const a = await startFakeWorker({ delayMs: 150 }), b = await startFakeWorker({ delayMs: 150 });
  const edge = await serveEdge({ workerUrls: [a.url, b.url], log: quiet }, { host: "127.0.0.1", port: 0 });
  try {
    await (await fetch(`${edge.url}/readyz`)).body?.cancel();
    const rs = await Promise.all(Array.from({ length: 6 }, () => sample(edge.url)));
    for (const r of rs) {
      assertStrictEquals(r.status, 200);
      await r.body?.cancel();
    }
    assertEquals([a.batches.length, b.batches.length], [3, 3]);
  } finally {
    await edge.shutdown();
    await a.close();
    await b.close();
  }
});

Deno.test("closing the connection aborts the forwarded call (JSON and SSE)", async () => {
  const worker = await startFakeWorker({ delayMs: 5000 });
  const edge = await serveEdge({ workerUrls: [worker.url], log: quiet }, { host: "127.0.0.1", port: 0 });
  try {
    const ctl = new AbortController();
    const pending = sample(edge.url, { signal: ctl.signal }).catch((e) => e);
    await eventually(() => worker.active === 1, 5000, 10);
    ctl.abort();
    assert((await pending) instanceof Error);
    await eventually(() => worker.aborted === 1, 5000, 10);

    const res = await sample(edge.url, { headers: { accept: "text/event-stream" } });
    assertStrictEquals(res.status, 200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const first = await reader.read();
    assertStrictEquals(parseSse(first.value!)[0].event, "progress");
    await eventually(() => worker.active === 1, 5000, 10);
    await reader.cancel();
    await eventually(() => worker.aborted === 2, 5000, 10);
    // The edge still serves, and the per-key slots were released.
    const ok = await fetch(`${edge.url}/healthz`);
    assertStrictEquals(ok.status, 200);
    await ok.body?.cancel();
    await eventually(() => edge.app.pool.snapshot()[0].inflight === 0, 2000, 10);
  } finally {
    await edge.shutdown(100);
    await worker.close();
  }
});

/** API keys (hashed, constant-time), per-key rate limits and concurrency caps (429 + Retry-After). */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { bearerToken, KeyStore, sha256 } from "../../functions/auth.ts";
import { toHex } from "../../core/hex.ts";
import { createApp } from "../../functions/app.ts";
import { ConcurrencyLimiter, RateLimiter } from "../../functions/limits.ts";
import { errorOf, post, quiet, withFake } from "./helpers.ts";

const MNIST = { model: "mnist-mix" };

Deno.test("KeyStore keeps digests only and accepts sha256: entries", async () => {
  const digest = toHex(await sha256("second-key"));
  const store = await KeyStore.create(["first-key", `sha256:${digest}`]);
  assertStrictEquals(store.size, 2);
  assert(!store.open);
  const a = await store.verify("first-key"), b = await store.verify("second-key");
  assert(a && b && a !== b);
  assertStrictEquals(b, "key:" + digest.slice(0, 12));
  assertStrictEquals(await store.verify("first-key "), null);
  assertStrictEquals(await store.verify(""), null);
  assert(!JSON.stringify(store).includes("first-key"));
  assert((await KeyStore.create([])).open);
  let threw = false;
  await KeyStore.create(["sha256:xyz"]).catch(() => (threw = true));
  assert(threw);
});

Deno.test("bearer parsing (core/hex.ts's constantTimeEqual compares the digests)", () => {
  assertStrictEquals(bearerToken("Bearer abc.DEF-1"), "abc.DEF-1");
  assertStrictEquals(bearerToken("bearer  abc"), "abc");
  for (
    const bad of [undefined, "", "Basic abc", "Bearer", "Bearer a b", "Bearer " + "x".repeat(600), "Bearer é"]
  ) {
    assertStrictEquals(bearerToken(bad), null, String(bad));
  }
});

Deno.test("401 without a key, with a wrong key, and with a malformed header; 200 with a key", async () => {
  await withFake(async (app) => {
    for (const auth of [undefined, "Bearer wrong", "Token k1", "Bearer"]) {
      const res = await post(app, "/v1/samples", MNIST, auth ? { authorization: auth } : {});
      assertStrictEquals(res.status, 401, String(auth));
      assertStrictEquals(res.headers.get("www-authenticate"), 'Bearer realm="genie"');
      assertStrictEquals((await errorOf(res)).code, "unauthorized");
    }
    const m = await app.request("/v1/models");
    assertStrictEquals(m.status, 401);
    await m.body?.cancel();
    for (const key of ["k1", "k2"]) {
      const res = await post(app, "/v1/samples", MNIST, { authorization: `Bearer ${key}` });
      assertStrictEquals(res.status, 200, key);
      await res.body?.cancel();
    }
    // Operational routes stay public.
    for (const p of ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/"]) {
      const r = await app.request(p);
      assertStrictEquals(r.status, 200, p);
      await r.body?.cancel();
    }
  }, { apiKeys: ["k1", "k2"] });
});

Deno.test("RateLimiter: burst, refill and Retry-After from the clock", () => {
  let t = 0;
  const rl = new RateLimiter({ perMinute: 60, burst: 3 }, () => t);
  assertEquals([rl.take("a"), rl.take("a"), rl.take("a")], [0, 0, 0]);
  const wait = rl.take("a");
  assert(wait > 0.99 && wait <= 1, String(wait));
  assertStrictEquals(rl.take("b"), 0); // keys are independent
  t += 1000;
  assertStrictEquals(rl.take("a"), 0);
  assert(rl.take("a") > 0);
  assertStrictEquals(new RateLimiter({ perMinute: 0, burst: 1 }).take("x"), 0);
});

Deno.test("429 rate_limited per key with Retry-After; other keys unaffected", async () => {
  let t = 1_000_000;
  await withFake(async (app) => {
    const auth = (k: string) => ({ authorization: `Bearer ${k}` });
    for (let i = 0; i < 2; i++) {
      const ok = await post(app, "/v1/samples", MNIST, auth("k1"));
      assertStrictEquals(ok.status, 200);
      await ok.body?.cancel();
    }
    const limited = await post(app, "/v1/samples", MNIST, auth("k1"));
    assertStrictEquals(limited.status, 429);
    assertStrictEquals(limited.headers.get("retry-after"), "30");
    assertStrictEquals((await errorOf(limited)).code, "rate_limited");
    const other = await post(app, "/v1/samples", MNIST, auth("k2"));
    assertStrictEquals(other.status, 200);
    await other.body?.cancel();
    t += 30_000;
    const again = await post(app, "/v1/samples", MNIST, auth("k1"));
    assertStrictEquals(again.status, 200);
    await again.body?.cancel();
    const metrics = await (await app.request("/metrics")).text();
    assert(metrics.includes('genie_edge_limited_total{reason="rate"} 1'));
  }, { apiKeys: ["k1", "k2"], rateLimit: { perMinute: 2, burst: 2 }, now: () => t });
});

Deno.test("ConcurrencyLimiter releases once", () => {
  const c = new ConcurrencyLimiter(1);
  const r = c.acquire("a")!;
  assertStrictEquals(c.acquire("a"), null);
  assert(c.acquire("b"));
  r();
  r();
  assertStrictEquals(c.total(), 1);
  assert(c.acquire("a"));
});

Deno.test("429 too_many_concurrent past the per-key cap; 429 queue_full past the edge's queue", async () => {
  await withFake(
    async (app, worker) => {
      const slow = [0, 1].map(() => post(app, "/v1/samples", MNIST, { authorization: "Bearer k1" }));
      while (worker.active < 2) await new Promise((r) => setTimeout(r, 5));
      const third = await post(app, "/v1/samples", MNIST, { authorization: "Bearer k1" });
      assertStrictEquals(third.status, 429);
      assertStrictEquals(third.headers.get("retry-after"), "1");
      assertStrictEquals((await errorOf(third)).code, "too_many_concurrent");
      const otherKey = post(app, "/v1/samples", MNIST, { authorization: "Bearer k2" });
      while (worker.active < 3) await new Promise((r) => setTimeout(r, 5));
      const full = await post(app, "/v1/samples", MNIST, { authorization: "Bearer k3" });
      assertStrictEquals(full.status, 429);
      assertStrictEquals((await errorOf(full)).code, "queue_full");
      for (const r of await Promise.all([...slow, otherKey])) {
        assertStrictEquals(r.status, 200);
        await r.body?.cancel();
      }
      const after = await post(app, "/v1/samples", MNIST, { authorization: "Bearer k1" });
      assertStrictEquals(after.status, 200);
      await after.body?.cancel();
    },
    { apiKeys: ["k1", "k2", "k3"], concurrencyPerKey: 2, maxQueue: 3 },
    { delayMs: 150 },
  );
});

Deno.test("open mode limits per client address", async () => {
  const app = createApp({ log: quiet, rateLimit: { perMinute: 1, burst: 1 } });
  const env = (ip: string) => ({ remoteAddr: { hostname: ip } });
  const a1 = await app.request("/v1/models", {}, env("10.0.0.1"));
  assertStrictEquals(a1.status, 503); // no workers, but admitted
  await a1.body?.cancel();
  const a2 = await app.request("/v1/models", {}, env("10.0.0.1"));
  assertStrictEquals(a2.status, 429);
  await a2.body?.cancel();
  const b1 = await app.request("/v1/models", {}, env("10.0.0.2"));
  assertStrictEquals(b1.status, 503);
  await b1.body?.cancel();
});

/**
 * The `route` label of `genie_edge_requests_total` and `genie_edge_request_duration_seconds`: the path of
 * the route that answered (functions/middleware/observe.ts), with `/static` and `/v1/jobs/:id/files` kept
 * short, and `other` for whatever no route of the method answered — not found, 405, a refusal by the
 * authentication or the rate limit.
 */
import { assertEquals } from "../testing.ts";
import { post, withFake } from "./helpers.ts";

const MNIST = { model: "mnist-mix", n: 1, output: "tensor" };

/** `method route status` of every request counted so far. */
async function labels(app: { request(path: string): Response | Promise<Response> }): Promise<string[]> {
  const text = await (await app.request("/metrics")).text();
  const line = /^genie_edge_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} \d+$/gm;
  return [...text.matchAll(line)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
}

Deno.test("route labels: matched route paths, short forms kept, 'other' for unrouted and refused", async () => {
  await withFake(async (app) => {
    const A = { authorization: "Bearer k1" };
    const drain = async (r: Response | Promise<Response>) => await (await r).body?.cancel();
    await drain(post(app, "/v1/samples", MNIST, A));
    await drain(post(app, "/v1/samples", MNIST, { ...A, accept: "text/html" }));
    await drain(post(app, "/v1/encode", {}, A));
    await drain(app.request("/v1/models", { headers: A }));
    await drain(app.request("/v1/samples", { headers: A }));
    await drain(post(app, "/v1/samples", MNIST));
    await drain(app.request("/v1/jobs/abc/files/index.json", { headers: A }));
    await drain(app.request("/v1/jobs/abc", { headers: A }));
    await drain(app.request("/static/style.css"));
    await drain(app.request("/healthz"));
    await drain(app.request("/nowhere"));
    await drain(app.request("/v1/models", { headers: A })); // the bucket is empty: 429
    assertEquals(await labels(app), [
      "POST /v1/samples 200",
      "POST /v1/samples 406",
      "POST /v1/encode 422",
      "GET /v1/models 200",
      "GET other 405",
      "POST other 401",
      "GET /v1/jobs/:id/files 503",
      "GET /v1/jobs/:id 503",
      "GET /static 200",
      "GET /healthz 200",
      "GET other 404",
      "GET other 429",
    ]);
  }, { apiKeys: ["k1"], rateLimit: { perMinute: 1, burst: 7 }, now: () => 0 });
});

Deno.test("route labels: a refusal by the concurrency cap keeps the route's label", async () => {
  await withFake(async (app) => {
    await (await post(app, "/v1/samples", MNIST)).body?.cancel();
    await (await post(app, "/v1/encode", {})).body?.cancel();
    assertEquals(await labels(app), ["POST /v1/samples 429", "POST /v1/encode 429"]);
  }, { concurrencyPerKey: 0 });
});

/**
 * The "Try it" examples of the API reference page (/docs) are valid as shipped: every operation of
 * /openapi.json is sent as the page sends it — its JSON request body `example` (functions/openapi.ts),
 * its path parameters' examples, and a job's `{id}` filled with the job the POST /v1/jobs example created
 * — against the app in front of the fake worker, with batch jobs on, and must answer 2xx.
 */
import { assert, assertEquals, assertStrictEquals } from "../testing.ts";
import { openApiDocument } from "../../functions/openapi.ts";
import { withJobs } from "../jobs/helpers.ts";
import { sleep } from "./processes.ts";

interface Operation {
  operationId?: string;
  parameters?: { name: string; in: string; example?: string }[];
  requestBody?: { content: Record<string, { example?: unknown }> };
}

Deno.test("every /docs example answers 2xx against the app", async () => {
  const doc = openApiDocument() as { paths: Record<string, Record<string, Operation>> };
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => ({ path, method, op }))
  );
  // Every POST with a body has an example; no example carries an empty tensor.
  for (const { path, method, op } of ops) {
    const content = op.requestBody?.content;
    if (content) assert(content["application/json"]?.example !== undefined, `${method} ${path}: no example`);
  }
  await withJobs(async ({ app }) => {
    const send = async (method: string, path: string, op: Operation, id?: string) => {
      let url = path;
      for (const p of op.parameters ?? []) {
        if (p.in !== "path") continue;
        const value = p.name === "id" ? id : p.example;
        assert(value !== undefined, `${method} ${path}: no value for {${p.name}}`);
        url = url.replace(`{${p.name}}`, encodeURIComponent(value));
      }
      assert(!url.includes("{"), url);
      const example = op.requestBody?.content["application/json"]?.example;
      const res = await app.request(url, {
        method: method.toUpperCase(),
        headers: { accept: "application/json", ...(example ? { "content-type": "application/json" } : {}) },
        body: example ? JSON.stringify(example) : undefined,
      });
      const text = await res.text();
      assert(
        res.status >= 200 && res.status < 300,
        `${method.toUpperCase()} ${url}: HTTP ${res.status} ${text}`,
      );
      return text;
    };
    // The job first: the {id} routes use it, once it has finished (its files exist).
    const create = ops.find((o) => o.path === "/v1/jobs" && o.method === "post")!;
    const job = JSON.parse(await send("post", "/v1/jobs", create.op));
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      const status = (await (await app.request(`/v1/jobs/${job.id}`)).json()).status;
      if (status === "succeeded") break;
      await sleep(20);
    }
    const sent: string[] = [];
    // Deleting the job last.
    const order = [...ops].sort((a, b) => Number(a.method === "delete") - Number(b.method === "delete"));
    for (const { path, method, op } of order) {
      if (op === create.op) continue;
      await send(method, path, op, job.id);
      sent.push(`${method.toUpperCase()} ${path}`);
    }
    for (
      const op of [
        "POST /v1/samples",
        "POST /v1/encode",
        "GET /v1/jobs/{id}/files/{name}",
        "DELETE /v1/jobs/{id}",
      ]
    ) {
      assert(sent.includes(op), `${op} was sent`);
    }
    assertStrictEquals(sent.length, ops.length - 1);
  });
});

Deno.test("the encode example carries one valid 28×28 tensor", () => {
  const doc = openApiDocument() as { paths: Record<string, Record<string, Operation>> };
  const example = doc.paths["/v1/encode"].post.requestBody!.content["application/json"].example as {
    tensor: { shape: number[]; data: string };
  };
  assertEquals(example.tensor.shape, [1, 1, 28, 28]);
  assertStrictEquals(atob(example.tensor.data).length, 784 * 4);
});

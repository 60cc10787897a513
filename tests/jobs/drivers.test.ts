/** A job's worker call carries the same solve fields as a samples request's (functions/sampling.ts). */
import { assertEquals, test } from "../testing.ts";
import { workerCallFor } from "../../functions/jobs/drivers.ts";
import type { ChunkRecord, JobRecord } from "../../functions/jobs/keys.ts";
import { batchMessageFields } from "../../functions/sampling.ts";
import { SamplesRequest } from "../../core/api/samples.ts";
import { PROTOCOL_VERSION } from "../../core/api/worker.ts";

test("workerCallFor: the samples path's fields, the chunk's seeds and the attempt's id", () => {
  const request = SamplesRequest.parse({
    model: "gmm2d",
    n: 4,
    seed: 7,
    solver: "genie",
    steps: 6,
    grid: "power",
    rho: 3,
    t_min: 0.01,
    t_max: 0.9,
    genie_derivative: "exact",
  });
  const job = {
    id: "j1",
    model: "gmm2d",
    solver: "genie",
    request,
    chunk: 4,
    total: 10,
    base_seed: 100,
  } as unknown as JobRecord;
  const chunk = { index: 2, attempts: 1 } as unknown as ChunkRecord;
  const call = workerCallFor(job, chunk, 5000) as Record<string, unknown>;
  // the fields the old field-by-field copy dropped reach the worker
  assertEquals([call.t_min, call.t_max, call.rho, call.steps], [0.01, 0.9, 3, 6]);
  assertEquals("nfe" in call, false);
  assertEquals(call, {
    v: PROTOCOL_VERSION,
    id: "j1.2.1",
    model: "gmm2d",
    ...batchMessageFields(request),
    seeds: [108, 109],
    deadline_ms: 5000,
  });
});

test("workerCallFor: without steps or nfe the default NFE is the plan's, stated once", () => {
  const request = SamplesRequest.parse({ model: "gmm2d", n: 1 });
  const job = { id: "j2", model: "gmm2d", solver: "genie", request, chunk: 1, total: 1, base_seed: 0 };
  const call: Record<string, unknown> = workerCallFor(
    job as unknown as JobRecord,
    { index: 0, attempts: 0 } as ChunkRecord,
    1000,
  );
  assertEquals(call.nfe, batchMessageFields(request).nfe);
  assertEquals(typeof call.nfe, "number");
});

/**
 * What users of other diffusion tools expect from the HTTP API: `guidance_scale` (diffusers' s = 1 + w),
 * `seed: -1` for a random seed, PNGs that carry their settings in a `parameters` text chunk, upscaled
 * PNG grids, and NFE errors that name the nearest NFEs that work.
 */
import { decode as decodePng } from "fast-png";
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { base64ToBytes } from "../../core/api/tensor.ts";
import { nearestNfes } from "../../core/api/samples.ts";
import { errorOf, post, withFake } from "./helpers.ts";

const MNIST = { model: "mnist-mix" };

Deno.test("guidance_scale s reaches the worker as guidance w = s − 1; both at once is a 422", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/samples", { ...MNIST, class: 3, guidance_scale: 7.5, output: "tensor" });
    assertStrictEquals(res.status, 200);
    await res.body?.cancel();
    assertStrictEquals(worker.batches.at(-1)!.guidance, 6.5);
    const both = await post(app, "/v1/samples", { ...MNIST, class: 3, guidance: 1, guidance_scale: 2 });
    assertStrictEquals(both.status, 422);
    const err = await errorOf(both);
    assertEquals(err.details![0].path, ["guidance_scale"]);
    assertMatch(
      err.message,
      /guidance_scale: give guidance \(w\) or guidance_scale \(s = 1 \+ w\), not both/,
    );
    // Out of the model's range, the message speaks of s.
    const far = await errorOf(await post(app, "/v1/samples", { ...MNIST, class: 3, guidance_scale: 12 }));
    assertMatch(far.message, /guidance_scale: must be within \[1, 11\]/);
  });
});

Deno.test("seed -1 draws a random seed, echoed in seeds, images and X-Genie-Seeds", async () => {
  await withFake(async (app, worker) => {
    const a = await (await post(app, "/v1/samples", { ...MNIST, n: 2, seed: -1 })).json();
    const b = await (await post(app, "/v1/samples", { ...MNIST, n: 2, seed: -1 })).json();
    assertStrictEquals(a.seeds.length, 2);
    assert(a.seeds.every((s: number) => Number.isInteger(s) && s >= 0 && s <= 0xffffffff));
    assertStrictEquals(a.seeds[1], (a.seeds[0] + 1) >>> 0);
    assert(a.seeds[0] !== b.seeds[0], "two random seeds differ");
    assertEquals(a.images.map((im: { seed: number }) => im.seed), a.seeds);
    assertEquals(worker.batches.at(-1)!.seeds, b.seeds);
    const png = await post(app, "/v1/samples", { ...MNIST, n: 3, seed: -1 }, { accept: "image/png" });
    const seeds = png.headers.get("x-genie-seeds")!.split(",").map(Number);
    assertStrictEquals(seeds.length, 3);
    assertEquals(worker.batches.at(-1)!.seeds, seeds);
    await png.body?.cancel();
  });
});

Deno.test("PNGs carry A1111-style parameters text: the grid and each image", async () => {
  await withFake(async (app) => {
    const req = { ...MNIST, n: 4, seed: 7, nfe: 10, class: 3, guidance: 1 };
    const res = await post(app, "/v1/samples", req, { accept: "image/png" });
    const grid = decodePng(new Uint8Array(await res.arrayBuffer()));
    const text = grid.text.parameters;
    assert(text, "a parameters chunk");
    for (
      const part of [
        "Sampler: genie",
        "NFE: 10",
        "Seed: 7",
        "Batch size: 4",
        "Model: mnist-mix",
        "Class: 3",
        "Guidance: 1",
        "CFG scale: 2",
      ]
    ) assert(text.includes(part), `${text} has ${part}`);
    assertMatch(text, /^Steps: \d+, Sampler: genie, NFE: 10, Seed: 7/);
    const body = await (await post(app, "/v1/samples", req)).json();
    const one = decodePng(base64ToBytes(body.images[2].png)).text.parameters;
    assertMatch(one, /Seed: 9,/);
    assert(!one.includes("Batch size"), one);
  });
});

Deno.test("scale upscales PNG grids and images by an integer factor (nearest neighbour)", async () => {
  await withFake(async (app) => {
    const res = await post(app, "/v1/samples", { ...MNIST, n: 16, seed: 0 }, { accept: "image/png" });
    const plain = decodePng(new Uint8Array(await res.arrayBuffer()));
    // 4 × 4 tiles of 28 px with 2-px padding: 4·30 + 2 = 122.
    assertEquals([plain.width, plain.height], [122, 122]);
    const big = await post(app, "/v1/samples", { ...MNIST, n: 16, seed: 0, scale: 4 }, {
      accept: "image/png",
    });
    const up = decodePng(new Uint8Array(await big.arrayBuffer()));
    assertEquals([up.width, up.height], [488, 488]);
    assertMatch(up.text.parameters, /Upscale: 4/);
    // Every source pixel is a 4×4 block of the same value.
    for (const [x, y] of [[0, 0], [10, 10], [40, 17], [121, 121]]) {
      const v = plain.data[y * 122 + x];
      for (const [dx, dy] of [[0, 0], [3, 0], [0, 3], [3, 3]]) {
        assertStrictEquals(up.data[(4 * y + dy) * 488 + 4 * x + dx], v);
      }
    }
    // 64 tiles: 8·30 + 2 = 242 px, 8× is 1936 px square (under 4096²); the bound is checked before any work.
    const ok = await post(app, "/v1/samples", { ...MNIST, n: 64, scale: 8 }, { accept: "image/png" });
    assertEquals(decodePng(new Uint8Array(await ok.arrayBuffer())).width, 1936);
    const json = await (await post(app, "/v1/samples", { ...MNIST, n: 1, scale: 2 })).json();
    const im = decodePng(base64ToBytes(json.images[0].png));
    assertEquals([im.width, im.height], [56, 56]);
  });
});

Deno.test("an NFE a solver cannot use is refused at the edge with the nearest that work", async () => {
  await withFake(async (app, worker) => {
    const before = worker.batches.length;
    const res = await post(app, "/v1/samples", { ...MNIST, solver: "heun", nfe: 3 });
    assertStrictEquals(res.status, 422);
    const err = await errorOf(res);
    assertStrictEquals(
      err.message,
      "nfe: heun cannot use exactly 3 evaluations; the nearest it can use: 2 or 4",
    );
    assertEquals(err.details, [{
      path: ["nfe"],
      message: "heun cannot use exactly 3 evaluations; the nearest it can use: 2 or 4",
      code: "invalid_value",
      valid: [2, 4],
    }]);
    assertStrictEquals(worker.batches.length, before, "nothing was forwarded");
  });
  assertEquals(nearestNfes("heun", 3), [2, 4]);
  assertEquals(nearestNfes("heun", 4), [4]);
  assertEquals(nearestNfes("heun", 1), [2]);
  assertEquals(nearestNfes("heun", 4, { afs: true }), [3, 5]);
  assertEquals(nearestNfes("genie", 5, { derivative: "fd" }), [4, 6]);
});

Deno.test("a worker's field error is not repeated in its detail (no 'nfe: nfe: …')", async () => {
  await withFake(
    async (app) => {
      const err = await errorOf(await post(app, "/v1/samples", MNIST));
      assertStrictEquals(err.message, "nfe: genie cannot use exactly 3 evaluations");
      assertEquals(err.details![0].path, ["nfe"]);
      assertStrictEquals(err.details![0].message, "genie cannot use exactly 3 evaluations");
    },
    {},
    { fail: { status: 422, code: "invalid", message: "nfe: genie cannot use exactly 3 evaluations" } },
  );
});

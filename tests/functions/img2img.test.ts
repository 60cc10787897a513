/**
 * img2img on `POST /v1/samples` (docs/contracts.md §2): `images` with `strength` are encoded along the
 * ODE from t_min to t = strength · t_max and sampled back from there with the same solver settings,
 * composed at the edge from the worker's encode and batch calls. Against the fake worker: the legs'
 * messages, strength = 1 equal to sampling from the encoded latents, PNG inputs, progress over both legs
 * and the refusals naming their field. Against the real worker on the analytic gmm2d: the round trip
 * returns the images.
 */
import { encode as encodePng } from "fast-png";
import { assert, assertEquals, assertStrictEquals, maxAbsDiff } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { base64ToBytes, bytesToBase64, float32FromBytes } from "../../core/api/tensor.ts";
import { errorOf, freePort, parseSse, post, quiet, withFake } from "./helpers.ts";
import { exists, spawnListening, taskArgs } from "./processes.ts";

function tensor(values: number[], shape: number[]) {
  return { shape, data: bytesToBase64(new Uint8Array(Float32Array.from(values).buffer)) };
}

const IMAGES = tensor(Array.from({ length: 2 * 784 }, (_, i) => Math.sin(i * 0.01) * 0.9), [2, 1, 28, 28]);
const SETTINGS = { model: "mnist-mix", solver: "ddim", steps: 6, output: "tensor" } as const;

function values(body: { tensor: { data: string } }): number[] {
  return Array.from(float32FromBytes(base64ToBytes(body.tensor.data)));
}

Deno.test("img2img: strength 1 equals sampling from the encoded latents; the legs' messages", async () => {
  await withFake(async (app, worker) => {
    const encoded = await (await post(app, "/v1/encode", { ...SETTINGS, output: undefined, tensor: IMAGES }))
      .json();
    const plain = await (await post(app, "/v1/samples", { ...SETTINGS, latents: encoded.latents })).json();
    const before = worker.batches.length;
    const res = await post(app, "/v1/samples", { ...SETTINGS, images: IMAGES, strength: 1 });
    assertStrictEquals(res.status, 200);
    const img2img = await res.json();
    assertEquals(values(img2img), values(plain));
    assertEquals(img2img.shape, [2, 1, 28, 28]);
    // nfe, calls and cost add both legs up; steps are the sampling's.
    assertEquals([img2img.steps, img2img.nfe, img2img.calls, img2img.cost], [6, 12, 12, 12]);
    const [enc, smp] = worker.batches.slice(before);
    assertEquals([enc.t_max, smp.t_max, enc.steps, smp.steps, enc.solver], [1, 1, 6, 6, "ddim"]);
    assert(enc.images instanceof Uint8Array && smp.latents instanceof Uint8Array);
  });
});

Deno.test("img2img: strength s starts both legs at t = s · t_max, with the request's conditioning", async () => {
  await withFake(async (app, worker) => {
    const before = worker.batches.length;
    const res = await post(app, "/v1/samples", {
      ...SETTINGS,
      images: IMAGES,
      strength: 0.5,
      t_max: 0.8,
      class: 3,
      guidance: 1,
    });
    assertStrictEquals(res.status, 200);
    await res.body?.cancel();
    const [enc, smp] = worker.batches.slice(before);
    assertEquals([enc.t_max, smp.t_max], [0.4, 0.4]);
    assertEquals([enc.class, enc.guidance, smp.class, smp.guidance], [3, 1, 3, 1]);
  });
});

Deno.test("img2img: PNG images, and the PNG's parameters name the strength", async () => {
  await withFake(async (app) => {
    const png = encodePng({
      width: 28,
      height: 28,
      data: new Uint8Array(784).fill(200),
      channels: 1,
      depth: 8,
    });
    const res = await post(app, "/v1/samples", {
      model: "mnist-mix",
      solver: "ddim",
      steps: 4,
      images: [bytesToBase64(png), bytesToBase64(png)],
      strength: 0.6,
    }, { accept: "image/png" });
    assertStrictEquals(res.status, 200);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const text = new TextDecoder("latin1").decode(bytes);
    assert(text.includes("Denoising strength: 0.6"), "parameters text");
  });
});

Deno.test("img2img SSE: progress over both legs, monotone, the total once", async () => {
  await withFake(
    async (app) => {
      const res = await post(app, "/v1/samples", { ...SETTINGS, images: IMAGES, strength: 0.7 }, {
        accept: "text/event-stream",
      });
      const events = parseSse(await res.text());
      assertStrictEquals(events.at(-1)!.event, "completed");
      const progress = events.filter((e) => e.event === "progress").map((e) =>
        e.data as { steps_done: number; steps_total: number; phase: string; done: number }
      );
      assert(progress.every((p) => p.steps_total === 12));
      const done = progress.map((p) => p.steps_done);
      assertEquals(done, [...done].sort((a, b) => a - b));
      assertEquals(done.filter((d) => d === 12).length, 1);
      assertEquals(progress.filter((p) => p.phase === "done").length, 1);
      assertStrictEquals(progress.at(-1)!.phase, "done");
      // The encoding's events count no finished samples.
      assert(progress.filter((p) => p.steps_done <= 6).every((p) => p.done === 0));
    },
    {},
    { stream: true },
  );
});

Deno.test("img2img: refusals name the field", async () => {
  await withFake(async (app, worker) => {
    const cases: [Record<string, unknown>, string][] = [
      [{ images: IMAGES, strength: 0 }, "strength"],
      [{ images: IMAGES, strength: 1.5 }, "strength"],
      [{ strength: 0.5 }, "strength"],
      [{ images: IMAGES }, "strength"],
      [{ images: tensor([0, 0], [1, 2]), strength: 0.5 }, "images.shape"],
      [{ images: IMAGES, strength: 0.5, latents: IMAGES }, "images"],
      [{ images: IMAGES, strength: 0.5, n: 3 }, "n"],
      [{ images: IMAGES, strength: 1e-4 }, "strength"],
      [{ images: ["not a png"], strength: 0.5 }, "images"],
      [{ images: tensor(Array(2 * 784).fill(1e9), [2, 1, 28, 28]), strength: 0.5 }, "images.data"],
    ];
    const before = worker.batches.length;
    for (const [extra, field] of cases) {
      const res = await post(app, "/v1/samples", { ...SETTINGS, ...extra });
      assertStrictEquals(res.status, 422, field);
      const err = await errorOf(res);
      const paths = (err.details ?? []).map((d) => d.path.join("."));
      assert(paths.some((p) => p === field || p.startsWith(field + ".")), `${field}: ${JSON.stringify(err)}`);
    }
    assertStrictEquals(worker.batches.length, before, "nothing reached the worker");
  });
});

Deno.test("POST /v1/encode: class and guidance condition the encoding", async () => {
  await withFake(async (app, worker) => {
    const res = await post(app, "/v1/encode", {
      model: "mnist-mix",
      solver: "ddim",
      steps: 4,
      tensor: IMAGES,
      class: 2,
      guidance_scale: 3,
    });
    assertStrictEquals(res.status, 200);
    await res.body?.cancel();
    const sent = worker.batches.at(-1)!;
    assertEquals([sent.class, sent.guidance], [2, 2]);
    const bad = await post(app, "/v1/encode", {
      model: "gmm-2d",
      solver: "ddim",
      steps: 4,
      tensor: tensor([0, 0], [1, 2]),
      class: 1,
    });
    assertStrictEquals(bad.status, 422);
    assertEquals((await errorOf(bad)).details!.map((d) => d.path.join(".")), ["class"]);
  });
});

const SECRET = "img2img-secret";

Deno.test({
  name: "img2img on the real worker (gmm2d): the round trip returns the images",
  ignore: !(await exists("gpu-worker/main.ts")),
  fn: async () => {
    const worker = await spawnListening([...await taskArgs("worker"), "--port", String(freePort())], {
      env: { GENIE_WORKER_SECRET: SECRET, GENIE_WORKER_PROVIDERS: "cpu" },
      timeoutMs: 120_000,
    });
    const edge = await serveEdge(
      { workerUrls: [worker.url], workerSecret: SECRET, log: quiet },
      { host: "127.0.0.1", port: 0 },
    );
    const call = async (path: string, body: unknown) => {
      const res = await fetch(edge.url + path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const json = await res.json();
      assertStrictEquals(res.status, 200, JSON.stringify(json));
      return json;
    };
    try {
      const settings = { model: "gmm2d", solver: "genie", steps: 24, genie_derivative: "head" };
      const data = await call("/v1/samples", { ...settings, n: 16, seed: 4, output: "tensor" });
      const x = values(data);
      for (const strength of [1, 0.5]) {
        const back = values(
          await call("/v1/samples", { ...settings, images: data.tensor, strength, output: "tensor" }),
        );
        const err = Math.max(...back.map((v, i) => Math.abs(v - x[i])));
        assert(err < 3e-2, `strength ${strength}: round trip error ${err}`);
      }
      // strength 1 is sampling from the images' latents, bit for bit.
      const z = await call("/v1/encode", { ...settings, tensor: data.tensor });
      const fromLatents = values(
        await call("/v1/samples", { ...settings, latents: z.latents, output: "tensor" }),
      );
      const img2img = values(
        await call("/v1/samples", { ...settings, images: data.tensor, strength: 1, output: "tensor" }),
      );
      assertEquals(img2img, fromLatents);
      // A small strength barely moves the images.
      const near = values(
        await call("/v1/samples", { ...settings, images: data.tensor, strength: 0.1, output: "tensor" }),
      );
      assert(maxAbsDiff(near, x) < 1e-2, `strength 0.1 moved the images by ${maxAbsDiff(near, x)}`);
    } finally {
      await edge.shutdown();
      await worker.stop("SIGTERM");
    }
  },
});

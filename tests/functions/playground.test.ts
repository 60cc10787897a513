/**
 * The playground and the docs page end to end in headless Chromium (driven over the DevTools
 * protocol): pick settings, click, wait for the images and check they decoded (naturalWidth > 0),
 * NFE and timings shown, the solver comparison filled; what a user sees while a run goes on (the bar
 * moving with the steps, the x̂₀ preview), Cancel stopping the work on the worker, the downloads, the
 * random seed shown, img2img from an uploaded image; the docs page's examples answering; no script
 * errors or CSP violations.
 * Skipped with a message when no Chromium binary is found (Debian: apt-get install chromium).
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { Browser, findChromium } from "./cdp.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { quiet } from "./helpers.ts";
import { eventually } from "./processes.ts";
import { encode as encodePng } from "fast-png";

const chromium = await findChromium();
if (!chromium) {
  console.warn(
    "playground.test.ts: SKIPPED — no chromium binary found (set CHROMIUM_BIN or apt-get install chromium)",
  );
}

const LOADED = (sel: string, n: number) =>
  `(() => { const im = [...document.querySelectorAll(${JSON.stringify(sel)})];
     return im.length === ${n} && im.every((i) => i.complete && i.naturalWidth > 0); })()`;

Deno.test({
  name: chromium
    ? "playground in headless Chromium"
    : "playground in headless Chromium (skipped: no chromium binary)",
  ignore: !chromium,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const worker = await startFakeWorker({ delayMs: 20 });
    const edge = await serveEdge({ workerUrls: [worker.url], log: quiet }, { host: "127.0.0.1", port: 0 });
    const browser = await Browser.launch(chromium!);
    try {
      const page = await browser.newPage();
      await page.goto(edge.url + "/");
      await page.waitFor("document.body && document.body.dataset.ready === 'true'");

      await t.step("the form lists the models, solvers and classes", async () => {
        assertStrictEquals(await page.eval("document.getElementById('model').value"), "mnist-mix");
        assertStrictEquals(await page.eval("document.getElementById('solver').value"), "genie");
        assertStrictEquals(await page.eval("document.getElementById('class').options.length"), 11);
        assertMatch(await page.eval<string>("document.getElementById('health').textContent"), /open server/);
      });

      await t.step("Generate shows the samples with NFE and timings", async () => {
        await page.eval(`(() => {
          const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("change")); };
          set("seed", "42"); set("n", "4"); set("nfe", "8"); set("class", "3"); set("guidance", "1.5"); set("solver", "ddim");
          document.getElementById("generate").click();
        })()`);
        await page.waitFor(LOADED("#samples img", 4));
        const widths = await page.eval<number[]>(
          "[...document.querySelectorAll('#samples img')].map((i) => i.naturalWidth)",
        );
        assertEquals(widths, [28, 28, 28, 28]);
        const captions = await page.eval<string[]>(
          "[...document.querySelectorAll('#samples figcaption')].map((c) => c.textContent)",
        );
        assertEquals(captions, ["42", "43", "44", "45"]);
        await page.waitFor("/nfe 8/.test(document.getElementById('status').textContent)");
        assertMatch(
          await page.eval<string>("document.getElementById('status').textContent"),
          /nfe 8 · steps 8 · calls 8 · cost 8 · grid quadratic ρ=2 · queue \d+ ms/,
        );
        const sent = worker.batches.at(-1)!;
        assertEquals([sent.solver, sent.nfe, sent.class, sent.guidance, (sent.seeds as number[])[0]], [
          "ddim",
          8,
          3,
          1.5,
          42,
        ]);
      });

      await t.step("Compare shows one row per solver at the same seed", async () => {
        const before = worker.batches.length;
        await page.eval("document.getElementById('compare').click()");
        await page.waitFor(LOADED("#compare-results img", 16));
        const rows = await page.eval<{ solver: string; stats: string }[]>(
          "[...document.querySelectorAll('#compare-results [data-solver]')].map((c) => ({ solver: c.dataset.solver, stats: c.querySelector('.stats').textContent }))",
        );
        assertEquals(rows.map((r) => r.solver), ["ddim", "genie", "dpmpp-2m", "unipc"]);
        for (const r of rows) assertMatch(r.stats, /^nfe 8 · steps 8/);
        const batches = worker.batches.slice(before);
        assertEquals(new Set(batches.map((b) => b.solver)), new Set(["ddim", "genie", "dpmpp-2m", "unipc"]));
        assert(batches.every((b) => (b.seeds as number[])[0] === 42));
      });

      await t.step("validation errors are shown once, and the stale samples are cleared", async () => {
        assertStrictEquals(await page.eval("document.querySelectorAll('#samples img').length"), 4);
        await page.eval(
          `(() => { document.getElementById("n").value = "1000"; document.getElementById("generate").click(); })()`,
        );
        await page.waitFor("document.getElementById('error').textContent.includes('422')");
        const text = await page.eval<string>("document.getElementById('error').textContent");
        assertStrictEquals(text, "n: at most 64 samples for mnist-mix\n(HTTP 422 invalid_request)");
        assertStrictEquals(await page.eval("document.querySelectorAll('#samples img').length"), 0);
        assertStrictEquals(await page.eval("document.getElementById('status').textContent"), "");
        // the old run's downloads go with its images
        assert(await page.eval<boolean>("document.getElementById('downloads').classList.contains('hidden')"));
      });

      await t.step(
        "an NFE the solver cannot use names the nearest ones, which fix it in a click",
        async () => {
          const before = worker.batches.length;
          await page.eval(`(() => {
          const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("change")); };
          set("n", "2"); set("solver", "heun"); set("nfe", "3");
          document.getElementById("generate").click();
        })()`);
          await page.waitFor("document.querySelectorAll('#error button').length > 0");
          const shown = await page.eval<{ text: string; buttons: string[] }>(`(() => {
          const box = document.getElementById("error");
          return { text: box.firstChild.textContent, buttons: [...box.querySelectorAll("button")].map((b) => b.textContent) };
        })()`);
          assertStrictEquals(
            shown.text,
            "nfe: heun cannot use exactly 3 evaluations; the nearest it can use: 2 or 4\n(HTTP 422 invalid_request)",
          );
          assert(!shown.text.includes("nfe: nfe"), shown.text);
          assertEquals(shown.buttons, ["2", "4"]);
          assertStrictEquals(worker.batches.length, before, "nothing reached the worker");
          // Clicking 4 sets the NFE and samples again.
          await page.eval(`document.querySelector('#error button[data-field="nfe"]:last-of-type').click()`);
          await page.waitFor(LOADED("#samples img", 2));
          assertStrictEquals(await page.eval("document.getElementById('nfe').value"), "4");
          assertStrictEquals(await page.eval("document.getElementById('error').textContent"), "");
          assertEquals([worker.batches.at(-1)!.solver, worker.batches.at(-1)!.nfe], ["heun", 4]);
        },
      );

      await t.step("a worker's error is shown once", async () => {
        worker.options.fail = {
          status: 422,
          code: "invalid",
          message: "nfe: genie cannot use exactly 5 evaluations",
        };
        try {
          await page.eval(`(() => {
            const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("change")); };
            set("solver", "genie"); set("nfe", "5");
            document.getElementById("generate").click();
          })()`);
          await page.waitFor("document.getElementById('error').textContent.includes('HTTP')");
          assertStrictEquals(
            await page.eval<string>("document.getElementById('error').textContent"),
            "nfe: genie cannot use exactly 5 evaluations\n(HTTP 422 invalid_request)",
          );
          assertStrictEquals(await page.eval("document.querySelectorAll('#samples img').length"), 0);
        } finally {
          delete worker.options.fail;
        }
      });

      const set = (values: Record<string, string>) =>
        page.eval(`(() => {
          const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("change")); };
          ${
          Object.entries(values).map(([k, v]) => `set(${JSON.stringify(k)}, ${JSON.stringify(v)});`).join(" ")
        }
        })()`);
      const bytesOf = (id: string) =>
        page.eval<number>(`Number(document.getElementById("${id}").dataset.bytes ?? 0)`);

      await t.step("the bar moves with the steps, the x̂₀ preview shows, then the downloads", async () => {
        worker.options.stream = true;
        worker.options.stepMs = 40;
        await set({ n: "4", nfe: "8", solver: "ddim", class: "", seed: "42", output: "png" });
        await page.eval(`(() => {
          // What the user sees, recorded at every change of the bar, its text or the preview.
          window.seen = [];
          const record = () => {
            const bar = document.getElementById("progress");
            if (bar.classList.contains("hidden")) return;
            window.seen.push({
              value: bar.value,
              max: bar.max,
              text: document.getElementById("progress-text").textContent,
              preview: document.getElementById("preview-box").classList.contains("hidden")
                ? "" : document.getElementById("preview").getAttribute("src") ?? "",
            });
          };
          window.recorder = new MutationObserver(record);
          for (const id of ["progress", "progress-text", "preview", "preview-box"]) {
            window.recorder.observe(document.getElementById(id), { attributes: true, childList: true, characterData: true, subtree: true });
          }
          document.getElementById("generate").click();
        })()`);
        await page.waitFor(LOADED("#samples img", 4));
        await page.waitFor("document.getElementById('download-png').dataset.bytes");
        // from the first progress event on (before it, the bar shows no steps yet)
        const seen = (await page.eval<{ value: number; max: number; text: string; preview: string }[]>(
          "(() => { window.recorder.disconnect(); return window.seen; })()",
        )).filter((s) => /steps/.test(s.text));
        const values = seen.map((s) => s.value);
        assertEquals(values, [...values].sort((a, b) => a - b), "the bar never goes back");
        assert(new Set(values).size >= 4, `the bar moved step by step: ${[...new Set(values)]}`);
        assert(seen.every((s) => s.max === 8), "8 steps in all");
        assert(
          seen.some((s) => /\d+\/8 steps · \d+% · ETA \d/.test(s.text)),
          seen.map((s) => s.text).join(" | "),
        );
        assert(seen.some((s) => s.preview.startsWith("data:image/png;base64,")), "a preview was shown");
        // done: the preview gives way to the samples, which can be downloaded as one PNG grid
        assert(
          await page.eval<boolean>("document.getElementById('preview-box').classList.contains('hidden')"),
        );
        assertMatch(await page.eval<string>("document.getElementById('download-png').href"), /^blob:/);
        assertStrictEquals(
          await page.eval("document.getElementById('download-png').getAttribute('download')"),
          "genie-samples.png",
        );
        assert((await bytesOf("download-png")) > 100);
        assertMatch(await page.eval<string>("document.getElementById('download-png').title"), /^62×62 PNG/);
        assert(
          await page.eval<boolean>("document.getElementById('download-npy').classList.contains('hidden')"),
        );
        assertStrictEquals(
          await page.eval("document.getElementById('seed-used').textContent"),
          "seeds 42…45",
        );
        assertStrictEquals(worker.batches.at(-1)!.preview, true);
      });

      await t.step("a tensor output is drawn and offered as .npy", async () => {
        await set({ output: "tensor", nfe: "4" });
        await page.eval("document.getElementById('generate').click()");
        await page.waitFor("document.getElementById('download-npy').dataset.bytes");
        await page.waitFor(LOADED("#samples img", 4));
        assertStrictEquals(worker.batches.at(-1)!.output, undefined); // the edge asks the worker for floats
        // a 128-byte header, then 4 × 784 float32
        assertStrictEquals(await bytesOf("download-npy"), 128 + 4 * 784 * 4);
        assertMatch(await page.eval<string>("document.getElementById('download-npy').href"), /^blob:/);
        await set({ output: "png" });
      });

      await t.step("random seed: seed −1 is sent and the seed used is shown", async () => {
        await page.eval(`(() => {
          const box = document.getElementById("random-seed");
          box.checked = true;
          box.dispatchEvent(new Event("change"));
          document.getElementById("generate").click();
        })()`);
        await page.waitFor(
          "/^seeds \\d+…\\d+$/.test(document.getElementById('seed-used').textContent) && " +
            "document.getElementById('seed-used').textContent !== 'seeds 42…45'",
        );
        const seed = (worker.batches.at(-1)!.seeds as number[])[0];
        assertStrictEquals(
          await page.eval("document.getElementById('seed-used').textContent"),
          `seeds ${seed}…${(seed + 3) >>> 0}`,
        );
        const captions = await page.eval<string[]>(
          "[...document.querySelectorAll('#samples figcaption')].map((c) => c.textContent)",
        );
        assertStrictEquals(captions[0], String(seed));
        assert(await page.eval<boolean>("document.getElementById('seed').disabled"));
        await page.eval(`(() => {
          const box = document.getElementById("random-seed");
          box.checked = false;
          box.dispatchEvent(new Event("change"));
        })()`);
      });

      await t.step("Cancel ends the request and the worker sees the abort", async () => {
        worker.options.stepMs = 300;
        const aborted = worker.aborted;
        await set({ nfe: "8" });
        await page.eval("document.getElementById('generate').click()");
        await page.waitFor("/steps/.test(document.getElementById('progress-text').textContent)");
        assert(!(await page.eval<boolean>("document.getElementById('cancel').disabled")));
        await page.eval("document.getElementById('cancel').click()");
        await page.waitFor("document.getElementById('status').textContent === 'canceled'");
        await eventually(() => worker.aborted > aborted && worker.active === 0, 5_000);
        assertStrictEquals(await page.eval("document.querySelectorAll('#samples img').length"), 0);
        assert(!(await page.eval<boolean>("document.getElementById('generate').disabled")));
        assert(await page.eval<boolean>("document.getElementById('cancel').disabled"));
        assert(await page.eval<boolean>("document.getElementById('progress').classList.contains('hidden')"));
        assertStrictEquals(await page.eval("document.getElementById('error').textContent"), "");
        worker.options.stepMs = 0;
      });

      await t.step("img2img: an uploaded image and a strength", async () => {
        const file = await Deno.makeTempFile({ suffix: ".png" });
        try {
          await Deno.writeFile(
            file,
            encodePng({
              width: 56,
              height: 56,
              data: new Uint8Array(56 * 56).fill(255),
              channels: 1,
              depth: 8,
            }),
          );
          const doc = await browser.send("DOM.getDocument", {}, page.sessionId);
          const { nodeId } = await browser.send("DOM.querySelector", {
            nodeId: (doc.root as { nodeId: number }).nodeId,
            selector: "#init-image",
          }, page.sessionId);
          await browser.send("DOM.setFileInputFiles", { files: [file], nodeId }, page.sessionId);
          await page.waitFor("!document.getElementById('init-preview').classList.contains('hidden')");
          await page.eval(`(() => {
            const s = document.getElementById("strength");
            s.value = "0.5";
            s.dispatchEvent(new Event("input"));
          })()`);
          assertStrictEquals(await page.eval("document.getElementById('strength-value').textContent"), "0.5");
          const before = worker.batches.length;
          await page.eval("document.getElementById('generate').click()");
          await page.waitFor(LOADED("#samples img", 1));
          const [enc, smp] = worker.batches.slice(before);
          assertEquals([enc.t_max, smp.t_max], [0.5, 0.5]);
          // white pixels (1 in model space), scaled to 28 × 28
          const images = new Float32Array((enc.images as Uint8Array).slice().buffer);
          assertEquals([images.length, images[0], images[783]], [784, 1, 1]);
          assertStrictEquals(
            await page.eval("document.querySelector('#samples figcaption').textContent"),
            "strength 0.5",
          );
          await page.eval("document.getElementById('clear-image').click()");
        } finally {
          await Deno.remove(file);
          worker.options.stream = false;
        }
      });

      await t.step("the docs page renders the OpenAPI document", async () => {
        await page.goto(edge.url + "/docs");
        await page.waitFor("document.body && document.body.dataset.ready === 'true'");
        const ops = await page.eval<string[]>(
          "[...document.querySelectorAll('section.op h3')].map((h) => h.textContent)",
        );
        assert(ops.includes("POST /v1/samples") && ops.includes("GET /v1/models"), ops.join(", "));
        const fields = await page.eval<string[]>(
          "[...document.querySelectorAll('#createSamples tbody code')].map((c) => c.textContent)",
        );
        for (const f of ["model", "n", "solver", "nfe", "seed", "latents", "images", "strength", "preview"]) {
          assert(fields.includes(f), f);
        }
      });

      await t.step(
        "the docs page's examples answer as shipped; {id} routes wait for a job's id",
        async () => {
          for (const op of ["encodeImages", "createSamples"]) {
            await page.eval(`(() => {
            const box = document.querySelector("#${op} details");
            box.open = true;
            box.querySelector("button").click();
          })()`);
            await page.waitFor(`/^HTTP /.test(document.querySelector("#${op} pre").textContent)`);
            assertMatch(
              await page.eval<string>(`document.querySelector("#${op} pre").textContent`),
              /^HTTP 200\n/,
            );
          }
          await page.eval(`(() => {
          const box = document.querySelector("#getJob details");
          box.open = true;
          box.querySelector("button").click();
        })()`);
          assertMatch(
            await page.eval<string>(`document.querySelector("#getJob pre").textContent`),
            /^fill in \{id\} first/,
          );
        },
      );

      // The deliberate 422 above is logged by Chromium as a failed resource; nothing else may be.
      assertEquals(page.errors.filter((e) => !/status of 422/.test(e)), []);
    } finally {
      await browser.close();
      await edge.shutdown(100);
      await worker.close();
    }
  },
});

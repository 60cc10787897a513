/**
 * The playground and the docs page end to end in headless Chromium (driven over the DevTools
 * protocol): pick settings, click, wait for the images and check they decoded (naturalWidth > 0),
 * NFE and timings shown, the solver comparison filled, no script errors or CSP violations.
 * Skipped with a message when no Chromium binary is found (Debian: apt-get install chromium).
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "../testing.ts";
import { serveEdge } from "../../functions/serve.ts";
import { Browser, findChromium } from "./cdp.ts";
import { startFakeWorker } from "./fake_worker.ts";
import { quiet } from "./helpers.ts";

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
        for (const f of ["model", "n", "solver", "nfe", "seed", "latents"]) assert(fields.includes(f), f);
      });

      // The deliberate 422 above is logged by Chromium as a failed resource; nothing else may be.
      assertEquals(page.errors.filter((e) => !/status of 422/.test(e)), []);
    } finally {
      await browser.close();
      await edge.shutdown(100);
      await worker.close();
    }
  },
});

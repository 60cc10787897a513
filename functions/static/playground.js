// The playground: plain browser JavaScript talking to the same HTTP API as any client. Its modules:
// playground_api.js (requests and errors) and playground_results.js (images, downloads, numbers).
import { $, api, headers, sampleWithProgress, showError } from "./playground_api.js";
import {
  clearDownloads,
  figures,
  gridText,
  progressText,
  showDownloads,
  stats,
  toBase64,
} from "./playground_results.js";

let models = [];

function fill(select, values, selected) {
  select.replaceChildren(...values.map((v) => {
    const o = document.createElement("option");
    o.value = String(v.value ?? v);
    o.textContent = String(v.label ?? v);
    o.selected = o.value === String(selected);
    return o;
  }));
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

function onModel() {
  const m = currentModel();
  if (!m) return;
  clearInitImage();
  $("model").title = m.description || "";
  fill($("solver"), m.solvers, m.solvers.includes("genie") ? "genie" : m.solvers[0]);
  onSolver();
  const classes = [{ value: "", label: "none" }];
  if (m.classes) { for (let c = 0; c < m.classes.count; c++) classes.push(c); }
  fill($("class"), classes, "");
  $("class").disabled = !m.classes;
  $("guidance").disabled = !m.classes;
  $("n").max = String(m.limits.max_n);
  const box = $("compare-solvers");
  box.replaceChildren(...m.solvers.map((s) => {
    const label = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.value = s;
    cb.checked = ["ddim", "genie", "dpmpp-2m", "unipc"].includes(s);
    label.append(cb, " " + s);
    return label;
  }));
}

/** Names the grid a request without one gets: the model's default for the solver, else the solver's. */
function onSolver() {
  const m = currentModel();
  const g = m && m.default_grids ? m.default_grids[$("solver").value] : undefined;
  $("grid").options[0].textContent = g
    ? `${g.source === "model" ? "model" : "solver"} default (${gridText(g.grid, g.rho)})`
    : "solver default";
}

/** The starting image of img2img: a tensor [1, C, H, W] in [−1, 1] for the current model, or null. */
let initImage = null;

/**
 * The request body from the form, for `solver`: `seed` −1 with "random seed" (or `seed` when given, so
 * that a comparison runs every solver at one seed); img2img's image and strength when an image is loaded.
 */
function requestBody(solver, seed) {
  const body = {
    model: $("model").value,
    solver,
    nfe: Number($("nfe").value),
    seed: seed ?? ($("random-seed").checked ? -1 : Number($("seed").value)),
  };
  if (initImage) {
    body.images = initImage;
    body.strength = Number($("strength").value);
  } else body.n = Number($("n").value);
  if ($("output").value === "tensor") body.output = "tensor";
  if ($("grid").value) body.grid = $("grid").value;
  if ($("class").value !== "" && !$("class").disabled) {
    body.class = Number($("class").value);
    const g = Number($("guidance").value);
    if (g) body.guidance = g;
  }
  return body;
}

/** The run in progress (its AbortController), for Cancel. */
let running = null;

function endRun() {
  running = null;
  $("generate").disabled = false;
  $("cancel").disabled = true;
  $("progress").classList.add("hidden");
  $("progress-text").textContent = "";
  $("preview-box").classList.add("hidden");
  $("preview").removeAttribute("src");
}

async function generate() {
  const button = $("generate");
  button.disabled = true;
  $("cancel").disabled = false;
  $("error").replaceChildren();
  $("status").textContent = "sampling…";
  const bar = $("progress");
  bar.classList.remove("hidden");
  bar.value = 0;
  const ctl = new AbortController();
  running = ctl;
  const started = performance.now();
  const body = requestBody($("solver").value);
  try {
    const result = await sampleWithProgress(body, (p) => {
      bar.max = Math.max(1, p.steps_total ?? p.n);
      bar.value = p.steps_done ?? p.done;
      $("progress-text").textContent = progressText(p, started);
      $("status").textContent = p.phase === "done" ? "finishing…" : "sampling…";
      if (typeof p.preview === "string") {
        $("preview").src = p.preview;
        $("preview-caption").textContent = `x̂₀ at step ${p.preview_step + 1} of ${p.steps}`;
        $("preview-box").classList.remove("hidden");
      }
    }, ctl.signal);
    if (body.strength !== undefined) result.strength = body.strength;
    figures(result, $("samples"));
    // the samples replace the x̂₀ preview as soon as they are drawn
    $("preview-box").classList.add("hidden");
    $("status").textContent = stats(result);
    await showDownloads(result);
  } catch (e) {
    // The images of an earlier request would look like this request's result: clear them.
    $("samples").replaceChildren();
    clearDownloads();
    if (ctl.signal.aborted) $("status").textContent = "canceled";
    else {
      showError($("error"), e, generate);
      $("status").textContent = "";
    }
  } finally {
    endRun();
  }
}

function cancel() {
  running?.abort();
}

/** Reads an image file into the img2img tensor: scaled to the model's size, grey or RGB, in [−1, 1]. */
async function loadInitImage(file) {
  const m = currentModel();
  if (!file || !m) return clearInitImage();
  const [c, h, w] = m.shape;
  const bitmap = await createImageBitmap(file);
  const canvas = $("init-preview");
  [canvas.width, canvas.height] = [w, h];
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  const values = new Float32Array(c * h * w);
  for (let p = 0; p < h * w; p++) {
    const [r, g, b] = [px[4 * p], px[4 * p + 1], px[4 * p + 2]];
    if (c === 1) values[p] = ((0.299 * r + 0.587 * g + 0.114 * b) / 255) * 2 - 1;
    else [r, g, b].forEach((v, k) => values[k * h * w + p] = (v / 255) * 2 - 1);
  }
  initImage = { shape: [1, c, h, w], data: toBase64(new Uint8Array(values.buffer)) };
  canvas.classList.remove("hidden");
}

function clearInitImage() {
  initImage = null;
  $("init-image").value = "";
  $("init-preview").classList.add("hidden");
}

async function compare() {
  const solvers = [...$("compare-solvers").querySelectorAll("input:checked")].map((c) => c.value);
  const out = $("compare-results");
  const button = $("compare");
  if (solvers.length === 0) return;
  button.disabled = true;
  $("compare-status").textContent = `sampling with ${solvers.length} solvers…`;
  out.replaceChildren(...solvers.map((s) => {
    const card = document.createElement("div");
    card.dataset.solver = s;
    const h = document.createElement("h3");
    h.textContent = s;
    const st = document.createElement("div");
    st.className = "stats";
    st.textContent = "…";
    const imgs = document.createElement("div");
    imgs.className = "samples";
    card.append(h, st, imgs);
    return card;
  }));
  // One seed for every solver: a random one is drawn here when "random seed" is on.
  const seed = $("random-seed").checked ? crypto.getRandomValues(new Uint32Array(1))[0] : undefined;
  await Promise.all(solvers.map(async (s) => {
    const card = out.querySelector(`[data-solver="${CSS.escape(s)}"]`);
    try {
      const body = requestBody(s, seed);
      const r = await api("/v1/samples", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(body),
      });
      if (body.strength !== undefined) r.strength = body.strength;
      figures(r, card.querySelector(".samples"));
      card.querySelector(".stats").textContent = stats(r);
    } catch (e) {
      card.querySelector(".samples").replaceChildren();
      const st = card.querySelector(".stats");
      st.className = "error";
      showError(st, e);
    }
  }));
  $("compare-status").textContent = "done";
  button.disabled = false;
}

async function init() {
  $("key").value = localStorage.getItem("genie-key") || "";
  $("key").addEventListener("change", () => {
    localStorage.setItem("genie-key", $("key").value.trim());
    loadModels();
  });
  $("model").addEventListener("change", onModel);
  $("solver").addEventListener("change", onSolver);
  $("generate").addEventListener("click", generate);
  $("cancel").addEventListener("click", cancel);
  $("random-seed").addEventListener("change", () => $("seed").disabled = $("random-seed").checked);
  $("strength").addEventListener("input", () => $("strength-value").textContent = $("strength").value);
  $("init-image").addEventListener("change", () => {
    loadInitImage($("init-image").files[0]).catch((e) => {
      clearInitImage();
      $("error").textContent = "could not read the image: " + e.message;
    });
  });
  $("clear-image").addEventListener("click", clearInitImage);
  $("compare").addEventListener("click", compare);
  try {
    const h = await api("/healthz");
    $("health").textContent = h.auth === "open" ? "open server (no API key needed)" : "API key required";
  } catch {
    // health is informational
  }
  await loadModels();
}

async function loadModels() {
  try {
    // The playground shows images: models whose samples are [C, H, W] with C = 1 or 3.
    models = (await api("/v1/models", { headers: headers() }))
      .filter((m) => m.shape.length === 3 && (m.shape[0] === 1 || m.shape[0] === 3));
    if (models.length === 0) throw new Error("no image model is served");
    fill(
      $("model"),
      models.map((m) => m.name),
      models.some((m) => m.name === "mnist-mix") ? "mnist-mix" : models[0]?.name,
    );
    onModel();
    $("error").textContent = "";
    document.body.dataset.ready = "true";
  } catch (e) {
    $("error").textContent = "could not load models: " + e.message;
  }
}

init();

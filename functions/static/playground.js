// The playground: plain browser JavaScript talking to the same HTTP API as any client.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function headers(extra) {
  const h = { "content-type": "application/json", ...extra };
  const key = $("key").value.trim();
  if (key) h.authorization = "Bearer " + key;
  return h;
}

/**
 * A failed request as an Error for the user: each problem once, as "field: what is wrong" (the message
 * summarizes the details, so only one of them is shown), then the HTTP status. `fixes` lists the
 * values the server says would work (details' `valid`, e.g. the NFEs a solver can use).
 */
function apiError(status, body) {
  const e = body && body.error;
  if (!e) return Object.assign(new Error(`request failed (HTTP ${status})`), { fixes: [] });
  const details = e.details || [];
  const lines = details.length === 0 ? [e.message] : details.map((d) => {
    const field = (d.path || []).join(".");
    const text = field && d.message.startsWith(field + ": ") ? d.message.slice(field.length + 2) : d.message;
    return field ? `${field}: ${text}` : text;
  });
  const fixes = details
    .filter((d) => Array.isArray(d.valid) && d.path && d.path.length === 1)
    .map((d) => ({ field: String(d.path[0]), values: d.valid }));
  return Object.assign(new Error(`${lines.join("\n")}\n(HTTP ${status} ${e.code})`), { fixes });
}

/**
 * Shows an error in `box`, once, with a button per suggested value of a field of the form: clicking it
 * sets the field and runs `retry`.
 */
function showError(box, err, retry) {
  box.replaceChildren(err.message);
  for (const fix of err.fixes || []) {
    const input = $(fix.field);
    if (!input || !retry) continue;
    const row = document.createElement("div");
    row.className = "fixes";
    row.append(`try ${fix.field}: `);
    for (const v of fix.values) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = String(v);
      b.dataset.field = fix.field;
      b.addEventListener("click", () => {
        input.value = String(v);
        input.dispatchEvent(new Event("change"));
        retry();
      });
      row.append(b, " ");
    }
    box.append(row);
  }
}

async function api(path, init) {
  const res = await fetch(path, init);
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON
  }
  if (!res.ok) throw apiError(res.status, body);
  return body;
}

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

/** "edm ρ=7" for a grid and its ρ. */
function gridText(grid, rho) {
  return `${grid}${rho !== undefined && rho !== null ? ` ρ=${rho}` : ""}`;
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

/** Base64 of bytes. */
function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Sample `i` of planar float32 images [n, C, H, W] in [−1, 1] drawn into a canvas context at (x, y). */
function drawSample(ctx, values, shape, i, x, y) {
  const [, c, h, w] = shape;
  const image = ctx.createImageData(w, h);
  const base = i * c * h * w;
  for (let p = 0; p < h * w; p++) {
    for (let k = 0; k < 3; k++) {
      const v = values[base + (c === 3 ? k : 0) * h * w + p];
      image.data[4 * p + k] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
    }
    image.data[4 * p + 3] = 255;
  }
  ctx.putImageData(image, x, y);
}

/** The images of a result as image URLs: its PNGs, or its tensor drawn (image shapes [n, C, H, W]). */
function imageUrls(result) {
  if (result.images) return result.images.map((im) => "data:image/png;base64," + im.png);
  const { shape, data } = result.tensor;
  const values = new Float32Array(fromBase64(data).buffer);
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [shape[3], shape[2]];
  const ctx = canvas.getContext("2d");
  return result.seeds.map((_, i) => {
    drawSample(ctx, values, shape, i, 0, 0);
    return canvas.toDataURL("image/png");
  });
}

function figures(result, container) {
  const urls = imageUrls(result);
  const img2img = result.strength !== undefined;
  container.replaceChildren(...urls.map((url, i) => {
    const seed = result.seeds[i];
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = img2img ? `image ${i}` : `seed ${seed}`;
    img.src = url;
    const cap = document.createElement("figcaption");
    cap.textContent = img2img ? `strength ${result.strength}` : String(seed);
    fig.append(img, cap);
    return fig;
  }));
}

/** Object URLs of the current downloads, released when replaced. */
let downloadUrls = [];

function clearDownloads() {
  for (const u of downloadUrls) URL.revokeObjectURL(u);
  downloadUrls = [];
  $("downloads").classList.add("hidden");
  $("download-npy").classList.add("hidden");
  for (const id of ["download-png", "download-npy"]) {
    $(id).removeAttribute("href");
    delete $(id).dataset.bytes;
  }
  $("seed-used").textContent = "";
}

function offer(id, blob, label) {
  const url = URL.createObjectURL(blob);
  downloadUrls.push(url);
  const a = $(id);
  a.href = url;
  a.dataset.bytes = String(blob.size);
  a.title = `${label}, ${blob.size} bytes`;
  a.classList.remove("hidden");
}

/** A .npy file (format 1.0, little-endian float32, C order) of a tensor of `shape`. */
function npyBlob(shape, bytes) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 78, 85, 77, 80, 89, 1, 0]);
  new DataView(head.buffer).setUint16(8, header.length, true);
  head.set(Array.from(header, (ch) => ch.charCodeAt(0)), 10);
  return new Blob([head, bytes], { type: "application/octet-stream" });
}

/**
 * The result's downloads: the samples as one PNG grid (tiled as the server tiles them: near-square,
 * 2-px black padding) and, for a tensor output, the tensor as .npy; and the seed that was used.
 */
async function showDownloads(result) {
  clearDownloads();
  const imgs = [...$("samples").querySelectorAll("img")];
  await Promise.all(imgs.map((im) => im.decode().catch(() => {})));
  if (imgs.length > 0) {
    const [w, h] = [imgs[0].naturalWidth, imgs[0].naturalHeight];
    const cols = Math.ceil(Math.sqrt(imgs.length)), rows = Math.ceil(imgs.length / cols);
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [cols * (w + 2) + 2, rows * (h + 2) + 2];
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    imgs.forEach((im, i) => ctx.drawImage(im, 2 + (i % cols) * (w + 2), 2 + Math.floor(i / cols) * (h + 2)));
    const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    if (png) offer("download-png", png, `${canvas.width}×${canvas.height} PNG`);
  }
  if (result.tensor) {
    offer("download-npy", npyBlob(result.tensor.shape, fromBase64(result.tensor.data)), ".npy");
  }
  $("seed-used").textContent = result.strength !== undefined
    ? ""
    : result.seeds.length > 1
    ? `seeds ${result.seeds[0]}…${result.seeds.at(-1)}`
    : `seed ${result.seeds[0]}`;
  $("downloads").classList.remove("hidden");
}

/**
 * One line of a result's numbers: nfe (ε evaluations), steps, calls (graph calls of every kind) and cost
 * (forward-pass equivalents, "est." when a ratio is a fallback), each per sample; the grid; timings.
 */
function stats(r) {
  const t = r.timings || {};
  const parts = [`nfe ${r.nfe}`, `steps ${r.steps}`];
  if (r.calls !== undefined) parts.push(`calls ${r.calls}`);
  if (r.cost !== undefined) {
    parts.push(`cost ${Number(r.cost.toFixed(2))}${r.cost_estimated ? " (est.)" : ""}`);
  }
  if (r.grid !== undefined) parts.push(`grid ${gridText(r.grid, r.rho)}`);
  parts.push(
    `queue ${Math.round(t.queue_ms)} ms`,
    `compute ${Math.round(t.compute_ms)} ms`,
    `total ${Math.round(t.total_ms)} ms`,
  );
  return parts.join(" · ");
}

/**
 * POST /v1/samples as a server-sent event stream: progress events (with previews of x̂₀), then completed
 * or failed. Aborting `signal` closes the stream, which cancels the work on the server.
 */
async function sampleWithProgress(body, onProgress, signal) {
  const res = await fetch("/v1/samples", {
    method: "POST",
    headers: headers({ accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, preview: true }),
    signal,
  });
  if (!res.ok) {
    let err = null;
    try {
      err = await res.json();
    } catch {
      // not JSON
    }
    throw apiError(res.status, err);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue;
      const payload = JSON.parse(data);
      if (event === "progress") onProgress(payload);
      else if (event === "completed") return payload;
      else if (event === "failed") throw apiError(payload.status, payload);
    }
  }
  throw new Error("the stream ended without a result");
}

/** The run in progress (its AbortController), for Cancel. */
let running = null;

/** "12/40 steps · 30% · ETA 3.1 s" from a progress event and the run's start time. */
function progressText(p, started) {
  const total = p.steps_total ?? p.n, done = p.steps_done ?? p.done;
  const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
  const elapsed = (performance.now() - started) / 1000;
  const eta = done >= total
    ? "done"
    : done > 0
    ? `ETA ${((elapsed / done) * (total - done)).toFixed(1)} s`
    : "ETA ?";
  return `${p.phase === "queued" ? "queued · " : ""}${done}/${total} ${
    p.steps_total !== undefined ? "steps" : "samples"
  } · ${pct}% · ${eta}`;
}

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

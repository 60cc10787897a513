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

/** The request body from the form, for `solver`. */
function requestBody(solver) {
  const body = {
    model: $("model").value,
    solver,
    nfe: Number($("nfe").value),
    seed: Number($("seed").value),
    n: Number($("n").value),
  };
  if ($("grid").value) body.grid = $("grid").value;
  if ($("class").value !== "" && !$("class").disabled) {
    body.class = Number($("class").value);
    const g = Number($("guidance").value);
    if (g) body.guidance = g;
  }
  return body;
}

function figures(result, container) {
  container.replaceChildren(...result.images.map((im) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = `seed ${im.seed}`;
    img.src = "data:image/png;base64," + im.png;
    const cap = document.createElement("figcaption");
    cap.textContent = String(im.seed);
    fig.append(img, cap);
    return fig;
  }));
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

/** POST /v1/samples as a server-sent event stream: progress events, then completed or failed. */
async function sampleWithProgress(body, onProgress) {
  const res = await fetch("/v1/samples", {
    method: "POST",
    headers: headers({ accept: "text/event-stream" }),
    body: JSON.stringify(body),
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

async function generate() {
  const button = $("generate");
  button.disabled = true;
  $("error").replaceChildren();
  $("status").textContent = "sampling…";
  const bar = $("progress");
  bar.classList.remove("hidden");
  bar.value = 0;
  try {
    const result = await sampleWithProgress(requestBody($("solver").value), (p) => {
      bar.max = p.n;
      bar.value = p.done;
      $("status").textContent = `${p.phase}: ${p.done}/${p.n} samples`;
    });
    figures(result, $("samples"));
    $("status").textContent = stats(result);
  } catch (e) {
    // The images of an earlier request would look like this request's result: clear them.
    $("samples").replaceChildren();
    showError($("error"), e, generate);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
    bar.classList.add("hidden");
  }
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
  await Promise.all(solvers.map(async (s) => {
    const card = out.querySelector(`[data-solver="${CSS.escape(s)}"]`);
    try {
      const r = await api("/v1/samples", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(requestBody(s)),
      });
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

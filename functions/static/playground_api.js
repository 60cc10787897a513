// The playground's talk with the HTTP API (the same as any client's): requests with the API key, errors
// as the user sees them, and sampling as a server-sent event stream. A module of playground.js.

/** The element of id `id`. */
export const $ = (id) => document.getElementById(id);

/** Request headers: a JSON body, and the API key when one is given. */
export function headers(extra) {
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
export function showError(box, err, retry) {
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

export async function api(path, init) {
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

/**
 * POST /v1/samples as a server-sent event stream: progress events (with previews of x̂₀), then completed
 * or failed. Aborting `signal` closes the stream, which cancels the work on the server.
 */
export async function sampleWithProgress(body, onProgress, signal) {
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

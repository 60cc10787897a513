// A small OpenAPI renderer: operations, request schemas as field tables, responses, and a "try it" box.
"use strict";

const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
};

let spec;

function resolve(schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()] ?? {};
  return schema ?? {};
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function typeOf(schema) {
  const name = refName(schema);
  if (name) return el("a", { href: "#schema-" + name }, name);
  const s = schema ?? {};
  if (s.anyOf) {
    return s.anyOf.map((x) => (typeof typeOf(x) === "string" ? typeOf(x) : refName(x))).join(" | ");
  }
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === "array") {
    const inner = typeOf(s.items);
    return typeof inner === "string" ? inner + "[]" : el("span", {}, inner, "[]");
  }
  if (Array.isArray(s.type)) return s.type.join(" | ");
  return s.format ? `${s.type} (${s.format})` : String(s.type ?? "any");
}

function constraints(s) {
  const out = [];
  if (s.minimum !== undefined && Math.abs(s.minimum) < 1e15) out.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) out.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined && Math.abs(s.maximum) < 1e15) out.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined) out.push(`length ≥ ${s.minLength}`);
  if (s.maxLength !== undefined) out.push(`length ≤ ${s.maxLength}`);
  if (s.minItems !== undefined) out.push(`items ≥ ${s.minItems}`);
  if (s.maxItems !== undefined) out.push(`items ≤ ${s.maxItems}`);
  return out.join(", ");
}

function fieldTable(schema) {
  const s = resolve(schema);
  if (s.type !== "object" || !s.properties) return el("p", {}, "Type: ", typeOf(schema));
  const required = new Set(s.required ?? []);
  const rows = Object.entries(s.properties).map(([name, prop]) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
      el("td", {}, typeOf(prop)),
      el("td", {}, constraints(resolve(prop))),
      el("td", {}, prop.description ?? resolve(prop).description ?? ""),
    )
  );
  return el(
    "table",
    {},
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", {}, "field"),
        el("th", {}, "type"),
        el("th", {}, "limits"),
        el("th", {}, "description"),
      ),
    ),
    el("tbody", {}, ...rows),
  );
}

/** The id of the last job a "Try it" box created (POST /v1/jobs); fills the `{id}` of the job routes. */
let lastJobId = "";
const idInputs = [];

/** The JSON example of an operation's request body (functions/openapi.ts), or null without a body. */
function exampleBody(op) {
  const json = op.requestBody?.content?.["application/json"];
  if (!json) return null;
  return JSON.stringify(json.example ?? {}, null, 2);
}

/**
 * A "Try it" box: the example body, an input per path parameter (its example, or for a job's `{id}` the
 * job the POST /v1/jobs example created), and the answer. A path with an empty parameter is not sent.
 */
function tryIt(method, path, op) {
  const out = el("pre", { class: "hidden" });
  const key = el("input", { type: "password", placeholder: "API key (optional)" });
  const example = exampleBody(op);
  const body = example === null ? null : el("textarea", {}, example);
  const params = (op.parameters ?? []).filter((p) => p.in === "path").map((p) => {
    const input = el("input", {
      type: "text",
      name: p.name,
      placeholder: p.name === "id" ? "id: create a job with POST /v1/jobs first" : p.name,
    });
    input.value = p.example ?? (p.name === "id" ? lastJobId : "");
    if (p.name === "id") idInputs.push(input);
    return { name: p.name, input };
  });
  const send = async () => {
    out.classList.remove("hidden");
    const missing = params.filter((p) => !p.input.value.trim());
    if (missing.length > 0) {
      out.textContent = `fill in ${missing.map((p) => `{${p.name}}`).join(", ")} first` +
        (missing.some((p) => p.name === "id") ? " (the id of a job: send the POST /v1/jobs example)" : "");
      return;
    }
    let url = path;
    for (const p of params) url = url.replace(`{${p.name}}`, encodeURIComponent(p.input.value.trim()));
    out.textContent = "…";
    const headers = { accept: "application/json" };
    if (key.value) headers.authorization = "Bearer " + key.value;
    if (body) headers["content-type"] = "application/json";
    try {
      const res = await fetch(url, {
        method: method.toUpperCase(),
        headers,
        body: body ? body.value : undefined,
      });
      const text = await res.text();
      let shown = text;
      try {
        const parsed = JSON.parse(text);
        shown = JSON.stringify(parsed, null, 2);
        if (res.ok && method === "post" && path === "/v1/jobs" && typeof parsed.id === "string") {
          lastJobId = parsed.id;
          for (const input of idInputs) input.value = lastJobId;
        }
      } catch {
        // plain text
      }
      out.textContent = `HTTP ${res.status}\n${shown.length > 20000 ? shown.slice(0, 20000) + "\n…" : shown}`;
    } catch (e) {
      out.textContent = String(e);
    }
  };
  return el(
    "details",
    {},
    el("summary", {}, "Try it"),
    body,
    ...params.map((p) => el("label", { class: "row" }, `{${p.name}} `, p.input)),
    el("div", { class: "row" }, key, el("button", { type: "button", onclick: send }, "Send")),
    out,
  );
}

function operation(path, method, op) {
  const id = op.operationId ?? `${method}-${path}`;
  const parts = [
    el("h3", {}, el("span", { class: "method" }, method.toUpperCase()), " ", path),
    el("p", {}, op.summary ?? ""),
  ];
  if (op.description) parts.push(el("p", { class: "stats" }, op.description));
  const content = op.requestBody?.content;
  if (content) {
    parts.push(el("h4", {}, "Request body (" + Object.keys(content).join(", ") + ")"));
    parts.push(fieldTable(Object.values(content)[0].schema));
  }
  const responses = Object.entries(op.responses ?? {}).map(([code, r]) =>
    el(
      "tr",
      {},
      el("td", {}, code),
      el("td", {}, r.description ?? ""),
      el("td", {}, Object.keys(r.content ?? {}).join(", ")),
    )
  );
  parts.push(el("h4", {}, "Responses"), el("table", {}, el("tbody", {}, ...responses)));
  parts.push(tryIt(method, path, op));
  return el("section", { class: "card op", id }, ...parts);
}

async function main() {
  spec = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("description").textContent = spec.info.description ?? "";
  const ops = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) ops.push(operation(path, method, op));
  }
  document.getElementById("toc").append(
    ...ops.map((o) => el("a", { href: "#" + o.id }, o.querySelector("h3").textContent)),
  );
  document.getElementById("operations").append(...ops);
  document.getElementById("schemas").append(
    ...Object.entries(spec.components.schemas).map(([name, s]) =>
      el(
        "section",
        { class: "card", id: "schema-" + name },
        el("h3", {}, name),
        s.description ? el("p", {}, s.description) : null,
        fieldTable({ $ref: "#/components/schemas/" + name }),
      )
    ),
  );
  document.body.dataset.ready = "true";
}

main().catch((e) => {
  document.getElementById("operations").textContent = "could not load /openapi.json: " + e;
});

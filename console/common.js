// What the console's modules share: building elements, talking to the API, and reading the
// OpenAPI document the service serves (loaded once, by console.js, before any form is built).

export const $ = (id) => document.getElementById(id);

const API = new URL("../api/v1/", location.href);

/** An element with attributes and children (strings become text: nothing is parsed as HTML). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

export function log(message, kind = "info") {
  const time = new Date().toISOString().slice(11, 23);
  $("log").prepend(h("li", { class: kind }, `${time} ${message}`));
}

export function showResult(element, message, kind) {
  element.textContent = message;
  element.dataset.kind = kind;
}

/** A problem+json answer as one line: "Bad Request: detail (field: x)". */
export function describeProblem(status, body) {
  if (body && typeof body === "object" && body.detail) {
    const field = body.field ? ` (field: ${body.field})` : "";
    return `${status} ${body.title ?? ""}: ${body.detail}${field}`;
  }
  return `HTTP ${status}`;
}

/** fetch() against the API; answers {ok, status, body}; never throws on an HTTP error. */
export async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  const bearer = $("bearer").value.trim();
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(new URL(path.replace(/^\//, ""), API), init);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { ok: response.ok, status: response.status, body: parsed };
}

// -- the OpenAPI document ------------------------------------------------------------------

/** The served OpenAPI document: null until loadSpec() answered. */
export let spec = null;

/** Load the document; answers the failed {ok, status, body} answer, or null when loaded. */
export async function loadSpec() {
  const answer = await api("GET", "openapi.json");
  if (!answer.ok) return answer;
  spec = answer.body;
  return null;
}

export function deref(schema) {
  let resolved = schema ?? {};
  while (resolved.$ref) {
    resolved = resolved.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((node, key) => node[key.replace(/~1/g, "/").replace(/~0/g, "~")], spec);
  }
  return resolved;
}

/** A schema with `$ref`s followed and `allOf` merged: what a form field needs. */
export function flatten(schema) {
  const resolved = deref(schema);
  if (!resolved.allOf) return resolved;
  const { allOf, ...own } = resolved;
  return Object.assign({}, ...allOf.map(flatten), own);
}

export function operationById(operationId) {
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (operation?.operationId === operationId) return { path, method, operation };
    }
  }
  throw new Error(`the OpenAPI document has no operation ${operationId}`);
}

/** The header that carries the publisher key (publishing, and reading an event's receipts). */
export function publisherKeyHeader() {
  return deref(spec.components.securitySchemes.PublisherKey).name;
}

/** A query parameter's schema, e.g. the bounds of listChannelEvents' `limit`. */
export function parameterSchema(operationId, name) {
  const { operation } = operationById(operationId);
  const parameter = (operation.parameters ?? []).map(deref).find((p) => p.name === name);
  return flatten(parameter?.schema);
}

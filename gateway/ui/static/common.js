// Shared by the chat page and the console: API calls, DOM building and a safe markdown renderer.
//
// Safety rule for both pages: text from a model, a document or the API only ever reaches the
// page as a Text node or an attribute set here; nothing is ever parsed as HTML.

/** The API's error, with OpenAI's message when the body has one. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

/** JSON in, JSON out, with the key as a bearer token; throws ApiError on any non-2xx. */
export async function api(key, path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Server-sent events' data fields, one string per event, as they arrive. */
export async function* sseData(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

/** document.createElement with properties and children; strings become Text nodes. */
export function el(tag, props = {}, ...children) {
  const node = tag.includes(":")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1])
    : document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.setAttribute("class", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...nodesOf(children)); // after `text`, which it must not clear
  return node;
}

/** Replace a node's children, as `el` takes them. */
export function fill(node, ...children) {
  node.replaceChildren(...nodesOf(children));
  return node;
}

/** Strings become Text nodes; null, undefined and false are left out (the DOM's own
 * append and replaceChildren would write "null"). */
function nodesOf(children) {
  return children
    .flat()
    .filter((child) => child !== undefined && child !== null && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
}

export function byId(id) {
  return document.getElementById(id);
}

const WITH_OFFSET = /(Z|[+-]\d{2}:?\d{2})$/i;

/** The instant an API timestamp names, in UTC. The API sends every time with its offset; one
 * without (an older gateway on SQLite) was written in UTC too, never in the browser's zone. */
export function parseTime(iso) {
  return new Date(WITH_OFFSET.test(iso) ? iso : `${iso}Z`);
}

/** A time as the reader's clock shows it, with the zone named so nobody has to guess. */
export function formatTime(iso) {
  if (!iso) return "";
  return parseTime(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
}

/** A number as people read it: grouped thousands, two decimals from 1 up, two significant
 * digits below 1 ("0.016666666666666666" is 0.017, 1234567 is 1,234,567). Empty for none. */
export function formatNumber(value) {
  if (value === null || value === undefined || value === "") return "";
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  if (Number.isInteger(number)) return number.toLocaleString("en-US");
  const magnitude = Math.abs(number);
  const digits = magnitude >= 100 ? 0 : magnitude >= 1 ? 2 : Math.min(8, 1 - Math.floor(Math.log10(magnitude)));
  return number.toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

// -- markdown ----------------------------------------------------------------------------
// A small subset (paragraphs, headings, lists, quotes, fenced code, inline code, bold,
// italics, http(s) links), built as DOM nodes. Anything else stays literal text.

const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+/;
const FENCE = /^\s*```\s*([\w+-]*)\s*$/;
const INLINE =
  /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\([^)\s]+\))|(\[\d{1,2}\])/g;

function startsBlock(line) {
  return FENCE.test(line) || /^#{1,6}\s/.test(line) || LIST_ITEM.test(line) || /^\s*>/.test(line);
}

/**
 * A DocumentFragment for the markdown text. `citation(n)` may return a node for an "[n]"
 * marker (the chat page links it to the source); without it the marker stays text.
 */
export function renderMarkdown(text, { citation } = {}) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  const inline = (line) => renderInline(line, citation);
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const code = [];
      for (i += 1; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i += 1) code.push(lines[i]);
      i += 1; // the closing fence; while streaming it may not have arrived yet
      const language = fence[1] ? `language-${fence[1]}` : undefined;
      fragment.append(el("pre", {}, el("code", { class: language, text: code.join("\n") })));
    } else if (/^#{1,6}\s/.test(line)) {
      const [, hashes, title] = line.match(/^(#{1,6})\s+(.*)$/);
      fragment.append(el(`h${Math.min(hashes.length + 2, 6)}`, {}, inline(title)));
      i += 1;
    } else if (LIST_ITEM.test(line)) {
      const list = el(/^\s*\d/.test(line) ? "ol" : "ul");
      for (; i < lines.length && LIST_ITEM.test(lines[i]); i += 1) {
        list.append(el("li", {}, inline(lines[i].replace(LIST_ITEM, ""))));
      }
      fragment.append(list);
    } else if (/^\s*>/.test(line)) {
      const quote = el("blockquote");
      for (; i < lines.length && /^\s*>/.test(lines[i]); i += 1) {
        quote.append(el("p", {}, inline(lines[i].replace(/^\s*>\s?/, ""))));
      }
      fragment.append(quote);
    } else if (!line.trim()) {
      i += 1;
    } else {
      const paragraph = el("p");
      for (let first = true; i < lines.length && lines[i].trim(); i += 1, first = false) {
        if (!first && startsBlock(lines[i])) break;
        if (!first) paragraph.append(el("br"));
        paragraph.append(inline(lines[i]));
      }
      fragment.append(paragraph);
    }
  }
  return fragment;
}

function renderInline(text, citation) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    fragment.append(text.slice(last, match.index));
    const [token, code, bold, italic, link] = match;
    if (code) fragment.append(el("code", { text: token.slice(1, -1) }));
    else if (bold) fragment.append(el("strong", {}, renderInline(token.slice(2, -2), citation)));
    else if (italic) fragment.append(el("em", {}, renderInline(token.slice(1, -1), citation)));
    else if (link) fragment.append(safeLink(token));
    else fragment.append((citation && citation(Number(token.slice(1, -1)))) || token);
    last = match.index + token.length;
  }
  fragment.append(text.slice(last));
  return fragment;
}

function safeLink(token) {
  const [, label, href] = token.match(/^\[([^\]]+)\]\(([^)\s]+)\)$/);
  // Only absolute web links: javascript:, data: and the like stay plain text.
  if (!/^https?:\/\//i.test(href)) return document.createTextNode(token);
  return el("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, label);
}

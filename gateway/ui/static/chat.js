// The chat page: sign in with an API key, stream answers with their sources, stop them, give
// feedback, and come back to past conversations (kept by the gateway, per key).
import { api, byId, el, errorOf, formatTime, renderMarkdown, sseData } from "./common.js";
import { icon } from "./icons.js";

const KEY_SLOT = "loragate.chat.key";
// This tab's copy of the conversations it touched, for a reload that comes before the
// gateway's conversation log has written the last answer; the gateway's copy is the truth.
const CONVERSATIONS_SLOT = "loragate.chat.conversations";
const CURRENT_SLOT = "loragate.chat.current";
const NARROW = window.matchMedia("(max-width: 720px)");
const EMBEDDING_MODELS = new Set(["all-MiniLM-L6-v2"]); // listed by /v1/models, not for chat

const state = {
  key: sessionStorage.getItem(KEY_SLOT) || "",
  // id -> { title, model, system, knowledge, updated_at, turns: [{ role, content, ... }] }
  conversations: JSON.parse(sessionStorage.getItem(CONVERSATIONS_SLOT) || "{}"),
  current: null,
  busy: false,
  abort: null, // the AbortController of the answer being streamed
};

function save() {
  sessionStorage.setItem(CONVERSATIONS_SLOT, JSON.stringify(state.conversations));
  if (state.current) sessionStorage.setItem(CURRENT_SLOT, state.current);
}

// -- sign in --------------------------------------------------------------------------------

async function signIn(key) {
  const models = await api(key, "/v1/models"); // a bad key fails here, with the API's message
  state.key = key;
  sessionStorage.setItem(KEY_SLOT, key);
  fillModels(models.data.filter((model) => !EMBEDDING_MODELS.has(model.id)));
  byId("sign-in").hidden = true;
  byId("chat").hidden = false;
  byId("sign-out").hidden = false;
  byId("toggle-sidebar").hidden = false;
  byId("settings").open = !NARROW.matches;
  const resumed = sessionStorage.getItem(CURRENT_SLOT); // a reload of this tab: carry on
  await open(resumed && state.conversations[resumed] ? resumed : newConversation());
  byId("prompt").focus();
  await Promise.all([loadKnowledge(), loadConversationList()]);
}

function signOut() {
  // Nothing of this key's stays in the tab: the next key must not see its conversations.
  for (const slot of [KEY_SLOT, CONVERSATIONS_SLOT, CURRENT_SLOT]) sessionStorage.removeItem(slot);
  stop();
  Object.assign(state, { key: "", conversations: {}, current: null });
  byId("conversation-list").replaceChildren();
  byId("conversations-status").textContent = "";
  byId("messages").replaceChildren();
  byId("chat").hidden = true;
  byId("sign-out").hidden = true;
  byId("toggle-sidebar").hidden = true;
  byId("sign-in").hidden = false;
  byId("api-key").value = "";
  byId("api-key").focus();
}

function fillModels(models) {
  const picker = byId("model");
  picker.replaceChildren(...models.map((model) => el("option", { value: model.id }, model.id)));
  const context = models.find((model) => model.max_model_len)?.max_model_len;
  if (context) byId("max-tokens").max = String(context - 1);
}

async function loadKnowledge() {
  const picker = byId("knowledge");
  const options = [
    el("option", { value: "" }, "The model's setting"),
    el("option", { value: "none" }, "None (the model alone)"),
  ];
  try {
    const collections = (await api(state.key, "/v1/collections")).data;
    for (const c of collections) {
      options.push(el("option", { value: `collection:${c.name}` }, `${c.name} (${c.documents} ${c.documents === 1 ? "document" : "documents"})`));
    }
  } catch {
    // Retrieval may be off on this gateway: the two fixed choices still work.
  }
  picker.replaceChildren(...options);
  picker.value = state.conversations[state.current]?.knowledge || "";
}

// -- conversations --------------------------------------------------------------------------

function newConversation() {
  const id = `web-${crypto.randomUUID()}`;
  state.conversations[id] = {
    title: "", model: byId("model").value, system: "", knowledge: byId("knowledge").value || "",
    turns: [],
  };
  save();
  return id;
}

/** The conversations the gateway kept for this key, merged with this tab's new ones. */
async function loadConversationList() {
  const status = byId("conversations-status");
  try {
    const listed = (await api(state.key, "/v1/conversations?limit=100")).data;
    for (const summary of listed) {
      const known = state.conversations[summary.id];
      state.conversations[summary.id] = {
        turns: [], system: "", knowledge: "", ...known,
        title: known?.title || summary.title, model: known?.model || summary.model,
        updated_at: summary.updated_at, stored: true,
      };
    }
    save();
    drawConversationList();
  } catch (error) {
    status.textContent = `Past conversations could not be loaded: ${error.message}`;
  }
}

async function open(id) {
  if (state.busy) stop();
  state.current = id;
  const conversation = state.conversations[id];
  if (conversation.stored) await loadTurns(id, conversation);
  const picker = byId("model");
  if (conversation.model && [...picker.options].some((o) => o.value === conversation.model)) {
    picker.value = conversation.model;
  }
  byId("system-prompt").value = conversation.system || "";
  byId("knowledge").value = conversation.knowledge || "";
  save();
  drawConversationList();
  byId("messages").replaceChildren(...conversation.turns.map((turn, index) => drawTurn(turn, index)));
  scrollToEnd();
  closeSidebarOnNarrow();
}

/** The gateway's turns, unless this tab holds more (an answer not written yet). */
async function loadTurns(id, conversation) {
  try {
    const stored = await api(state.key, `/v1/conversations/${encodeURIComponent(id)}`);
    const turns = stored.turns.flatMap((turn) => [
      { role: "user", content: turn.question },
      {
        role: "assistant", content: turn.answer, completion_id: turn.completion_id,
        version: turn.served_model, citations: turn.citations,
        stopped: turn.status === "cancelled", error: turn.status === "error" ? turn.error : undefined,
      },
    ]);
    if (turns.length >= conversation.turns.length) conversation.turns = turns;
    conversation.system ||= stored.system || "";
    conversation.model ||= stored.model;
  } catch (error) {
    if (error.status !== 404) byId("chat-error").textContent = `The conversation could not be loaded: ${error.message}`;
  }
}

function drawConversationList() {
  const entries = Object.entries(state.conversations)
    .filter(([id, c]) => c.turns.length || c.stored || id === state.current)
    .sort(([, a], [, b]) => (b.updated_at || "9").localeCompare(a.updated_at || "9"));
  const items = entries.map(([id, conversation]) =>
    el(
      "li",
      {},
      el(
        "button",
        { type: "button", class: "conversation", "aria-current": id === state.current ? "true" : "false", "data-conversation-id": id, onclick: () => open(id) },
        el("span", { class: "title" }, conversation.title || "New conversation"),
        conversation.updated_at ? el("time", { class: "muted", datetime: conversation.updated_at }, formatTime(conversation.updated_at)) : null,
      ),
    ),
  );
  byId("conversation-list").replaceChildren(...items);
  const past = entries.some(([, c]) => c.turns.length || c.stored);
  const status = byId("conversations-status");
  if (!status.textContent.startsWith("Past conversations could not")) {
    status.textContent = past ? "" : "No past conversations yet.";
  }
}

function toggleSidebar(show = !byId("sidebar").classList.contains("open")) {
  byId("sidebar").classList.toggle("open", show);
  const button = byId("toggle-sidebar");
  button.setAttribute("aria-expanded", String(show));
  button.setAttribute("aria-label", show ? "Hide conversations" : "Show conversations");
  button.replaceChildren(icon(show ? "close" : "menu"));
}

function closeSidebarOnNarrow() {
  if (NARROW.matches && byId("sidebar").classList.contains("open")) toggleSidebar(false);
}

function scrollToEnd() {
  const list = byId("messages");
  list.scrollTop = list.scrollHeight;
}

// -- turns ----------------------------------------------------------------------------------

function speaker(role, version) {
  return el(
    "div",
    { class: "speaker" },
    icon(role === "user" ? "user" : "assistant"),
    el("span", { class: "name" }, role === "user" ? "You" : "Assistant"),
    version ? el("span", { class: "version", title: "The version that answered" }, version) : null,
  );
}

function drawTurn(turn, index) {
  if (turn.role === "user") {
    return el("li", { class: "turn user" }, speaker("user"), el("div", { class: "content", text: turn.content }));
  }
  const item = el("li", { class: "turn assistant", "data-completion-id": turn.completion_id || "" });
  fillAnswer(item, turn, index);
  return item;
}

function fillAnswer(item, turn, index) {
  const anchor = (n) => `source-${turn.completion_id}-${n}`;
  const cited = new Set((turn.citations || []).map((c) => c.index));
  const citation = (n) =>
    cited.has(n)
      ? el("a", { href: `#${anchor(n)}`, class: "cite", "aria-label": `Source ${n}`, onclick: () => openSource(anchor(n)) }, `[${n}]`)
      : null;
  const content = el("div", { class: "content" }, renderMarkdown(turn.content, { citation }));
  item.dataset.completionId = turn.completion_id || "";
  item.replaceChildren(speaker("assistant", turn.version), content);
  if (turn.streaming && !turn.content) content.append(el("span", { class: "muted typing" }, "Thinking…"));
  if (turn.citations && turn.citations.length) item.append(drawSources(turn.citations, anchor));
  if (turn.stopped) item.append(el("p", { class: "muted stopped" }, "Stopped."));
  if (turn.error) item.append(el("p", { class: "error", role: "alert", text: turn.error }));
  if (turn.completion_id && !turn.streaming) item.append(...drawActions(item, turn, index));
}

function openSource(id) {
  const source = byId(id);
  if (source) {
    source.open = true;
    source.querySelector("summary").focus();
  }
}

function drawSources(citations, anchor) {
  return el(
    "ol",
    { class: "sources", "aria-label": "Sources" },
    citations.map((c) =>
      el(
        "li",
        { value: c.index },
        el(
          "details",
          { id: anchor(c.index), class: "source", "data-chunk-id": c.chunk_id },
          el("summary", {}, icon("source"), `${c.source || c.document_id}${c.section ? ` › ${c.section}` : ""}`),
          el("p", { text: c.text }),
        ),
      ),
    ),
  );
}

function drawActions(item, turn, index) {
  const status = el("span", { class: "muted", role: "status" });
  const rate = (score) => async () => {
    await feedback(turn, { score }, status, score > 0 ? "Thanks!" : "Thanks, noted.");
    up.setAttribute("aria-pressed", String(score > 0));
    down.setAttribute("aria-pressed", String(score < 0));
  };
  const button = (name, label, onclick) =>
    el("button", { type: "button", class: "icon-button", "aria-label": label, title: label, onclick }, icon(name));
  const up = button("thumbs-up", "Thumbs up", rate(1));
  const down = button("thumbs-down", "Thumbs down", rate(-1));
  up.setAttribute("aria-pressed", "false");
  down.setAttribute("aria-pressed", "false");
  const correctionId = `correction-${turn.completion_id}`;
  const box = el("textarea", { id: correctionId, rows: 3, required: true });
  const form = el(
    "form",
    { class: "correction", hidden: true },
    el("label", { for: correctionId }, "Suggested correction"),
    box,
    el("div", {}, el("button", { type: "submit" }, "Send correction")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await feedback(turn, { score: -1, correction: box.value }, status, "Thanks, your correction is in the review queue.");
    form.hidden = true;
    down.setAttribute("aria-pressed", "true");
  });
  const suggest = button("edit", "Suggest a correction", () => {
    form.hidden = !form.hidden;
    if (!form.hidden) box.focus();
  });
  const isLast = index === state.conversations[state.current].turns.length - 1;
  const regenerate = isLast ? button("regenerate", "Regenerate", () => regenerateLast()) : null;
  return [el("div", { class: "actions" }, up, down, suggest, regenerate, status), form];
}

async function feedback(turn, body, status, thanks) {
  try {
    await api(state.key, "/v1/feedback", { method: "POST", body: { completion_id: turn.completion_id, ...body } });
    status.textContent = thanks;
  } catch (error) {
    status.textContent = `Feedback failed: ${error.message}`;
  }
}

// -- asking -----------------------------------------------------------------------------------

async function ask(text) {
  const conversation = state.conversations[state.current];
  conversation.turns.push({ role: "user", content: text });
  conversation.title ||= text.slice(0, 80);
  conversation.model = byId("model").value;
  conversation.updated_at = new Date().toISOString();
  save();
  drawConversationList();
  byId("messages").append(drawTurn(conversation.turns.at(-1), conversation.turns.length - 1));
  await answer(conversation);
}

/** Ask again for the last answer: the gateway's flagging rules count it as a retry. */
async function regenerateLast() {
  const conversation = state.conversations[state.current];
  if (state.busy || conversation.turns.at(-1)?.role !== "assistant") return;
  conversation.turns.pop();
  byId("messages").lastElementChild.remove();
  await answer(conversation);
}

function setBusy(busy) {
  state.busy = busy;
  byId("send").hidden = busy;
  byId("stop").hidden = !busy;
  if (busy) byId("stop").focus({ preventScroll: true });
}

async function answer(conversation) {
  setBusy(true);
  byId("chat-error").textContent = "";
  const history = messagesFor(conversation);
  const turn = { role: "assistant", content: "", streaming: true, citations: [] };
  conversation.turns.push(turn);
  const index = conversation.turns.length - 1;
  const item = drawTurn(turn, index);
  item.setAttribute("aria-busy", "true");
  byId("messages").append(item);
  scrollToEnd();
  state.abort = new AbortController();
  try {
    await stream(conversation, history, turn, item, state.abort.signal);
  } catch (error) {
    if (error.name === "AbortError") turn.stopped = true;
    else turn.error = error.message;
  } finally {
    state.abort = null;
    turn.streaming = false;
    item.removeAttribute("aria-busy");
    fillAnswer(item, turn, index);
    save();
    setBusy(false);
    byId("prompt").focus();
  }
}

/** Stop the answer being streamed: the gateway then stops vLLM and logs what was said. */
function stop() {
  if (state.abort) state.abort.abort();
}

/** The system prompt, then the turns; an answer that failed before any text is left out. */
function messagesFor(conversation) {
  const system = byId("system-prompt").value.trim();
  conversation.system = system;
  const turns = conversation.turns
    .filter((turn) => turn.role === "user" || turn.content)
    .map(({ role, content }) => ({ role, content }));
  return system ? [{ role: "system", content: system }, ...turns] : turns;
}

/** The settings as the page shows them (its defaults are visible in the fields). */
function sampling() {
  const chosen = {};
  const temperature = byId("temperature").value.trim();
  const maxTokens = byId("max-tokens").value.trim();
  if (temperature) chosen.temperature = Number(temperature);
  if (maxTokens) chosen.max_tokens = Number(maxTokens);
  const knowledge = byId("knowledge").value;
  if (knowledge === "none") chosen.retrieval = false;
  else if (knowledge.startsWith("collection:")) chosen.retrieval = { collection: knowledge.slice(11) };
  return chosen;
}

async function stream(conversation, history, turn, item, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: `Bearer ${state.key}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      model: conversation.model,
      messages: history,
      stream: true,
      conversation_id: state.current,
      ...sampling(),
    }),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  turn.version = response.headers.get("x-loragate-version");
  let chunks = 0;
  let drawn = false;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    if (!turn.completion_id && chunk.id) {
      turn.completion_id = chunk.id;
      item.dataset.completionId = chunk.id;
    }
    if (chunk.citations) turn.citations = chunk.citations;
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta) {
      turn.content += delta;
      chunks += 1;
      item.dataset.chunks = String(chunks);
      if (!drawn) {
        drawn = true; // redraw at most once a frame, however fast the tokens come
        requestAnimationFrame(() => {
          drawn = false;
          if (turn.streaming) fillAnswer(item, turn, conversation.turns.length - 1);
          scrollToEnd();
        });
      }
    }
  }
}

// -- wiring -----------------------------------------------------------------------------------

byId("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  byId("sign-in-error").textContent = "";
  try {
    await signIn(byId("api-key").value.trim());
  } catch (error) {
    byId("sign-in-error").textContent = `Sign-in failed: ${error.message}`;
  }
});
byId("sign-out").addEventListener("click", signOut);
byId("new-conversation").append(icon("plus"), "New conversation");
byId("new-conversation").addEventListener("click", () => open(newConversation()));
byId("send").append(icon("send"));
byId("stop").append(icon("stop"));
byId("stop").addEventListener("click", stop);
byId("toggle-sidebar").append(icon("menu"));
byId("toggle-sidebar").addEventListener("click", () => toggleSidebar());
byId("model").addEventListener("change", () => {
  state.conversations[state.current].model = byId("model").value;
  save();
});
byId("knowledge").addEventListener("change", () => {
  state.conversations[state.current].knowledge = byId("knowledge").value;
  save();
});
byId("system-prompt").addEventListener("change", () => {
  state.conversations[state.current].system = byId("system-prompt").value;
  save();
});
byId("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = byId("prompt");
  const text = prompt.value.trim();
  if (!text || state.busy) return;
  prompt.value = "";
  await ask(text);
});
byId("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (state.busy) stop();
  else closeSidebarOnNarrow();
});

if (state.key) signIn(state.key).catch(signOut);

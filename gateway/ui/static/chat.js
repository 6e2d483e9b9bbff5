// The chat page: sign in with an API key, stream answers, show sources, give feedback.
import { api, byId, el, errorOf, renderMarkdown, sseData } from "./common.js";

const KEY_SLOT = "loragate.chat.key";
const CONVERSATIONS_SLOT = "loragate.chat.conversations";

const state = {
  key: sessionStorage.getItem(KEY_SLOT) || "",
  // conversation_id -> { title, model, turns: [{ role, content, completion_id, version, citations }] }
  conversations: JSON.parse(sessionStorage.getItem(CONVERSATIONS_SLOT) || "{}"),
  current: null,
  busy: false,
};

function save() {
  sessionStorage.setItem(CONVERSATIONS_SLOT, JSON.stringify(state.conversations));
}

// -- sign in --------------------------------------------------------------------------------

async function signIn(key) {
  const models = await api(key, "/v1/models"); // a bad key fails here, with the API's message
  state.key = key;
  sessionStorage.setItem(KEY_SLOT, key);
  const picker = byId("model");
  picker.replaceChildren(...models.data.map((model) => el("option", { value: model.id }, model.id)));
  byId("sign-in").hidden = true;
  byId("chat").hidden = false;
  byId("sign-out").hidden = false;
  const ids = Object.keys(state.conversations);
  open(ids.length ? ids[ids.length - 1] : newConversation());
  byId("prompt").focus();
}

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  state.key = "";
  byId("chat").hidden = true;
  byId("sign-out").hidden = true;
  byId("sign-in").hidden = false;
  byId("api-key").value = "";
  byId("api-key").focus();
}

// -- conversations --------------------------------------------------------------------------

function newConversation() {
  const id = `web-${crypto.randomUUID()}`;
  state.conversations[id] = { title: "", model: byId("model").value, turns: [] };
  save();
  return id;
}

function open(id) {
  state.current = id;
  const conversation = state.conversations[id];
  const picker = byId("model");
  if (conversation.model && [...picker.options].some((o) => o.value === conversation.model)) {
    picker.value = conversation.model;
  }
  drawConversationList();
  const list = byId("messages");
  list.replaceChildren(...conversation.turns.map((turn, index) => drawTurn(turn, index)));
}

function drawConversationList() {
  const items = Object.entries(state.conversations).map(([id, conversation]) =>
    el(
      "li",
      {},
      el(
        "button",
        { type: "button", "aria-current": id === state.current ? "true" : "false", onclick: () => open(id) },
        conversation.title || "New conversation",
      ),
    ),
  );
  byId("conversation-list").replaceChildren(...items);
}

// -- turns ----------------------------------------------------------------------------------

function drawTurn(turn, index) {
  if (turn.role === "user") {
    return el("li", { class: "turn user" }, el("div", { class: "content", text: turn.content }));
  }
  const item = el("li", { class: "turn assistant", "data-completion-id": turn.completion_id || "" });
  fillAnswer(item, turn, index);
  return item;
}

function fillAnswer(item, turn, index) {
  const anchor = (n) => `source-${turn.completion_id}-${n}`;
  const cited = new Set((turn.citations || []).map((c) => c.index));
  const citation = (n) =>
    cited.has(n) ? el("a", { href: `#${anchor(n)}`, class: "cite", onclick: () => openSource(anchor(n)) }, `[${n}]`) : null;
  const content = el("div", { class: "content" }, renderMarkdown(turn.content, { citation }));
  item.dataset.completionId = turn.completion_id || "";
  item.replaceChildren(content);
  if (turn.citations && turn.citations.length) item.append(drawSources(turn.citations, anchor));
  if (turn.error) item.append(el("p", { class: "error", role: "alert", text: turn.error }));
  if (turn.completion_id && !turn.streaming) item.append(...drawActions(item, turn, index));
}

function openSource(id) {
  const source = byId(id);
  if (source) source.open = true;
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
          el("summary", {}, `${c.source || c.document_id}${c.section ? ` › ${c.section}` : ""}`),
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
  const up = el("button", { type: "button", "aria-label": "Thumbs up", "aria-pressed": "false", onclick: rate(1) }, "👍");
  const down = el("button", { type: "button", "aria-label": "Thumbs down", "aria-pressed": "false", onclick: rate(-1) }, "👎");
  const correctionId = `correction-${turn.completion_id}`;
  const box = el("textarea", { id: correctionId, rows: 3, required: true });
  const form = el(
    "form",
    { class: "composer", hidden: true },
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
  const suggest = el("button", { type: "button", onclick: () => { form.hidden = !form.hidden; if (!form.hidden) box.focus(); } }, "Suggest a correction");
  const isLast = index === state.conversations[state.current].turns.length - 1;
  const regenerate = isLast ? el("button", { type: "button", onclick: () => regenerateLast() }, "Regenerate") : null;
  const version = turn.version ? el("span", { class: "version", title: "The version that answered" }, turn.version) : null;
  return [el("div", { class: "actions" }, up, down, suggest, regenerate, version, status), form];
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
  conversation.title ||= text.slice(0, 60);
  conversation.model = byId("model").value;
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

async function answer(conversation) {
  state.busy = true;
  byId("send").disabled = true;
  byId("chat-error").textContent = "";
  const history = conversation.turns.map(({ role, content }) => ({ role, content }));
  const turn = { role: "assistant", content: "", streaming: true, citations: [] };
  conversation.turns.push(turn);
  const index = conversation.turns.length - 1;
  const item = drawTurn(turn, index);
  item.setAttribute("aria-busy", "true");
  byId("messages").append(item);
  try {
    await stream(conversation, history, turn, item);
  } catch (error) {
    turn.error = error.message;
  } finally {
    turn.streaming = false;
    item.removeAttribute("aria-busy");
    fillAnswer(item, turn, index);
    save();
    state.busy = false;
    byId("send").disabled = false;
  }
}

/** The settings the user changed; the rest are left to the gateway's and vLLM's defaults. */
function sampling() {
  const chosen = {};
  const temperature = byId("temperature").value.trim();
  const maxTokens = byId("max-tokens").value.trim();
  if (temperature) chosen.temperature = Number(temperature);
  if (maxTokens) chosen.max_tokens = Number(maxTokens);
  return chosen;
}

async function stream(conversation, history, turn, item) {
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
  });
  if (!response.ok) throw await errorOf(response);
  turn.version = response.headers.get("x-loragate-version");
  let chunks = 0;
  let drawn = false;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    turn.completion_id ||= chunk.id;
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
          fillAnswer(item, turn, conversation.turns.length - 1);
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
byId("new-conversation").addEventListener("click", () => open(newConversation()));
byId("model").addEventListener("change", () => {
  state.conversations[state.current].model = byId("model").value;
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
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});

if (state.key) signIn(state.key).catch(signOut);

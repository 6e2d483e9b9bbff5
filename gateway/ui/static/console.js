// The operator console: review queue, adapters, rollouts, experiments, collections and a
// quality chart.
// Every view is drawn from the admin API; nothing here is cached beyond the current view.
import { api, byId, el, fill, formatTime, parseTime, percent } from "./common.js";

const KEY_SLOT = "loragate.console.key";
// gateway/flagging.py REASONS (tests/unit/test_ui.py keeps the two lists equal).
const REASONS = ["negative_feedback", "correction", "operator_flag", "low_groundedness", "idk_with_sources", "retry"];
const PALETTE = ["#1f5fbf", "#c2410c", "#1e7b34", "#7c3aed", "#b3261e", "#0e7490"];
const REFRESH_MS = 2000; // the rollout and experiment tabs follow their controllers this often

let key = sessionStorage.getItem(KEY_SLOT) || "";
let refreshTimer = null;

const call = (path, options) => api(key, path, options);

/** The resource at `path`, or null when there is none (404). */
async function callOrNull(path) {
  try {
    return await call(path);
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

function showError(error) {
  byId("console-error").textContent = error ? error.message : "";
}

/** Run an action, showing its error in the console's alert line instead of throwing. */
function guarded(action) {
  return async (...args) => {
    showError(null);
    try {
      await action(...args);
    } catch (error) {
      showError(error);
    }
  };
}

function confirmed(text) {
  const dialog = byId("confirm");
  byId("confirm-text").textContent = text;
  dialog.showModal();
  byId("confirm-ok").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

function options(select, values, { keep = true, blank } = {}) {
  const previous = select.value;
  const choices = values.map((value) => el("option", { value }, value));
  if (blank !== undefined) choices.unshift(el("option", { value: "" }, blank));
  select.replaceChildren(...choices);
  if (keep && values.includes(previous)) select.value = previous;
}

// -- sign in and tabs -------------------------------------------------------------------------

async function signIn(candidate) {
  key = candidate;
  const aliases = await call("/v1/admin/aliases"); // a chat key gets a 403 here
  sessionStorage.setItem(KEY_SLOT, key);
  const names = aliases.data.map((alias) => alias.alias);
  options(byId("review-alias"), names, { blank: "any" });
  options(byId("rollout-alias"), names);
  options(byId("experiment-alias"), names);
  options(byId("quality-alias"), names);
  options(byId("review-reason"), REASONS, { blank: "any" });
  byId("sign-in").hidden = true;
  byId("console").hidden = false;
  byId("sign-out").hidden = false;
  await selectTab("review");
}

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  key = "";
  clearInterval(refreshTimer);
  byId("console").hidden = true;
  byId("sign-out").hidden = true;
  byId("sign-in").hidden = false;
  byId("admin-key").value = "";
  byId("admin-key").focus();
}

const LOADERS = {
  review: () => loadReview(),
  adapters: () => loadAdapters(),
  rollouts: () => loadRollout(),
  experiments: () => loadExperiment(),
  collections: () => loadCollections(),
  quality: () => loadQuality(),
};

async function selectTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    byId(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  clearInterval(refreshTimer);
  const follow = { rollouts: loadRollout, experiments: loadExperiment }[name];
  if (follow) refreshTimer = setInterval(guarded(follow), REFRESH_MS);
  await guarded(LOADERS[name])();
}

function tabKeys(event) {
  // Arrow keys move between tabs, as the ARIA tabs pattern has it.
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const at = tabs.indexOf(document.activeElement);
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (at < 0 || !step) return;
  const next = tabs[(at + step + tabs.length) % tabs.length];
  next.focus();
  selectTab(next.id.replace("tab-", ""));
}

// -- review queue -----------------------------------------------------------------------------

async function loadReview() {
  const params = new URLSearchParams({ state: byId("review-state").value, limit: "200", conversations: "true" });
  if (byId("review-alias").value) params.set("alias", byId("review-alias").value);
  if (byId("review-reason").value) params.set("reason", byId("review-reason").value);
  const page = await call(`/v1/admin/review?${params}`);
  byId("review-rows").replaceChildren(...page.data.map(reviewRow));
  byId("review-caption").textContent = `${page.data.length} of ${page.total} items`;
  byId("review-select-all").checked = false;
}

function messageText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && part.type === "text" ? part.text : JSON.stringify(part))).join("\n");
  }
  return content == null ? "" : JSON.stringify(content);
}

/**
 * The whole conversation as it will become training data: every message as served (the
 * system message, grounding sources included, and the earlier turns), then the answer. A
 * reviewer who saw only the last question could approve a poisoned system prompt or turn.
 */
function conversationView(item) {
  const turns = (item.messages || []).map((message) =>
    el(
      "div",
      { class: `turn turn-${message.role}` },
      el("strong", {}, `${message.role}${message.name ? ` (${message.name})` : ""}: `),
      messageText(message.content),
      message.tool_calls ? el("pre", {}, JSON.stringify(message.tool_calls, null, 2)) : null,
    ),
  );
  return [...turns, el("div", { class: "turn turn-answer" }, el("strong", {}, "answer: "), item.answer || "")];
}

function reviewRow(item) {
  const pending = item.state === "pending";
  const correction = el("textarea", { id: `correction-${item.id}`, rows: 3, disabled: !pending, "data-original": item.correction || "" });
  correction.value = item.correction || "";
  const decide = (decision) => guarded(async () => {
    await decideItem(item.id, decision);
    await loadReview();
  });
  return el(
    "tr",
    { id: `review-item-${item.id}`, "data-item-id": item.id, "data-completion-id": item.completion_id, "data-revision": item.revision },
    el("td", {}, el("input", { type: "checkbox", class: "select-item", value: item.id, id: `select-${item.id}`, "aria-label": `Select item ${item.id}`, disabled: !pending })),
    el("td", {}, `#${item.id} `, el("span", { class: "muted" }, item.alias), el("br"), el("span", { class: "muted" }, item.state)),
    el("td", {}, item.reasons.join(", ")),
    el("td", { class: "answer" }, ...conversationView(item)),
    el("td", {}, el("label", { for: `correction-${item.id}`, class: "muted" }, `Correction for item ${item.id}`), correction),
    el(
      "td",
      {},
      pending ? el("button", { type: "button", onclick: decide("approve") }, "Approve") : item.state,
      " ",
      pending ? el("button", { type: "button", class: "danger", onclick: decide("reject") }, "Reject") : null,
    ),
  );
}

/**
 * Decide on the item as this page shows it: the revision it was drawn from goes with every
 * decision, so a correction a user posted since (which replaces the stored one) is refused
 * (409) instead of approved unseen. An edited box is sent as it reads; emptied, it approves
 * the answer as served.
 */
async function decideItem(id, decision) {
  const correctionBox = byId(`correction-${id}`);
  const body = { decision, revision: byId(`review-item-${id}`).dataset.revision };
  if (correctionBox.value !== correctionBox.dataset.original) {
    body.correction = correctionBox.value.trim() ? correctionBox.value : "";
  }
  try {
    await call(`/v1/admin/review/${id}/decision`, { method: "POST", body });
  } catch (error) {
    if (error.code === "review_item_changed") {
      error.message = `Item ${id} changed since it was shown; nothing was decided. The list is reloaded: read it again.`;
      await loadReview();
    }
    throw error;
  }
}

async function decideSelected(decision) {
  const ids = [...document.querySelectorAll(".select-item:checked")].map((box) => box.value);
  if (!ids.length) return;
  if (!(await confirmed(`${decision === "approve" ? "Approve" : "Reject"} ${ids.length} item(s)?`))) return;
  let done = 0;
  for (const id of ids) {
    await decideItem(id, decision);
    done += 1;
    byId("review-status").textContent = `${done} of ${ids.length} ${decision === "approve" ? "approved" : "rejected"}`;
  }
  await loadReview();
}

// -- adapters ---------------------------------------------------------------------------------

async function loadAdapters() {
  const [aliases, versions] = await Promise.all([call("/v1/admin/aliases"), call("/v1/admin/adapters")]);
  const share = {};
  for (const alias of aliases.data) {
    const canaryWeight = alias.canary ? alias.canary_weight : 0; // a fraction, 0..1
    if (alias.live) share[alias.live] = 1 - canaryWeight;
    if (alias.canary) share[alias.canary] = canaryWeight;
  }
  byId("alias-rows").replaceChildren(
    ...aliases.data.map((alias) =>
      el("tr", {}, el("td", {}, alias.alias), el("td", {}, alias.live || "base model"), el("td", {}, alias.canary || "–"), el("td", {}, alias.canary ? percent(alias.canary_weight) : "–")),
    ),
  );
  byId("version-rows").replaceChildren(
    ...versions.data.map((version) =>
      el(
        "tr",
        { "data-version": version.name },
        el("td", {}, version.name),
        el("td", {}, version.alias),
        el("td", {}, version.state),
        el("td", {}, percent(share[version.name] ?? 0)),
        el("td", {}, evalSummary(version.eval_report)),
        el("td", {}, formatTime(version.created_at)),
      ),
    ),
  );
}

function evalSummary(report) {
  if (!report || !Object.keys(report).length) return "–";
  return el("details", {}, el("summary", {}, "report"), el("pre", { text: JSON.stringify(report, null, 2) }));
}

// -- rollouts ---------------------------------------------------------------------------------

async function loadRollout() {
  const alias = byId("rollout-alias").value;
  if (!alias) return;
  const versions = await call(`/v1/admin/adapters?alias=${encodeURIComponent(alias)}`);
  const candidates = versions.data.filter((v) => v.state === "candidate").map((v) => v.name);
  options(byId("rollout-version"), candidates);
  byId("rollout-start").querySelector("button").disabled = !candidates.length;
  drawRollout(await callOrNull(`/v1/admin/rollouts/${encodeURIComponent(alias)}`));
}

function drawRollout(rollout) {
  const card = byId("rollout-card");
  if (!rollout) {
    card.replaceChildren(el("p", { class: "muted" }, "No rollout yet for this alias."));
    byId("rollout-history").replaceChildren();
    for (const button of byId("rollout-actions").querySelectorAll("button")) button.disabled = true;
    return;
  }
  card.dataset.state = rollout.state;
  fill(
    card,
    el("p", {}, el("strong", {}, rollout.candidate), ` over ${rollout.baseline || "the base model"}: `, el("span", { id: "rollout-state" }, rollout.state)),
    el("p", {}, `Step ${rollout.step + 1} of ${rollout.steps.length} (${rollout.steps.join(" → ")}%), canary weight `, el("span", { id: "rollout-weight" }, percent(rollout.weight)), `, gate failures ${rollout.failures}`),
    rollout.reason ? el("p", { class: "muted" }, `Reason: ${rollout.reason}`) : null,
    el("p", { class: "muted" }, `Started ${formatTime(rollout.started_at)}`),
  );
  const running = rollout.state === "running" || rollout.state === "paused";
  for (const button of byId("rollout-actions").querySelectorAll("button")) {
    const action = button.dataset.action;
    button.disabled = !running || (action === "pause" && rollout.state === "paused") || (action === "resume" && rollout.state !== "paused");
  }
  byId("rollout-history").replaceChildren(
    ...(rollout.history || [])
      .slice()
      .reverse()
      .map((event) => el("tr", {}, el("td", {}, formatTime(event.at)), el("td", {}, event.kind), el("td", {}, gateDetail(event.detail)))),
  );
}

function gateDetail(detail) {
  return Object.entries(detail || {})
    .map(([name, value]) => `${name}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join("; ");
}

async function rolloutAction(action) {
  const alias = byId("rollout-alias").value;
  const words = { promote: "Promote the canary of", rollback: "Roll back the canary of", pause: "Pause the rollout of", resume: "Resume the rollout of" };
  if (!(await confirmed(`${words[action]} ${alias}?`))) return;
  drawRollout(await call(`/v1/admin/rollouts/${encodeURIComponent(alias)}/${action}`, { method: "POST" }));
}

async function startRollout(event) {
  event.preventDefault();
  const alias = byId("rollout-alias").value;
  const version = byId("rollout-version").value;
  const steps = byId("rollout-steps").value.trim();
  if (!(await confirmed(`Start a canary rollout of ${version} on ${alias}?`))) return;
  const body = { alias, version };
  if (steps) body.steps = steps.split(/[\s,]+/).map(Number);
  drawRollout(await call("/v1/admin/rollouts", { method: "POST", body }));
  await loadRollout();
}

// -- experiments ------------------------------------------------------------------------------

async function loadExperiment() {
  const alias = byId("experiment-alias").value;
  if (!alias) return;
  drawExperiment(await callOrNull(`/v1/admin/experiments/${encodeURIComponent(alias)}`));
}

function drawExperiment(experiment) {
  const card = byId("experiment-card");
  const [promote, stop] = ["promote", "stop"].map((action) => byId("experiment-actions").querySelector(`[data-action="${action}"]`));
  byId("experiment-start").querySelector("button").disabled = experiment?.state === "running";
  if (!experiment) {
    card.replaceChildren(el("p", { class: "muted" }, "No experiment yet for this alias."));
    byId("experiment-arms-rows").replaceChildren();
    promote.disabled = stop.disabled = true;
    return;
  }
  card.dataset.state = experiment.state;
  const results = experiment.results || {};
  fill(
    card,
    el("p", {}, `Experiment ${experiment.id}: `, el("span", { id: "experiment-state" }, experiment.state), experiment.winner ? ` · winner ` : "", experiment.winner ? el("strong", { id: "experiment-winner" }, experiment.winner) : ""),
    experiment.reason ? el("p", { class: "muted" }, `Reason: ${experiment.reason}`) : null,
    el("p", { class: "muted" }, `Started ${formatTime(experiment.started_at)}; ends by ${formatTime(experiment.finished_at || experiment.ends_at)} or at ${experiment.max_samples} rated answers per arm. Family-wise error ${results.alpha ?? "?"}, at least ${results.min_samples ?? "?"} rated per arm.`),
  );
  promote.disabled = experiment.state !== "decided";
  stop.disabled = experiment.state !== "running";
  const arms = results.arms || {};
  const comparisons = results.comparisons || {};
  byId("experiment-arms-rows").replaceChildren(
    ...experiment.arms.map((arm) => {
      const counts = arms[arm.name] || {};
      return el("tr", { "data-arm": arm.name }, el("td", {}, arm.name), el("td", {}, arm.version || "base"), el("td", {}, counts.served ?? 0), el("td", {}, counts.rated ?? 0), el("td", {}, counts.rate == null ? "–" : percent(counts.rate)), el("td", {}, interval(counts.interval)), el("td", {}, comparison(comparisons[arm.name])));
    }),
  );
}

function interval(bounds) {
  return bounds ? `${percent(bounds[0])} – ${percent(bounds[1])}` : "–";
}

function comparison(result) {
  if (!result) return "control";
  if (result.difference === null || result.difference === undefined) return "no ratings yet";
  const verdict = result.significant ? "significant" : result.enough_samples ? "not yet significant" : "too few samples";
  return `${result.difference >= 0 ? "+" : ""}${percent(result.difference)} (${interval(result.interval)}), p ${result.p_value.toFixed(3)}, ${verdict}`;
}

async function experimentAction(action) {
  const alias = byId("experiment-alias").value;
  const words = { promote: "Make the winner the live version of", stop: "Stop the experiment on" };
  if (!(await confirmed(`${words[action]} ${alias}?`))) return;
  await call(`/v1/admin/experiments/${encodeURIComponent(alias)}/${action}`, { method: "POST" });
  await loadExperiment();
}

async function startExperiment(event) {
  event.preventDefault();
  const alias = byId("experiment-alias").value;
  const arms = byId("experiment-arms").value.split(",").map((arm) => arm.trim()).filter(Boolean);
  const maxSamples = byId("experiment-max-samples").value;
  if (!(await confirmed(`Split ${alias}'s traffic evenly across ${arms.join(", ")}?`))) return;
  const body = { alias, arms, auto_promote: byId("experiment-auto-promote").checked };
  if (maxSamples) body.max_samples = Number(maxSamples);
  drawExperiment(await call("/v1/admin/experiments", { method: "POST", body }));
}

// -- collections ------------------------------------------------------------------------------

async function loadCollections() {
  const collections = await call("/v1/collections");
  byId("collection-rows").replaceChildren(
    ...collections.data.map((c) =>
      el("tr", { "data-collection": c.name }, el("td", {}, c.name), el("td", {}, c.documents), el("td", {}, c.chunks), el("td", {}, c.vectors_loaded ?? "not loaded"), el("td", {}, formatTime(c.updated_at))),
    ),
  );
  options(byId("search-collection"), collections.data.map((c) => c.name));
}

async function search(event) {
  event.preventDefault();
  const name = byId("search-collection").value;
  const params = new URLSearchParams({ q: byId("search-query").value, k: "5" });
  const hits = await call(`/v1/collections/${encodeURIComponent(name)}/search?${params}`);
  byId("search-results").replaceChildren(
    ...hits.data.map((hit) =>
      el("li", { class: "hit" }, el("strong", {}, `${hit.source || hit.document_id}${hit.section ? ` › ${hit.section}` : ""}`), el("span", { class: "muted" }, ` score ${hit.score}`), el("p", { text: hit.text })),
    ),
  );
}

async function addDocument(event) {
  event.preventDefault();
  const collection = byId("document-collection").value.trim();
  const body = { id: byId("document-id").value.trim(), markdown: byId("document-text").value, source: byId("document-source").value.trim() };
  const result = await call(`/v1/collections/${encodeURIComponent(collection)}/documents`, { method: "POST", body });
  byId("document-status").textContent = `${result.id}: ${result.status}, ${result.chunks} chunks`;
  await loadCollections();
}

// -- quality chart ----------------------------------------------------------------------------

async function loadQuality(event) {
  if (event) event.preventDefault();
  const alias = byId("quality-alias").value;
  if (!alias) return;
  const hours = Number(byId("quality-hours").value);
  const bucketMinutes = hours <= 1 ? 5 : hours <= 24 ? 60 : 360;
  const params = new URLSearchParams({ hours: String(hours), bucket_minutes: String(bucketMinutes) });
  const timeline = await call(`/v1/admin/monitor/${encodeURIComponent(alias)}/timeline?${params}`);
  const versions = [...new Set(timeline.buckets.flatMap((bucket) => Object.keys(bucket.versions)))];
  byId("quality-charts").replaceChildren(
    chart("Positive-feedback ratio", "positive_ratio", timeline.buckets, versions),
    chart("Groundedness", "groundedness", timeline.buckets, versions),
  );
}

/** An SVG line per version, plus the same numbers as a table for screen readers. */
function chart(title, metric, buckets, versions) {
  const width = 640;
  const height = 200;
  const pad = 32;
  const times = buckets.map((bucket) => parseTime(bucket.start).getTime());
  const [first, last] = [Math.min(...times), Math.max(...times)];
  const x = (t) => pad + (last === first ? (width - 2 * pad) / 2 : ((t - first) / (last - first)) * (width - 2 * pad));
  const y = (v) => height - pad - v * (height - 2 * pad);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `${title} by version over time` });
  for (const tick of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: pad, x2: width - pad, y1: y(tick), y2: y(tick), stroke: "#d7dde3" }));
    svg.append(el("svg:text", { x: 2, y: y(tick) + 4, "font-size": 11, fill: "#5b6672" }, percent(tick)));
  }
  versions.forEach((version, n) => {
    const points = buckets
      .map((bucket, i) => [times[i], bucket.versions[version]?.[metric]])
      .filter(([, value]) => value !== null && value !== undefined);
    const color = PALETTE[n % PALETTE.length];
    if (points.length) {
      svg.append(el("svg:polyline", { points: points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      for (const [t, v] of points) svg.append(el("svg:circle", { cx: x(t), cy: y(v), r: 3, fill: color }));
    }
  });
  const legend = el("div", { class: "legend" }, versions.map((version, n) => el("span", {}, swatch(PALETTE[n % PALETTE.length]), version)));
  const rows = buckets.flatMap((bucket) =>
    versions
      .filter((version) => bucket.versions[version])
      .map((version) => el("tr", {}, el("td", {}, formatTime(bucket.start)), el("td", {}, version), el("td", {}, percent(bucket.versions[version][metric])), el("td", {}, bucket.versions[version].requests))),
  );
  const table = el(
    "details",
    {},
    el("summary", {}, `${title}: the numbers`),
    el("table", { "data-metric": metric }, el("thead", {}, el("tr", {}, ["From", "Version", title, "Requests"].map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, rows)),
  );
  const empty = buckets.length ? null : el("p", { class: "muted" }, "No traffic in this period.");
  return el("figure", { class: "card" }, el("figcaption", {}, el("strong", {}, title)), empty, svg, legend, table);
}

function swatch(color) {
  const mark = el("span", { class: "swatch" });
  mark.style.background = color; // CSSOM, which the page's CSP allows (style attributes it would not)
  return mark;
}

// -- wiring -----------------------------------------------------------------------------------

byId("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  byId("sign-in-error").textContent = "";
  try {
    await signIn(byId("admin-key").value.trim());
  } catch (error) {
    key = "";
    byId("sign-in-error").textContent = `Sign-in failed: ${error.message}`;
  }
});
byId("sign-out").addEventListener("click", signOut);
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => selectTab(tab.id.replace("tab-", "")));
  tab.addEventListener("keydown", tabKeys);
}
byId("review-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(loadReview)();
});
byId("review-select-all").addEventListener("change", (event) => {
  for (const box of document.querySelectorAll(".select-item:not(:disabled)")) box.checked = event.target.checked;
});
byId("review-approve-selected").addEventListener("click", guarded(() => decideSelected("approve")));
byId("review-reject-selected").addEventListener("click", guarded(() => decideSelected("reject")));
byId("rollout-alias").addEventListener("change", guarded(loadRollout));
byId("rollout-start").addEventListener("submit", guarded(startRollout));
for (const button of byId("rollout-actions").querySelectorAll("button")) {
  button.addEventListener("click", guarded(() => rolloutAction(button.dataset.action)));
}
byId("experiment-alias").addEventListener("change", guarded(loadExperiment));
byId("experiment-start").addEventListener("submit", guarded(startExperiment));
for (const button of byId("experiment-actions").querySelectorAll("button")) {
  button.addEventListener("click", guarded(() => experimentAction(button.dataset.action)));
}
byId("search-form").addEventListener("submit", guarded(search));
byId("document-form").addEventListener("submit", guarded(addDocument));
byId("quality-form").addEventListener("submit", guarded(loadQuality));

if (key) signIn(key).catch(signOut);

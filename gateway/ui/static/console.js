// The operator console: review queue, adapters, rollouts, experiments, collections and a
// quality chart.
// Every view is drawn from the admin API; nothing here is cached beyond the current view.
import { api, byId, el, fill, formatNumber, formatTime, parseTime, percent } from "./common.js";

const KEY_SLOT = "loragate.console.key";
// gateway/flagging.py REASONS (tests/unit/test_ui.py keeps the two lists equal).
const REASONS = ["negative_feedback", "correction", "operator_flag", "low_groundedness", "idk_with_sources", "retry"];
const PALETTE = ["#1f5fbf", "#c2410c", "#1e7b34", "#7c3aed", "#b3261e", "#0e7490"];
const REFRESH_MS = 2000; // the rollout and experiment tabs follow their controllers this often

let key = sessionStorage.getItem(KEY_SLOT) || "";
let refreshTimer = null;
const reviewPage = { offset: 0, total: 0 };
const logPage = { offset: 0, total: 0, size: 25 };

const call = (path, options) => api(key, path, options);

/** The first item of a list view, or null when it is empty (a quiet alias: no 404). */
async function firstOf(path) {
  return (await call(path)).data[0] ?? null;
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
  options(byId("training-alias"), names, { blank: "any" });
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
  conversations: () => loadLog(),
  keys: () => loadKeys(),
  training: () => loadTraining(),
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
  const size = Number(byId("review-page-size").value);
  const params = new URLSearchParams({ state: byId("review-state").value, limit: String(size), offset: String(reviewPage.offset), conversations: "true" });
  if (byId("review-alias").value) params.set("alias", byId("review-alias").value);
  if (byId("review-reason").value) params.set("reason", byId("review-reason").value);
  const page = await call(`/v1/admin/review?${params}`);
  if (!page.data.length && reviewPage.offset > 0 && page.total > 0) {
    reviewPage.offset = Math.max(0, Math.floor((page.total - 1) / size) * size); // past the end: the last page
    return loadReview();
  }
  reviewPage.total = page.total;
  byId("review-rows").replaceChildren(...page.data.map(reviewRow));
  const range = pageRange(reviewPage.offset, page.data.length, page.total);
  byId("review-caption").textContent = page.total ? `Items ${range}` : "Nothing to review with these filters.";
  byId("review-page").textContent = page.total ? `Page ${Math.floor(reviewPage.offset / size) + 1} of ${Math.ceil(page.total / size)}` : "";
  byId("review-previous").disabled = reviewPage.offset === 0;
  byId("review-next").disabled = reviewPage.offset + page.data.length >= page.total;
  byId("review-select-all").checked = false;
}

function pageRange(offset, shown, total) {
  return shown ? `${offset + 1}–${offset + shown} of ${total}` : `0 of ${total}`;
}

function turnPage(pager, load, size, step) {
  return guarded(async () => {
    pager.offset = Math.max(0, pager.offset + step * size());
    await load();
  });
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
    el(
      "td",
      {},
      `#${item.id} `,
      el("span", { class: "muted" }, item.alias),
      el("br"),
      el("span", { class: "muted" }, item.state),
      el("br"),
      el("time", { class: "muted", datetime: item.created_at }, formatTime(item.created_at)),
      el("br"),
      el("a", { href: `#log:${item.completion_id}`, class: "log-link", onclick: (event) => { event.preventDefault(); openInLog(item.completion_id); } }, "In the conversation log"),
    ),
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
  // Candidates, and versions rolled back before: an operator who fixed the cause may retry.
  const eligible = versions.data.filter((v) => v.state === "candidate" || v.state === "rolled_back");
  const picker = byId("rollout-version");
  const previous = picker.value;
  picker.replaceChildren(
    ...eligible.map((v) => el("option", { value: v.name, "data-state": v.state }, v.state === "rolled_back" ? `${v.name} (rolled back: roll out again)` : v.name)),
  );
  if (eligible.some((v) => v.name === previous)) picker.value = previous;
  byId("rollout-start").querySelector("button").disabled = !eligible.length;
  drawRollout(await firstOf(`/v1/admin/rollouts?alias=${encodeURIComponent(alias)}`));
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
    el("p", { id: "rollout-progress" }, ...rolloutProgress(rollout)),
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

/** Where the rollout stands, in words that fit its state: a finished rollout has no step. */
function rolloutProgress(rollout) {
  const weight = el("span", { id: "rollout-weight" }, percent(rollout.weight));
  const steps = `${rollout.steps.join(" → ")}%`;
  const failures = rollout.failures ? `; gate failures ${rollout.failures}` : "";
  switch (rollout.state) {
    case "running":
      return [`Step ${rollout.step + 1} of ${rollout.steps.length} (${steps}): the canary takes `, weight, ` of the traffic${failures}.`];
    case "paused":
      return [`Paused at step ${rollout.step + 1} of ${rollout.steps.length} (${steps}): the canary keeps `, weight, ` of the traffic${failures}.`];
    case "promoted":
      return [`Promoted: ${rollout.candidate} is live and takes all the traffic.`];
    case "rolled_back":
      return [`Rolled back at step ${rollout.step + 1} of ${rollout.steps.length}: ${rollout.baseline || "the base model"} takes all the traffic again${failures}.`];
    default:
      return [`Ended (${rollout.state}) at step ${rollout.step + 1} of ${rollout.steps.length}${failures}.`];
  }
}

function gateDetail(detail) {
  return Object.entries(detail || {})
    .map(([name, value]) => `${name}: ${typeof value === "object" && value !== null ? JSON.stringify(value, (_, v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(3)) : v)) : typeof value === "number" ? formatNumber(value) : value}`)
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
  const again = byId("rollout-version").selectedOptions[0]?.dataset.state === "rolled_back";
  const question = again
    ? `${version} was rolled back. Roll it out again on ${alias}, from the first step?`
    : `Start a canary rollout of ${version} on ${alias}?`;
  if (!(await confirmed(question))) return;
  const body = { alias, version };
  if (again) body.again = true;
  if (steps) body.steps = steps.split(/[\s,]+/).map(Number);
  drawRollout(await call("/v1/admin/rollouts", { method: "POST", body }));
  await loadRollout();
}

// -- experiments ------------------------------------------------------------------------------

async function loadExperiment() {
  const alias = byId("experiment-alias").value;
  if (!alias) return;
  drawExperiment(await firstOf(`/v1/admin/experiments?alias=${encodeURIComponent(alias)}`));
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
    el("p", { class: "muted" }, `Started ${formatTime(experiment.started_at)}; ends by ${formatTime(experiment.finished_at || experiment.ends_at)} or at ${experiment.max_samples} rated answers per arm. Family-wise error ${formatNumber(results.alpha) || "?"}, at least ${results.min_samples ?? "?"} rated per arm.`),
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
  return `${result.difference >= 0 ? "+" : ""}${percent(result.difference)} (${interval(result.interval)}), p ${formatNumber(result.p_value)}, ${verdict}`;
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

// "ivfsq · 192 B codes · re-rank ×4": the index kind and what sets its size and recall.
function indexSummary(index) {
  if (!index) return "not built here";
  const parts = [index.kind];
  if (index.nlist) parts.push(`nlist ${index.nlist}, nprobe ${index.nprobe}`);
  if (index.code_bytes) parts.push(`${index.code_bytes} B codes, re-rank ×${index.rerank_factor}`);
  return parts.join(" · ");
}

async function loadCollections() {
  const collections = await call("/v1/collections");
  byId("collection-rows").replaceChildren(
    ...collections.data.map((c) =>
      el("tr", { "data-collection": c.name }, el("td", {}, c.name), el("td", {}, c.documents), el("td", {}, c.chunks), el("td", {}, c.vectors_loaded ?? "not loaded"), el("td", {}, indexSummary(c.index)), el("td", {}, formatTime(c.updated_at))),
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
      el("li", { class: "hit" }, el("strong", {}, `${hit.source || hit.document_id}${hit.section ? ` › ${hit.section}` : ""}`), el("span", { class: "muted" }, ` score ${formatNumber(hit.score)}`), el("p", { text: hit.text })),
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
  const to = Date.now();
  const period = { from: to - hours * 3600_000, to, hours };
  byId("quality-charts").replaceChildren(
    chart("Positive-feedback ratio", "positive_ratio", timeline.buckets, versions, period, "No rated answers in this period: the ratio needs thumbs up or down."),
    chart("Groundedness", "groundedness", timeline.buckets, versions, period, "No grounded answers in this period."),
  );
  const history = await call(`/v1/admin/monitor/${encodeURIComponent(alias)}?limit=1`);
  drawMonitorReport(history.reports[0]);
}

/** The monitor's latest report: KPIs per version, drift against the reference, triggers. */
function drawMonitorReport(report) {
  const card = byId("monitor-report");
  if (!report) {
    fill(card, el("h2", {}, "Monitor report"), el("p", { class: "muted" }, "No monitor report yet for this alias (the monitor writes one every monitor interval)."));
    return;
  }
  const kpis = [["requests", "Requests", formatNumber], ["errors", "Errors", formatNumber], ["feedback", "Rated", formatNumber], ["positive_ratio", "Thumbs-up rate", percent], ["groundedness", "Groundedness", percent], ["idk_rate", "\"I don't know\" rate", percent]];
  const versions = Object.entries(report.quality || {});
  const drift = report.drift
    ? Object.entries(report.drift).map(([name, value]) => `${name.replaceAll("_", " ")}: ${typeof value === "number" ? formatNumber(value) : JSON.stringify(value)}`).join("; ")
    : "not measured (too few questions yet)";
  fill(
    card,
    el("h2", {}, "Monitor report"),
    el("p", { class: "muted" }, `${formatTime(report.computed_at)} · live version ${report.live_version || "base model"}`),
    versions.length
      ? el("table", { id: "monitor-kpis" }, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Version"), kpis.map(([, label]) => el("th", { scope: "col" }, label)))), el("tbody", {}, versions.map(([version, q]) => el("tr", { "data-version": version }, el("th", { scope: "row" }, version), kpis.map(([name, , format]) => el("td", {}, q[name] === null || q[name] === undefined ? "–" : format(q[name])))))))
      : el("p", { class: "muted" }, "No traffic in the report's window."),
    el("p", { id: "monitor-drift" }, el("strong", {}, report.drift_detected ? "Drift detected: " : "Drift: "), drift),
    el("p", { id: "monitor-triggers" }, el("strong", {}, "Triggers: "), report.triggers && report.triggers.length ? report.triggers.join(", ") : "none"),
    report.note ? el("p", { class: "muted" }, report.note) : null,
  );
}

/** Labels for the time axis: five, in the reader's zone; hours for a day, dates beyond. */
function timeTicks(period) {
  const format = period.hours <= 24
    ? { hour: "2-digit", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "2-digit" };
  return [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const t = period.from + f * (period.to - period.from);
    return [t, new Date(t).toLocaleString(undefined, format)];
  });
}

/** An SVG line per version over the period's time axis, plus the same numbers as a table for
 * screen readers; a period with nothing to draw says so instead of showing an empty frame. */
function chart(title, metric, buckets, versions, period, emptyText) {
  const width = 640;
  const height = 220;
  const [left, right, top, bottom] = [40, 16, 12, 36];
  const x = (t) => left + ((t - period.from) / (period.to - period.from)) * (width - left - right);
  const y = (v) => top + (1 - v) * (height - top - bottom);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `${title} by version over time` });
  for (const tick of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), stroke: "#d7dde3" }));
    svg.append(el("svg:text", { x: 4, y: y(tick) + 4, "font-size": 11, fill: "#5b6672" }, percent(tick)));
  }
  const axis = el("svg:g", { class: "time-axis" });
  for (const [t, label] of timeTicks(period)) {
    axis.append(el("svg:line", { x1: x(t), x2: x(t), y1: height - bottom, y2: height - bottom + 4, stroke: "#5b6672" }));
    axis.append(el("svg:text", { x: x(t), y: height - bottom + 16, "font-size": 11, fill: "#5b6672", "text-anchor": "middle" }, label));
  }
  svg.append(el("svg:line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, stroke: "#5b6672" }), axis);
  let drawn = 0;
  versions.forEach((version, n) => {
    const points = buckets
      .map((bucket) => [parseTime(bucket.start).getTime(), bucket.versions[version]?.[metric]])
      .filter(([, value]) => value !== null && value !== undefined);
    const color = PALETTE[n % PALETTE.length];
    drawn += points.length;
    if (points.length) {
      svg.append(el("svg:polyline", { points: points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      for (const [t, v] of points) svg.append(el("svg:circle", { cx: x(t), cy: y(v), r: 3, fill: color }));
    }
  });
  const empty = drawn ? null : el("p", { class: "muted empty" }, buckets.length ? emptyText : "No traffic in this period.");
  if (!drawn) {
    svg.append(el("svg:text", { x: width / 2, y: height / 2, "text-anchor": "middle", "font-size": 14, fill: "#5b6672" }, "No data"));
  }
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
  return el("figure", { class: "card" }, el("figcaption", {}, el("strong", {}, title)), empty, svg, legend, table);
}

// -- conversation log -------------------------------------------------------------------------

async function loadLog() {
  const params = new URLSearchParams({ limit: String(logPage.size), offset: String(logPage.offset) });
  for (const [name, id] of [["q", "log-query"], ["model", "log-model"], ["status", "log-status"]]) {
    const value = byId(id).value.trim();
    if (value) params.set(name, value);
  }
  const page = await call(`/v1/admin/conversations?${params}`);
  logPage.total = page.total;
  byId("log-rows").replaceChildren(...page.data.map(logRow));
  byId("log-caption").textContent = page.total ? `Answers ${pageRange(logPage.offset, page.data.length, page.total)}, newest first` : "No answer matches.";
  byId("log-page").textContent = page.total ? `Page ${Math.floor(logPage.offset / logPage.size) + 1} of ${Math.ceil(page.total / logPage.size)}` : "";
  byId("log-previous").disabled = logPage.offset === 0;
  byId("log-next").disabled = logPage.offset + page.data.length >= page.total;
}

function logRow(row) {
  return el(
    "tr",
    { "data-completion-id": row.id },
    el("td", {}, el("time", { datetime: row.created_at }, formatTime(row.created_at))),
    el("td", {}, row.requested_model, row.served_model !== row.requested_model ? el("span", { class: "muted" }, ` → ${row.served_model}`) : null),
    el("td", { class: "muted" }, row.api_key_id || "–"),
    el(
      "td",
      { class: "answer" },
      el("div", { class: "turn" }, el("strong", {}, "user: "), row.question),
      el("div", { class: "turn turn-answer" }, el("strong", {}, "answer: "), row.answer),
      el("div", { class: "muted" }, `${row.id}${row.conversation_id ? ` · conversation ${row.conversation_id}` : ""}`),
    ),
    el("td", {}, `${formatNumber(row.prompt_tokens)} + ${formatNumber(row.completion_tokens)}`),
    el("td", {}, `${formatNumber(row.latency_ms / 1000)} s`),
    el("td", {}, row.status, row.error ? el("div", { class: "error" }, row.error) : null),
  );
}

/** The review item's answer in the conversation log: its tab, searched by completion id. */
async function openInLog(completionId) {
  byId("log-query").value = completionId;
  byId("log-model").value = "";
  byId("log-status").value = "";
  logPage.offset = 0;
  byId("tab-conversations").focus();
  await selectTab("conversations");
}

// -- keys and quotas --------------------------------------------------------------------------

async function loadKeys() {
  const keys = (await call("/v1/admin/keys")).data;
  const cards = await Promise.all(keys.map((k) => call(`/v1/admin/keys/${encodeURIComponent(k.id)}/quota`)));
  byId("key-rows").replaceChildren(
    ...keys.map((k, n) => {
      const { effective, usage } = cards[n];
      return el(
        "tr",
        { "data-key-id": k.id, class: k.revoked_at ? "revoked" : null },
        el("td", {}, el("strong", {}, k.name || k.id), el("br"), el("span", { class: "muted" }, `${k.prefix}… · ${k.id}`), k.revoked_at ? el("div", { class: "error" }, `revoked ${formatTime(k.revoked_at)}`) : null),
        el("td", {}, k.scope),
        el("td", {}, formatTime(k.created_at)),
        el("td", {}, usageCell(usage.requests_last_minute, effective.requests_per_minute)),
        el("td", {}, usageCell(usage.tokens_last_minute, effective.tokens_per_minute)),
        el("td", {}, usageCell(usage.streams, effective.concurrent_streams)),
        el("td", {}, usageCell(usage.tokens_this_month, effective.monthly_tokens)),
        el("td", {}, k.revoked_at ? "–" : el("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name || k.id}`, onclick: guarded(() => revokeKey(k)) }, "Revoke")),
      );
    }),
  );
}

// -- training runs ----------------------------------------------------------------------------

async function loadTraining(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({ limit: "50" });
  if (byId("training-alias").value) params.set("alias", byId("training-alias").value);
  const runs = (await call(`/v1/admin/training/runs?${params}`)).data;
  byId("training-caption").textContent = runs.length > 1 ? `The ${runs.length} latest runs, newest first` : runs.length ? "The latest run" : "No training run yet.";
  byId("training-rows").replaceChildren(...runs.map(trainingRow));
}

function trainingRow(run) {
  const took = run.finished_at ? `${formatNumber((parseTime(run.finished_at) - parseTime(run.started_at)) / 60000)} min` : "running";
  return el(
    "tr",
    { "data-run-id": run.id },
    el("td", {}, `#${run.id} `, el("span", { class: "muted" }, run.alias)),
    el("td", {}, run.state, run.error ? el("div", { class: "error" }, run.error) : null),
    el("td", {}, run.trigger),
    el("td", {}, formatNumber(run.approved_examples)),
    el("td", {}, run.candidate || "–"),
    el("td", {}, formatTime(run.started_at)),
    el("td", {}, took),
    el("td", {}, gateReport(run)),
  );
}

/** The gate's table: the candidate against the live version, on the holdout and the probes,
 * with the thresholds it was held to and its reasons. */
function gateReport(run) {
  const report = run.report;
  if (!report || !report.gate) return "–";
  const { gate, candidate = {}, baseline = {} } = report;
  const score = (side, set, field) => (side[set] && side[set][field] !== null && side[set][field] !== undefined ? formatNumber(side[set][field]) : "–");
  const row = (label, set, field) => el("tr", {}, el("th", { scope: "row" }, label), el("td", {}, score(candidate, set, field)), el("td", {}, score(baseline, set, field)));
  const signed = (value) => (value === null || value === undefined ? "–" : `${value >= 0 ? "+" : ""}${formatNumber(value)}`);
  return el(
    "details",
    { class: "gate" },
    el("summary", {}, gate.passed ? "passed" : "failed", ` (gain ${signed(gate.holdout_gain)}, probes ${signed(gate.probe_change)})`),
    el(
      "table",
      { class: "gate-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, ""), el("th", { scope: "col" }, "Candidate"), el("th", { scope: "col" }, `Live (${baseline.model || "base"})`))),
      el("tbody", {}, row("Holdout accuracy", "holdout", "accuracy"), formRows(candidate, baseline), row("Holdout similarity", "holdout", "similarity"), row("Groundedness", "holdout", "groundedness"), row("Probe accuracy", "probes", "accuracy"), row("Holdout items", "holdout", "count")),
    ),
    el("p", { class: "muted" }, `Needs a holdout gain of at least ${formatNumber(gate.margin) || "?"} and probes within ${formatNumber(gate.probe_tolerance) || "?"}.`),
    gate.reasons && gate.reasons.length ? el("ul", {}, gate.reasons.map((reason) => el("li", {}, reason))) : null,
  );
}

/** The holdout accuracy per form the gate asked it in (as served, reworded, closed book). */
function formRows(candidate, baseline) {
  const forms = (candidate.holdout && candidate.holdout.forms) || {};
  const live = (baseline.holdout && baseline.holdout.forms) || {};
  const value = (number) => (number === null || number === undefined ? "–" : formatNumber(number));
  return Object.keys(forms).map((form) =>
    el("tr", {}, el("th", { scope: "row", class: "muted" }, `holdout, ${form.replace("_", " ")}`), el("td", {}, value(forms[form])), el("td", {}, value(live[form]))),
  );
}

async function createKey(event) {
  event.preventDefault();
  const body = { name: byId("key-name").value.trim(), scope: byId("key-scope").value };
  const monthly = byId("key-monthly").value.trim();
  if (monthly) body.quota = { monthly_tokens: Number(monthly) };
  const created = await call("/v1/admin/keys", { method: "POST", body });
  byId("key-secret").value = created.key; // the only time the gateway shows it
  byId("key-created").hidden = false;
  byId("key-secret").select();
  byId("key-form").reset();
  await loadKeys();
}

async function revokeKey(k) {
  if (!(await confirmed(`Revoke the key ${k.name || k.id} (${k.prefix}…)? Clients using it are refused from then on.`))) return;
  await call(`/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
  await loadKeys();
}

/** "used of limit" with a meter when there is a limit. */
function usageCell(used, limit) {
  if (limit === null || limit === undefined) return `${formatNumber(used)} (no limit)`;
  const meter = el("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, "aria-label": `${used} of ${limit}` });
  return el("span", { class: "usage" }, `${formatNumber(used)} of ${formatNumber(limit)}`, el("br"), meter);
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
  reviewPage.offset = 0; // new filters: from the first page
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
byId("training-form").addEventListener("submit", guarded(loadTraining));
byId("key-form").addEventListener("submit", guarded(createKey));
byId("review-previous").addEventListener("click", turnPage(reviewPage, loadReview, () => Number(byId("review-page-size").value), -1));
byId("review-next").addEventListener("click", turnPage(reviewPage, loadReview, () => Number(byId("review-page-size").value), 1));
byId("review-page-size").addEventListener("change", () => { reviewPage.offset = 0; guarded(loadReview)(); });
byId("log-previous").addEventListener("click", turnPage(logPage, loadLog, () => logPage.size, -1));
byId("log-next").addEventListener("click", turnPage(logPage, loadLog, () => logPage.size, 1));
byId("log-form").addEventListener("submit", (event) => {
  event.preventDefault();
  logPage.offset = 0;
  guarded(loadLog)();
});

if (key) signIn(key).catch(signOut);

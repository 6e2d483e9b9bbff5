#!/usr/bin/env python3
"""Grafana dashboards of loragate, generated from plain panel lists.

    python deploy/grafana/dashboards.py          # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --check  # exit 1 if the committed JSON is stale

Each dashboard below is a list of panels; a panel is a tuple (title, exprs, unit, type), where
exprs is a list of (PromQL, legend) and type a Grafana panel type (timeseries, stat, table,
heatmap). The queries use the Grafana variables $alias and $version (always with =~, so
".*" means all) and $__rate_interval; every panel reads the data source ${datasource}. Every
dashboard has an $instance variable: each selector of the dashboard's own metrics
(loragate_* or, on the vLLM dashboard, vllm:*) gets instance=~"$instance" when rendered
(`with_instance`), so one replica can be looked at alone.

For tests and tools (load this file by path, e.g. with importlib.util.spec_from_file_location;
it needs only the standard library, plus pyyaml for the rules):

    all_queries() -> list[tuple[str, str]]
        (source, expr) for every panel target and annotation of every dashboard and every
        expr of deploy/prometheus/rules.yml, e.g. ("dashboard gateway / panel 'Requests/s'",
        "sum by (alias, status) (...)").
    substitute(expr, alias=".*", version=".*", instance=".*") -> str
        the expr with the Grafana variables replaced, ready for plain Prometheus
        ($__rate_interval and $__interval become 1m, $__range 1h).

The panel lists sit between "# fmt: off" and "# fmt: on" so they stay one panel to a line or two.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards"
RULES = HERE.parent / "prometheus" / "rules.yml"

Panel = tuple[str, list[tuple[str, str]], str, str]

# -- PromQL helpers ----------------------------------------------------------------------------
A = 'alias=~"$alias"'
AV = 'alias=~"$alias", version=~"$version"'
RI = "[$__rate_interval]"


def sel(metric: str, *matchers: str) -> str:
    """`metric{m1, m2}` without the empty matchers."""
    inner = ", ".join(m for m in matchers if m)
    return f"{metric}{{{inner}}}" if inner else metric


def agg(op: str, by: str, expr: str) -> str:
    return f"{op} by ({by}) ({expr})" if by else f"{op}({expr})"


def rate(metric: str, matchers: str = "", by: str = "") -> str:
    return agg("sum", by, f"rate({sel(metric, matchers)}{RI})")


def quantile(q: float, histogram: str, matchers: str = "", by: str = "") -> str:
    buckets = rate(f"{histogram}_bucket", matchers, ", ".join(x for x in ("le", by) if x))
    return f"histogram_quantile({q}, {buckets})"


def share(metric: str, matchers: str, part: str, by: str = "") -> str:
    """Share of the rate of `metric` that matches `part`; 0 (not nothing) when none does."""
    whole = rate(metric, matchers, by)
    part_rate = rate(metric, ", ".join(x for x in (matchers, part) if x), by)
    return f"({part_rate} or 0 * {whole}) / {whole}"


def gauge(metric: str, matchers: str, by: str) -> str:
    """A state gauge; max folds the gateway replicas, which all report the same store."""
    return agg("max", by, sel(metric, matchers))


LAST_OUTCOME = "loragate_rollout_last_outcome_timestamp_seconds"


def seconds_since(metric: str, matchers: str, by: str = "") -> str:
    """Seconds since the event a Unix-time state gauge records (the latest over `by`)."""
    return f"time() - {gauge(metric, matchers, by)}"


def recent_outcomes(outcome: str) -> str:
    """Rollouts of one kind that ended in the last 2 minutes (for annotations).

    The gauge holds the time of the alias's last rollout with that outcome and reason, so a
    new event is a young age: an alias's first event (a new series) counts as well as its
    tenth, and nothing is marked when Prometheus starts. 2 minutes cover one scrape and one
    annotation step (1m), so every event is marked at least once.
    """
    matchers = f'outcome="{outcome}", {A}'
    return f"{seconds_since(LAST_OUTCOME, matchers, 'alias, reason')} < 120"


INSTANCE = 'instance=~"$instance"'


def gateway_process(expr: str) -> str:
    """A process_* series of the gateways only: vLLM exports the same names."""
    gateways = gauge("loragate_store_up", "", "instance")
    return f"{agg('sum', 'instance', expr)} and on (instance) {gateways}"


# -- dashboards -------------------------------------------------------------------------------
# One panel per entry: (title, [(expr, legend), ...], unit, type). Hand-aligned, so unformatted.
# fmt: off
REQUESTS, LATENCY = "loragate_requests_total", "loragate_request_duration_seconds"
OVERHEAD, TTFT = "loragate_gateway_overhead_seconds", "loragate_time_to_first_token_seconds"
ITL, GROUNDED = "loragate_inter_token_latency_seconds", "loragate_groundedness"
RETRIEVAL, TOP_SCORE = "loragate_retrieval_duration_seconds", "loragate_retrieval_top_score"
AV_LEGEND = "{{alias}} {{version}}"

# vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc and time_per_output_token_seconds
# to inter_token_latency_seconds; the panels read either.
VLLM_KV_CACHE = "vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc"
VLLM_ITL_RATE = (f"rate(vllm:inter_token_latency_seconds_bucket{RI})"
                 f" or rate(vllm:time_per_output_token_seconds_bucket{RI})")


def vllm_itl(q: float) -> str:
    return f"histogram_quantile({q}, sum by (le) ({VLLM_ITL_RATE}))"


GATEWAY: list[Panel] = [
    ("Requests/s", [(rate(REQUESTS, AV), "requests/s")], "reqps", "stat"),
    ("5xx ratio", [(share(REQUESTS, AV, 'status="5xx"'), "5xx")], "percentunit", "stat"),
    ("Overhead p99", [(quantile(0.99, OVERHEAD, A), "p99")], "s", "stat"),
    ("In flight", [(agg("sum", "", sel("loragate_requests_in_flight", A)), "in flight")],
     "short", "stat"),
    ("Requests/s by alias and status",
     [(rate(REQUESTS, AV, "alias, status"), "{{alias}} {{status}}")], "reqps", "timeseries"),
    ("5xx ratio by version",
     [(share(REQUESTS, AV, 'status="5xx"', "alias, version"), AV_LEGEND),
      ("vector(0.05)", "alert threshold 5%")], "percentunit", "timeseries"),
    ("Latency p50 / p95 / p99",
     [(quantile(0.5, LATENCY, AV, "alias"), "{{alias}} p50"),
      (quantile(0.95, LATENCY, AV, "alias"), "{{alias}} p95"),
      (quantile(0.99, LATENCY, AV, "alias"), "{{alias}} p99")], "s", "timeseries"),
    ("Overhead p50 / p99 vs the 5 ms target",
     [(quantile(0.5, OVERHEAD, A, "alias"), "{{alias}} p50"),
      (quantile(0.99, OVERHEAD, A, "alias"), "{{alias}} p99"),
      ("vector(0.005)", "target 5 ms")], "s", "timeseries"),
    ("Requests in flight",
     [(agg("sum", "alias", sel("loragate_requests_in_flight", A)), "{{alias}}")],
     "short", "timeseries"),
    ("Client disconnects/s",
     [(rate("loragate_client_disconnects_total", A, "alias"), "{{alias}}")], "ops", "timeseries"),
    ("Upstream errors/s by type",
     [(rate("loragate_upstream_errors_total", "", "type"), "{{type}}")], "ops", "timeseries"),
    ("Rate-limited requests/s by limit",
     [(rate("loragate_rate_limited_total", "", "limit"), "{{limit}}")], "ops", "timeseries"),
    ("Gateway CPU by instance",
     [(gateway_process(f"rate(process_cpu_seconds_total{{{INSTANCE}}}{RI})"), "{{instance}}")],
     "short", "timeseries"),
    ("Gateway memory by instance",
     [(gateway_process(f"process_resident_memory_bytes{{{INSTANCE}}}"), "{{instance}}")],
     "bytes", "timeseries"),
    ("Gateway open files by instance",
     [(gateway_process(f"process_open_fds{{{INSTANCE}}}"), "open {{instance}}"),
      (gateway_process(f"process_max_fds{{{INSTANCE}}}"), "limit {{instance}}")],
     "short", "timeseries"),
]

# Per API key: `key` is the key's id and `name` its name; keys beyond metrics_key_limit are
# summed under key="other" (docs/operations.md, "Per-key usage").
KEY_REQUESTS, KEY_TOKENS = "loragate_key_requests_total", "loragate_key_tokens_total"
KEY_LEGEND = "{{name}} ({{key}})"


def usage_of(limit: str, usage: str) -> str:
    """A key's usage as a share of one of its limits (only keys that have that limit)."""
    limits = gauge("loragate_key_quota_limit", f'limit="{limit}"', "key, name")
    return f"{gauge(usage, '', 'key, name')} / on (key, name) {limits}"


def top_keys(metric: str) -> str:
    return f"topk(10, {agg('sum', 'key, name', f'increase({metric}[$__range])')})"


USAGE: list[Panel] = [
    ("Requests/s by key", [(rate(KEY_REQUESTS, "", "key, name"), KEY_LEGEND)],
     "reqps", "timeseries"),
    ("Tokens/s by key and kind",
     [(rate(KEY_TOKENS, "", "key, name, kind"), KEY_LEGEND + " {{kind}}")], "short", "timeseries"),
    ("Top keys by tokens (time range)", [(top_keys(KEY_TOKENS), "")], "short", "table"),
    ("Top keys by requests (time range)", [(top_keys(KEY_REQUESTS), "")], "short", "table"),
    ("Refused or failed share by key",
     [(share(KEY_REQUESTS, "", 'status=~"4xx|5xx"', "key, name"), KEY_LEGEND)],
     "percentunit", "timeseries"),
    ("Tokens this month by key",
     [(gauge("loragate_key_month_tokens", "", "key, name"), KEY_LEGEND)], "short", "timeseries"),
    ("Monthly budget used",
     [(usage_of("monthly_tokens", "loragate_key_month_tokens"), KEY_LEGEND),
      ("vector(1)", "budget")], "percentunit", "timeseries"),
    ("Tokens per minute vs limit",
     [(usage_of("tokens_per_minute", "loragate_key_minute_tokens"), KEY_LEGEND),
      ("vector(1)", "limit")], "percentunit", "timeseries"),
    ("Quota limits", [(gauge("loragate_key_quota_limit", "", "key, name, limit"), "")],
     "short", "table"),
]

STREAMING: list[Panel] = [
    ("TTFT p50 / p95: gateway vs vLLM",
     [(quantile(0.5, TTFT, AV), "gateway p50"), (quantile(0.95, TTFT, AV), "gateway p95"),
      (quantile(0.5, "vllm:time_to_first_token_seconds"), "vLLM p50"),
      (quantile(0.95, "vllm:time_to_first_token_seconds"), "vLLM p95")], "s", "timeseries"),
    ("TTFT p95 by version",
     [(quantile(0.95, TTFT, AV, "alias, version"), AV_LEGEND)], "s", "timeseries"),
    ("Inter-token latency p50 / p95: gateway vs vLLM",
     [(quantile(0.5, ITL, AV), "gateway p50"), (quantile(0.95, ITL, AV), "gateway p95"),
      (vllm_itl(0.5), "vLLM p50"), (vllm_itl(0.95), "vLLM p95")], "s", "timeseries"),
    ("Tokens/s in and out: gateway vs vLLM",
     [(rate("loragate_tokens_total", AV, "kind"), "gateway {{kind}}"),
      (rate("vllm:prompt_tokens_total"), "vLLM prompt"),
      (rate("vllm:generation_tokens_total"), "vLLM completion")], "short", "timeseries"),
    ("Tokens/s by version",
     [(rate("loragate_tokens_total", AV, "alias, version, kind"), AV_LEGEND + " {{kind}}")],
     "short", "timeseries"),
    ("Overhead p99: streaming vs not",
     [(quantile(0.99, OVERHEAD, A, "stream"), "stream={{stream}}"),
      ("vector(0.005)", "target 5 ms")], "s", "timeseries"),
]

ADAPTERS: list[Panel] = [
    ("Store up", [(agg("min", "", "loragate_store_up"), "store up")], "short", "stat"),
    ("Time since last promotion",
     [(seconds_since(LAST_OUTCOME, f'outcome="promoted", {A}'), "promoted")], "s", "stat"),
    ("Time since last rollback",
     [(seconds_since(LAST_OUTCOME, f'outcome="rolled_back", {A}'), "rolled back")], "s", "stat"),
    ("Time since last aborted rollout",
     [(seconds_since(LAST_OUTCOME, f'outcome="aborted", {A}'), "aborted")], "s", "stat"),
    ("Traffic share by version",
     [(f"{rate(REQUESTS, AV, 'alias, version')}"
       f" / on (alias) group_left {rate(REQUESTS, A, 'alias')}", AV_LEGEND)],
     "percentunit", "timeseries"),
    ("Rollout weight",
     [(gauge("loragate_rollout_weight", AV, "alias, version"), AV_LEGEND)],
     "percentunit", "timeseries"),
    ("Rollout step", [(gauge("loragate_rollout_step", A, "alias"), "{{alias}}")],
     "short", "timeseries"),
    ("Adapters", [(gauge("loragate_adapter_info", AV, "alias, version, state"), "")],
     "short", "table"),
    ("Rollout outcomes (all time)",
     [(gauge("loragate_rollout_outcomes_total", A, "alias, outcome, reason"), "")],
     "short", "table"),
    ("Last rollout outcomes",
     [(seconds_since(LAST_OUTCOME, A, "alias, outcome, reason"), "")], "s", "table"),
    ("Reconciler actions per interval",
     [(agg("sum", "action", f"increase(loragate_reconciler_actions_total{RI})"), "{{action}}")],
     "short", "timeseries"),
    ("Adapter load time p50 / p95",
     [(quantile(0.5, "loragate_adapter_load_seconds"), "p50"),
      (quantile(0.95, "loragate_adapter_load_seconds"), "p95")], "s", "timeseries"),
    ("Experiments running",
     [(gauge("loragate_experiment_running", A, "alias"), "{{alias}}")], "short", "stat"),
    ("Experiment positive rate by arm",
     [(gauge("loragate_experiment_arm_positive_ratio", A, "alias, arm"), "{{alias}} {{arm}}")],
     "percentunit", "timeseries"),
    ("Experiment ratings by arm",
     [(gauge("loragate_experiment_arm_ratings", A, "alias, arm"), "{{alias}} {{arm}}")],
     "short", "timeseries"),
]

QUALITY: list[Panel] = [
    ("Positive-feedback ratio by version",
     [(sel("loragate:feedback_positive_ratio:1h", AV), AV_LEGEND + " (counters, 1h)"),
      (gauge("loragate_quality_positive_ratio", AV, "alias, version"), AV_LEGEND + " (monitor)")],
     "percentunit", "timeseries"),
    ("Feedback/s by polarity",
     [(rate("loragate_feedback_total", AV, "alias, polarity"), "{{alias}} {{polarity}}")],
     "ops", "timeseries"),
    ("Groundedness by version",
     [(quantile(0.1, GROUNDED, AV, "alias, version"), AV_LEGEND + " p10"),
      (quantile(0.5, GROUNDED, AV, "alias, version"), AV_LEGEND + " p50"),
      (gauge("loragate_quality_groundedness", AV, "alias, version"), AV_LEGEND + " (monitor)")],
     "percentunit", "timeseries"),
    ("\"I don't know\" rate by version",
     [(gauge("loragate_quality_idk_rate", AV, "alias, version"), AV_LEGEND)],
     "percentunit", "timeseries"),
    ("Flags/s by reason", [(rate("loragate_flags_total", "", "reason"), "{{reason}}")],
     "ops", "timeseries"),
    ("Review queue",
     [(gauge("loragate_review_queue_items", A, "alias, state"), "{{alias}} {{state}}")],
     "short", "timeseries"),
    ("Drift score",
     [(gauge("loragate_drift_score", A, "alias, method"), "{{alias}} {{method}}")],
     "short", "timeseries"),
    ("Drift p-value", [(gauge("loragate_drift_p_value", A, "alias"), "{{alias}}")],
     "short", "timeseries"),
    ("Drift detected", [(gauge("loragate_drift_detected", A, "alias"), "{{alias}}")],
     "short", "stat"),
]

RETRIEVAL_PANELS: list[Panel] = [
    ("Retrieval latency p50 / p95 by stage",
     [(quantile(0.5, RETRIEVAL, "", "stage"), "{{stage}} p50"),
      (quantile(0.95, RETRIEVAL, "", "stage"), "{{stage}} p95")], "s", "timeseries"),
    ("Retrievals/s by outcome",
     [(rate("loragate_retrievals_total", "", "outcome"), "{{outcome}}")], "ops", "timeseries"),
    ("Empty retrieval ratio",
     [(share("loragate_retrievals_total", "", 'outcome="empty"'), "empty")],
     "percentunit", "timeseries"),
    ("Top score p10 / p50 / p90",
     [(quantile(0.1, TOP_SCORE), "p10"), (quantile(0.5, TOP_SCORE), "p50"),
      (quantile(0.9, TOP_SCORE), "p90")], "percentunit", "timeseries"),
    ("Top score distribution",
     [(agg("sum", "le", f"increase({TOP_SCORE}_bucket{RI})"), "{{le}}")], "short", "heatmap"),
]

TRAINING: list[Panel] = [
    ("Training runs by status",
     [(gauge("loragate_training_runs", A, "alias, status"), "{{alias}} {{status}}")],
     "short", "timeseries"),
    ("Last failed run",
     [(seconds_since("loragate_training_last_failure_timestamp_seconds", A, "alias"),
       "{{alias}}")], "s", "stat"),
    ("Last training duration",
     [(gauge("loragate_training_last_duration_seconds", A, "alias"), "{{alias}}")],
     "s", "timeseries"),
    ("Approved examples waiting",
     [(gauge("loragate_review_queue_items", f'{A}, state="approved"', "alias"), "{{alias}}")],
     "short", "timeseries"),
    ("Eval scores by version",
     [(gauge("loragate_eval_score", AV, "alias, version, set"), "")], "percentunit", "table"),
    ("Scheduled re-evaluation accuracy",
     [(gauge("loragate_reeval_accuracy", AV, "alias, version, set"),
       "{{alias}} {{version}} {{set}}")], "percentunit", "timeseries"),
    ("Degraded aliases",
     [(gauge("loragate_alias_degraded", A, "alias"), "{{alias}}")], "short", "stat"),
    ("Last re-evaluation",
     [(seconds_since("loragate_reeval_timestamp_seconds", A, "alias"), "{{alias}}")],
     "s", "stat"),
]

VLLM: list[Panel] = [
    ("Requests running / waiting",
     [(agg("sum", "instance", "vllm:num_requests_running"), "running {{instance}}"),
      (agg("sum", "instance", "vllm:num_requests_waiting"), "waiting {{instance}}")],
     "short", "timeseries"),
    ("KV cache usage",
     [(agg("max", "instance", VLLM_KV_CACHE), "{{instance}}"),
      ("vector(0.9)", "alert threshold 90%")], "percentunit", "timeseries"),
    ("TTFT / queue time / end-to-end p95",
     [(quantile(0.95, "vllm:time_to_first_token_seconds"), "TTFT"),
      (quantile(0.95, "vllm:request_queue_time_seconds"), "queue time"),
      (quantile(0.95, "vllm:e2e_request_latency_seconds"), "end-to-end")], "s", "timeseries"),
    ("Inter-token latency p50 / p95",
     [(vllm_itl(0.5), "p50"), (vllm_itl(0.95), "p95")], "s", "timeseries"),
    ("Tokens/s",
     [(rate("vllm:prompt_tokens_total"), "prompt"),
      (rate("vllm:generation_tokens_total"), "generation")], "short", "timeseries"),
    ("Preemptions/s",
     [(rate("vllm:num_preemptions_total", "", "instance"), "{{instance}}")], "ops", "timeseries"),
    ("LoRA adapters (latest)",
     [("topk by (instance) (1, vllm:lora_requests_info)", "")], "short", "table"),
]
# fmt: on


class Dashboard(NamedTuple):
    slug: str
    title: str
    panels: list[Panel]
    rollout_annotations: bool = False
    # The metrics $instance filters, and the one its values are read from.
    instance_metrics: str = r"loragate_\w+"
    instance_source: str = "loragate_store_up"


DASHBOARDS = [
    Dashboard("gateway", "loragate / Gateway golden signals", GATEWAY),
    Dashboard("streaming", "loragate / Streaming", STREAMING),
    Dashboard("adapters", "loragate / Adapters & rollouts", ADAPTERS, rollout_annotations=True),
    Dashboard("quality", "loragate / Quality & drift", QUALITY, rollout_annotations=True),
    Dashboard("retrieval", "loragate / Retrieval", RETRIEVAL_PANELS),
    Dashboard("training", "loragate / Training", TRAINING),
    Dashboard(
        "vllm",
        "loragate / vLLM engine",
        VLLM,
        instance_metrics=r"vllm:\w+",
        instance_source="vllm:num_requests_running",
    ),
    Dashboard("usage", "loragate / Usage & cost per key", USAGE),
]

# (name, outcome, colour) of the annotation queries on rollout outcomes.
ANNOTATIONS = [
    ("Promotions", "promoted", "green"),
    ("Rollbacks", "rolled_back", "red"),
    ("Aborted rollouts", "aborted", "orange"),
]


# -- Grafana JSON -----------------------------------------------------------------------------
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SIZES = {"stat": (6, 4), "table": (12, 8)}  # (width, height); anything else 12 x 8


def layout(panels: list[Panel]) -> list[dict[str, int]]:
    """Left to right on the 24-column grid, a new row when the next panel does not fit."""
    positions, x, y, row_height = [], 0, 0, 0
    for _, _, _, kind in panels:
        w, h = SIZES.get(kind, (12, 8))
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"h": h, "w": w, "x": x, "y": y})
        x, row_height = x + w, max(row_height, h)
    return positions


def target(ref: str, expr: str, legend: str, kind: str) -> dict[str, object]:
    data: dict[str, object] = {"datasource": DATASOURCE, "refId": ref, "expr": expr}
    if kind == "table":
        data.update(format="table", instant=True, range=False)
    elif kind == "heatmap":
        data.update(format="heatmap", legendFormat=legend, range=True)
    else:
        data.update(legendFormat=legend, range=True)
    return data


def panel_options(kind: str) -> dict[str, object]:
    if kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if kind == "table":
        return {"showHeader": True}
    if kind == "heatmap":
        return {"calculate": False, "yAxis": {"axisPlacement": "left"}}
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True}
    return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}


def with_instance(expr: str, metrics: str) -> str:
    """Every selector of a metric matching `metrics` also filtered by instance=~"$instance"."""

    def add(match: re.Match[str]) -> str:
        inner = (match.group(2) or "{}")[1:-1].strip()
        return f"{match.group(1)}{{{', '.join(x for x in (inner, INSTANCE) if x)}}}"

    return re.sub(rf"(?<![\w:])({metrics})(\{{[^}}]*\}})?", add, expr)


def instance_panels(dashboard: Dashboard) -> list[Panel]:
    """The dashboard's panels as rendered: their queries filtered by $instance."""
    return [
        (title, [(with_instance(e, dashboard.instance_metrics), legend) for e, legend in exprs],
         unit, kind)
        for title, exprs, unit, kind in dashboard.panels
    ]  # fmt: skip


def render_panel(number: int, panel: Panel, position: dict[str, int]) -> dict[str, object]:
    title, exprs, unit, kind = panel
    data: dict[str, object] = {
        "id": number,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": position,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": panel_options(kind),
        "targets": [
            target(chr(65 + i), expr, legend, kind) for i, (expr, legend) in enumerate(exprs)
        ],
    }
    if kind == "table":
        data["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    return data


def variable(name: str, label: str, query: str) -> dict[str, object]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def templating(exprs: list[str], instance_source: str) -> list[dict[str, object]]:
    """The data source and $instance, plus $alias and $version where the queries use them."""
    variables: list[dict[str, object]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"},
        }
    ]
    instances = f"label_values({instance_source}, instance)"
    variables.append(variable("instance", "Instance", instances))
    text = "\n".join(exprs)
    if "$alias" in text or "$version" in text:
        variables.append(variable("alias", "Alias", "label_values(loragate_requests_total, alias)"))
    if "$version" in text:
        query = 'label_values(loragate_requests_total{alias=~"$alias"}, version)'
        variables.append(variable("version", "Version", query))
    return variables


def annotations(dashboard: Dashboard) -> list[dict[str, object]]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    if not dashboard.rollout_annotations:
        return [builtin]
    return [builtin] + [
        {
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": colour,
            "name": name,
            "expr": with_instance(recent_outcomes(outcome), dashboard.instance_metrics),
            "step": "1m",
            "titleFormat": f"{{{{alias}}}} {outcome}",
            "textFormat": "reason: {{reason}}",
            "tagKeys": "alias,reason",
        }
        for name, outcome, colour in ANNOTATIONS
    ]


def render(dashboard: Dashboard) -> dict[str, object]:
    panels = instance_panels(dashboard)
    notes = annotations(dashboard)
    exprs = [expr for _, targets, _, _ in panels for expr, _ in targets]
    exprs += [str(note["expr"]) for note in notes if "expr" in note]
    return {
        "uid": f"loragate-{dashboard.slug}",
        "title": dashboard.title,
        "tags": ["loragate"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "title": "loragate",
                "type": "dashboards",
                "tags": ["loragate"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": notes},
        "templating": {"list": templating(exprs, dashboard.instance_source)},
        "panels": [
            render_panel(i + 1, p, pos)
            for i, (p, pos) in enumerate(zip(panels, layout(panels), strict=True))
        ],
    }


def generated() -> dict[Path, str]:
    """The dashboard files as they should be, by path."""
    return {OUTPUT / f"{d.slug}.json": json.dumps(render(d), indent=2) + "\n" for d in DASHBOARDS}


# -- queries for tests ------------------------------------------------------------------------
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}


def substitute(expr: str, alias: str = ".*", version: str = ".*", instance: str = ".*") -> str:
    """The expr with $alias, $version, $instance and Grafana's interval variables replaced."""
    values = {**GRAFANA_VARIABLES, "alias": alias, "version": version, "instance": instance}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", value, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for dashboard in DASHBOARDS:
        where = f"dashboard {dashboard.slug}"
        for title, targets, _, _ in instance_panels(dashboard):
            queries += [(f"{where} / panel {title!r}", expr) for expr, _ in targets]
        for note in annotations(dashboard):
            if "expr" in note:
                queries.append((f"{where} / annotation {note['name']!r}", str(note["expr"])))
    return queries


def rule_queries(path: Path = RULES) -> list[tuple[str, str]]:
    import yaml

    queries = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            queries.append((f"rules {group['name']} / {kind} {rule[kind]}", rule["expr"].strip()))
    return queries


def all_queries() -> list[tuple[str, str]]:
    """(source, expr) of every dashboard target and annotation and every rule expr."""
    return dashboard_queries() + rule_queries()


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    wanted = generated()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    extra = sorted(set(OUTPUT.glob("*.json")) - set(wanted))
    if args.check:
        for path in stale + extra:
            print(f"stale: {path.relative_to(HERE.parent.parent)}", file=sys.stderr)
        if stale or extra:
            print("run: python deploy/grafana/dashboards.py", file=sys.stderr)
        return 1 if stale or extra else 0
    OUTPUT.mkdir(exist_ok=True)
    for path in stale:
        path.write_text(wanted[path])
    for path in extra:
        path.unlink()
    print(f"{len(wanted)} dashboards in {OUTPUT}: {len(stale)} written, {len(extra)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus rules and alerts, Grafana dashboards, the runbook and the metric contract.

promtool (Debian package `prometheus`; .ci/run installs it) checks the rules, runs their unit
tests (deploy/prometheus/rules_test.yml), checks the Prometheus config, and parses every
query of the dashboards and rules. METRICS is the contract of the metric names the gateway
exports: the dashboards and rules may only use those (and vLLM's VLLM_METRICS).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.prometheus_stack import load_dashboards

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy/prometheus"
GENERATOR = REPO / "deploy/grafana/dashboards.py"
DASHBOARDS = REPO / "deploy/grafana/dashboards"
RUNBOOK = REPO / "docs/alerts.md"

# name -> (type, labels). Counters carry their _total suffix; histograms are exposed as
# name_bucket, name_sum and name_count.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    # events, per request
    "loragate_requests_total": ("counter", ("alias", "version", "status")),
    "loragate_request_duration_seconds": ("histogram", ("alias", "version")),
    "loragate_gateway_overhead_seconds": ("histogram", ("alias", "stream")),
    "loragate_time_to_first_token_seconds": ("histogram", ("alias", "version")),
    "loragate_inter_token_latency_seconds": ("histogram", ("alias", "version")),
    "loragate_tokens_total": ("counter", ("alias", "version", "kind")),
    "loragate_requests_in_flight": ("gauge", ("alias",)),
    "loragate_client_disconnects_total": ("counter", ("alias",)),
    "loragate_upstream_errors_total": ("counter", ("type",)),
    "loragate_rate_limited_total": ("counter", ("limit",)),
    "loragate_retrieval_duration_seconds": ("histogram", ("stage",)),
    "loragate_retrievals_total": ("counter", ("outcome",)),
    "loragate_retrieval_top_score": ("histogram", ()),
    "loragate_groundedness": ("histogram", ("alias", "version")),
    "loragate_feedback_total": ("counter", ("alias", "version", "polarity")),
    "loragate_flags_total": ("counter", ("reason",)),
    "loragate_reconciler_actions_total": ("counter", ("action",)),
    "loragate_adapter_load_seconds": ("histogram", ()),
    # per API key; `key` capped at metrics_key_limit, the rest under "other"
    "loragate_key_requests_total": ("counter", ("key", "name", "status")),
    "loragate_key_tokens_total": ("counter", ("key", "name", "kind")),
    # state, read from the store at scrape time
    "loragate_store_up": ("gauge", ()),
    "loragate_adapter_info": ("gauge", ("alias", "version", "state")),
    "loragate_rollout_weight": ("gauge", ("alias", "version")),
    "loragate_rollout_step": ("gauge", ("alias",)),
    "loragate_rollout_outcomes_total": ("counter", ("alias", "outcome", "reason")),
    "loragate_rollout_last_outcome_timestamp_seconds": ("gauge", ("alias", "outcome", "reason")),
    "loragate_review_queue_items": ("gauge", ("alias", "state")),
    "loragate_training_runs": ("gauge", ("alias", "status")),
    "loragate_training_last_duration_seconds": ("gauge", ("alias",)),
    "loragate_training_last_failure_timestamp_seconds": ("gauge", ("alias",)),
    "loragate_eval_score": ("gauge", ("alias", "version", "set")),
    "loragate_reeval_accuracy": ("gauge", ("alias", "version", "set")),
    "loragate_alias_degraded": ("gauge", ("alias",)),
    "loragate_experiment_running": ("gauge", ("alias",)),
    "loragate_experiment_arm_positive_ratio": ("gauge", ("alias", "arm")),
    "loragate_experiment_arm_ratings": ("gauge", ("alias", "arm")),
    "loragate_reeval_timestamp_seconds": ("gauge", ("alias",)),
    "loragate_quality_positive_ratio": ("gauge", ("alias", "version")),
    "loragate_quality_groundedness": ("gauge", ("alias", "version")),
    "loragate_quality_idk_rate": ("gauge", ("alias", "version")),
    "loragate_drift_score": ("gauge", ("alias", "method")),
    "loragate_drift_p_value": ("gauge", ("alias",)),
    "loragate_drift_detected": ("gauge", ("alias",)),
    "loragate_key_month_tokens": ("gauge", ("key", "name")),
    "loragate_key_minute_tokens": ("gauge", ("key", "name")),
    "loragate_key_quota_limit": ("gauge", ("key", "name", "limit")),
}

# vLLM's own metrics (each with a model_name label); older names where vLLM renamed them.
VLLM_METRICS: dict[str, str] = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:lora_requests_info": "gauge",
    "vllm:num_preemptions_total": "counter",
}

SEVERITIES = {"info", "warning", "critical"}


def series_names(metrics: dict[str, str]) -> dict[str, str]:
    """Names as they appear in queries -> the metric they belong to."""
    names = {}
    for name, kind in metrics.items():
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names.update({name + suffix: name for suffix in suffixes})
    return names


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: the Prometheus rule checks need it. Install the "
            "Debian/Ubuntu package `prometheus` (apt-get install prometheus; .ci/run does) "
            "or put promtool from a Prometheus release on PATH."
        )
    return path


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_dashboards()


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts(rules: list[dict]) -> list[dict]:
    return [rule for rule in rules if "alert" in rule]


def run_promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


# -- promtool -------------------------------------------------------------------------------
def test_rules_pass_promtool_check(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", PROMETHEUS / "rules.yml")


def test_rules_unit_tests_pass(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", PROMETHEUS / "rules_test.yml")


def test_prometheus_config_is_valid(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert "1 rule files found" in output


def test_every_query_parses(promtool: str, generator: ModuleType, tmp_path: Path) -> None:
    queries = generator.all_queries()
    rules = [
        {"record": f"parse_check:query_{i}", "expr": generator.substitute(expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "parse-check", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=300
    )
    sources = "\n".join(f"query_{i}: {source}" for i, (source, _) in enumerate(queries))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\nwhere\n{sources}"


# -- the generator --------------------------------------------------------------------------
def test_dashboards_json_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_all_queries_cover_dashboards_and_rules(generator: ModuleType, rules: list[dict]) -> None:
    queries = generator.all_queries()
    exprs = {expr for _, expr in queries}
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        targets = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        notes = [n["expr"] for n in dashboard["annotations"]["list"] if "expr" in n]
        assert set(targets + notes) <= exprs, path.name
    assert {rule["expr"].strip() for rule in rules} <= exprs
    assert all(source and expr for source, expr in queries)


def test_substitute_leaves_no_grafana_variable(generator: ModuleType) -> None:
    expr = 'rate(x{alias=~"$alias", version=~"${version}"}[$__rate_interval])'
    assert generator.substitute(expr, alias="support") == (
        'rate(x{alias=~"support", version=~".*"}[1m])'
    )
    for source, query in generator.all_queries():
        assert "$" not in generator.substitute(query), source
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        generator.substitute("up{job=~'$job'}")


def test_dashboards_use_the_templated_datasource_and_regex_filters() -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", path.name
        assert dashboard["schemaVersion"] >= 39
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
                # =~ so that the "All" value .* works
                assert not re.search(r'\w+="\$(alias|version)"', expr), (panel["title"], expr)
                for name in ("alias", "version"):
                    assert f"${name}" not in expr or name in variables, (path.name, name)


def test_every_dashboard_filters_its_own_metrics_by_instance(generator: ModuleType) -> None:
    for dashboard in generator.DASHBOARDS:
        path = DASHBOARDS / f"{dashboard.slug}.json"
        data = json.loads(path.read_text())
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert variables["instance"]["allValue"] == ".*", path.name
        assert dashboard.instance_source in variables["instance"]["query"], path.name
        exprs = [t["expr"] for panel in data["panels"] for t in panel["targets"]]
        exprs += [n["expr"] for n in data["annotations"]["list"] if "expr" in n]
        selectors = 0
        for expr in exprs:
            own = rf"(?<![\w:])(?:{dashboard.instance_metrics}|process_\w+)(\{{[^}}]*\}})?"
            for match in re.finditer(own, expr):
                selectors += 1
                assert 'instance=~"$instance"' in (match.group(1) or ""), (path.name, expr)
        assert selectors, path.name


def test_the_usage_dashboard_shows_keys_quotas_and_top_keys(generator: ModuleType) -> None:
    usage = json.loads((DASHBOARDS / "usage.json").read_text())
    exprs = " ".join(t["expr"] for panel in usage["panels"] for t in panel["targets"])
    for name in ("loragate_key_requests_total", "loragate_key_tokens_total",
                 "loragate_key_month_tokens", "loragate_key_minute_tokens",
                 "loragate_key_quota_limit", "topk("):  # fmt: skip
        assert name in exprs, name
    gateway = json.loads((DASHBOARDS / "gateway.json").read_text())
    exprs = " ".join(t["expr"] for panel in gateway["panels"] for t in panel["targets"])
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert name in exprs, name


# -- alerts and the runbook ----------------------------------------------------------------
def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown text."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_alerts_have_severity_annotations_and_a_runbook(alerts: list[dict]) -> None:
    assert len(alerts) >= 8
    known = anchors(RUNBOOK.read_text())
    for alert in alerts:
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in SEVERITIES, name
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/alerts.md", name
        assert anchor == name.lower() and anchor in known, f"{name}: no section #{anchor}"


def test_every_alert_has_a_firing_and_a_quiet_case(alerts: list[dict]) -> None:
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in alerts:
        mine = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{alert['alert']} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{alert['alert']} never quiet"


def test_runbook_lists_every_dashboard_and_panel(generator: ModuleType) -> None:
    text = RUNBOOK.read_text()
    for dashboard in generator.DASHBOARDS:
        assert dashboard.title in text
        for title, *_ in dashboard.panels:
            assert f"**{title}**" in text, f"{dashboard.title}: panel {title!r} not in docs"


# -- the metric contract --------------------------------------------------------------------
def used_names(pattern: str, rules: bool = True) -> set[str]:
    """Names matching `pattern` in the dashboards (and rules.yml)."""
    texts = [path.read_text() for path in DASHBOARDS.glob("*.json")]
    texts += [(PROMETHEUS / "rules.yml").read_text()] if rules else []
    return {name for text in texts for name in re.findall(pattern, text)}


def test_loragate_metric_names_are_in_the_contract() -> None:
    allowed = series_names({name: kind for name, (kind, _) in METRICS.items()})
    unknown = used_names(r"(?<![\w:])loragate_\w+") - set(allowed)
    assert not unknown, f"not exported by the gateway (see METRICS): {sorted(unknown)}"


def test_vllm_metric_names_are_known() -> None:
    unknown = used_names(r"(?<![\w:])vllm:\w+") - set(series_names(VLLM_METRICS))
    assert not unknown, f"not a vLLM metric (see VLLM_METRICS): {sorted(unknown)}"


def test_every_contract_metric_is_on_a_dashboard() -> None:
    allowed = series_names({name: kind for name, (kind, _) in METRICS.items()})
    shown = {allowed.get(name) for name in used_names(r"(?<![\w:])loragate_\w+", rules=False)}
    assert set(METRICS) - shown == set()

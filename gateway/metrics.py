"""Prometheus metrics of the gateway, registered on a registry passed in.

Labels are bounded: ``model`` is a served model name the router knows (or ``-`` before
one is resolved), ``status`` a status class such as ``2xx``; no paths, users or keys.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.reconciler import Reconciler
from adapters.registry import Registry
from adapters.rollout import RolloutController

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "loragate_requests",
            "Chat completion requests by served model and HTTP status class.",
            ["model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "loragate_request_duration_seconds",
            "End-to-end chat completion latency as the gateway sees it.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "loragate_time_to_first_token_seconds",
            "Time from request arrival to the first streamed token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "loragate_tokens",
            "Tokens processed, by served model and kind (prompt or completion).",
            ["model", "kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "loragate_requests_in_flight",
            "Chat completion requests being served now.",
            ["model"],
            registry=registry,
        )
        self.client_disconnects = Counter(
            "loragate_client_disconnects",
            "Streams the client closed before the end.",
            ["model"],
            registry=registry,
        )
        self.retrieval_latency = Histogram(
            "loragate_retrieval_duration_seconds",
            "Time to retrieve sources for one chat request (embed + search + fetch).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.groundedness = Histogram(
            "loragate_groundedness",
            "How far grounded answers rest on their sources (0..1), by served model.",
            ["model"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=registry,
        )
        self.flags = Counter(
            "loragate_flags",
            "Completions flagged for review, by rule (a completion may be flagged by several).",
            ["reason"],
            registry=registry,
        )
        self.feedback = Counter(
            "loragate_feedback",
            "Feedback received, by served model/version and polarity.",
            ["model", "polarity"],
            registry=registry,
        )
        self.alias_requests = Counter(
            "loragate_alias_requests",
            "Requests to an alias by the version that served them (traffic share).",
            ["alias", "version"],
            registry=registry,
        )
        self.rollout_weight = Gauge(
            "loragate_rollout_weight",
            "Share of an alias's traffic routed to each version (0..1).",
            ["alias", "version"],
            registry=registry,
        )
        self.rollout_step = Gauge(
            "loragate_rollout_step",
            "Index of the current canary step of an alias's rollout (absent when none).",
            ["alias"],
            registry=registry,
        )
        self._weights_seen: set[tuple[str, str]] = set()
        self._steps_seen: set[str] = set()
        self.upstream_errors = Counter(
            "loragate_upstream_errors",
            "Engine failures by error type.",
            ["type"],
            registry=registry,
        )

    # -- adapters, reconciler, rollouts -----------------------------------------------------
    def watch(self, reconciler: Reconciler, rollouts: RolloutController) -> None:
        """Export the adapter machinery's own counters, read at scrape time."""
        self.registry.register(_AdapterCollector(reconciler, rollouts))

    async def refresh_rollouts(self, registry: Registry) -> None:
        current: dict[tuple[str, str], float] = {}
        steps: dict[str, int] = {}
        for route in (await registry.routes()).values():
            if route.live:
                current[(route.alias, route.live)] = 1.0 - route.weight
            if route.canary:
                current[(route.alias, route.canary)] = route.weight
                steps[route.alias] = route.step
        for alias in self._steps_seen - set(steps):
            self.rollout_step.remove(alias)
        for alias, step in steps.items():
            self.rollout_step.labels(alias).set(step)
        self._steps_seen = set(steps)
        for labels in self._weights_seen - set(current):
            self.rollout_weight.remove(*labels)
        for labels, weight in current.items():
            self.rollout_weight.labels(*labels).set(weight)
        self._weights_seen = set(current)


class _AdapterCollector(Collector):
    def __init__(self, reconciler: Reconciler, rollouts: RolloutController) -> None:
        self.reconciler = reconciler
        self.rollouts = rollouts

    def collect(self) -> Iterator[Metric]:
        stats = self.reconciler.stats
        actions = CounterMetricFamily(
            "loragate_reconciler_actions", "Adapter loads, unloads and failures.", labels=["action"]
        )
        for action, value in (("load", stats.loads), ("unload", stats.unloads),
                              ("failure", stats.failures)):  # fmt: skip
            actions.add_metric([action], value)
        yield actions
        yield GaugeMetricFamily(
            "loragate_adapter_load_seconds", "Duration of the last adapter load.",
            value=stats.last_load_seconds,
        )  # fmt: skip
        outcomes = CounterMetricFamily(
            "loragate_rollout_outcomes", "Promotions and rollbacks by reason.",
            labels=["outcome", "reason"],
        )  # fmt: skip
        for (outcome, reason), count in self.rollouts.outcomes.items():
            outcomes.add_metric([outcome, reason], count)
        yield outcomes


def status_class(status_code: int) -> str:
    return f"{status_code // 100}xx"

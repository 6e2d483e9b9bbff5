"""Prometheus metrics of the gateway's own events, registered on a registry passed in.

Two kinds of metrics leave the gateway:

* events counted here as they happen (requests, latencies, tokens, feedback, flags), and
* state read from the store at scrape time (``gateway.state_metrics``: adapters, rollouts,
  review queue, training runs, quality and drift), identical from every worker.

Labels are bounded: ``alias`` is an alias, the base model name, or ``-`` for a request
refused before it was routed; ``version`` the version that answered; ``status`` a class
such as ``2xx``. No paths or users; API keys only in the ``loragate_key_*`` counters, whose
``key`` label is capped (``gateway.key_labels``). With several workers the event metrics live in
prometheus_client's multiprocess files (``metrics_multiproc_dir``) and ``Exposition``
merges them at scrape time.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

from core.errors import ConfigError
from gateway.key_labels import KeyLabels
from gateway.process_metrics import add_process_metrics

UNROUTED = "-"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# The gateway's own share is meant to be a few milliseconds: resolve that range finely.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, key_limit: int = 50) -> None:
        self.registry = registry
        self.key_labels = KeyLabels(key_limit)
        by_version = ["alias", "version"]
        self.requests = Counter(
            "loragate_requests",
            "Chat completion requests by alias, answering version and HTTP status class.",
            [*by_version, "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "loragate_request_duration_seconds",
            "End-to-end chat completion latency as the gateway sees it.",
            by_version,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "loragate_gateway_overhead_seconds",
            "Time the gateway adds: end-to-end latency minus the time spent waiting on vLLM "
            "(retrieval included; for streams, relaying to the client included).",
            ["alias", "stream"],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "loragate_time_to_first_token_seconds",
            "Time from request arrival to the first streamed token.",
            by_version,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.inter_token = Histogram(
            "loragate_inter_token_latency_seconds",
            "Time between successive streamed content chunks, as relayed to the client.",
            by_version,
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "loragate_tokens",
            "Tokens processed, by alias, version and kind (prompt or completion).",
            [*by_version, "kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "loragate_requests_in_flight",
            "Chat completion requests being served now.",
            ["alias"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.client_disconnects = Counter(
            "loragate_client_disconnects",
            "Requests the client abandoned before the end.",
            ["alias"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "loragate_rate_limited",
            "Requests refused by a key's quota, by limit: rpm, tpm, concurrency or budget.",
            ["limit"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "loragate_upstream_errors",
            "Engine failures by error type.",
            ["type"],
            registry=registry,
        )
        self.retrieval_latency = Histogram(
            "loragate_retrieval_duration_seconds",
            "Retrieval time for one chat request by stage: embed, search (FAISS and chunk "
            "fetch) and total.",
            ["stage"],
            buckets=RETRIEVAL_BUCKETS,
            registry=registry,
        )
        self.retrievals = Counter(
            "loragate_retrievals",
            "Grounded requests by outcome: hits, or empty (nothing above min_score).",
            ["outcome"],
            registry=registry,
        )
        self.retrieval_top_score = Histogram(
            "loragate_retrieval_top_score",
            "Similarity of the best source found for a grounded request (0..1).",
            buckets=UNIT_BUCKETS,
            registry=registry,
        )
        self.groundedness = Histogram(
            "loragate_groundedness",
            "How far grounded answers rest on their sources (0..1).",
            by_version,
            buckets=UNIT_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter(
            "loragate_feedback",
            "Feedback received, by alias, version and polarity.",
            [*by_version, "polarity"],
            registry=registry,
        )
        self.flags = Counter(
            "loragate_flags",
            "Completions flagged for review, by rule (a completion may be flagged by several).",
            ["reason"],
            registry=registry,
        )
        self.reconciler_actions = Counter(
            "loragate_reconciler_actions",
            "Adapter loads, unloads and failed loads on the engines.",
            ["action"],
            registry=registry,
        )
        by_key = ["key", "name"]
        self.key_requests = Counter(
            "loragate_key_requests",
            "Chat completion requests by API key (id and name; keys beyond "
            "metrics_key_limit count as other) and HTTP status class.",
            [*by_key, "status"],
            registry=registry,
        )
        self.key_tokens = Counter(
            "loragate_key_tokens",
            "Tokens charged by API key (id and name, capped like loragate_key_requests) "
            "and kind (prompt or completion).",
            [*by_key, "kind"],
            registry=registry,
        )
        self.adapter_load = Histogram(
            "loragate_adapter_load_seconds",
            "Time vLLM took to load an adapter version.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    def record_reconciler_action(self, action: str, seconds: float | None) -> None:
        self.reconciler_actions.labels(action).inc()
        if action == "load" and seconds is not None:
            self.adapter_load.observe(seconds)

    def record_key(
        self, key: tuple[str, str], status_code: int, prompt: int = 0, completion: int = 0
    ) -> None:
        """One request of a key (labels from ``key_labels``): its status and tokens."""
        self.key_requests.labels(*key, status_class(status_code)).inc()
        if prompt or completion:
            self.key_tokens.labels(*key, "prompt").inc(prompt)
            self.key_tokens.labels(*key, "completion").inc(completion)


def status_class(status_code: int) -> str:
    return f"{status_code // 100}xx"


class Exposition:
    """Renders ``/metrics``: this process's registry, or every worker's with multiprocess,
    and the ``process_*`` metrics (gateway.process_metrics)."""

    def __init__(self, registry: CollectorRegistry, multiproc_dir: Path | None) -> None:
        self.registry = registry
        self.multiproc_dir = multiproc_dir
        self._merged: CollectorRegistry | None = None
        if multiproc_dir is not None:
            _check_multiprocess(multiproc_dir)
            from prometheus_client import multiprocess

            self._merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._merged, path=str(multiproc_dir))
        add_process_metrics(self._merged or registry, whole_tree=multiproc_dir is not None)

    def add_state(self, collector: Collector) -> None:
        """A collector of shared state: registered once, on the registry actually scraped."""
        (self._merged or self.registry).register(collector)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._merged or self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """Drop this worker's live gauges (in-flight) from the merged view."""
        if self.multiproc_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), str(self.multiproc_dir))


def _check_multiprocess(directory: Path) -> None:
    # prometheus_client picks its value storage when it is first imported, from this
    # variable; `loragate serve` sets it before the workers start.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != str(directory):
        raise ConfigError(
            "metrics_multiproc_dir is set but PROMETHEUS_MULTIPROC_DIR is not the same "
            f"directory ({directory}); export it before the workers start"
        )

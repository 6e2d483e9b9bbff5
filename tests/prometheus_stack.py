"""A real ``loragate serve`` scraped by a real Prometheus (Debian's package), for the tests
that query what Prometheus sees (test_prometheus, test_usage_dashboard), and the dashboard
generator those queries come from."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tests.support import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
DASHBOARD_GENERATOR = REPO / "deploy/grafana/dashboards.py"


def load_dashboards() -> ModuleType:
    """deploy/grafana/dashboards.py, which is a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("loragate_dashboards", DASHBOARD_GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def start_gateway(
    root: Path, port: int, env: Mapping[str, str], ready_s: float
) -> subprocess.Popen[bytes]:
    """``loragate serve`` with ``env`` added to this process's, logging to
    ``root/gateway.log``; returns once it is ready (or fails with the log's tail)."""
    log = (root / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**os.environ, **env},
        stdout=log,
        stderr=log,
    )

    def ready() -> bool:
        if process.poll() is not None:
            tail = (root / "gateway.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"loragate serve exited with {process.returncode}:\n{tail}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, ready_s, "the two-worker gateway to become ready", step_s=0.5)
    return process


def start_prometheus(
    root: Path, targets: Mapping[str, str], rule_files: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus scraping each ``job name -> host:port`` every second; returns the process
    and its URL once it is ready."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing; .ci/run installs it"
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={root / 'prometheus.yml'}",
         f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, "Prometheus to start", step_s=0.5)
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def query(prometheus_url: str, expr: str) -> dict[str, Any]:
    """The whole answer of an instant query."""
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=30)
    body: dict[str, Any] = response.json()
    return body


def query_range(prometheus_url: str, expr: str, start: float) -> dict[str, Any]:
    """The whole answer of a range query from ``start`` to now, a sample a second, as a
    dashboard panel asks."""
    params: dict[str, str | float] = {"query": expr, "start": start, "end": time.time(), "step": 1}
    response = httpx.get(f"{prometheus_url}/api/v1/query_range", params=params, timeout=30)
    body: dict[str, Any] = response.json()
    return body

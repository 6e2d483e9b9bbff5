"""``loragate monitor``: run the quality and drift monitor now, or read its history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import click

from core.settings import Settings
from gateway.cli.output import emit, json_output
from monitor.service import QualityMonitor, report_dict


def _with_monitor(settings: Settings, action: Callable[[QualityMonitor], Awaitable[Any]]) -> Any:
    from core.store import Database
    from gateway.wiring import embedder, quality_monitor

    async def run() -> Any:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            return await action(quality_monitor(settings, db, embedder(settings)))
        finally:
            await db.dispose()

    return asyncio.run(run())


@click.group()
def monitor() -> None:
    """Quality KPIs and query drift per alias."""


@monitor.command("run")
@click.option("--alias", help="Only this alias (default: every alias).")
@json_output
@click.pass_obj
def monitor_run(settings: Settings, alias: str | None) -> None:
    """Write a monitor report now (the gateway also does it every monitor_interval_s)."""

    async def action(service: QualityMonitor) -> list[Any]:
        return [await service.check(alias)] if alias else await service.run_once()

    reports = [report_dict(report) for report in _with_monitor(settings, action)]

    def text() -> None:  # one JSON line per report, as before --json existed
        for report in reports:
            click.echo(json.dumps(report, default=str))

    emit(reports, text)


@monitor.command("history")
@click.argument("alias")
@click.option("--limit", default=20, show_default=True, help="Newest reports to show.")
@json_output
@click.pass_obj
def monitor_history(settings: Settings, alias: str, limit: int) -> None:
    """An alias's reports, newest first: KPIs of the live version, drift and triggers."""

    async def action(service: QualityMonitor) -> list[Any]:
        return await service.history(alias, limit)

    reports = [report_dict(report) for report in _with_monitor(settings, action)]

    def text() -> None:
        click.echo(f"{'computed at':<20} {'live':<24} {'pos':>5} {'grnd':>5} {'idk':>5} "
                   f"{'mmd':>7} {'p':>6} {'centroid':>8}  triggers")  # fmt: skip
        for report in reports:
            click.echo(_history_line(report))

    emit(reports, text)


def _history_line(report: dict[str, Any]) -> str:
    live = report["quality"].get(report["live_version"], {})
    drift = report["drift"] or {}

    def number(value: float | None, width: int, digits: int = 2) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    return (
        f"{report['computed_at'][:19]:<20} {report['live_version']:<24} "
        f"{number(live.get('positive_ratio'), 5)} {number(live.get('groundedness'), 5)} "
        f"{number(live.get('idk_rate'), 5)} {number(drift.get('mmd'), 7, 4)} "
        f"{number(drift.get('p_value'), 6, 3)} {number(drift.get('centroid_distance'), 8, 4)}"
        f"  {','.join(report['triggers']) or '-'}"
        + (f"  ({report['note']})" if report["note"] else "")
    )


COMMANDS = [monitor]

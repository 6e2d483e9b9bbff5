"""Admin API of the quality and drift monitor: an alias's reports over time, or one now."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.params import Parameter

from monitor.service import QualityMonitor, report_dict


class MonitorRoutes(Controller):
    """Quality and drift reports per alias (admin)."""

    path = "/v1/admin/monitor"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @get("/{alias:str}")
    async def monitor_history(
        self,
        alias: str,
        monitor: QualityMonitor,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """An alias's monitor reports, newest first: KPIs per version, drift and triggers."""
        reports = await monitor.history(alias, limit)
        return {"alias": alias, "reports": [report_dict(report) for report in reports]}

    @post("/{alias:str}", status_code=201)
    async def run_monitor(self, alias: str, monitor: QualityMonitor) -> dict[str, Any]:
        """Write a report for the alias now, rather than at the next monitor interval."""
        return report_dict(await monitor.check(alias))

    @get("/{alias:str}/timeline")
    async def monitor_timeline(
        self,
        alias: str,
        monitor: QualityMonitor,
        hours: Annotated[float, Parameter(gt=0, le=24 * 90)] = 24,
        bucket_minutes: Annotated[int, Parameter(ge=1, le=24 * 60)] = 60,
    ) -> dict[str, Any]:
        """Positive-feedback ratio, groundedness and the other KPIs per version, in time buckets,
        computed from the stored conversations and feedback (the console draws it)."""
        buckets = await monitor.timeline(alias, hours, bucket_minutes)
        return {"alias": alias, "bucket_minutes": bucket_minutes, "buckets": buckets}

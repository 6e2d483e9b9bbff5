"""What every command group shares: the settings on the click context, and a store opened
for one command."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from core.settings import Settings

T = TypeVar("T")


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def with_store(
    settings: Settings,
    build: Callable[[Settings, Any], Any],
    action: Callable[[Any], Coroutine[Any, Any, T]],
) -> T:
    """Open the store (migrated), build a service on it, run ``action`` on the service."""
    from core.store import Database

    async def run() -> T:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            return await action(build(settings, db))
        finally:
            await db.dispose()

    return run_coroutine(run())

"""``loragate keys``: API keys and their quotas."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store
from gateway.cli.output import emit, json_output

T = TypeVar("T")


@click.group()
def keys() -> None:
    """API keys (stored as hashes; the key itself is printed once)."""


def _with_keys(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from core.store.keys import KeyStore

    return with_store(settings, lambda _, db: KeyStore(db), action)


@keys.command("create")
@click.option("--scope", type=click.Choice(["chat", "admin"]), default="chat", show_default=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@json_output
@click.pass_context
def keys_create(ctx: click.Context, scope: str, name: str) -> None:
    """Create a key and print it once."""
    created = _with_keys(settings_of(ctx), lambda store: store.create(scope, name))

    def text() -> None:
        click.echo(created.key)
        click.echo(f"id={created.id} scope={created.scope} (the key is not shown again)", err=True)

    card = {"id": created.id, "scope": created.scope, "name": created.name, "key": created.key}
    emit(card, text)


@keys.command("list")
@json_output
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List keys (ids, scopes and prefixes; never the keys)."""
    rows = _with_keys(settings_of(ctx), lambda store: store.list())
    cards = [_key_card(row) for row in rows]

    def text() -> None:
        for card in cards:
            click.echo("\t".join([card["id"], card["scope"], card["prefix"] + "…",
                                  card["state"], card["name"]]))  # fmt: skip

    emit(cards, text)


def _key_card(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "prefix": row.prefix,
        "state": "revoked" if row.revoked_at else "active",
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


@keys.command("revoke")
@click.argument("key_id")
@json_output
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id."""
    if not _with_keys(settings_of(ctx), lambda store: store.revoke(key_id)):
        raise click.ClickException(f"no active key with id {key_id}")
    emit({"id": key_id, "state": "revoked"}, f"revoked {key_id}")


def _limit(value: str) -> int | None:
    """An option value: a positive number, or "none" to unset."""
    if value.lower() == "none":
        return None
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a positive whole number or 'none'")
    return int(value)


@keys.command("quota")
@click.argument("key_id")
@click.option("--rpm", help="Requests per minute ('none' to unset).")
@click.option("--tpm", help="Tokens per minute ('none' to unset).")
@click.option("--streams", help="Concurrent streams ('none' to unset).")
@click.option("--monthly-tokens", help="Monthly token budget ('none' to unset).")
@click.option("--feedback-per-minute", help="Feedback posts per minute ('none' to unset).")
@click.option("--searches-per-minute", help="Searches per minute ('none' to unset).")
@json_output
@click.pass_context
def keys_quota(
    ctx: click.Context,
    key_id: str,
    rpm: str | None,
    tpm: str | None,
    streams: str | None,
    monthly_tokens: str | None,
    feedback_per_minute: str | None,
    searches_per_minute: str | None,
) -> None:
    """Show a key's limits and its tokens this month; with options, change them first.

    Unset limits fall back to the quota_default_* settings. A running gateway sees a change
    within key_cache_seconds.
    """
    from dataclasses import replace

    from core.store.keys import quota_of
    from gateway.quota_gate import MonthlyUsage

    settings = settings_of(ctx)
    given = {"requests_per_minute": rpm, "tokens_per_minute": tpm,
             "concurrent_streams": streams, "monthly_tokens": monthly_tokens,
             "feedback_per_minute": feedback_per_minute,
             "searches_per_minute": searches_per_minute}  # fmt: skip
    changes = {name: _limit(raw) for name, raw in given.items() if raw is not None}

    async def action(store: Any) -> tuple[Any, int]:
        row = await store.get(key_id)
        if row is None:
            raise click.ClickException(f"no key with id {key_id}")
        quota = replace(quota_of(row), **changes)
        if changes:
            await store.set_quota(key_id, quota)
        return quota, await MonthlyUsage(store.db).tokens(key_id)

    quota, used = _with_keys(settings, action)
    from gateway.wiring import default_quota

    limits = _effective_limits(quota, default_quota(settings))

    def text() -> None:
        for name, limit in limits.items():
            value = limit["limit"] if limit["limit"] is not None else "unlimited"
            click.echo(f"{name:<22} {value:>12}  ({limit['from']})")
        click.echo(f"{'tokens this month':<22} {used:>12}")

    emit({"id": key_id, "limits": limits, "tokens_this_month": used}, text)


def _effective_limits(quota: Any, defaults: Any) -> dict[str, dict[str, Any]]:
    """Each limit in force and where it comes from: the key, the default, or neither."""
    limits = {}
    for name, own in quota.as_dict().items():
        effective = getattr(quota.over(defaults), name)
        source = "key" if own is not None else "default" if effective is not None else "-"
        if effective is None and name in ("feedback_per_minute", "searches_per_minute"):
            effective = quota.over(defaults).requests_per_minute  # gateway.action_limits
            source = "requests_per_minute" if effective is not None else "-"
        limits[name] = {"limit": effective, "from": source}
    return limits

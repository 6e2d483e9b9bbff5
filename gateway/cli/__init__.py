"""The ``loragate`` command line. It mirrors the HTTP API; each command loads the settings."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from core.logs import configure_logging
from core.settings import Settings, load_settings
from gateway.cli.errors import CommandGroup

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _with_store(
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

    return _run(run())


@click.group(cls=CommandGroup)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LORAGATE_CONFIG",
    help="TOML settings file (LORAGATE_* env vars override it).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """loragate: an OpenAI-compatible gateway with hot-swappable LoRA adapters."""
    ctx.obj = load_settings(config_file)
    configure_logging(ctx.obj.log_level, ctx.obj.log_format)


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Start the gateway (and, in embedded mode, the supervised vLLM server)."""
    from gateway.serve import serve as run_server

    run_server(_settings(ctx))


# -- model ------------------------------------------------------------------------------
@main.group()
def model() -> None:
    """The base model."""


@model.command("prepare")
@click.pass_context
def model_prepare(ctx: click.Context) -> None:
    """Write the bundled SmolLM2-135M-Instruct as a bf16 safetensors directory (idempotent)."""
    from adapters.base_model import PREPARE_STEPS, check_model_dir, prepare_base_model
    from core.progress import Progress

    settings = _settings(ctx)
    target = settings.resolved_base_model_path
    if settings.base_model_path is not None:
        check_model_dir(target)  # an operator's own model: nothing to convert
        click.echo(f"using the configured model directory {target}")
        return
    with Progress("model prepare", PREPARE_STEPS) as progress:
        info = prepare_base_model(target, progress)
    click.echo(f"base model ready at {target} (smoke reply: {info.get('smoke_reply')!r})")


# -- engine -----------------------------------------------------------------------------
@main.group()
def engine() -> None:
    """The embedded vLLM server."""


@engine.command("run")
@click.pass_context
def engine_run(ctx: click.Context) -> None:
    """Run only the supervised vLLM server until interrupted."""
    from gateway.serve import run_engine

    _run(run_engine(_settings(ctx)))


# -- keys -------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """API keys (stored as hashes; the key itself is printed once)."""


def _with_keys(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from core.store.keys import KeyStore

    return _with_store(settings, lambda _, db: KeyStore(db), action)


@keys.command("create")
@click.option("--scope", type=click.Choice(["chat", "admin"]), default="chat", show_default=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@click.pass_context
def keys_create(ctx: click.Context, scope: str, name: str) -> None:
    """Create a key and print it once."""
    created = _with_keys(_settings(ctx), lambda store: store.create(scope, name))
    click.echo(created.key)
    click.echo(f"id={created.id} scope={created.scope} (the key is not shown again)", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List keys (ids, scopes and prefixes; never the keys)."""
    rows = _with_keys(_settings(ctx), lambda store: store.list())
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id}\t{row.scope}\t{row.prefix}…\t{state}\t{row.name}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id."""
    if not _with_keys(_settings(ctx), lambda store: store.revoke(key_id)):
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}")


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

    settings = _settings(ctx)
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

    defaults = default_quota(settings)
    for name, own in quota.as_dict().items():
        effective = getattr(quota.over(defaults), name)
        source = "key" if own is not None else "default" if effective is not None else "-"
        if effective is None and name in ("feedback_per_minute", "searches_per_minute"):
            effective = quota.over(defaults).requests_per_minute  # gateway.action_limits
            source = "requests_per_minute" if effective is not None else "-"
        click.echo(
            f"{name:<22} {effective if effective is not None else 'unlimited':>12}  ({source})"
        )
    click.echo(f"{'tokens this month':<22} {used:>12}")


# -- adapters ---------------------------------------------------------------------------
@main.group()
def adapters() -> None:
    """LoRA adapter versions."""


def _with_registry(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.wiring import adapter_registry

    return _with_store(settings, adapter_registry, action)


@adapters.command("publish")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--alias", required=True, help="Alias the version belongs to, e.g. support.")
@click.pass_context
def adapters_publish(ctx: click.Context, path: Path, alias: str) -> None:
    """Validate a PEFT LoRA directory and store it as <alias>-v<N>."""

    published = _with_registry(_settings(ctx), lambda registry: registry.publish(path, alias))
    verb = "published" if published.created else "already published as"
    click.echo(f"{verb} {published.version.name} ({published.version.state})")


@adapters.command("list")
@click.option("--alias", default=None)
@click.pass_context
def adapters_list(ctx: click.Context, alias: str | None) -> None:
    """List versions with their state."""
    versions = _with_registry(_settings(ctx), lambda registry: registry.versions(alias))
    for version in versions:
        click.echo(f"{version.name}\t{version.state}\trank={version.rank}\t{version.sha256[:12]}")


@adapters.command("show")
@click.argument("version")
@click.pass_context
def adapters_show(ctx: click.Context, version: str) -> None:
    """Show one version, with its eval report."""
    from gateway.presentation import version_card

    row = _with_registry(_settings(ctx), lambda registry: registry.get(version))
    click.echo(json.dumps(version_card(row), indent=2, default=str))


@adapters.command("alias")
@click.argument("alias")
@click.pass_context
def adapters_alias(ctx: click.Context, alias: str) -> None:
    """Declare ALIAS before its first version; it serves the base model meanwhile."""

    created = _with_registry(_settings(ctx), lambda registry: registry.create_alias(alias))
    click.echo(f"alias {alias} {'created' if created else 'already exists'}")


@main.group()
def rollout() -> None:
    """Canary rollouts of adapter versions."""


def _with_rollouts(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.wiring import rollout_controller

    return _with_store(settings, rollout_controller, action)


def _rollout_command(ctx: click.Context, action: Callable[[Any], Any]) -> None:
    from gateway.presentation import rollout_card

    result = _with_rollouts(_settings(ctx), action)
    card = rollout_card(*result) if isinstance(result, tuple) else rollout_card(result)
    click.echo(json.dumps(card, indent=2, default=str))


@rollout.command("start")
@click.argument("alias")
@click.argument("version")
@click.option("--steps", default=None, help="Comma-separated percentages, e.g. 10,25,50,100.")
@click.pass_context
def rollout_start(ctx: click.Context, alias: str, version: str, steps: str | None) -> None:
    """Start a canary rollout of VERSION under ALIAS."""
    parsed = tuple(int(step) for step in steps.split(",")) if steps else None
    _rollout_command(ctx, lambda controller: controller.start(alias, version, parsed))


@rollout.command("status")
@click.argument("alias")
@click.pass_context
def rollout_status(ctx: click.Context, alias: str) -> None:
    """Show the alias's latest rollout and its history."""

    async def status(controller: Any) -> Any:
        rollout, events = await controller.status(alias)
        if rollout is None:
            from adapters.rollout import RolloutError

            raise RolloutError(f"alias {alias} has had no rollout")
        return rollout, events

    _rollout_command(ctx, status)


def _rollout_override(name: str, help_text: str) -> None:
    @rollout.command(name, help=help_text)
    @click.argument("alias")
    @click.pass_context
    def command(ctx: click.Context, alias: str) -> None:
        _rollout_command(ctx, lambda controller: getattr(controller, name)(alias))


for _name, _help in (("promote", "Promote the canary now."), ("rollback", "Roll back now."),
                     ("pause", "Freeze the rollout at its step."),
                     ("resume", "Resume a paused rollout.")):  # fmt: skip
    _rollout_override(_name, _help)


# -- experiments ------------------------------------------------------------------------
@main.group()
def experiment() -> None:
    """A/B experiments: versions (or retrieval settings) of an alias on live traffic."""


def _experiment_command(ctx: click.Context, action: Callable[[Any], Any]) -> None:
    from gateway.presentation import experiment_card
    from gateway.wiring import adapter_registry, experiment_controller

    def build(settings: Settings, db: Any) -> Any:
        return experiment_controller(settings, db, adapter_registry(settings, db))

    result = _with_store(_settings(ctx), build, action)
    click.echo(json.dumps(experiment_card(result), indent=2, default=str))


@experiment.command("start")
@click.argument("alias")
@click.option("--arms", required=True,
              help="Comma-separated: v3, support-v3, base, v4:no-retrieval, v4:collection=NAME. "
              "The first is the control.")  # fmt: skip
@click.option("--max-samples", type=click.IntRange(1), default=None,
              help="Rated answers per arm after which an undecided experiment stops.")  # fmt: skip
@click.option("--max-days", type=click.FloatRange(0, min_open=True), default=None,
              help="How long an undecided experiment runs at most.")  # fmt: skip
@click.option("--auto-promote", is_flag=True, help="Promote a winning version at once.")
@click.pass_context
def experiment_start(
    ctx: click.Context, alias: str, arms: str, max_samples: int | None,
    max_days: float | None, auto_promote: bool,
) -> None:  # fmt: skip
    """Split ALIAS's traffic evenly across the arms, sticky per conversation."""
    specs = [arm for arm in arms.split(",") if arm.strip()]
    duration = max_days * 86_400 if max_days else None
    _experiment_command(ctx, lambda controller: controller.start(
        alias, specs, max_samples=max_samples, max_duration_s=duration,
        auto_promote=auto_promote,
    ))  # fmt: skip


@experiment.command("status")
@click.argument("alias")
@click.pass_context
def experiment_status(ctx: click.Context, alias: str) -> None:
    """The alias's latest experiment: each arm's rate and interval, and the decision."""

    async def status(controller: Any) -> Any:
        found = await controller.status(alias)
        if found is None:
            from adapters.experiments import ExperimentError

            raise ExperimentError(f"alias {alias} has had no experiment")
        return found

    _experiment_command(ctx, status)


@experiment.command("stop")
@click.argument("alias")
@click.pass_context
def experiment_stop(ctx: click.Context, alias: str) -> None:
    """Stop ALIAS's running experiment without a winner."""
    _experiment_command(ctx, lambda controller: controller.stop(alias))


@experiment.command("promote")
@click.argument("alias")
@click.pass_context
def experiment_promote(ctx: click.Context, alias: str) -> None:
    """Make the decided experiment's winning version ALIAS's live version."""
    _experiment_command(ctx, lambda controller: controller.promote(alias))


# -- review -----------------------------------------------------------------------------
@main.group()
def review() -> None:
    """The review queue of flagged completions."""


def _review(ctx: click.Context, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from core.store.conversations import ConversationLog
    from gateway.review import ReviewQueue
    from gateway.wiring import flagger

    settings = _settings(ctx)

    def build(_: Settings, db: Any) -> ReviewQueue:
        return ReviewQueue(db, flagger(settings, db), ConversationLog(db))

    return _with_store(settings, build, action)


@review.command("list")
@click.option(
    "--state",
    default="pending",
    show_default=True,
    type=click.Choice(["pending", "approved", "rejected", "all"]),
)
@click.option("--alias", default=None)
@click.option("--reason", default=None)
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def review_list(
    ctx: click.Context, state: str, alias: str | None, reason: str | None, limit: int
) -> None:
    """List flagged completions."""
    from gateway.review import ReviewFilter

    where = ReviewFilter(None if state == "all" else state, alias, reason, limit)
    items, total = _review(ctx, lambda queue: queue.list(where))
    for item, _ in items:
        reasons = ",".join(reason["reason"] for reason in item.reasons)
        click.echo(
            f"{item.id}	{item.state}	{item.alias}	{reasons}	{item.completion_id}"
        )
    click.echo(f"{len(items)} of {total}", err=True)


@review.command("show")
@click.argument("item_id", type=int)
@click.pass_context
def review_show(ctx: click.Context, item_id: int) -> None:
    """Show one item with its conversation and answer."""
    from gateway.presentation import item_card

    item, conversation = _review(ctx, lambda queue: queue.show(item_id))
    click.echo(json.dumps(item_card(item, conversation), indent=2, default=str))


def _decide(
    ctx: click.Context,
    item_id: int,
    state: Literal["approved", "rejected"],
    revision: str | None,
    correction: str | None = None,
    note: str | None = None,
) -> Any:
    """Decide on the item at ``revision``, or as read here and now: never on a correction
    that arrived after what the operator was shown."""
    from gateway.review import revision as revision_of

    async def decide(queue: Any) -> Any:
        item, _ = await queue.show(item_id)
        seen = revision or revision_of(item)
        return await queue.decide(
            item_id, state, reviewer="cli", seen=seen, correction=correction, note=note
        )

    item = _review(ctx, decide)
    click.echo(f"{item.id} {item.state}")
    return item


_REVISION_HELP = "The revision `review show` printed: refused if the item changed since."


@review.command("approve")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--correction", default=None, help="Replace the correction before approving.")
@click.option("--note", default=None)
@click.pass_context
def review_approve(
    ctx: click.Context,
    item_id: int,
    revision: str | None,
    correction: str | None,
    note: str | None,
) -> None:
    """Approve an item for training (with its correction, or the answer as served) as it
    is now, or at --revision; the reply approved is printed to stderr."""
    item = _decide(ctx, item_id, "approved", revision, correction, note)
    approved = item.correction or "(no correction: the answer as served is trained on)"
    click.echo(f"approved reply: {approved}", err=True)


@review.command("reject")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--note", default=None)
@click.pass_context
def review_reject(ctx: click.Context, item_id: int, revision: str | None, note: str | None) -> None:
    """Reject an item: it never reaches training."""
    _decide(ctx, item_id, "rejected", revision, note=note)


@review.command("edit")
@click.argument("item_id", type=int)
@click.option("--correction", required=True, help="The reply the model should have given.")
@click.option("--note", default=None)
@click.pass_context
def review_edit(ctx: click.Context, item_id: int, correction: str, note: str | None) -> None:
    """Edit a pending item's correction."""
    item = _review(ctx, lambda queue: queue.edit(item_id, correction, note))
    click.echo(f"{item.id} {item.state}: correction updated")


@review.command("flag")
@click.argument("completion_id")
@click.option("--note", default="", help="Why it is flagged.")
@click.option("--correction", default=None)
@click.pass_context
def review_flag(ctx: click.Context, completion_id: str, note: str, correction: str | None) -> None:
    """Flag a completion by hand (reason operator_flag)."""
    item_id = _review(ctx, lambda queue: queue.flag(completion_id, note, correction))
    click.echo(f"review item {item_id}")


# -- retrieval --------------------------------------------------------------------------
@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--collection", required=True, help="Collection to add the documents to.")
@click.pass_context
def ingest(ctx: click.Context, path: Path, collection: str) -> None:
    """Ingest .txt, .md, .html and .jsonl files (a file or a folder) into a collection.

    Resumable: documents already ingested with the same content are skipped.
    """
    from gateway.ingest import ingest_path

    summary = ingest_path(_settings(ctx), path, collection)
    click.echo(
        f"{collection}: {summary['created']} created, {summary['replaced']} replaced, "
        f"{summary['unchanged']} unchanged, {summary['failed']} failed, "
        f"{summary['chunks']} chunks written"
    )
    if summary["failed"]:
        raise SystemExit(1)


# -- config -----------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as JSON."""
    click.echo(json.dumps(_settings(ctx).model_dump(mode="json"), indent=2))


@config.command("docs")
@click.option(
    "--write",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Replace the table between the markers in this file instead of printing.",
)
def config_docs(path: Path | None) -> None:
    """Print the settings table in Markdown (docs/configuration.md is generated from it)."""
    from core.settings_docs import replace_table, settings_table

    if path is None:
        sys.stdout.write(settings_table())
    else:
        path.write_text(replace_table(path.read_text()))
        click.echo(f"updated {path}")


@main.command()
def doctor() -> None:
    """Check that the install can run the embedded default."""
    from gateway.doctor import run_checks

    checks = run_checks()
    for check in checks:
        click.echo(f"{'ok ' if check.ok else 'BAD'}  {check.name}: {check.detail}")
    if not all(check.ok for check in checks):
        raise click.ClickException("the install is broken; see the lines marked BAD")


def _add_package_commands() -> None:
    # The trainer's and the monitor's commands; nothing heavy loads until one runs.
    from gateway.cli.monitor import COMMANDS as MONITOR_COMMANDS
    from gateway.cli.trainer import COMMANDS as TRAINER_COMMANDS

    for command in [*TRAINER_COMMANDS, *MONITOR_COMMANDS]:
        main.add_command(command)


_add_package_commands()

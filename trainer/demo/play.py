"""``loragate demo``: the whole loop, end to end, on the embedded default.

Starts ``loragate serve`` (gateway + vLLM CPU) on a demo data directory, declares the alias
``cycles`` with retrieval over the Quillfeather documents, lets simulated users ask every demo
question and correct the wrong answers, approves the review queue, runs ``loragate train`` in
its own process (curate → QLoRA → evaluate → gate → publish → canary), keeps traffic and
feedback flowing until the canary is promoted or rolled back, and prints before/after.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import click
import httpx

from core.settings import Settings
from trainer.demo import ALIAS, DemoAnswer, DemoUsers, accuracy, questions, retrieval_config

READY_TIMEOUT_S = 900
ROLLOUT_TIMEOUT_S = 900


def demo_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The demo's settings on top of the operator's: fast rollout analysis, small gates."""
    return {
        **os.environ,
        "LORAGATE_DATA_DIR": str(data_dir),
        "LORAGATE_DATABASE_URL": "",
        "LORAGATE_AUTH_ENABLED": "true",
        "LORAGATE_RETRIEVAL_MODELS": json.dumps(retrieval_config()),
        "LORAGATE_BASE_MODEL_PATH": str(settings.resolved_base_model_path.resolve()),
        "LORAGATE_ROLLOUT_STEPS": "50,100",
        "LORAGATE_ROLLOUT_INTERVAL_S": "30",
        "LORAGATE_ROLLOUT_MIN_SAMPLES": "8",
    }


def create_keys(env: dict[str, str]) -> tuple[str, str]:
    def create(scope: str) -> str:
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "keys",
                "create",
                "--scope",
                scope,
                "--name",
                "demo",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return output.stdout.strip()

    return create("chat"), create("admin")


def wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"loragate serve exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise click.ClickException("the gateway did not become ready")


async def watch_rollout(users: DemoUsers) -> dict[str, Any]:
    """Keep users asking and rating until the canary is promoted or rolled back."""
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    status: dict[str, Any] = {}
    asked = questions()
    round_number = 0
    while time.monotonic() < deadline:
        status = await users.rollout()
        click.echo(
            f"  rollout: {status.get('state')} step {status.get('step')} "
            f"weight {status.get('weight')}"
        )
        if status.get("state") not in ("running", "paused"):
            return status
        batch = asked[(round_number * 12) % len(asked) :][:12]
        served = await users.ask(batch)
        await users.rate(served)
        round_number += 1
    return status


async def play(users: DemoUsers, env: dict[str, str]) -> None:
    click.echo("1/6 declaring the alias and ingesting the Quillfeather documents")
    await users.setup()
    asked = questions()
    click.echo(f"2/6 users ask {len(asked)} questions through the alias '{ALIAS}'")
    before = await users.ask(asked)
    click.echo(f"    answered correctly: {accuracy(before):.1%} (base model + retrieval)")
    click.echo("3/6 users correct the wrong answers; the operator approves the review queue")
    await users.give_feedback(before)
    approved = await users.approve_all()
    click.echo(f"    {approved} examples approved")
    click.echo("4/6 loragate train (its own process): curate, QLoRA, evaluate, gate, publish")
    await anyio.run_process(
        [sys.executable, "-m", "gateway.cli", "train", "--alias", ALIAS],
        env=env,
        stdout=None,
        stderr=None,
    )
    click.echo("5/6 the canary takes traffic; users keep rating answers")
    final = await watch_rollout(users)
    click.echo(f"    rollout {final.get('state')}: {final.get('reason')}")
    after = await users.ask(asked)
    versions = await users.versions()
    report = versions[-1]["eval_report"] if versions else None
    click.echo("6/6 before and after, through the alias:")
    _print_table(before, after, final, report)


def _print_table(
    before: list[DemoAnswer],
    after: list[DemoAnswer],
    rollout: dict[str, Any],
    report: dict[str, Any] | None,
) -> None:
    rows = [("", "before", "after")]
    if report is not None:
        holdout = report["candidate"]["holdout"]
        rows.append((
            f"holdout accuracy ({holdout['count']} frozen questions)",
            f"{report['baseline']['holdout']['accuracy']:.1%}", f"{holdout['accuracy']:.1%}",
        ))  # fmt: skip
        rows.append((
            "general-ability probes", f"{report['baseline']['probes']['accuracy']:.1%}",
            f"{report['candidate']['probes']['accuracy']:.1%}",
        ))  # fmt: skip
    rows.append(("all 72 demo questions", f"{accuracy(before):.1%}", f"{accuracy(after):.1%}"))
    served_by = (before[0].model if before else "-", after[0].model if after else "-")
    rows.append(("served by", *served_by))
    rows.append(("rollout", "-", str(rollout.get("state"))))
    for label, left, right in rows:
        click.echo(f"    {label:<40}{left:>24}{right:>24}")


@click.command("demo")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="A fresh directory for the demo's store and adapters.",
)
@click.pass_context
def demo_command(ctx: click.Context, data_dir: Path) -> None:
    """Play the adaptation loop end to end on the embedded default and show the gain."""
    from retrieval.embeddings import Embedder

    settings: Settings = ctx.obj
    env = demo_env(settings, data_dir.resolve())
    chat_key, admin_key = create_keys(env)
    base_url = f"http://{settings.host}:{settings.port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "serve.log"
    click.echo(f"starting loragate serve (log: {log_path}); vLLM takes about a minute")
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(base_url, server)
        embedder = Embedder(
            settings.retrieval.embedding_model_path, threads=settings.retrieval.embedding_threads
        )
        users = DemoUsers(base_url, chat_key, admin_key, embedder.embed)

        async def run() -> None:
            try:
                await play(users, env)
            finally:
                await users.close()

        asyncio.run(run())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()

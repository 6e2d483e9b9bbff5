"""The offline CLI commands against a real store: adapters, rollouts, ingest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.sample import sample_adapter


@pytest.fixture
def cli(tmp_path: Path, prepared_model: Path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "LORAGATE_DATA_DIR": str(tmp_path / "data"),
        "LORAGATE_BASE_MODEL_PATH": str(prepared_model),
        "LORAGATE_LOG_LEVEL": "WARNING",
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True
        )
        assert (result.returncode == 0) == ok, result.stderr
        return result

    return run


def test_publish_list_and_roll_out_from_the_cli(cli, tmp_path: Path, prepared_model: Path) -> None:  # type: ignore[no-untyped-def]
    first = sample_adapter(tmp_path / "a", prepared_model, seed=1)
    second = sample_adapter(tmp_path / "b", prepared_model, seed=2)
    assert cli("adapters", "publish", str(first), "--alias", "help").stdout.strip() == (
        "published help-v1 (live)"
    )
    assert (
        "already published as help-v1"
        in cli("adapters", "publish", str(first), "--alias", "help").stdout
    )
    cli("adapters", "publish", str(second), "--alias", "help")
    listing = cli("adapters", "list").stdout.splitlines()
    assert [line.split("\t")[:2] for line in listing] == [
        ["help-v1", "live"],
        ["help-v2", "candidate"],
    ]

    started = json.loads(cli("rollout", "start", "help", "help-v2", "--steps", "20,100").stdout)
    assert (started["state"], started["weight"]) == ("running", 0.2)
    assert json.loads(cli("rollout", "pause", "help").stdout)["state"] == "paused"
    status = json.loads(cli("rollout", "status", "help").stdout)
    assert [event["kind"] for event in status["history"]] == ["started", "paused"]
    assert json.loads(cli("rollout", "promote", "help").stdout)["state"] == "promoted"
    assert "no rollout in progress" in cli("rollout", "rollback", "help", ok=False).stderr
    listing = cli("adapters", "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listing] == ["retired", "live"]


def test_a_rolled_back_version_rolls_out_again_with_again(
    cli, tmp_path: Path, prepared_model: Path
) -> None:  # type: ignore[no-untyped-def]
    """Issue 22: an operator who fixed what failed retries the canary from the CLI."""
    for seed, name in ((1, "a"), (2, "b")):
        cli("adapters", "publish", str(sample_adapter(tmp_path / name, prepared_model, seed=seed)),
            "--alias", "retry")  # fmt: skip
    cli("rollout", "start", "retry", "retry-v2")
    assert json.loads(cli("rollout", "rollback", "retry", "--json").stdout)["state"] == (
        "rolled_back"
    )
    refused = cli("rollout", "start", "retry", "retry-v2", ok=False).stderr
    assert "rolled back" in refused and "again" in refused
    started = json.loads(cli("rollout", "start", "retry", "retry-v2", "--again", "--json").stdout)
    assert (started["candidate"], started["state"]) == ("retry-v2", "running")
    status = json.loads(cli("rollout", "status", "retry", "--json").stdout)
    assert status["history"][-1]["kind"] == "started"
    assert status["history"][-1]["detail"].get("again") is True


def test_refusals_are_clear_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pickle_dir = tmp_path / "pickled"
    pickle_dir.mkdir()
    (pickle_dir / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (pickle_dir / "adapter_model.bin").write_bytes(b"\x80\x04")
    assert (
        "only safetensors"
        in cli("adapters", "publish", str(pickle_dir), "--alias", "x", ok=False).stderr
    )
    assert (
        "invalid alias"
        in cli("adapters", "publish", str(pickle_dir), "--alias", "Bad/Alias", ok=False).stderr
    )


def test_ingest_is_resumable(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Title\n\nAlpha text about otters.")
    (docs / "b.txt").write_text("Beta text about beavers.")
    (docs / "bad.txt").write_bytes(b"\xff\xfe\x00binary")
    first = cli("ingest", str(docs), "--collection", "animals", ok=False)  # one file failed
    assert "2 created, 0 replaced, 0 unchanged, 1 failed" in first.stdout
    (docs / "bad.txt").unlink()
    again = cli("ingest", str(docs), "--collection", "animals")
    assert "0 created, 0 replaced, 2 unchanged, 0 failed" in again.stdout
    # The index this process saved is listed by the next one, with its kind.
    listed = cli("collections", "list").stdout.split("\t")
    assert listed[:3] == ["animals", "2 documents", "2 chunks"]
    assert listed[3].startswith("exact ")
    (card,) = json.loads(cli("collections", "list", "--json").stdout)
    assert card["index"]["kind"] == "exact" and card["index"]["vectors"] == 2


def test_review_from_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from core.store import Database
    from core.store.tables import Conversation
    from tests.support import run

    async def served() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'loragate.db'}")
        await db.migrate()
        async with db.transaction() as session:
            session.add(Conversation(
                id="chatcmpl-cli", requested_model="support", served_model="support-v1",
                stream=False, status="ok", request={"messages": [
                    {"role": "user", "content": "Refund window?"}]},
                response=[{"index": 0, "content": "30 days.", "finish_reason": "stop"}],
            ))  # fmt: skip
        await db.dispose()

    run(served())
    assert cli("review", "flag", "chatcmpl-cli", "--note", "wrong").stdout.strip() == (
        "review item 1"
    )
    listed = cli("review", "list", "--alias", "support").stdout.strip().split("\t")
    assert listed == ["1", "pending", "support", "operator_flag", "chatcmpl-cli"]
    cli("review", "edit", "1", "--correction", "47 days.")
    assert cli("review", "approve", "1").stdout.strip() == "1 approved"
    shown = json.loads(cli("review", "show", "1").stdout)
    assert shown["correction"] == "47 days." and shown["answer"] == "30 days."
    assert "only pending items" in cli("review", "edit", "1", "--correction", "x", ok=False).stderr
    assert "No review item 9" in cli("review", "show", "9", ok=False).stderr
    assert cli("review", "list").stdout == ""  # nothing pending

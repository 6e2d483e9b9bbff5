"""The CLI's ``--json`` (issue 22): every command that prints a result takes it, from the one
decorator in gateway/cli/output.py, and then prints exactly one JSON document on stdout;
without it the text for people is unchanged. And ``rollout start --again`` re-rolls a
rolled-back version, which the API already allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main


def _invoke(tmp_path: Path, *args: str) -> Result:
    env = {"LORAGATE_DATA_DIR": str(tmp_path), "LORAGATE_LOG_FORMAT": "text"}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def _json(tmp_path: Path, *args: str) -> Any:
    return json.loads(_invoke(tmp_path, *args, "--json").stdout)


def test_keys_create_list_quota_and_revoke_as_json(tmp_path: Path) -> None:
    created = _json(tmp_path, "keys", "create", "--scope", "chat", "--name", "billing")
    assert created["key"].startswith("lg-") and created["name"] == "billing"
    (listed,) = _json(tmp_path, "keys", "list")
    assert listed["id"] == created["id"] and listed["state"] == "active"
    assert "key" not in listed  # the key itself is shown once, at creation
    quota = _json(tmp_path, "keys", "quota", created["id"], "--rpm", "60")
    assert quota["limits"]["requests_per_minute"] == {"limit": 60, "from": "key"}
    assert quota["limits"]["monthly_tokens"] == {"limit": None, "from": "-"}
    assert quota["tokens_this_month"] == 0
    assert _json(tmp_path, "keys", "revoke", created["id"]) == {
        "id": created["id"], "state": "revoked",
    }  # fmt: skip
    assert _json(tmp_path, "keys", "list")[0]["state"] == "revoked"


def test_without_json_the_text_is_for_people(tmp_path: Path) -> None:
    created = _invoke(tmp_path, "keys", "create", "--name", "ops")
    key = created.stdout.strip()
    assert key.startswith("lg-") and "(the key is not shown again)" in created.stderr
    listed = _invoke(tmp_path, "keys", "list").stdout
    assert "\tchat\t" in listed and "ops" in listed
    with pytest.raises(json.JSONDecodeError):
        json.loads(listed)


def test_empty_lists_are_json_lists(tmp_path: Path) -> None:
    assert _json(tmp_path, "adapters", "list") == []
    assert _json(tmp_path, "review", "list") == {"data": [], "total": 0}
    assert _json(tmp_path, "config", "show")["data_dir"] == str(tmp_path)


def _leaves(command: click.Command, path: str = "") -> list[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        found = []
        for name, sub in command.commands.items():
            found += _leaves(sub, f"{path} {name}".strip())
        return found
    return [(path, command)]


# Long-running processes (their output is a log) and generated documentation (Markdown).
NO_RESULT = {"serve", "engine run", "config docs", "demo"}


def test_every_command_with_a_result_takes_json() -> None:
    missing = [
        path
        for path, command in _leaves(main)
        if path not in NO_RESULT and "--json" not in {o for p in command.params for o in p.opts}
    ]
    assert not missing, f"commands without --json: {missing}"


class FakeRollouts:
    """Stands in for the rollout controller: what start was asked."""

    calls: list[dict[str, Any]] = []

    async def start(self, alias: str, version: str, steps: Any, *, again: bool = False) -> Any:
        FakeRollouts.calls.append({"alias": alias, "version": version, "again": again})
        raise _Refused(f"{version} was rolled back" if not again else "started")


class _Refused(Exception):
    pass


@pytest.mark.parametrize("again", [False, True])
def test_rollout_start_passes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: bool
) -> None:
    import gateway.wiring

    FakeRollouts.calls = []
    monkeypatch.setattr(gateway.wiring, "rollout_controller", lambda *_: FakeRollouts())
    args = ["rollout", "start", "support", "support-v2", *(["--again"] if again else [])]
    env = {"LORAGATE_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, args, env=env)
    assert isinstance(result.exception, _Refused)
    assert FakeRollouts.calls == [{"alias": "support", "version": "support-v2", "again": again}]


def test_rollout_start_documents_again(tmp_path: Path) -> None:
    """The flag is documented where operators read it."""
    help_text = _invoke(tmp_path, "rollout", "start", "--help").stdout
    assert "--again" in help_text and "rolled back" in help_text

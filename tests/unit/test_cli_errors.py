"""The CLI's one error handler (gateway/cli/errors.py): a package's error is one line and
exit status 1; a bug keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from adapters.registry import UnknownAdapter
from core.errors import ConfigError, StoreBusy
from gateway.cli import main
from gateway.cli.errors import EXPECTED_ERRORS, CommandGroup
from gateway.errors import NotFound
from monitor.errors import UnknownAlias
from retrieval.errors import CollectionNotFound
from trainer.errors import TrainerError


def _group_raising(error: Exception) -> click.Group:
    @click.group(cls=CommandGroup)
    def group() -> None:
        pass

    @group.group()
    def nested() -> None:
        pass

    @nested.command()
    def fail() -> None:
        raise error

    return group


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("port: bad"),
        StoreBusy("send it again"),
        NotFound("no such thing"),
        UnknownAdapter("no version v9"),
        CollectionNotFound("no collection docs"),
        UnknownAlias("no alias support"),
        TrainerError("nothing to train"),
    ],
)
def test_a_package_error_is_one_line(error: Exception) -> None:
    assert isinstance(error, EXPECTED_ERRORS)
    result = CliRunner().invoke(_group_raising(error), ["nested", "fail"])
    assert result.exit_code == 1
    assert result.output == f"Error: {error}\n"


def test_a_bug_keeps_its_traceback() -> None:
    result = CliRunner().invoke(_group_raising(RuntimeError("bug")), ["nested", "fail"])
    assert isinstance(result.exception, RuntimeError)


def test_the_loragate_command_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.cli.configure_logging", lambda *_, **__: None)  # the root logger
    env = {"LORAGATE_DATA_DIR": str(tmp_path), "LORAGATE_LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(main, ["adapters", "show", "nobody-v1"], env=env)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output

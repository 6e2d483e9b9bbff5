"""A one-shot CLI command prints its answer, not the libraries' chatter: no alembic plugin
list, no "store migrated"; `--verbose` shows every line; progress of long work still shows."""

from __future__ import annotations

import logging
from pathlib import Path

from click.testing import CliRunner

from core.logs import configure_logging
from gateway.cli import main


def _keys_list(tmp_path: Path, *options: str) -> str:
    env = {"LORAGATE_DATA_DIR": str(tmp_path), "LORAGATE_LOG_FORMAT": "text"}
    result = CliRunner().invoke(main, [*options, "keys", "list"], env=env)
    assert result.exit_code == 0, result.output
    return result.stderr


def test_a_command_says_nothing_but_its_answer(tmp_path: Path) -> None:
    quiet = _keys_list(tmp_path / "a")
    assert "alembic" not in quiet and "store migrated" not in quiet, quiet
    verbose = _keys_list(tmp_path / "b", "--verbose")
    assert "store migrated" in verbose
    assert "setup plugin" not in verbose  # alembic's own chatter stays off


def test_progress_and_warnings_still_show_when_quiet() -> None:
    try:
        configure_logging("INFO", "text", quiet=True)
        assert logging.getLogger("loragate.progress").isEnabledFor(logging.INFO)
        assert not logging.getLogger("loragate.store").isEnabledFor(logging.INFO)
        assert logging.getLogger("loragate.store").isEnabledFor(logging.WARNING)
    finally:
        configure_logging("INFO", "text")

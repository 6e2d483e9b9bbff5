"""QLoRA fine-tuning with peft + bitsandbytes, in a small loop of our own.

Why not TRL's SFTTrainer: its assistant-only loss needs ``{% generation %}`` markers in the
chat template, which SmolLM2's template lacks, and its checkpoints are directories written in
place. This loop masks the prompt explicitly (loss on the reply tokens only), writes each
checkpoint to a new directory and then flips a pointer file, so a crash at any moment leaves
either the old checkpoint or the new one, and resumes from it.

The base is loaded in 4-bit NF4 with double quantization and bf16 compute (``method="qlora"``),
in bf16 (``"lora"``), or trained whole (``"full"``, for the benchmark only). CUDA is used when
present, the CPU otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.hf_loading import model_load_lock, tie_output_head
from core.sections import TrainConfig
from trainer.dataset import Example
from trainer.errors import MissingExtra, TrainerError

log = logging.getLogger("loragate.trainer")

IGNORE = -100
LATEST = "latest"


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    epochs_done: float
    train_loss: float
    best_validation_loss: float | None
    best_validation_accuracy: float | None
    stopped_early: bool
    resumed_from_step: int
    seconds: float
    tokens: int
    tokens_per_s: float
    peak_memory_mb: float
    device: str
    trainable_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir)
        data.pop("history")
        return data


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the install
        raise MissingExtra("training needs torch: pip install 'loragate[train]'") from None
    return torch


def require_training_stack() -> tuple[Any, Any, Any]:
    try:
        import peft
        import transformers
    except ImportError as exc:
        raise MissingExtra(f"training needs {exc.name}: pip install 'loragate[train]'") from None
    return _torch(), transformers, peft


# -- encoding ---------------------------------------------------------------------------------
def encode(tokenizer: Any, example: Example, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt exactly as vLLM renders it (tools included), loss on
    the reply only."""
    prompt_ids = _render(tokenizer, example.messages, example.tools, add_generation_prompt=True)
    if example.reply_tool_calls:
        reply_ids = _rendered_reply(tokenizer, example, prompt_ids)
    else:
        reply_ids = tokenizer(example.reply + tokenizer.eos_token, add_special_tokens=False)[
            "input_ids"
        ]
    ids = list(prompt_ids) + list(reply_ids)
    if len(ids) > max_tokens:
        raise TrainerError(f"example {example.id} has {len(ids)} tokens; the limit is {max_tokens}")
    return ids, [IGNORE] * len(prompt_ids) + list(reply_ids)


def _render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    add_generation_prompt: bool = False,
) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tools=tools or None, add_generation_prompt=add_generation_prompt, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def _rendered_reply(tokenizer: Any, example: Example, prompt_ids: list[int]) -> list[int]:
    """A reply that calls tools, in the template's own syntax for tool calls (what the
    engine's tool-call parser reads back): the whole chat rendered, less the prompt."""
    turn = {
        "role": "assistant",
        "content": example.reply or None,
        "tool_calls": example.reply_tool_calls,
    }
    whole = _render(tokenizer, [*example.messages, turn], example.tools)
    if whole[: len(prompt_ids)] != prompt_ids:
        raise TrainerError(
            f"example {example.id}: the chat template does not render the reply after the "
            "prompt, so its tool calls cannot be trained"
        )
    reply = whole[len(prompt_ids) :]
    # Learn to stop where the engine stops: at the end-of-turn token, not the newline after.
    if tokenizer.eos_token_id in reply:
        reply = reply[: len(reply) - reply[::-1].index(tokenizer.eos_token_id)]
    return reply


def token_counter(tokenizer: Any) -> Callable[[Example], int]:
    """An example's length in tokens, counted as ``encode`` makes it."""

    def count(example: Example) -> int:
        return len(encode(tokenizer, example, sys.maxsize)[0])

    return count


def load_tokenizer(base_dir: Path, chat_template: str = "") -> Any:
    """The base model's tokenizer, rendering chats with ``chat_template`` (a Jinja file) when
    vLLM serves with one, so training prompts match served ones token for token."""
    _, transformers, _ = require_training_stack()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_dir))
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- the model --------------------------------------------------------------------------------
def pick_device(config: TrainConfig) -> str:
    torch = _torch()
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainerError("device=cuda was asked for, but CUDA is not available")
        return "cuda"
    return "cpu"


def compute_dtype(config: TrainConfig, device: str) -> str:
    """The dtype to compute in. A CPU without native bfloat16 emulates it: a bfloat16 matmul
    took 28 times as long as a float32 one on an AVX2-only EPYC, and a 100-step run did not
    reach step 10 in 13 minutes."""
    if config.compute_dtype != "auto":
        return config.compute_dtype
    torch = _torch()
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: may go
    native = any(getattr(torch.cpu, check, lambda: False)() for check in checks)
    return "bfloat16" if native else "float32"


def load_model(base_dir: Path, config: TrainConfig, device: str) -> Any:
    torch, transformers, peft = require_training_stack()
    dtype = getattr(torch, compute_dtype(config, device))
    options: dict[str, Any] = {"dtype": dtype}
    if config.method == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingExtra("QLoRA needs bitsandbytes: pip install 'loragate[train]'") from None
        options["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        if device == "cuda":
            options["device_map"] = {"": 0}
    with model_load_lock:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), **options)
    tie_output_head(model)
    if device == "cuda" and config.method != "qlora":
        model = model.to("cuda")
    if config.method == "full":
        return model
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, lora)


def make_optimizer(model: Any, config: TrainConfig, device: str) -> Any:
    torch = _torch()
    params = [param for param in model.parameters() if param.requires_grad]
    if config.optimizer != "adamw" and device == "cuda":
        import bitsandbytes as bnb

        cls = (
            bnb.optim.PagedAdamW8bit
            if config.optimizer == "paged_adamw_8bit"
            else (bnb.optim.AdamW8bit)
        )
        return cls(params, lr=config.learning_rate)
    # 8-bit and paged optimizers are CUDA features; on the CPU plain AdamW is the honest choice.
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)


# -- checkpoints ------------------------------------------------------------------------------
@dataclass
class RunState:
    """What a checkpoint must hold to resume the loop exactly where it stopped."""

    run_key: str  # config fingerprint + dataset hash: a checkpoint only resumes its own run
    step: int = 0
    best_validation_loss: float | None = None
    best_validation_accuracy: float | None = None
    bad_evaluations: int = 0
    tokens: int = 0
    train_loss: float = 0.0
    seconds: float = 0.0


def _atomic_save(model: Any, target: Path, extra: Callable[[Path], None] | None = None) -> None:
    """Save into a staging directory, then rename: ``target`` is whole or absent."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    if extra is not None:
        extra(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _save_checkpoint(work_dir: Path, model: Any, optimizer: Any, state: RunState) -> None:
    torch = _torch()
    target = work_dir / f"checkpoint-{state.step}"

    def extra(staging: Path) -> None:
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps(asdict(state)))

    _atomic_save(model, target, extra)
    _point(work_dir / LATEST, target.name)
    for old in work_dir.glob("checkpoint-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def _point(pointer: Path, name: str) -> None:
    staging = pointer.with_suffix(".tmp")
    with staging.open("w") as handle:
        handle.write(name)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, pointer)


def latest_checkpoint(work_dir: Path) -> Path | None:
    try:
        name = (work_dir / LATEST).read_text().strip()
    except OSError:
        return None
    path = work_dir / name
    return path if (path / "state.json").is_file() else None


def _resume(work_dir: Path, run_key: str, model: Any, optimizer: Any) -> RunState | None:
    """The saved state when ``work_dir`` holds a checkpoint of this very run."""
    checkpoint = latest_checkpoint(work_dir)
    if checkpoint is None:
        return None
    state = RunState(**json.loads((checkpoint / "state.json").read_text()))
    if state.run_key != run_key:
        return None
    import peft
    from safetensors.torch import load_file

    peft.set_peft_model_state_dict(model, load_file(str(checkpoint / ADAPTER_WEIGHTS)))
    optimizer.load_state_dict(_torch().load(checkpoint / "optimizer.pt", weights_only=True))
    log.info("resuming training", extra={"step": state.step, "checkpoint": str(checkpoint)})
    return state


# -- the loop ---------------------------------------------------------------------------------
Encoded = tuple[list[int], list[int]]
# The share of answers that are right, given the answers to the validation prompts in order.
ScoreAnswers = Callable[[Sequence[str]], float]
# Long enough for a support answer of a sentence or two; the scorer reads no further.
VALIDATION_ANSWER_TOKENS = 64
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# Batches are formed from windows of this many batches' worth of shuffled examples, sorted by
# length: padding mostly goes, and the order stays random across windows.
LENGTH_GROUP_BATCHES = 8


@dataclass
class _Batches:
    encoded: list[Encoded]
    batch_size: int
    seed: int

    def __len__(self) -> int:
        return max(1, -(-len(self.encoded) // self.batch_size))

    def epoch(self, number: int) -> list[list[Encoded]]:
        """The epoch's batches, in a fixed order per seed and epoch (a resumed run continues
        where it stopped). Each batch holds examples of similar length: a batch is padded to
        its longest row, so a closed-book example beside a grounded one costs as much as the
        grounded one (on a CPU, time is rows times width)."""
        random_order = random.Random(self.seed * 1000 + number)
        order = list(range(len(self.encoded)))
        random_order.shuffle(order)
        size, window = self.batch_size, self.batch_size * LENGTH_GROUP_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            similar = sorted(order[start : start + window], key=lambda i: len(self.encoded[i][0]))
            batches += [similar[first : first + size] for first in range(0, len(similar), size)]
        random_order.shuffle(batches)
        return [[self.encoded[index] for index in batch] for batch in batches]


# A run sized to its data sees about this many examples: a few dozen corrections, expanded by
# the recipe, get several passes (a fact seen once is not learnt); thousands get one.
AUTO_EXAMPLES_SEEN = 160
MAX_AUTO_EPOCHS = 4.0


def epochs_for(config: TrainConfig, examples: int) -> float:
    if config.epochs:
        return config.epochs
    return min(MAX_AUTO_EPOCHS, max(1.0, AUTO_EXAMPLES_SEEN / max(1, examples)))


def total_steps(config: TrainConfig, examples: int) -> int:
    if config.max_steps:
        return config.max_steps
    return max(1, round(epochs_for(config, examples) * -(-examples // config.batch_size)))


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return float(_torch().cuda.max_memory_allocated()) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _Loop:
    """The model, its optimizer and the run's state, stepped one batch at a time."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        state: RunState,
        config: TrainConfig,
        total: int,
        device: str,
        tokenizer: Any,
        score_answers: ScoreAnswers | None = None,
    ) -> None:
        torch = _torch()
        self.model, self.optimizer, self.state, self.config = model, optimizer, state, config
        self.total, self.device, self.tokenizer = total, device, tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.score_answers = score_answers
        resumed_step = state.step
        # Linear decay to zero over the whole run, continuing where a resumed run left off.
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda current: max(0.0, 1 - (current + resumed_step) / max(1, total))
        )
        self.trainable = [param for param in model.parameters() if param.requires_grad]
        self.history: list[dict[str, float]] = []
        self.stopped_early = False

    @property
    def done(self) -> bool:
        return self.state.step >= self.total or self.stopped_early

    def loss(self, batch: Sequence[Encoded]) -> Any:
        torch = _torch()
        width = max(len(ids) for ids, _ in batch)

        def tensor(rows: list[list[int]], pad: int) -> Any:
            padded = [row + [pad] * (width - len(row)) for row in rows]
            return torch.tensor(padded, dtype=torch.long, device=self.device)

        ids = tensor([ids for ids, _ in batch], self.pad_id)
        labels = tensor([labels for _, labels in batch], IGNORE)
        mask = tensor([[1] * len(ids) for ids, _ in batch], 0)
        return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss

    def step(self, batch: Sequence[Encoded]) -> dict[str, float]:
        torch = _torch()
        started = time.perf_counter()
        loss = self.loss(batch)
        # One non-finite loss or gradient (a bf16 overflow) would make every adapter weight
        # NaN through the optimizer: the step is skipped instead, and logged.
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            finite = bool(torch.isfinite(norm))
            if finite:
                self.optimizer.step()
        if not finite:
            log.warning("non-finite loss or gradient: step skipped",
                        extra={"step": self.state.step + 1})  # fmt: skip
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(len(ids) for ids, _ in batch)
        self.state.step += 1
        self.state.tokens += tokens
        self.state.train_loss = float(loss.detach())
        record = {
            "step": self.state.step,
            "loss": round(self.state.train_loss, 4),
            "tokens_per_s": round(tokens / (time.perf_counter() - started), 1),
            "peak_memory_mb": round(_peak_memory_mb(self.device), 1),
        }
        self.history.append(record)
        return record

    def validate(self, validation: _Batches, work_dir: Path, record: dict[str, float]) -> None:
        """When due: the validation loss and, with a scorer, the accuracy of the answers the
        adapter generates to the validation prompts; keeps the best adapter (by accuracy,
        then loss); stops when patience runs out."""
        every = self.config.eval_every
        due = self.state.step >= self.total or (every and self.state.step % every == 0)
        if not validation.encoded or not due:
            return
        torch = _torch()
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in validation.epoch(0):
                total += float(self.loss(batch)) * len(batch)
                count += len(batch)
            accuracy = None
            if self.score_answers is not None:
                accuracy = self.score_answers(self.answers(validation.encoded))
                record["validation_accuracy"] = round(accuracy, 4)
        self.model.train()
        record["validation_loss"] = round(total / count, 4)
        self.stopped_early = _keep_best(
            self.model, self.state, total / count, accuracy, self.config, work_dir
        )

    def answers(self, encoded: Sequence[Encoded], batch: int = 8) -> list[str]:
        """Greedy answers to the examples' prompts (the reply cut off), as vLLM would give
        them at temperature 0, a few prompts at a time, left-padded."""
        torch = _torch()
        prompts = [_prompt_ids(ids, labels) for ids, labels in encoded]
        answers: list[str] = []
        for start in range(0, len(prompts), batch):
            rows = prompts[start : start + batch]
            width = max(len(row) for row in rows)
            ids = [[self.pad_id] * (width - len(row)) + row for row in rows]
            mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
            output = self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                max_new_tokens=VALIDATION_ANSWER_TOKENS,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
            answers += self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [answer.strip() for answer in answers]


def _prompt_ids(ids: list[int], labels: list[int]) -> list[int]:
    """The prompt of an encoded example: its ids before the first learnt one."""
    for index, label in enumerate(labels):
        if label != IGNORE:
            return ids[:index]
    return ids


def train(
    train_set: Sequence[Example],
    validation_set: Sequence[Example],
    base_dir: Path,
    work_dir: Path,
    config: TrainConfig,
    on_step: Callable[[str], None] | None = None,
    dataset_id: str = "",
    score_answers: ScoreAnswers | None = None,
) -> TrainResult:
    """Train an adapter; resumes from ``work_dir``'s checkpoint when it is for the same run.

    Every ``eval_every`` steps the validation loss is measured (and, given
    ``score_answers``, the accuracy of the adapter's answers to the validation prompts: most
    are other wordings of facts it trains on) and the best adapter kept; ``patience``
    evaluations without improvement stop the run early.
    """
    torch = _torch()
    # Always set, never inherit: the thread count is per thread, and a worker thread reused
    # from a pool may carry the embedder's single thread into training (seen: runs 2x slower).
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    device = pick_device(config)
    tokenizer = load_tokenizer(base_dir, config.chat_template)

    def batches_of(rows: Sequence[Example]) -> _Batches:
        encoded = [encode(tokenizer, row, config.max_tokens) for row in rows]
        return _Batches(encoded, config.batch_size, config.seed)

    batches, validation = batches_of(train_set), batches_of(validation_set)
    model = load_model(base_dir, config, device)
    model.train()
    optimizer = make_optimizer(model, config, device)
    work_dir.mkdir(parents=True, exist_ok=True)
    run_key = f"{config.fingerprint()}:{dataset_id}"
    state = _resume(work_dir, run_key, model, optimizer) or RunState(run_key)
    resumed_from = state.step
    total = total_steps(config, len(train_set))
    loop = _Loop(model, optimizer, state, config, total, device, tokenizer, score_answers)
    clock = time.perf_counter() - state.seconds
    while not loop.done:
        epoch, offset = divmod(state.step, len(batches))
        for batch in batches.epoch(epoch)[offset:]:
            record = loop.step(batch)
            loop.validate(validation, work_dir, record)
            log.info("train step", extra={**record, "total_steps": total})
            if on_step is not None:
                on_step(f"step {state.step} loss {record['loss']}")
            state.seconds = time.perf_counter() - clock
            if loop.done:
                break
            if state.step % config.checkpoint_every == 0:
                _save_checkpoint(work_dir, model, optimizer, state)
    return _result(work_dir, loop, validation, resumed_from, len(batches))


def _keep_best(
    model: Any,
    state: RunState,
    loss: float,
    accuracy: float | None,
    config: TrainConfig,
    work_dir: Path,
) -> bool:
    """Keep the adapter when validation improved; True when patience has run out."""
    if _improved(state, loss, accuracy):
        state.best_validation_loss, state.best_validation_accuracy = loss, accuracy
        state.bad_evaluations = 0
        _atomic_save(model, work_dir / "best")
        return False
    state.bad_evaluations += 1
    return state.bad_evaluations >= config.patience


def _improved(state: RunState, loss: float, accuracy: float | None) -> bool:
    """Higher accuracy, or as high with a lower loss. A non-finite loss is never an
    improvement (NaN compares false, and was once kept as best)."""
    if not math.isfinite(loss):
        return False
    best = state.best_validation_accuracy
    if accuracy is not None and best is not None and accuracy != best:
        return accuracy > best
    return state.best_validation_loss is None or loss < state.best_validation_loss


def _result(
    work_dir: Path, loop: _Loop, validation: _Batches, resumed_from: int, steps_per_epoch: int
) -> TrainResult:
    # The best adapter by validation loss when there was validation, else the last one.
    adapter_dir = work_dir / "best"
    if not (validation.encoded and (adapter_dir / ADAPTER_WEIGHTS).is_file()):
        adapter_dir = work_dir / "final"
        _atomic_save(loop.model, adapter_dir)
    state = loop.state
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=state.step,
        epochs_done=round(state.step / steps_per_epoch, 2),
        train_loss=state.train_loss,
        best_validation_loss=state.best_validation_loss,
        best_validation_accuracy=state.best_validation_accuracy,
        stopped_early=loop.stopped_early,
        resumed_from_step=resumed_from,
        seconds=round(state.seconds, 2),
        tokens=state.tokens,
        tokens_per_s=round(state.tokens / state.seconds, 1) if state.seconds else 0.0,
        peak_memory_mb=round(_peak_memory_mb(loop.device), 1),
        device=loop.device,
        trainable_parameters=int(sum(param.numel() for param in loop.trainable)),
        history=loop.history,
    )

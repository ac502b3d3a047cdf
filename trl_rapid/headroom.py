"""The headroom task, "sort the digits", and its supervised warm start: built locally, nothing from a hub.

A prompt such as `sort 83193027:` asks for its digits in ascending order, one space apart: `0 1 2 3 3 7 8 9`, then
EOS (16 completion tokens for the default 8 digits). The demo task (`repeat_digit`) saturates within a few hundred
steps from random weights; this one is hard enough for the tiny model that a short supervised warm start leaves it
well below the ceiling, and RL then has room to lift it.

Scoring (see `sort_digits_reward`):
  - accuracy (held-out metric): exact match, 1 or 0. The completion must be exactly the sorted digits, one space
    apart, nothing before or after; when TRL passes `completion_ids` the completion must also end with EOS (one that
    ran to `max_completion_length` without stopping scores 0 even if its text is right).
  - training reward: 1 for an exact match; otherwise, for a *well-formed* answer (exactly `num_digits` digits one
    space apart, terminated), `PARTIAL_CREDIT × (positions holding the right digit) / num_digits`, at most
    0.5 × 7/8 < 1; anything else 0. The partial credit gives the reward a gradient while few sampled answers are
    exact. It cannot be gamed into a high score: a repeated digit matches only the positions that digit holds in the
    sorted answer, an answer that ignores the prompt matches about a quarter of them, too long or too short or
    unterminated answers score 0, and only the exact answer reaches 1.

Warm start (`build_warm_start`): TRL's `SFTTrainer` on a generated corpus of (prompt, sorted answer) pairs, for a
number of steps calibrated to leave held-out greedy accuracy around 10–40 %. The result is cached on disk under a
hash of its recipe (model shape and seed, corpus, steps, batch size, learning rate, and the torch / transformers /
TRL versions), built in a temporary folder and renamed into place, so a killed build never leaves a half cache and
every later run or test reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset

TASK_NAME = "sort_digits"
PROMPT_PREFIX = "sort "
PROMPT_SUFFIX = ":"
PARTIAL_CREDIT = 0.5
DEFAULT_CACHE_DIR = Path("outputs") / "warm_start"
CACHE_ENV = "TRL_RAPID_WARM_START_CACHE"  # overrides DEFAULT_CACHE_DIR
EOS_TOKEN_ID = 1  # trl_rapid.tiny.build_tokenizer's vocabulary: <pad> 0, <eos> 1, then the characters


# ---------------------------------------------------------------------------------------------------------------------
# Task: prompts and scoring
# ---------------------------------------------------------------------------------------------------------------------
def sorted_answer(digits: str) -> str:
    return " ".join(sorted(digits))


def make_sort_digits_dataset(num_prompts: int, seed: int = 0, num_digits: int = 8) -> Dataset:
    """Rows {prompt, target}: `num_digits` uniform random digits (repeats allowed) and their sorted answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        digits = "".join(rng.choice("0123456789") for _ in range(num_digits))
        rows.append({"prompt": f"{PROMPT_PREFIX}{digits}{PROMPT_SUFFIX}", "target": sorted_answer(digits)})
    return Dataset.from_list(rows)


def _well_formed(text: str, length: int) -> bool:
    return re.fullmatch(r"\d( \d){%d}" % (length - 1), text) is not None


def _terminated(ids, eos_token_id: int | None) -> bool:
    return eos_token_id is None or ids is None or (len(ids) > 0 and ids[-1] == eos_token_id)


def score_sort_answer(completion: str, target: str, terminated: bool = True, partial_credit: float = PARTIAL_CREDIT
                      ) -> float:
    """1 for the exact answer; `partial_credit × matching positions / n` for a well-formed wrong one; else 0."""
    if not terminated:
        return 0.0
    if completion == target:
        return 1.0
    length = (len(target) + 1) // 2
    if partial_credit == 0 or not _well_formed(completion, length):
        return 0.0
    matches = sum(a == b for a, b in zip(completion[::2], target[::2], strict=True))
    return partial_credit * matches / length


def _eos_id(kwargs) -> int | None:
    # TRL's reward kwargs do not carry the tokenizer: the task's model uses trl_rapid.tiny's character tokenizer.
    return kwargs.get("eos_token_id", EOS_TOKEN_ID)


def sort_digits_reward(completions: list[str], target: list[str], completion_ids=None, **kwargs) -> list[float]:
    """TRL reward function (training): exact match, with partial credit for well-formed answers (module docstring)."""
    ids = completion_ids or [None] * len(completions)
    eos = _eos_id(kwargs)
    return [score_sort_answer(c, t, _terminated(i, eos)) for c, t, i in zip(completions, target, ids, strict=True)]


def sort_digits_accuracy(completions: list[str], target: list[str], completion_ids=None, **kwargs) -> list[float]:
    """TRL reward function (held-out accuracy): 1 for the exact, terminated answer, else 0."""
    ids = completion_ids or [None] * len(completions)
    eos = _eos_id(kwargs)
    return [score_sort_answer(c, t, _terminated(i, eos), partial_credit=0.0)
            for c, t, i in zip(completions, target, ids, strict=True)]


# ---------------------------------------------------------------------------------------------------------------------
# Warm start: SFT on a generated corpus, cached by recipe hash
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WarmStartRecipe:
    """Everything that determines the warm-started model; its hash names the cache folder."""

    num_digits: int = field(default=8, metadata={"help": "Digits per prompt (completion: 2 × num_digits tokens)."})
    hidden_size: int = field(default=128, metadata={"help": "Tiny Llama model width (trl_rapid.tiny)."})
    num_layers: int = field(default=2, metadata={"help": "Tiny model depth."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads (head_dim = hidden_size / num_heads)."})
    model_seed: int = field(default=0, metadata={"help": "Seed of the random initial weights."})
    corpus_size: int = field(default=20000, metadata={"help": "Generated SFT examples."})
    corpus_seed: int = field(default=100, metadata={"help": "Seed of the SFT corpus (RL prompts use other seeds)."})
    sft_steps: int = field(default=80, metadata={"help": "SFTTrainer optimizer steps (calibrated: ~18 % greedy "
                                                         "held-out accuracy)."})
    batch_size: int = field(default=64, metadata={"help": "SFT examples per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "SFT learning rate (constant schedule)."})
    seed: int = field(default=0, metadata={"help": "SFTTrainer seed (data order)."})
    use_cpu: bool = field(default=True, metadata={"help": "Train the warm start on CPU (False: on the accelerator)."})

    # What a recipe of another task (a subclass, e.g. trl_rapid/headroom_reverse.py) changes: its name, prompt format and
    # corpus. Class attributes, not fields: they name the cache folder and enter the hash, not the recipe's arguments.
    TASK = TASK_NAME
    FORMAT = (PROMPT_PREFIX, PROMPT_SUFFIX)

    def corpus(self) -> Dataset:
        """SFT corpus in prompt-completion form (the loss falls on the answer only)."""
        corpus = make_sort_digits_dataset(self.corpus_size, seed=self.corpus_seed, num_digits=self.num_digits)
        return corpus.rename_column("target", "completion")

    def key(self) -> str:
        import torch
        import transformers
        import trl

        payload = {"recipe": asdict(self), "task": self.TASK, "format": list(self.FORMAT),
                   "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "trl": trl.__version__}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


DEFAULT_RECIPE = WarmStartRecipe()  # the training script's (configs/headroom.yaml) and cpu_headroom.yaml's


def warm_start_path(recipe: WarmStartRecipe, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)
    return root / f"{recipe.TASK}-{recipe.key()}"


def build_warm_start(recipe: WarmStartRecipe | None = None, cache_dir: str | Path | None = None, log=print) -> Path:
    """Return the warm-started model's folder, training it first only if no complete cache exists for `recipe`."""
    recipe = recipe or DEFAULT_RECIPE
    final = warm_start_path(recipe, cache_dir)
    if (final / "warm_start.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{time.time_ns()}"
    try:
        info = _train_warm_start(recipe, tmp, log)
        (tmp / "warm_start.json").write_text(json.dumps(info, indent=2))  # last: marks the folder complete
        try:
            os.rename(tmp, final)  # atomic on one file system
        except OSError:
            if not (final / "warm_start.json").exists():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _train_warm_start(recipe: WarmStartRecipe, path: Path, log) -> dict:
    import transformers
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from .tiny import build_tiny_model

    start = time.perf_counter()
    build_tiny_model(path, hidden_size=recipe.hidden_size, num_layers=recipe.num_layers,
                     num_heads=recipe.num_heads, seed=recipe.model_seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    corpus = recipe.corpus()
    args = SFTConfig(
        output_dir=str(path / "sft"), max_steps=recipe.sft_steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="constant", warmup_steps=0, seed=recipe.seed,
        logging_steps=max(1, recipe.sft_steps // 4), save_strategy="no", report_to="none", use_cpu=recipe.use_cpu,
        bf16=False, disable_tqdm=True,
    )
    import datasets

    verbosity, bars = transformers.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()  # the corpus's map() bars would flood a benchmark's log
    try:
        trainer = SFTTrainer(model=str(path), args=args, train_dataset=corpus, processing_class=tokenizer)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        trainer.train()
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
    trainer.save_model(str(path))
    tokenizer.save_pretrained(path)
    shutil.rmtree(path / "sft", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = time.perf_counter() - start
    log(f"[warm start] {recipe.TASK}: {recipe.sft_steps} SFT steps in {seconds:.0f}s (cache key {recipe.key()})")
    return {"recipe": asdict(recipe), "key": recipe.key(), "sft_losses": losses, "build_seconds": seconds}

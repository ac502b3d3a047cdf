"""A second headroom task, of another kind than sorting: reverse a word, `reverse_word`. Built locally.

A prompt such as `reverse kqzmhtbw:` asks for its letters in reverse order, `wbthmzqk`, then EOS (9 completion
tokens for the default 8 letters). Sorting orders digits by value, which the model can do by counting; reversing
orders letters by position, so each answer letter must be fetched from the mirrored prompt position (a positional
look-up, not a count). Random lower-case words, with 26 letters, make a guess without that look-up nearly worthless.

Scoring (`reverse_word_reward`, `reverse_word_accuracy`), as in trl_rapid/headroom.py:
  - accuracy (held-out metric): exact match, terminated by EOS when TRL passes `completion_ids`;
  - training reward: 1 for the exact answer; a *well-formed* wrong answer (exactly `num_letters` lower-case letters,
    nothing else, terminated) gets `PARTIAL_CREDIT × (positions holding the right letter) / num_letters`, at most
    0.5 × 7/8; anything else 0. Format tricks score low (tested): a copy of the word unreversed, a repeated letter or
    a random well-formed word match about one position in 26; the best trick found, the word rotated by one, gets 2
    of 8 positions right by construction (0.125, as sort_digits' repeated digit).

Warm start: TRL's `SFTTrainer` on generated (prompt, reversed word) pairs, cached under
`outputs/warm_start/reverse_word-<hash>` exactly like sort_digits' (`ReverseRecipe` is a `WarmStartRecipe` with this
task's corpus, name and format), for a number of steps calibrated to leave greedy held-out exact match in the
15–30 % band.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field

from datasets import Dataset

from .headroom import EOS_TOKEN_ID, PARTIAL_CREDIT, WarmStartRecipe, _terminated

TASK_NAME = "reverse_word"
PROMPT_PREFIX = "reverse "
PROMPT_SUFFIX = ":"


def make_reverse_word_dataset(num_prompts: int, seed: int = 0, num_letters: int = 8) -> Dataset:
    """Rows {prompt, target}: `num_letters` uniform random lower-case letters (repeats allowed), and them reversed."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(num_letters))
        rows.append({"prompt": f"{PROMPT_PREFIX}{word}{PROMPT_SUFFIX}", "target": word[::-1]})
    return Dataset.from_list(rows)


def score_reversal(completion: str, target: str, terminated: bool = True,
                   partial_credit: float = PARTIAL_CREDIT) -> float:
    """1 for the exact answer; `partial_credit × matching positions / len(target)` for a well-formed wrong one."""
    if not terminated:
        return 0.0
    if completion == target:
        return 1.0
    if partial_credit == 0 or re.fullmatch(r"[a-z]{%d}" % len(target), completion) is None:
        return 0.0
    return partial_credit * sum(a == b for a, b in zip(completion, target, strict=True)) / len(target)


def reverse_word_reward(completions: list[str], target: list[str], completion_ids=None, **kwargs) -> list[float]:
    """TRL reward function (training): exact match, partial credit for well-formed answers (module docstring)."""
    ids = completion_ids or [None] * len(completions)
    eos = kwargs.get("eos_token_id", EOS_TOKEN_ID)
    return [score_reversal(c, t, _terminated(i, eos)) for c, t, i in zip(completions, target, ids, strict=True)]


def reverse_word_accuracy(completions: list[str], target: list[str], completion_ids=None, **kwargs) -> list[float]:
    """TRL reward function (held-out accuracy): 1 for the exact, terminated answer, else 0."""
    ids = completion_ids or [None] * len(completions)
    eos = kwargs.get("eos_token_id", EOS_TOKEN_ID)
    return [score_reversal(c, t, _terminated(i, eos), partial_credit=0.0)
            for c, t, i in zip(completions, target, ids, strict=True)]


@dataclass(frozen=True)
class ReverseRecipe(WarmStartRecipe):
    """The reverse_word warm start: WarmStartRecipe's fields (model shape, corpus, SFT schedule; `num_digits` is the
    word's number of letters here), this task's corpus, name and prompt format."""

    sft_steps: int = field(default=165, metadata={"help": "SFTTrainer optimizer steps (calibrated: 21.5 % greedy "
                                                          "held-out accuracy; 160 / 180 steps: 13 / 64 %)."})

    TASK = TASK_NAME
    FORMAT = (PROMPT_PREFIX, PROMPT_SUFFIX)

    def corpus(self) -> Dataset:
        corpus = make_reverse_word_dataset(self.corpus_size, seed=self.corpus_seed, num_letters=self.num_digits)
        return corpus.rename_column("target", "completion")


DEFAULT_RECIPE = ReverseRecipe()

"""Dataset loaders for the RAPID tasks: each returns a `datasets.Dataset` with a `prompt` column and the columns its
reward function reads.

Every loader takes a Hub name *or* a local path (`.jsonl`, `.json` or `.parquet` file in the Hub schema), so the same
code runs offline and in tests. `conversational=True` turns the prompt into `[{"role": "user", "content": ...}]`
(preceded by a system message when `system_prompt` is given), for chat models and TRL's chat-template path.

Loaders (default Hub dataset; splits; reward; the columns that reward reads):

* `load_math`: `DigitalLearningGmbH/MATH-lighteval`; train (7,500) / test (5,000); `math_reward`; `solution`.
* `load_math500`: `HuggingFaceH4/MATH-500`; test (500); `math_reward`; `solution` (= the dataset's `answer`).
* `load_gsm8k`: `openai/gsm8k`, config `main`; train (7,473) / test (1,319); `math_reward`; `solution`
  (the dataset's `answer`, ending in `#### 72`).
* `load_mbppplus`: `evalplus/mbppplus`; one Hub split `test` (378 tasks), split here into train 264 / test 114;
  `code_reward`; `test_list`, `test`, `test_imports`.
* `load_minif2f`: `AI-MO/minif2f_test`; test (244; the Hub split is named `train`); `lean_reward`;
  `formal_statement`, `header`.

MATH: `DigitalLearningGmbH/MATH-lighteval` is the full Hendrycks MATH (all seven subjects in one config, columns
`problem`, `level`, `type`, `solution`), whereas `EleutherAI/hendrycks_math` needs one config per subject; the
reference is the worked `solution`, whose last `\\boxed{}` `math_reward` compares against.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from datasets import Dataset

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
GSM8K_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the Python function in a single ```python code block."
LEAN_INSTRUCTION = "Complete the following Lean 4 code:"
DEFAULT_LEAN_HEADER = (
    "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\nopen BigOperators Real Nat Topology Rat\n\n"
)

# The paper splits MBPP+'s 378 tasks into 264 for training and 114 for testing (a 70/30 split).
MBPPPLUS_TRAIN_SIZE, MBPPPLUS_TEST_SIZE = 264, 114


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def is_local(name_or_path: str) -> bool:
    """True for an existing path or a name ending in a data-file extension (treated as a path, never a Hub id)."""
    return os.path.exists(name_or_path) or name_or_path.endswith((".jsonl", ".json", ".parquet"))


def load_raw(name_or_path: str, split: str | None = None, config: str | None = None) -> Dataset:
    """A local data file as-is (the file is the split), or one split of a Hub dataset."""
    if is_local(name_or_path):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"dataset file {name_or_path!r} does not exist")
        if name_or_path.endswith(".parquet"):
            return Dataset.from_parquet(name_or_path)
        return Dataset.from_json(name_or_path)
    from datasets import load_dataset

    return load_dataset(name_or_path, config, split=split)


def _require(ds: Dataset, columns: list[str], what: str):
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {missing}; found {ds.column_names}. A local file must follow the Hub schema "
            f"of the dataset (see trl_rapid/data.py)."
        )


def as_prompt(text: str, conversational: bool, system_prompt: str | None = None):
    """Plain-text prompt, or a chat conversation with one user turn (and an optional system turn)."""
    if not conversational:
        return text
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": text}]


def _limit(ds: Dataset, limit: int | None) -> Dataset:
    return ds if limit is None else ds.select(range(min(limit, len(ds))))


# ---------------------------------------------------------------------------------------------------------------------
# Math
# ---------------------------------------------------------------------------------------------------------------------


def load_math(
    name_or_path: str = "DigitalLearningGmbH/MATH-lighteval",
    split: str = "train",
    conversational: bool = False,
    system_prompt: str | None = None,
    instruction: str = MATH_INSTRUCTION,
    limit: int | None = None,
) -> Dataset:
    """Hendrycks MATH: columns `prompt`, `problem`, `solution` (worked solution with `\\boxed{}`), `level`, `type`."""
    ds = _limit(load_raw(name_or_path, split), limit)
    _require(ds, ["problem", "solution"], f"MATH dataset {name_or_path!r}")
    return ds.map(
        lambda row: {"prompt": as_prompt(f"{row['problem']}\n\n{instruction}", conversational, system_prompt)},
        desc="formatting MATH prompts",
    )


def load_math500(
    name_or_path: str = "HuggingFaceH4/MATH-500",
    split: str = "test",
    conversational: bool = False,
    system_prompt: str | None = None,
    instruction: str = MATH_INSTRUCTION,
    limit: int | None = None,
) -> Dataset:
    """MATH-500: `prompt`, `problem`, `solution` (the dataset's short `answer`), `reference_solution` (worked
    solution), `subject`, `level`, `unique_id`. The short answer is the reference because it is unambiguous."""
    ds = _limit(load_raw(name_or_path, split), limit)
    _require(ds, ["problem", "solution", "answer"], f"MATH-500 dataset {name_or_path!r}")
    ds = ds.rename_column("solution", "reference_solution")
    return ds.map(
        lambda row: {
            "prompt": as_prompt(f"{row['problem']}\n\n{instruction}", conversational, system_prompt),
            "solution": row["answer"],
        },
        desc="formatting MATH-500 prompts",
    )


def load_gsm8k(
    name_or_path: str = "openai/gsm8k",
    split: str = "train",
    config: str = "main",
    conversational: bool = False,
    system_prompt: str | None = None,
    instruction: str = GSM8K_INSTRUCTION,
    limit: int | None = None,
) -> Dataset:
    """GSM8K (`main` config): `prompt`, `question`, `solution` (the dataset's `answer`, ending in `#### <number>`)."""
    ds = _limit(load_raw(name_or_path, split, config), limit)
    _require(ds, ["question", "answer"], f"GSM8K dataset {name_or_path!r}")
    ds = ds.rename_column("answer", "solution")
    return ds.map(
        lambda row: {"prompt": as_prompt(f"{row['question']}\n\n{instruction}", conversational, system_prompt)},
        desc="formatting GSM8K prompts",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Code: MBPP+
# ---------------------------------------------------------------------------------------------------------------------


def split_mbppplus(ds: Dataset, seed: int = 0, test_size: int | None = None) -> dict[str, Dataset]:
    """Deterministic train/test split of MBPP+ by task id: 264/114 for the full 378 tasks.

    Tasks are ordered by `task_id` and shuffled with `random.Random(seed)`; the first `test_size` become the test
    split. `test_size` defaults to round(len * 114 / 378), i.e. 114 for the full dataset. The result depends only on
    the set of task ids and the seed (not on row order), and the two splits are disjoint and cover all tasks. The
    paper reports the 264/114 sizes but not the membership, so this split is ours, fixed by `seed`.
    """
    _require(ds, ["task_id"], "MBPP+ split")
    ids = sorted(ds["task_id"])
    if len(set(ids)) != len(ids):
        raise ValueError("MBPP+ split: task_id values must be unique")
    if test_size is None:
        test_size = round(len(ids) * MBPPPLUS_TEST_SIZE / (MBPPPLUS_TRAIN_SIZE + MBPPPLUS_TEST_SIZE))
    if not 0 <= test_size <= len(ids):
        raise ValueError(f"MBPP+ split: test_size={test_size} must be between 0 and {len(ids)}")
    random.Random(seed).shuffle(ids)
    test_ids = set(ids[:test_size])
    test_rows = [i for i, t in enumerate(ds["task_id"]) if t in test_ids]
    train_rows = [i for i, t in enumerate(ds["task_id"]) if t not in test_ids]
    return {"train": ds.select(train_rows), "test": ds.select(test_rows)}


def mbpp_prompt(description: str, first_test: str | None, instruction: str = CODE_INSTRUCTION) -> str:
    """EvalPlus-style MBPP prompt: the task, one example assert (it fixes the name and signature), the instruction."""
    text = description.strip()
    if first_test:
        text += f"\nYour code should pass this test:\n{first_test.strip()}"
    return f"{text}\n{instruction}"


def load_mbppplus(
    name_or_path: str = "evalplus/mbppplus",
    split: str = "train",
    seed: int = 0,
    hub_split: str = "test",
    conversational: bool = False,
    system_prompt: str | None = None,
    instruction: str = CODE_INSTRUCTION,
    limit: int | None = None,
) -> Dataset:
    """MBPP+: `prompt`, `description` (the Hub `prompt`), `task_id`, `code` (reference), `test_list`, `test`,
    `test_imports`, `source_file`.

    The Hub dataset has a single `test` split of 378 tasks (`hub_split`); `split` selects "train" (264), "test" (114)
    of `split_mbppplus(seed)`, or "all".
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"load_mbppplus(split={split!r}) is invalid: choose 'train', 'test' or 'all'.")
    ds = load_raw(name_or_path, hub_split)
    _require(ds, ["task_id", "prompt", "test_list"], f"MBPP+ dataset {name_or_path!r}")
    if split != "all":
        ds = split_mbppplus(ds, seed=seed)[split]
    ds = _limit(ds, limit).rename_column("prompt", "description")
    for column, default in (("test", ""), ("test_imports", [])):
        if column not in ds.column_names:
            ds = ds.add_column(column, [default] * len(ds))
    return ds.map(
        lambda row: {
            "prompt": as_prompt(
                mbpp_prompt(row["description"], (row["test_list"] or [None])[0], instruction),
                conversational,
                system_prompt,
            )
        },
        desc="formatting MBPP+ prompts",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Lean 4: MiniF2F
# ---------------------------------------------------------------------------------------------------------------------

_SPLIT_ALIASES = {"valid": {"valid", "validation"}, "validation": {"valid", "validation"}, "test": {"test"}}
_STATEMENT_STARTS = ("theorem ", "lemma ", "example ", "/--", "--")


def split_header(formal_statement: str) -> tuple[str, str]:
    """Split a statement that embeds its header (imports, options, `open`) into (header, statement)."""
    lines = formal_statement.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.lstrip().startswith(_STATEMENT_STARTS):
            return "".join(lines[:i]), "".join(lines[i:])
    return "", formal_statement


def load_minif2f(
    name_or_path: str = "AI-MO/minif2f_test",
    split: str = "test",
    hub_split: str | None = None,
    conversational: bool = False,
    system_prompt: str | None = None,
    limit: int | None = None,
) -> Dataset:
    """MiniF2F in Lean 4: `prompt`, `name`, `formal_statement` (ending in `:= by`), `header`, `informal_prefix`.

    Two schemas are accepted: `AI-MO/minif2f_test` (244 test problems in a Hub split named `train`; columns `name`,
    `informal_prefix`, `formal_statement` with the imports inside it) and the DeepSeek-Prover `minif2f.jsonl` schema
    (`name`, `split` = valid/test, `informal_prefix`, `formal_statement`, `goal`, `header`), in which rows are filtered
    by their `split` column. `hub_split` defaults to `train` for `AI-MO/minif2f_test` and to `split` otherwise.

    The prompt follows DeepSeek-Prover: an instruction, then an open ```lean4 block with the header, the informal
    statement as a comment and the formal statement, so that the model continues with the proof (tactics). In
    conversational mode the block is closed and the model is expected to answer with the complete theorem.
    """
    if hub_split is None:
        hub_split = "train" if name_or_path == "AI-MO/minif2f_test" else split
    ds = load_raw(name_or_path, hub_split)
    _require(ds, ["formal_statement"], f"MiniF2F dataset {name_or_path!r}")
    if "split" in ds.column_names:
        wanted = _SPLIT_ALIASES.get(split, {split})
        ds = ds.filter(lambda row: row["split"] in wanted, desc=f"keeping MiniF2F split {split!r}")
    ds = _limit(ds, limit)

    def normalise(row, index):
        embedded_header, statement = split_header(row["formal_statement"])
        header = row.get("header") or embedded_header or DEFAULT_LEAN_HEADER
        informal = row.get("informal_prefix") or ""
        code = f"{header}{informal}{statement}"
        if conversational:
            text = f"{LEAN_INSTRUCTION}\n\n```lean4\n{code.rstrip()}\n```"
        else:
            text = f"{LEAN_INSTRUCTION}\n\n```lean4\n{code}"
        return {
            "prompt": as_prompt(text, conversational, system_prompt),
            "name": row.get("name") or row.get("id") or f"minif2f_{index}",
            "formal_statement": statement,
            "header": header,
            "informal_prefix": informal,
        }

    return ds.map(normalise, with_indices=True, desc="formatting MiniF2F prompts")


# ---------------------------------------------------------------------------------------------------------------------
# Loaders by key (which task uses which loader, and which reward scores it: trl_rapid/tasks.py's PAPER)
# ---------------------------------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[..., Dataset]] = {
    "math": load_math,
    "math500": load_math500,
    "gsm8k": load_gsm8k,
    "mbppplus": load_mbppplus,
    "minif2f": load_minif2f,
}
HUB_NAMES = {
    "DigitalLearningGmbH/MATH-lighteval": "math",
    "HuggingFaceH4/MATH-500": "math500",
    "openai/gsm8k": "gsm8k",
    "evalplus/mbppplus": "mbppplus",
    "AI-MO/minif2f_test": "minif2f",
}


def load_named(kind: str, name_or_path: str | None = None, **kwargs) -> Dataset:
    """Load with the loader registered as `kind` (a key of `LOADERS`), from its default Hub dataset or a path."""
    if kind not in LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r}: choose one of {sorted(LOADERS)}")
    if name_or_path is not None:
        kwargs["name_or_path"] = name_or_path
    return LOADERS[kind](**kwargs)

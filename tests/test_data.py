"""Dataset loaders on local JSONL fixtures in the Hub schemas (no Hub access here)."""

import json
import random
from pathlib import Path

import pytest
from datasets import Dataset

from trl_rapid.data import (
    CODE_INSTRUCTION,
    DEFAULT_LEAN_HEADER,
    LEAN_INSTRUCTION,
    MATH_INSTRUCTION,
    load_gsm8k,
    load_math,
    load_math500,
    load_mbppplus,
    load_minif2f,
    load_named,
    split_header,
    split_mbppplus,
)

from helpers.timing import scaled

FIXTURES = Path(__file__).parent / "fixtures"
MATH = str(FIXTURES / "math_lighteval.jsonl")
MATH500 = str(FIXTURES / "math500.jsonl")
GSM8K = str(FIXTURES / "gsm8k.jsonl")
MBPP = str(FIXTURES / "mbppplus.jsonl")
MINIF2F = str(FIXTURES / "minif2f.jsonl")


def _trl_reward_kwargs(ds):
    """The keyword arguments GRPOTrainer passes to a reward function: every column but the prompt."""
    return {column: list(ds[column]) for column in ds.column_names if column != "prompt"}


def test_load_math_columns_and_prompts():
    ds = load_math(MATH)
    assert len(ds) == 6
    assert {"prompt", "problem", "solution", "level", "type"} <= set(ds.column_names)
    assert ds[0]["prompt"] == f"{ds[0]['problem']}\n\n{MATH_INSTRUCTION}"
    assert "\\boxed{5}" in ds[0]["solution"]


def test_conversational_prompts_with_optional_system_message():
    plain = load_math(MATH, conversational=True)
    assert plain[0]["prompt"] == [{"role": "user", "content": f"{plain[0]['problem']}\n\n{MATH_INSTRUCTION}"}]
    with_system = load_gsm8k(GSM8K, conversational=True, system_prompt="You are a careful solver.")
    assert [m["role"] for m in with_system[0]["prompt"]] == ["system", "user"]
    assert with_system[0]["prompt"][0]["content"] == "You are a careful solver."


def test_load_math500_uses_the_short_answer_as_reference():
    ds = load_math500(MATH500)
    assert len(ds) == 4
    assert {"prompt", "problem", "solution", "reference_solution", "subject", "level", "unique_id"} <= set(
        ds.column_names
    )
    assert list(ds["solution"]) == ["56", "5\\sqrt{2}", "-\\frac{3}{2}", "(-2,2)"]
    assert "\\boxed{56}" in ds[0]["reference_solution"]


def test_load_gsm8k_keeps_the_hash_answer_as_solution():
    ds = load_gsm8k(GSM8K, limit=3)
    assert len(ds) == 3
    assert set(ds.column_names) == {"prompt", "question", "solution"}
    assert ds[0]["solution"].endswith("#### 72")
    assert ds[0]["prompt"].startswith("Natalia sold clips")


def test_math_loaders_feed_math_reward():
    from trl_rapid.rewards.math import math_reward, reference_answer

    for ds in (load_math(MATH), load_math500(MATH500), load_gsm8k(GSM8K)):
        completions = [f"The final answer is $\\boxed{{{reference_answer(s)}}}$." for s in ds["solution"]]
        assert math_reward(completions, **_trl_reward_kwargs(ds)) == [1.0] * len(ds)


def test_load_mbppplus_columns_prompt_and_split():
    full = load_mbppplus(MBPP, split="all")
    assert len(full) == 7
    assert {"prompt", "description", "task_id", "code", "test_list", "test", "test_imports"} <= set(full.column_names)
    row = full[0]
    assert row["prompt"] == (
        "Write a function to find the shared elements from the given two lists.\n"
        "Your code should pass this test:\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n" + CODE_INSTRUCTION
    )
    train, test = load_mbppplus(MBPP, split="train"), load_mbppplus(MBPP, split="test")
    assert (len(train), len(test)) == (5, 2)  # round(7 * 114 / 378) = 2
    assert sorted(list(train["task_id"]) + list(test["task_id"])) == sorted(full["task_id"])
    with pytest.raises(ValueError, match="split"):
        load_mbppplus(MBPP, split="validation")


@pytest.mark.slow  # sandboxed programs
def test_mbppplus_loader_feeds_code_reward():
    from trl_rapid.rewards.code import make_code_reward
    from trl_rapid.rewards.sandbox import SandboxConfig

    ds = load_mbppplus(MBPP, split="all")
    reward = make_code_reward(SandboxConfig(timeout_s=scaled(5), workers=2))
    completions = [f"```python\n{code}\n```" for code in ds["code"]]
    assert reward(completions, **_trl_reward_kwargs(ds)) == [1.0] * len(ds)


def test_mbppplus_split_of_378_tasks_is_264_114_and_deterministic():
    ids = random.Random(1).sample(range(1, 1000), 378)
    ds = Dataset.from_dict({"task_id": ids, "prompt": [f"task {i}" for i in ids]})
    first = split_mbppplus(ds)
    assert (len(first["train"]), len(first["test"])) == (264, 114)
    train_ids, test_ids = set(first["train"]["task_id"]), set(first["test"]["task_id"])
    assert not train_ids & test_ids and train_ids | test_ids == set(ids)
    # independent of row order, reproducible, and seed-dependent
    reordered = ds.select(list(reversed(range(len(ds)))))
    assert set(split_mbppplus(reordered)["test"]["task_id"]) == test_ids
    assert set(split_mbppplus(ds)["test"]["task_id"]) == test_ids
    assert set(split_mbppplus(ds, seed=1)["test"]["task_id"]) != test_ids
    with pytest.raises(ValueError, match="unique"):
        split_mbppplus(Dataset.from_dict({"task_id": [1, 1]}))


def test_load_minif2f_deepseek_schema_filters_split():
    test = load_minif2f(MINIF2F, split="test")
    valid = load_minif2f(MINIF2F, split="valid")
    assert (len(test), len(valid)) == (3, 2)
    assert list(test["name"]) == ["mathd_numbertheory_3", "mathd_algebra_141", "mathd_numbertheory_299"]
    row = test[0]
    assert row["formal_statement"].startswith("theorem mathd_numbertheory_3") and row["formal_statement"].endswith(
        ":= by\n"
    )
    assert row["header"].startswith("import Mathlib")
    assert row["prompt"] == (
        f"{LEAN_INSTRUCTION}\n\n```lean4\n{row['header']}{row['informal_prefix']}{row['formal_statement']}"
    )
    chat = load_minif2f(MINIF2F, split="test", conversational=True)
    assert chat[0]["prompt"][0]["content"].endswith(":= by\n```")


def test_load_minif2f_header_embedded_in_statement(tmp_path):
    # The AI-MO/minif2f_test schema: no header or split column; the imports sit inside formal_statement.
    path = tmp_path / "aimo.jsonl"
    statement = "theorem mathd_numbertheory_299 : 1 * 3 * 5 * 7 * 9 * 11 * 13 % 10 = 5 := by\n"
    embedded = "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\nopen Real\n\n" + statement
    rows = [{"name": "mathd_numbertheory_299", "informal_prefix": "", "formal_statement": embedded},
            {"name": "bare", "informal_prefix": "", "formal_statement": statement}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    ds = load_minif2f(str(path), split="test")
    assert ds[0]["formal_statement"] == statement
    assert ds[0]["header"] == "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\nopen Real\n\n"
    assert ds[1]["header"] == DEFAULT_LEAN_HEADER  # nothing embedded: the default Mathlib header
    assert split_header("-- comment\ntheorem t : True := trivial") == ("", "-- comment\ntheorem t : True := trivial")


def test_schema_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?"}) + "\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['answer'\]"):
        load_gsm8k(str(bad))
    with pytest.raises(FileNotFoundError):
        load_math(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_named("humaneval")
    assert len(load_named("math500", MATH500)) == 4

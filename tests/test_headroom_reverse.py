"""The second headroom task, reverse_word (trl_rapid/headroom_reverse.py): its scoring attacked like a policy would,
its own cached warm start, its place in the task registry and in a benchmark config."""

import json
import random
import string
from pathlib import Path

import pytest

from trl_rapid import headroom as H
from trl_rapid import headroom_reverse as R

ROOT = Path(__file__).resolve().parent.parent
EOS = H.EOS_TOKEN_ID
WORD, TARGET = "kqzmhtbw", "wbthmzqk"


def reward(completions, ids=None, target=TARGET):
    return R.reverse_word_reward(completions, [target] * len(completions), completion_ids=ids)


def test_prompts_and_targets():
    ds = R.make_reverse_word_dataset(200, seed=3, num_letters=8)
    assert len(set(ds["prompt"])) == 200
    for row in ds:
        word = row["prompt"].removeprefix("reverse ").removesuffix(":")
        assert len(word) == 8 and word.isalpha() and word.islower() and row["target"] == word[::-1]
    assert R.make_reverse_word_dataset(5, seed=3)["prompt"] == ds["prompt"][:5]  # seeded
    assert R.make_reverse_word_dataset(5, seed=4)["prompt"] != ds["prompt"][:5]


def test_exact_answer_scores_one_only_when_terminated():
    assert reward([TARGET]) == [1.0] and reward([TARGET], ids=[[3] * 8 + [EOS]]) == [1.0]
    assert reward([TARGET], ids=[[3] * 8]) == [0.0]  # ran out of tokens without EOS
    assert R.reverse_word_accuracy([TARGET, "wbthmzqq"], [TARGET] * 2) == [1.0, 0.0]  # no partial credit held out
    assert reward(["wbthmzqq"]) == [0.5 * 7 / 8]


@pytest.mark.parametrize("completion", ["wbthmzq", "wbthmzqkk", " wbthmzqk", "wbthmzqk ", "w b t h m z q k",
                                        "wbthmzqk\nwbthmzqk", "wbthmzq1", "WBTHMZQK", "", f"reverse {WORD}:"])
def test_malformed_answers_and_prompt_copies_score_zero(completion):
    assert reward([completion]) == [0.0] and R.reverse_word_accuracy([completion], [TARGET]) == [0.0]


def test_format_tricks_score_low():
    """Over many prompts, the word copied unreversed, a repeated letter, sorted letters or random well-formed words
    earn about 0.5/26; the tricks that get a position right by construction earn 0.5/8 per such position (its first
    letter repeated: the last position; the word rotated by one: 2 of 8), as sort_digits' repeated digit earns 0.125.
    All stay far below a nearly right answer (0.5 × 7/8 ≈ 0.44) and almost never reach the exact score."""
    ds = R.make_reverse_word_dataset(2000, seed=5, num_letters=8)
    words = [p.removeprefix("reverse ").removesuffix(":") for p in ds["prompt"]]
    rng = random.Random(0)
    tricks = {
        "copy unreversed": lambda w: w,
        "repeated letter": lambda w: rng.choice(string.ascii_lowercase) * 8,
        "repeat its first letter": lambda w: w[0] * 8,
        "rotated copy": lambda w: w[1:] + w[0],
        "sorted letters": lambda w: "".join(sorted(w)),
        "random word": lambda w: "".join(rng.choice(string.ascii_lowercase) for _ in range(8)),
    }
    for name, trick in tricks.items():
        scores = R.reverse_word_reward([trick(w) for w in words], ds["target"])
        assert sum(scores) / len(scores) < 0.15, name
        assert sum(s == 1.0 for s in scores) <= 0.005 * len(scores), name  # only palindromes-by-chance


def test_its_own_warm_start_cache(tmp_path):
    small = R.ReverseRecipe(hidden_size=64, num_layers=1, num_heads=2, corpus_size=64, sft_steps=2, batch_size=8)
    sort_twin = H.WarmStartRecipe(**{f: getattr(small, f) for f in small.__dataclass_fields__})
    assert small.key() != sort_twin.key()  # same fields, another task: another model
    path = H.build_warm_start(small, cache_dir=tmp_path, log=lambda *a: None)
    assert path.name == f"reverse_word-{small.key()}"
    info = json.loads((path / "warm_start.json").read_text())
    assert info["key"] == small.key() and (path / "config.json").exists()
    assert H.build_warm_start(small, cache_dir=tmp_path) == path
    # sort_digits' cache key did not move with the refactoring (the benchmark's cached warm start stays valid).
    assert H.DEFAULT_RECIPE.key() == H.WarmStartRecipe().key() and H.WarmStartRecipe.TASK == "sort_digits"


def test_registry_and_bench_config():
    from trl_rapid import benchmark as B
    from trl_rapid.tasks import build_task

    task = build_task("reverse_word", num_train_prompts=8, num_eval_prompts=4, num_letters=6)
    assert task.eval_funcs == [R.reverse_word_accuracy] and task.reward_funcs == [R.reverse_word_reward]
    assert len(task.train[0]["target"]) == 6
    config = ROOT / "configs" / "bench" / "cpu_headroom_reverse.yaml"
    cfg = B.load_config(config)
    assert cfg["task"]["name"] == "reverse_word" and cfg["model"]["kind"] == "warm_start"
    assert cfg["model"]["task"] == "reverse_word" and cfg["plan"]["methods"][0]["name"] == "grpo_on_policy"
    assert any(m.get("aa_of") == "grpo_on_policy" for m in cfg["plan"]["methods"])
    from trl_rapid.benchmark.workers import check_method_configs

    check_method_configs(cfg)
    with pytest.raises(ValueError, match="task.name: reverse_word"):
        B.load_config(config, {"task": {"name": "sort_digits"}})
    with pytest.raises(ValueError, match="task.num_letters: 8"):
        B.load_config(config, {"task": {"num_letters": 6}})

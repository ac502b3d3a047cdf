"""The headroom task (trl_rapid/headroom.py): its scoring, attacked like a policy would, and its cached warm start."""

import json
import random

import pytest

from trl_rapid import headroom as H

TARGET = "0 1 2 3 3 7 8 9"  # sorted "83193027"
EOS = H.EOS_TOKEN_ID
SMALL = H.WarmStartRecipe(hidden_size=64, num_layers=1, num_heads=2, corpus_size=64, sft_steps=2, batch_size=8)


def reward(completions, ids=None, target=TARGET):
    return H.sort_digits_reward(completions, [target] * len(completions), completion_ids=ids)


def test_prompts_and_targets():
    ds = H.make_sort_digits_dataset(50, seed=3, num_digits=8)
    assert len(set(ds["prompt"])) == 50
    for row in ds:
        digits = row["prompt"].removeprefix("sort ").removesuffix(":")
        assert len(digits) == 8 and digits.isdigit()
        assert row["target"].split(" ") == sorted(digits)
    assert H.make_sort_digits_dataset(5, seed=3)["prompt"] == ds["prompt"][:5]  # seeded
    assert H.make_sort_digits_dataset(5, seed=4)["prompt"] != ds["prompt"][:5]


def test_exact_answer_scores_one_and_only_when_terminated():
    assert reward([TARGET]) == [1.0]  # text only (held-out check, no ids)
    assert reward([TARGET], ids=[[3] * 15 + [EOS]]) == [1.0]
    assert reward([TARGET], ids=[[3] * 15]) == [0.0]  # ran to the length limit without EOS
    assert H.sort_digits_accuracy([TARGET, TARGET], [TARGET] * 2, completion_ids=[[3, EOS], [3, 3]]) == [1.0, 0.0]


@pytest.mark.parametrize("completion", [
    "0 1 2 3 3 7 8 9 9",   # too long
    "0 1 2 3 3 7 8",       # too short
    " 0 1 2 3 3 7 8 9",    # leading space
    "0 1 2 3 3 7 8 9 ",    # trailing space
    "01233789",            # no spaces
    "0 1 2 3 3 7 8 9\n0",  # a second answer
    "",
])
def test_malformed_answers_score_zero(completion):
    assert reward([completion]) == [0.0]
    assert H.sort_digits_accuracy([completion], [TARGET]) == [0.0]


def test_partial_credit_is_small_and_tracks_correct_positions():
    repeated, copied, one_off = "3 3 3 3 3 3 3 3", "8 3 1 9 3 0 2 7", "0 1 2 3 4 7 8 9"
    got = reward([repeated, copied, one_off])
    assert got == [0.5 * 2 / 8, 0.5 * 1 / 8, 0.5 * 7 / 8]  # positions that hold the right digit
    assert H.sort_digits_accuracy([repeated, copied, one_off], [TARGET] * 3) == [0.0, 0.0, 0.0]


def test_no_wrong_answer_reaches_the_exact_score():
    """Random well-formed answers (and constant ones) stay at or below the best partial credit, 0.5 × 7/8."""
    rng = random.Random(0)
    answers = [" ".join(rng.choice("0123456789") for _ in range(8)) for _ in range(2000)]
    answers += [" ".join(d * 8) for d in "0123456789"]
    answers = [a for a in answers if a != TARGET]
    scores = reward(answers)
    assert max(scores) <= 0.5 * 7 / 8
    assert sum(scores) / len(scores) < 0.1  # an answer that ignores the prompt earns little


def test_warm_start_is_cached_by_recipe_and_reused(tmp_path, monkeypatch):
    small = SMALL
    path = H.build_warm_start(small, cache_dir=tmp_path, log=lambda *a: None)
    info = json.loads((path / "warm_start.json").read_text())
    assert info["key"] == small.key() and path.name.endswith(small.key()) and len(info["sft_losses"]) >= 1
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind

    def no_training(*args, **kwargs):
        raise AssertionError("the cached warm start was rebuilt")

    monkeypatch.setattr(H, "_train_warm_start", no_training)
    assert H.build_warm_start(small, cache_dir=tmp_path) == path  # second call: the cache, no training
    # Another recipe is another model: it is not served from this cache.
    other = H.WarmStartRecipe(hidden_size=64, num_layers=1, num_heads=2, corpus_size=64, sft_steps=3, batch_size=8)
    assert other.key() != small.key()
    with pytest.raises(AssertionError, match="rebuilt"):
        H.build_warm_start(other, cache_dir=tmp_path)


def test_a_killed_build_leaves_no_cache(tmp_path, monkeypatch):
    recipe = H.WarmStartRecipe(sft_steps=1)

    def dies_half_way(recipe, path, log):
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")  # half a model
        raise KeyboardInterrupt

    monkeypatch.setattr(H, "_train_warm_start", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        H.build_warm_start(recipe, cache_dir=tmp_path)
    assert not H.warm_start_path(recipe, tmp_path).exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


@pytest.mark.slow  # the training script, end to end
def test_training_script_runs_the_headroom_recipe_from_the_warm_start(tmp_path, monkeypatch):
    """configs/headroom.yaml through the training script: the warm start is built (a small recipe here, to keep the
    suite fast), cached under the env-chosen folder, and RAPID trains from it."""
    from trl_rapid.cli import main

    monkeypatch.setenv(H.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(H, "DEFAULT_RECIPE", SMALL)
    trainer = main(["--config", "configs/headroom.yaml", "--output_dir", str(tmp_path / "run"), "--max_steps", "2",
                    "--optimizer_steps_per_generation", "1", "--num_eval_prompts", "8", "--num_train_prompts", "64"])
    expected = H.warm_start_path(SMALL, tmp_path / "cache")
    assert (expected / "warm_start.json").exists()
    assert trainer.state.global_step == 2
    assert trainer.model.config.name_or_path == str(expected)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "sort_digits" and summary["held_out_reward_before"] is not None

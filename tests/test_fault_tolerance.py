"""Faults that used to lose a run, each run for real on the tiny model: infinite rewards, overflowing gradients,
non-finite weights at save time, `kill -9` during a checkpoint save, batches nobody can score (issue 11, points 4, 7, 8)
and the script's console output (issue 8, point 5)."""

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.checkpoints import (
    NonFiniteWeightsError,
    checkpoint_problem,
    remove_stale_staging,
    resolve_resume_checkpoint,
)
from trl_rapid.console import CompactProgressCallback
from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward

from helpers.timing import scaled

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def config(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
                    num_generations=4, optimizer_steps_per_generation=3, max_completion_length=4, learning_rate=5e-3,
                    lr_scheduler_type="constant", max_steps=6, logging_steps=1, save_strategy="no", report_to="none",
                    use_cpu=True, bf16=False, disable_tqdm=True, seed=0)
    return RapidConfig(**{**settings, **overrides})


def all_finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite rewards and gradients
# ---------------------------------------------------------------------------------------------------------------------

INFINITE_FIRST_CHARS = {**dict.fromkeys("abcdefghijklm", math.inf), **dict.fromkeys("nopqrstuvwxyz", -math.inf)}


def infinite_reward(completions, target, **kwargs):
    """The demo reward, but +inf / -inf for completions starting with a letter (about half of a random policy's)."""
    return [INFINITE_FIRST_CHARS.get(c[:1], r) for c, r in zip(completions, repeat_digit_reward(completions, target))]


class AdvantageRecorder(RapidTrainer):
    """Records (completion text, advantage the loss used) for every trained row."""

    rows: list

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        if self.model.training:
            texts = self.processing_class.batch_decode(inputs["completion_ids"], skip_special_tokens=True)
            self.rows = getattr(self, "rows", []) + list(zip(texts, inputs["advantages"].tolist()))
        return loss


def test_infinite_rewards_are_unscorable_and_nothing_non_finite_is_written(tiny_model_dir, tmp_path):
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.embed_tokens.weight.clone()
    bar = io.StringIO()
    with pytest.warns(UserWarning, match="'infinite_reward' returned ±inf") as caught:
        trainer = AdvantageRecorder(
            model=tiny_model_dir, reward_funcs=infinite_reward, args=config(
                tmp_path, save_strategy="steps", save_steps=3, disable_tqdm=False),
            train_dataset=make_repeat_digit_dataset(64), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
            callbacks=[CompactProgressCallback(interactive=True, stream=bar)],
        )
        trainer.train()
    assert sum("returned ±inf" in str(w.message) for w in caught) == 1  # once per function, not per step

    infinite = [a for text, a in trainer.rows if text[:1] in INFINITE_FIRST_CHARS]
    finite = [a for text, a in trainer.rows if text[:1] not in INFINITE_FIRST_CHARS]
    assert len(infinite) >= 6 and len(finite) >= 6, (len(infinite), len(finite))
    assert all(a == 0.0 for a in infinite)  # unscorable: no learning signal
    assert any(a != 0.0 for a in finite) and all(math.isfinite(a) for a in finite)
    assert all_finite(trainer.model)
    assert not torch.equal(before, trainer.model.model.embed_tokens.weight.detach())  # it trained
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    assert rewards and all(math.isfinite(r) for r in rewards)

    checkpoint = Path(trainer.args.output_dir) / "checkpoint-6"
    assert checkpoint_problem(checkpoint) is None
    assert all_finite(AutoModelForCausalLM.from_pretrained(checkpoint))

    # The progress bar (a terminal, disable_tqdm=False) showed the live numbers.
    assert "training: 100%" in bar.getvalue() and "reward 0." in bar.getvalue() and "ess " in bar.getvalue()

    # Weights that are not finite are never written: a clear error, and no folder.
    with torch.no_grad():
        trainer.model.model.embed_tokens.weight[0, 0] = math.nan
    with pytest.raises(NonFiniteWeightsError, match=r"1 parameter tensor\(s\) of \d+ hold NaN or inf.*embed_tokens"):
        trainer.save_model(str(tmp_path / "final"))
    trainer.state.global_step = 7
    with pytest.raises(NonFiniteWeightsError, match="checkpoint-7"):
        trainer._save_checkpoint(trainer.model, None)
    assert not (tmp_path / "final").exists()
    assert sorted(p.name for p in Path(trainer.args.output_dir).iterdir() if "checkpoint" in p.name) == [
        "checkpoint-3", "checkpoint-6"]


def test_an_overflowing_gradient_skips_its_update_and_training_goes_on(tiny_model_dir, tmp_path):
    calls = []

    def overflowing_first_batch(completions, target, **kwargs):
        # Finite but huge: the group sums overflow float32, so batch 1's advantages and gradients are not finite.
        calls.append(len(completions))
        rewards = repeat_digit_reward(completions, target)
        return [3e38 if len(calls) == 1 and c[:1].isalpha() else r for c, r in zip(completions, rewards)]

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.embed_tokens.weight.clone()
    lines = io.StringIO()
    trainer = RapidTrainer(model=tiny_model_dir, reward_funcs=overflowing_first_batch, args=config(tmp_path),
                           train_dataset=make_repeat_digit_dataset(64),
                           processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
                           callbacks=[CompactProgressCallback(interactive=True, stream=lines)])
    with pytest.warns(UserWarning, match="update is skipped"):
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["rapid/skipped_updates"] for h in logs] == [1, 2, 3, 3, 3, 3]  # the first outer step (H = 3)
    assert [math.isfinite(h["grad_norm"]) for h in logs] == [False] * 3 + [True] * 3
    assert all_finite(trainer.model)
    assert not torch.equal(before, trainer.model.model.embed_tokens.weight.detach())  # the second outer step trained
    # disable_tqdm=True is honoured: no bar, a few short lines instead, naming the skipped updates.
    assert "training:" not in lines.getvalue() and "skipped 3" in lines.getvalue()


def test_under_deepspeed_the_gradient_guard_is_off_and_says_so(tiny_model_dir, tmp_path):
    # This checks only RapidTrainer's own branch on `is_deepspeed_enabled` (forced on a real trainer; nothing else is
    # replaced): no skip is claimed, no count is logged, and train() warns first. (Real ZeRO runs: test_scale_out.py.)
    trainer = RapidTrainer(model=tiny_model_dir, reward_funcs=repeat_digit_reward, args=config(tmp_path),
                           train_dataset=make_repeat_digit_dataset(16),
                           processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    model = trainer.model.train()  # as during training: log() adds the count to training logs only

    def nan_gradients():
        model.zero_grad(set_to_none=True)
        (model(torch.tensor([[1, 2, 3]])).logits.sum() * math.nan).backward()

    nan_gradients()
    with pytest.warns(UserWarning, match="update is skipped"):
        assert math.isnan(trainer._get_grad_norm(model))
    assert trainer._skipped_updates == 1 and all(p.grad is None for p in model.parameters())  # guard on: skipped

    trainer.is_deepspeed_enabled = True
    nan_gradients()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipped" warning
        assert math.isnan(trainer._get_grad_norm(model))
    assert trainer._skipped_updates == 1  # not counted
    assert all(p.grad is not None for p in model.parameters())  # and the gradients were left alone
    trainer.log({"loss": 0.5})
    assert "rapid/skipped_updates" not in trainer.state.log_history[-1]
    trainer.is_deepspeed_enabled = False
    trainer.log({"loss": 0.5})
    assert trainer.state.log_history[-1]["rapid/skipped_updates"] == 1

    # At start-up, before DeepSpeed itself is set up: with the flag forced and no DeepSpeed plugin, setting it up fails
    # right after the warning (ModuleNotFoundError without deepspeed installed, AttributeError on the missing plugin
    # with it).
    trainer.is_deepspeed_enabled = True
    with pytest.warns(UserWarning, match="non-finite-gradient guard is inactive") as caught, \
            pytest.raises((ModuleNotFoundError, AttributeError), match="deepspeed|hf_ds_config"):
        trainer.train()
    assert sum("guard is inactive" in str(w.message) for w in caught) == 1


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 while a checkpoint is being written
# ---------------------------------------------------------------------------------------------------------------------


class StepRecorder(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)


def run_killed_during_save(out: Path, model_dir: str, *extra: str, stall_at: int = 4) -> Path:
    """Start the training script in a subprocess, SIGKILL it once it is inside the save of step `stall_at`."""
    marker = out.parent / f"{out.name}-saving"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "tests" / "checkpoint_kill_worker.py"), str(stall_at), str(marker),
               "--model_name_or_path", model_dir, "--output_dir", str(out), *script_args(), *extra]
    log = out.parent / f"{out.name}-stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + scaled(240)
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before its save: {log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the run never reached its save"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=scaled(60)) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    return Path(marker.read_text())  # the folder the save was writing into


def script_args(*extra, save_strategy="steps"):
    return ["--max_steps", "6", "--save_strategy", save_strategy, "--save_steps", "2", "--num_eval_prompts", "0",
            "--num_train_prompts", "64", "--per_device_train_batch_size", "8", "--num_generations", "4", *extra]


@pytest.mark.slow  # the training script, killed with -9
def test_rapid_checkpoints_are_complete_or_absent_after_kill_9(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    writing = run_killed_during_save(out, tiny_model_dir, "--config", str(DEMO))
    # Killed inside the step-4 save: what it was writing is a tmp- folder, never a checkpoint-4.
    assert writing.name == "tmp-checkpoint-4" and (writing / "rng_state.pth").stat().st_size == 0
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2", "tmp-checkpoint-4"]
    assert checkpoint_problem(out / "checkpoint-2") is None

    # Resume through the trainer API, as a user would: resume_from_checkpoint=True.
    from trl_rapid.cli import parse_args
    from trl_rapid.task_args import task_from_args

    # Finished without further checkpoints (save_strategy "no"; a changed save_steps would not do: transformers 5.17
    # takes save_steps from the resumed trainer_state.json): no later save is for step 4, so only the cleanup at the
    # start of training removes its folder.
    script, args, _ = parse_args(["--config", str(DEMO), "--model_name_or_path", tiny_model_dir, "--output_dir",
                                  str(out), *script_args(save_strategy="no")])
    task = task_from_args(script)
    train_dataset, reward_funcs = task.train, task.reward_funcs
    steps = StepRecorder()
    trainer = RapidTrainer(model=tiny_model_dir, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                           processing_class=AutoTokenizer.from_pretrained(tiny_model_dir), callbacks=[steps])
    with pytest.warns(UserWarning, match=r"Removed staging folder\(s\) .*: tmp-checkpoint-4\."):
        trainer.train(resume_from_checkpoint=True)
    assert steps.seen == [3, 4, 5, 6]  # resumed after step 2
    # The stale tmp folder is gone; the complete checkpoint is kept.
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    assert checkpoint_problem(out / "checkpoint-2") is None


def test_stale_staging_cleanup_touches_only_staging_folders_and_restores_a_moved_checkpoint(tmp_path):
    # What a kill inside `publish` leaves on a second save of step 5: checkpoint-5 moved aside (complete) and the new
    # tmp-checkpoint-5, before the rename. And a kill during the step-7 save, next to look-alike names.
    def folder(name, *files):
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text("x")

    folder("checkpoint-3", "trainer_state.json")
    folder("tmp-checkpoint-5-replaced", "trainer_state.json", "model.safetensors")
    folder("tmp-checkpoint-5", "model.safetensors")
    folder("tmp-checkpoint-7", "model.safetensors")
    folder("tmp-checkpoint-3-replaced", "trainer_state.json")  # checkpoint-3 exists: a leftover copy
    for keep in ("tmp-checkpoint-x", "tmp-checkpoints-9", "my-tmp-checkpoint-2", "tmp-checkpoint-8.bak"):
        folder(keep)
    (tmp_path / "tmp-checkpoint-9").write_text("a file, not a folder")

    with pytest.warns(UserWarning, match="Removed staging folder"):
        done = remove_stale_staging(tmp_path)
    assert done == ["tmp-checkpoint-3-replaced", "tmp-checkpoint-5", "tmp-checkpoint-5-replaced -> checkpoint-5 "
                    "(restored)", "tmp-checkpoint-7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-3", "checkpoint-5", "my-tmp-checkpoint-2", "tmp-checkpoint-8.bak", "tmp-checkpoint-9",
        "tmp-checkpoint-x", "tmp-checkpoints-9"]
    assert sorted(p.name for p in (tmp_path / "checkpoint-5").iterdir()) == ["model.safetensors", "trainer_state.json"]
    assert remove_stale_staging(tmp_path) == []  # nothing left to do, no warning


@pytest.mark.slow  # the training script, killed with -9
def test_a_partial_checkpoint_left_by_trl_is_skipped_when_the_script_resumes(tiny_model_dir, tmp_path):
    from trl_rapid.cli import main

    # TRL's own GRPOTrainer (the script's baselines) writes checkpoint-4 in place, so the kill leaves it partial.
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("\n".join(line for line in DEMO.read_text().splitlines()
                                if not line.startswith(("eta:", "optimizer_steps_per_generation:", "trainer:")))
                      + "\ntrainer: grpo\n")
    out = tmp_path / "out"
    writing = run_killed_during_save(out, tiny_model_dir, "--config", str(recipe))
    assert writing == out / "checkpoint-4" and "trainer_state.json" in checkpoint_problem(writing)

    with pytest.warns(UserWarning, match="Skipping incomplete checkpoint .*checkpoint-4 .*no trainer_state.json"):
        assert resolve_resume_checkpoint(True, str(out)) == str(out / "checkpoint-2")
    with pytest.raises(ValueError, match=r"checkpoint-4 is not a complete checkpoint .*checkpoint-2"):
        resolve_resume_checkpoint(str(writing), str(out))

    with pytest.warns(UserWarning, match="Skipping incomplete checkpoint"):
        trainer = main(["--config", str(recipe), "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
                        *script_args("--resume_from_checkpoint", "true")])
    summary = json.loads((out / "summary.json").read_text())
    # On-policy GRPO generates once per step: resumed after step 2, this run generated for steps 3-6.
    assert (trainer.state.global_step, summary["optimizer_steps"], summary["generation_calls"]) == (6, 6, 4)


# ---------------------------------------------------------------------------------------------------------------------
# The script: batches nobody can score, and its console output
# ---------------------------------------------------------------------------------------------------------------------


def test_script_survives_unscorable_batches_and_says_so(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from trl_rapid.cli import main

    training_calls = []

    def sometimes_unscorable(completions, target, **kwargs):
        if "trainer_state" not in kwargs:  # the script's held-out check: nothing scorable
            return [None] * len(completions)
        training_calls.append(len(completions))
        if len(training_calls) == 1:
            return [None] * len(completions)  # a whole batch without reward
        if len(training_calls) == 2:
            return [math.nan] * len(completions)
        return repeat_digit_reward(completions, target)

    monkeypatch.setattr("trl_rapid.tiny.repeat_digit_reward", sometimes_unscorable)
    out = tmp_path / "out"
    trainer = main(["--config", str(DEMO), "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
                    "--max_steps", "12", "--num_train_prompts", "64", "--num_eval_prompts", "8"])
    summary = json.loads((out / "summary.json").read_text())
    assert training_calls == [128, 128, 128]  # H = 4: three inference batches of 128 completions
    assert (summary["unscorable_completions"], summary["train_completions"]) == (256, 384)
    assert summary["held_out_reward_before"] is None and summary["held_out_reward_after"] is None
    assert math.isfinite(summary["reward_first_10pct"]) and math.isfinite(summary["reward_last_10pct"])
    assert all_finite(trainer.model) and (out / "model.safetensors").exists()

    printed = capsys.readouterr()
    assert "held-out reward (greedy)       n/a (no scorable completion)" in printed.out
    assert "unscorable completions         256 of 384" in printed.out
    assert not re.search(r"\bnan\b", printed.out, re.IGNORECASE)
    # The console: a compact table and a few progress lines, not one raw metrics dict per log ...
    assert "{'loss'" not in printed.out + printed.err and "=== trl-rapid summary ===" in printed.out
    progress = [line for line in printed.err.splitlines() if line.startswith("step ")]
    assert 1 <= len(progress) <= 12 and progress[-1].startswith("step 12/12 (100%)")
    # ... while the logs keep every metric.
    assert all("clip_ratio/region_mean" in h and "rapid/ess" in h for h in trainer.state.log_history if "loss" in h)

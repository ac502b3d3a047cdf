"""The training script end to end: the paper's recipes on the tiny local model with the local fixtures, on CPU.

Each run goes through `trl_rapid.cli.main` (or `accelerate launch scripts/rapid.py`) with a real recipe from configs/,
overriding only what a CPU smoke run needs: the model (the tiny local one, whose tokenizer maps unknown characters to
<pad>), the dataset (tests/fixtures), `use_vllm false`, `bf16 false`, tiny lengths and 2 optimizer steps (the MATH
recipe's gradient_accumulation_steps 32 is lowered to 2 so that an inference batch fits the fixture's 6 prompts).
per_device_train_batch_size stays 2 < G = 4: the paper's setup, in which a group spans micro-batches.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_rapid.cli import main
from trl_rapid.rewards import LeanNotAvailableError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CPU_SMOKE = ["--use_vllm", "false", "--bf16", "false", "--use_cpu", "true", "--max_completion_length", "8",
             "--max_steps", "2", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]


def run_recipe(recipe: str, model_dir: str, out: Path, *extra: str):
    trainer = main(["--config", str(REPO / "configs" / recipe), "--model_name_or_path", model_dir,
                    "--output_dir", str(out), *CPU_SMOKE, *extra])
    return trainer, json.loads((out / "summary.json").read_text())


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.mark.slow
def test_math_recipe_trains_two_steps(tiny_model_dir, tmp_path):
    trainer, summary = run_recipe(
        "math/rapid_h2.yaml", tiny_model_dir, tmp_path / "out",
        "--dataset_name", str(FIXTURES / "math_lighteval.jsonl"),
        "--eval_dataset_name", str(FIXTURES / "math500.jsonl"), "--num_eval_prompts", "2",
        "--gradient_accumulation_steps", "2",
    )
    # H = 2 with GA = 2: one inference batch of 2 × 2 × 2 = 8 completions (2 prompts) feeds both optimizer steps
    assert (summary["trainer"], summary["task"]) == ("rapid", "math")
    assert (summary["optimizer_steps"], summary["generation_calls"], summary["processes"]) == (2, 1, 1)
    assert len(trainer.train_dataset) == 6 and "solution" in trainer.train_dataset.column_names
    rewards = logged(trainer, "rewards/math_reward/mean")
    assert rewards and not any(math.isnan(r) for r in rewards)  # math_reward scored every completion
    assert logged(trainer, "rapid/inner_step") == [0, 1]
    # the held-out check ran on MATH-500's schema before and after training
    assert isinstance(summary["held_out_reward_before"], float) and isinstance(summary["held_out_reward_after"], float)
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "reward_curve.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mbppplus/rapid_h2.yaml", "mbppplus/grpo.yaml"])
def test_mbppplus_recipe_trains_two_steps(recipe, tiny_model_dir, tmp_path):
    trainer, summary = run_recipe(recipe, tiny_model_dir, tmp_path / "out",
                                  "--dataset_name", str(FIXTURES / "mbppplus.jsonl"), "--code_workers", "2")
    expected_trainer = "rapid" if "rapid" in recipe else "grpo"
    assert (summary["trainer"], summary["task"], summary["optimizer_steps"]) == (expected_trainer, "mbppplus", 2)
    # the train part of the deterministic 264/114-style split: 5 of the fixture's 7 tasks
    assert len(trainer.train_dataset) == 5
    assert type(trainer).__name__ == ("RapidTrainer" if expected_trainer == "rapid" else "GRPOTrainer")
    # the code reward (built at start-up, sandboxed) scored every completion: no NaN (= "no tests") anywhere
    rewards = logged(trainer, "rewards/code_reward/mean")
    assert rewards and not any(math.isnan(r) for r in rewards)
    assert trainer.reward_funcs[0].sandbox is not None
    # the recipe's GA = 4: on-policy baseline, one inference batch per optimizer step; RAPID (H = 2), one for both
    assert summary["generation_calls"] == (1 if expected_trainer == "rapid" else 2)


def test_minif2f_without_lean_toolchain_fails_at_start_up(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TRL_RAPID_LEAN_REPL", raising=False)
    monkeypatch.delenv("TRL_RAPID_LEAN_PROJECT", raising=False)

    def no_trainer(*args, **kwargs):
        raise AssertionError("a trainer was built although the Lean reward cannot run")

    monkeypatch.setattr("trl_rapid.trainer.RapidTrainer.__init__", no_trainer)
    with pytest.raises(LeanNotAvailableError, match="No Lean REPL configured"):
        run_recipe("minif2f/rapid_h4.yaml", tiny_model_dir, tmp_path / "out",
                   "--dataset_name", str(FIXTURES / "minif2f.jsonl"))
    assert not (tmp_path / "out").exists()

    with pytest.raises(LeanNotAvailableError, match="not found"):
        run_recipe("minif2f/rapid_h4.yaml", tiny_model_dir, tmp_path / "out",
                   "--lean_repl_command", "no-such-lean-repl --flag")


FAKE_REPL = """#!{python}
# Speaks the Lean REPL's JSON protocol (request + blank line in, answer + blank line out) and accepts everything.
import json, sys
env, lines = 0, []
for line in sys.stdin:
    if line.strip():
        lines.append(line)
        continue
    if lines:
        request, lines = json.loads("".join(lines)), []
        with open({log!r}, "a") as fh:
            fh.write(json.dumps(request) + "\\n")
        sys.stdout.write(json.dumps({{"env": env}}) + "\\n\\n")
        sys.stdout.flush()
        env += 1
"""


def fake_lean_repl(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "repl.log"
    repl = tmp_path / "fake-repl"
    repl.write_text(FAKE_REPL.format(python=sys.executable, log=str(log)))
    repl.chmod(0o755)
    return repl, log


def test_minif2f_task_loads_valid_for_training_and_test_as_held_out(tmp_path):
    from trl_rapid.cli import parse_args
    from trl_rapid.task_args import task_from_args

    repl, log = fake_lean_repl(tmp_path)
    script, _, _ = parse_args(["--config", str(REPO / "configs" / "minif2f" / "rapid_h4.yaml"), "--use_cpu", "true",
                               "--dataset_name", str(FIXTURES / "minif2f.jsonl"), "--lean_repl_command", str(repl),
                               "--num_eval_prompts", "-1"])
    task = task_from_args(script)
    train, held_out, [reward] = task.train, task.eval_dataset, task.reward_funcs
    assert sorted(set(train["split"])) == ["valid"] and len(train) == 2
    assert sorted(set(held_out["split"])) == ["test"] and len(held_out) == 3
    assert "example : True := trivial" in log.read_text()  # the REPL was probed at start-up
    # the reward reads the columns the loader produced (formal_statement, header)
    rows = train.select(range(2))
    scores = reward(["  ring\n", "  simp\n"], formal_statement=rows["formal_statement"], header=rows["header"])
    assert scores == [1.0, 1.0]


def test_minif2f_refuses_to_train_on_a_test_only_dataset(tmp_path):
    from trl_rapid.cli import parse_args
    from trl_rapid.task_args import task_from_args

    repl, _ = fake_lean_repl(tmp_path)
    test_only = tmp_path / "minif2f_test.jsonl"  # the AI-MO/minif2f_test schema: no split column
    rows = [json.loads(line) for line in (FIXTURES / "minif2f.jsonl").read_text().splitlines()]
    test_only.write_text("".join(json.dumps({"name": r["name"], "formal_statement": r["formal_statement"]}) + "\n"
                                 for r in rows))
    script, _, _ = parse_args(["--task", "minif2f", "--output_dir", str(tmp_path), "--use_cpu", "true",
                               "--dataset_name", str(test_only), "--lean_repl_command", str(repl)])
    with pytest.raises(ValueError, match="no 'split' column"):
        task_from_args(script)


@pytest.mark.parametrize("task, hint", [("nope", ""), ("math500", "MATH-500 has only test problems")])
def test_unknown_task_is_a_clear_error(task, hint, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=rf"Unknown task '{task}'.*{hint}.*Available tasks: repeat_digit, "
                                         r"sort_digits, math, gsm8k, mbppplus, minif2f"):
        main(["--task", task, "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"),
              "--use_cpu", "true"])


@pytest.mark.slow
def test_demo_recipe_under_accelerate_launch_with_two_processes(tmp_path, free_port):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port), str(REPO / "scripts" / "rapid.py"),
               "--config", str(REPO / "configs" / "demo.yaml"), "--max_steps", "8",
               "--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(tmp_path / "model"),
               "--num_eval_prompts", "10"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # H = 4: 8 optimizer steps take 2 inference batches, each process generating its share
    assert (summary["processes"], summary["optimizer_steps"], summary["generation_calls"]) == (2, 8, 2)
    assert (tmp_path / "out" / "reward_curve.png").exists()
    assert "=== trl-rapid summary ===" in result.stdout


@pytest.mark.slow  # three interpreter start-ups (~9 s)
def test_python_dash_m_runs_the_script_and_its_flags_take_underscores():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for module in ("trl_rapid", "trl_rapid.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "--code_timeout_s" in result.stdout and "--optimizer_steps_per_generation" in result.stdout


def test_console_entry_point_exits_zero_after_training(tiny_model_dir, tmp_path, monkeypatch):
    # The installed `trl-rapid` script does `sys.exit(<entry>())`: anything but None or 0 is a failing exit status.
    import importlib
    import tomllib
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["trl-rapid"]
    module, function = target.split(":")
    entry = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", ["trl-rapid", "--config", str(REPO / "configs" / "demo.yaml"),
                                      "--model_name_or_path", str(tmp_path / "model"), "--output_dir",
                                      str(tmp_path / "out"), "--max_steps", "2", "--num_eval_prompts", "0",
                                      "--num_train_prompts", "64"])
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(entry())
    assert exit_info.value.code in (None, 0)
    assert (tmp_path / "out" / "summary.json").exists()

"""The one task registry (trl_rapid/tasks.py) shared by the training script, the benchmark and the evaluation; a task
of the user's own, defined in a module outside the package, runs through all three."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trl_rapid import tasks as T

ROOT = Path(__file__).resolve().parent.parent

USER_TASK = textwrap.dedent('''
    """A task of the user's own, outside trl_rapid: "copy 7:" asks for the digit 7."""
    import random

    from datasets import Dataset


    def _rows(n, seed):
        rng = random.Random(seed)
        digits = [rng.choice("0123456789") for _ in range(n)]
        return Dataset.from_list([{"prompt": f"copy {d}:", "digit": d} for d in digits])


    def copy_reward(completions, digit, **kwargs):
        return [0.5 * c.startswith(d) + 0.5 * (c[:1].isdigit()) for c, d in zip(completions, digit)]


    def copy_exact(completions, digit, **kwargs):
        return [float(c.startswith(d)) for c, d in zip(completions, digit)]


    def make_task(num_prompts=64, num_eval_prompts=8, as_mapping=False):
        fields = {"train": _rows(num_prompts, 0), "reward_funcs": copy_reward,
                  "eval_dataset": _rows(num_eval_prompts, 1), "eval_funcs": [copy_exact]}
        if as_mapping:
            return fields
        from trl_rapid.tasks import Task

        return Task(**fields)


    def not_a_task():
        return 42
''')


@pytest.fixture
def user_task(tmp_path, monkeypatch):
    """`user_copy_task.make_task` in a module written to tmp_path, importable from there (sys.path and PYTHONPATH)."""
    (tmp_path / "user_copy_task.py").write_text(USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    yield "user_copy_task:make_task"
    sys.modules.pop("user_copy_task", None)


def test_built_in_tasks_are_registered_once():
    assert list(T.TASKS)[:6] == ["repeat_digit", "sort_digits", "math", "gsm8k", "mbppplus", "minif2f"]
    task = T.build_task("sort_digits", num_train_prompts=10, num_eval_prompts=5, num_digits=6)
    assert len(task.train) == 10 and len(task.eval_dataset) == 5 and task.name == "sort_digits"
    from trl_rapid.headroom import sort_digits_accuracy, sort_digits_reward

    assert task.reward_funcs == [sort_digits_reward] and task.eval_funcs == [sort_digits_accuracy]
    demo = T.task_from_config({"name": "repeat_digit", "num_train_prompts": 4, "num_eval_prompts": 0})
    assert demo.eval_dataset is None and demo.eval_funcs == demo.reward_funcs  # held-out score = training reward
    # The benchmark, the training script and the evaluation all resolve through it.
    from trl_rapid import task_args
    from trl_rapid.benchmark import tasks as bench_tasks

    assert task_args.build_task is T.build_task and bench_tasks.TASK_NAMES == tuple(T.TASKS)


def test_a_users_task_by_import_path(user_task):
    task = T.build_task(user_task, num_prompts=12)
    assert task.name == user_task and len(task.train) == 12 and task.train[0]["prompt"].startswith("copy ")
    assert task.eval_funcs[0](completions=["7", "3"], digit=["7", "7"]) == [1.0, 0.0]
    mapped = T.task_from_config({"import": user_task, "args": {"as_mapping": True}})
    assert mapped.eval_funcs[0].__name__ == "copy_exact" and mapped.reward_funcs[0].__name__ == "copy_reward"
    for spec, match in [("user_copy_task:nope", "no function 'nope'"), ("no_such_module_x:f", "cannot import"),
                        ("user_copy_task:not_a_task", "must return"), ("nope", "Unknown task 'nope'")]:
        with pytest.raises(ValueError, match=match):
            T.build_task(spec)
    with pytest.raises(ValueError, match="go under args"):
        T.task_from_config({"import": user_task, "num_prompts": 3})


def test_the_training_script_and_the_evaluation_take_it(user_task, tiny_model_dir, tmp_path):
    from trl_rapid.cli import main, parse_args
    from trl_rapid.task_args import task_from_args

    script, _, _ = parse_args(["--task", user_task, "--task_args", '{"num_prompts": 16}', "--num_eval_prompts", "4",
                               "--output_dir", str(tmp_path / "x"), "--use_cpu", "true"])
    task = task_from_args(script)
    assert len(task.train) == 16 and len(task.eval_dataset) == 4
    trainer = main(["--task", user_task, "--task_args", '{"num_prompts": 32}', "--num_eval_prompts", "4",
                    "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "run"), "--use_cpu",
                    "true", "--max_steps", "1", "--per_device_train_batch_size", "8", "--num_generations", "4",
                    "--max_completion_length", "2", "--report_to", "none"])
    assert trainer.state.global_step == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == user_task and summary["held_out_prompts"] == 4
    assert summary["held_out_reward_before"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # copy_exact on 4 prompts

    from trl_rapid.evaluation import main as evaluate_main

    report = evaluate_main(["--model", tiny_model_dir, "--task", user_task, "--task_args", '{"num_eval_prompts": 6}',
                            "--n", "2", "--k", "1", "--max_new_tokens", "2", "--output", str(tmp_path / "e.json")])
    assert report["total"]["num_tasks"] == 6 and report["config"]["reward_func"] == "copy_exact"


def test_the_library_does_not_import_the_training_script():
    code = ("import sys, trl_rapid.benchmark, trl_rapid.benchmark.workers, trl_rapid.tasks, trl_rapid.task_args, "
            "trl_rapid.evaluation; assert 'trl_rapid.cli' not in sys.modules, 'imported trl_rapid.cli'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})


@pytest.mark.slow  # the benchmark script, end to end
def test_benchmark_a_users_task_end_to_end(user_task, tiny_model_dir, tmp_path):
    """`python scripts/benchmark.py --config <a config whose task is task.import>`: a couple of steps, in worker
    processes that import the user's module from PYTHONPATH."""
    import yaml

    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "name": "user_task", "model": {"kind": "pretrained", "path": tiny_model_dir},
        "task": {"import": user_task, "args": {"num_prompts": 32, "num_eval_prompts": 4}},
        "budget": {"total_completions": 16}, "seeds": [0], "eval": {"every_steps": 2, "max_new_tokens": 2},
        "methods": {"grpo_on_policy": True, "grpo_off_policy_h": [], "rapid_h": [2]}, "ideal": {"enabled": False},
        "isolation": "forkserver", "workers": 2,
        "training": {"use_cpu": True, "num_generations": 4, "per_device_train_batch_size": 8,
                     "max_completion_length": 2, "learning_rate": 1e-3, "logging_steps": 1}}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "--config", str(config), "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["grpo_on_policy", "rapid_H2"]
    assert all(r["counts"]["optimizer_steps"] == 2 and r["first_prompts"][0].startswith("copy ")
               for r in result["runs"])
    assert all(p["reward"] in (0.0, 0.25, 0.5, 0.75, 1.0) for r in result["runs"] for p in r["eval"]["points"])
    assert f"task `{user_task}`" in (out / "table.md").read_text()

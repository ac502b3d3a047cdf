"""The benchmark's task, from the shared registry (trl_rapid/tasks.py): a built-in one by name, or your own by import.

    task: {name: sort_digits, num_train_prompts: 4000, num_eval_prompts: 200, num_digits: 8}
    task: {import: "my_package.my_module:make_task", args: {num_prompts: 1000}}
"""

from __future__ import annotations

from ..tasks import TASKS, resolve_builder, task_from_config

TASK_NAMES = tuple(TASKS)


def task_label(task_cfg: dict) -> str:
    return task_cfg.get("name") or task_cfg.get("import", "?")


def check_task(task_cfg: dict) -> None:
    """Fail at configuration time, naming the problem, if the task cannot be found (its data is built in workers)."""
    if "import" in task_cfg:
        unknown = set(task_cfg) - {"import", "args"}
        if unknown:
            raise ValueError(f"task: with import, the builder's arguments go under args:, got {sorted(unknown)} "
                             "beside it.")
        if not isinstance(task_cfg.get("args") or {}, dict):
            raise ValueError(f"task.args must be a mapping of the builder's keyword arguments, got "
                             f"{task_cfg['args']!r}.")
        resolve_builder(task_cfg["import"])
    else:
        resolve_builder(task_cfg.get("name"))


def load_task(task_cfg: dict):
    """(train_dataset, eval_dataset, reward_funcs, eval_funcs) of the benchmark's task. `eval_funcs` score the held-out
    greedy completions (their sum): the training reward for the demo task, exact-match accuracy for the headroom task
    (its training reward adds partial credit, trl_rapid/headroom.py)."""
    task = task_from_config(task_cfg)
    if task.eval_dataset is None:
        raise ValueError(f"Task {task.name!r} has no held-out set: the benchmark evaluates every run on one.")
    return task.train, task.eval_dataset, task.reward_funcs, task.eval_funcs

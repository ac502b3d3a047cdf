"""The benchmark's tasks: (train prompts, held-out prompts, training reward functions, held-out scoring functions)."""

from __future__ import annotations

TASK_NAMES = ("repeat_digit", "sort_digits")


def load_task(task_cfg: dict):
    """(train_dataset, eval_dataset, reward_funcs, eval_funcs) for the benchmark's task.

    `eval_funcs` score the held-out greedy completions: the training reward for the demo task, exact-match accuracy
    for the headroom task (its training reward adds partial credit, trl_rapid/headroom.py)."""
    if task_cfg["name"] == "repeat_digit":
        from ..tiny import make_repeat_digit_dataset, repeat_digit_reward

        train = make_repeat_digit_dataset(task_cfg["num_train_prompts"], seed=task_cfg["train_seed"])
        held_out = make_repeat_digit_dataset(task_cfg["num_eval_prompts"], seed=task_cfg["eval_seed"])
        return train, held_out, [repeat_digit_reward], [repeat_digit_reward]
    if task_cfg["name"] == "sort_digits":
        from ..headroom import make_sort_digits_dataset, sort_digits_accuracy, sort_digits_reward

        digits = task_cfg.get("num_digits", 8)
        train = make_sort_digits_dataset(task_cfg["num_train_prompts"], seed=task_cfg["train_seed"], num_digits=digits)
        held_out = make_sort_digits_dataset(task_cfg["num_eval_prompts"], seed=task_cfg["eval_seed"],
                                            num_digits=digits)
        return train, held_out, [sort_digits_reward], [sort_digits_accuracy]
    raise ValueError(f"Unknown task.name {task_cfg['name']!r}. Available: {', '.join(TASK_NAMES)}.")

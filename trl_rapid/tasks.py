"""One task registry for the training script (`trl-rapid --config`), the benchmark and the evaluation.

A task is what RL trains on and is judged by: train prompts, training reward function(s), and a held-out evaluation
(prompts and the scorer(s) of their greedy completions). Built-in tasks register here under a name; any other task
plugs in without editing the package, by naming a function that builds it:

    task: {import: "my_package.my_module:make_task", args: {num_prompts: 1000}}     # benchmark YAML
    trl-rapid --task my_package.my_module:make_task --task_args '{"num_prompts": 1000}' ...   # training script
    python -m trl_rapid.evaluation --task my_package.my_module:make_task --model DIR --output r.json

`make_task(**args)` returns a `Task`, or a mapping with the same fields:

    train          a datasets.Dataset with a `prompt` column (plain text, or chat messages) and any columns the
                   rewards read (TRL passes them to reward functions as keyword arguments)
    reward_funcs   a TRL reward function, `f(prompts, completions, completion_ids, **columns) -> list[float]`, or a list
    eval_dataset   the held-out Dataset (a `prompt` column and the scorers' columns), or None
    eval_funcs     the held-out scorer(s), same signature; the held-out score of a completion is their sum (default:
                   reward_funcs). E.g. exact-match accuracy, where the training reward gives partial credit.

The module must be importable: on PYTHONPATH, installed, or in the working directory (searched too).

Built-in: `repeat_digit` (the demo, trl_rapid/tiny.py), `sort_digits` (headroom, trl_rapid/headroom.py) and
`reverse_word` (headroom of another kind, trl_rapid/headroom_reverse.py), built locally with `num_train_prompts`,
`num_eval_prompts`, `train_seed`, `eval_seed` (and the task's own arguments); the paper's `math`, `gsm8k`,
`mbppplus`, `minif2f`, which load data and build their rewards from the training script's arguments
(`build_paper_task`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Task:
    """Train prompts, training rewards and a held-out evaluation (module docstring)."""

    train: Any = field(metadata={"help": "datasets.Dataset with a `prompt` column (+ the rewards' columns)."})
    reward_funcs: Any = field(metadata={"help": "TRL reward function(s) used in training."})
    eval_dataset: Any = field(default=None, metadata={"help": "Held-out Dataset (`prompt` + scorer columns) or None."})
    eval_funcs: Any = field(default=None, metadata={"help": "Scorer(s) of held-out completions (default: the "
                                                             "training rewards)."})
    name: str = field(default="", metadata={"help": "The name or import path it was built from."})

    def __post_init__(self):
        self.reward_funcs = _as_list(self.reward_funcs, "reward_funcs")
        self.eval_funcs = _as_list(self.eval_funcs, "eval_funcs") if self.eval_funcs is not None \
            else list(self.reward_funcs)
        for what, ds in (("train", self.train), ("eval_dataset", self.eval_dataset)):
            if ds is None and what == "eval_dataset":
                continue
            columns = getattr(ds, "column_names", None)
            if columns is None or "prompt" not in columns:
                raise ValueError(f"Task {self.name!r}: {what} must be a datasets.Dataset with a 'prompt' column, got "
                                 f"{type(ds).__name__}" + (f" with columns {columns}" if columns else "") + ".")


def _as_list(funcs, what: str) -> list:
    funcs = list(funcs) if isinstance(funcs, (list, tuple)) else [funcs]
    if not funcs or not all(callable(f) for f in funcs):
        raise ValueError(f"Task {what} must be a callable reward function or a non-empty list of them, got {funcs!r}.")
    return funcs


TASKS: dict[str, Callable[..., Task]] = {}
PAPER_TASKS = ("math", "gsm8k", "mbppplus", "minif2f")  # built from the training script's arguments
EVAL_ONLY = {"math500": "MATH-500 has only test problems: use task 'math', which trains on MATH and holds out MATH-500"}


def register_task(name: str):
    """Decorator: register `builder(**args) -> Task` under `name`."""

    def wrap(builder):
        TASKS[name] = builder
        return builder

    return wrap


def is_import_path(spec: str) -> bool:
    return isinstance(spec, str) and ":" in spec


def resolve_builder(spec: str) -> Callable[..., Any]:
    """A registered task name, or "package.module:function" imported (the working directory is searched too)."""
    if not is_import_path(spec):
        if spec not in TASKS:
            hint = f" ({EVAL_ONLY[spec]})" if spec in EVAL_ONLY else ""
            raise ValueError(f"Unknown task {spec!r}{hint}. Available tasks: {', '.join(TASKS)}; or name your own "
                             "builder as 'package.module:function' (task: {import: ...} in a benchmark config).")
        return TASKS[spec]
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"Task {spec!r}: cannot import {module_name!r} ({err}). Put it on PYTHONPATH or in the "
                         "working directory.") from err
    builder = module
    for part in attr.split("."):
        builder = getattr(builder, part, None)
    if not callable(builder):
        raise ValueError(f"Task {spec!r}: {module_name} has no function {attr!r}.")
    return builder


def build_task(spec: str, **args) -> Task:
    """Build a task from a registered name or an import path, with the builder's own keyword arguments."""
    built = resolve_builder(spec)(**args)
    if isinstance(built, Task):
        built.name = built.name or spec
        return built
    if isinstance(built, Mapping):
        unknown = set(built) - {"train", "reward_funcs", "eval_dataset", "eval_funcs", "name"}
        if unknown:
            raise ValueError(f"Task {spec!r} returned unknown fields {sorted(unknown)}; a task has train, "
                             "reward_funcs, eval_dataset, eval_funcs.")
        return Task(**{"name": spec, **built})
    raise ValueError(f"Task {spec!r}: the builder must return a trl_rapid.tasks.Task or a mapping with train, "
                     f"reward_funcs, eval_dataset and eval_funcs, got {type(built).__name__}.")


def task_from_config(task_cfg: Mapping) -> Task:
    """A benchmark's `task:` section: {name: NAME, ...its arguments} or {import: "pkg.mod:function", args: {...}}."""
    task_cfg = dict(task_cfg)
    if "import" in task_cfg:
        unknown = set(task_cfg) - {"import", "args"}
        if unknown:
            raise ValueError(f"task: with import, the other keys go under args:, got {sorted(unknown)} beside it.")
        return build_task(task_cfg["import"], **(task_cfg.get("args") or {}))
    name = task_cfg.pop("name")
    if name in PAPER_TASKS:
        raise ValueError(f"task {name!r} loads its data and reward from the training script's arguments; benchmark "
                         "it through a builder of your own (task: {import: ...}).")
    return build_task(name, **task_cfg)


# ---------------------------------------------------------------------------------------------------------------------
# Built-in tasks built locally
# ---------------------------------------------------------------------------------------------------------------------
@register_task("repeat_digit")
def repeat_digit_task(num_train_prompts: int = 4000, num_eval_prompts: int = 100, train_seed: int = 0,
                      eval_seed: int = 1) -> Task:
    """The demo task (trl_rapid/tiny.py): repeat the prompt's last digit; the held-out score is the training reward."""
    from .tiny import make_repeat_digit_dataset, repeat_digit_reward

    held_out = make_repeat_digit_dataset(num_eval_prompts, seed=eval_seed) if num_eval_prompts else None
    return Task(make_repeat_digit_dataset(num_train_prompts, seed=train_seed), [repeat_digit_reward], held_out,
                name="repeat_digit")


@register_task("sort_digits")
def sort_digits_task(num_train_prompts: int = 4000, num_eval_prompts: int = 200, train_seed: int = 0,
                     eval_seed: int = 1, num_digits: int = 8) -> Task:
    """The headroom task (trl_rapid/headroom.py): partial credit in training, exact-match accuracy held out."""
    from .headroom import make_sort_digits_dataset, sort_digits_accuracy, sort_digits_reward

    held_out = make_sort_digits_dataset(num_eval_prompts, seed=eval_seed, num_digits=num_digits) \
        if num_eval_prompts else None
    return Task(make_sort_digits_dataset(num_train_prompts, seed=train_seed, num_digits=num_digits),
                [sort_digits_reward], held_out, [sort_digits_accuracy], name="sort_digits")


# ---------------------------------------------------------------------------------------------------------------------
# The paper's tasks: data from the Hub or a local file, rewards built (and checked) from the script's arguments
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperTask:
    """A benchmark of the paper: where its train and held-out prompts come from, and how completions are scored."""

    loader: str  # key of trl_rapid.data.LOADERS for the train set
    train_split: str
    eval_loader: str  # key of trl_rapid.data.LOADERS for the held-out set
    eval_split: str
    reward: str  # "math", "code" or "lean"
    eval_dataset: str | None = None  # default held-out dataset when it is not the train one


PAPER = {
    # The paper evaluates MATH on MATH-500 (a 500-problem subset of MATH's test split).
    "math": PaperTask("math", "train", "math500", "test", "math", eval_dataset="HuggingFaceH4/MATH-500"),
    "gsm8k": PaperTask("gsm8k", "train", "gsm8k", "test", "math"),
    # Splits of trl_rapid.data.split_mbppplus: 264 train / 114 test tasks of the Hub's single 378-task split.
    "mbppplus": PaperTask("mbppplus", "train", "mbppplus", "test", "code"),
    # The spec fixes the test set (244 problems); training uses the disjoint valid set (244) of the same file.
    "minif2f": PaperTask("minif2f", "valid", "minif2f", "test", "lean"),
}
# The reward that scores each loader's prompts (the evaluation checks `--dataset` against `--task` with it).
REWARD_OF_LOADER = {loader: task.reward for task in PAPER.values() for loader in (task.loader, task.eval_loader)}


def build_paper_task(name: str, options) -> Task:
    """Train and held-out sets of a paper task, and its reward built first (a missing Lean toolchain or a broken code
    sandbox stops here, before any download). `options`: a `trl_rapid.task_args.TaskArguments` (the training
    script's arguments extend it)."""
    task = PAPER[name]
    reward = build_reward(task.reward, options)

    from .data import HUB_NAMES, load_named

    formatting = dict(conversational=options.conversational, system_prompt=options.system_prompt)
    train_split = options.dataset_train_split or task.train_split
    train = load_named(task.loader, options.dataset_name, split=train_split, limit=options.num_train_prompts,
                       **formatting)
    if task.loader == "minif2f" and "split" not in train.column_names and train_split != "test":
        raise ValueError(
            f"MiniF2F dataset {options.dataset_name or 'AI-MO/minif2f_test'!r} has no 'split' column: it holds "
            f"only the test problems, so dataset_train_split={train_split!r} cannot be honoured. Point dataset_name "
            "at a file in DeepSeek-Prover's minif2f.jsonl schema (valid + test), or set dataset_train_split=test to "
            "train on the test problems on purpose."
        )
    held_out = None
    if options.num_eval_prompts:
        eval_name = options.eval_dataset_name or task.eval_dataset or options.dataset_name
        eval_loader = HUB_NAMES.get(eval_name, task.eval_loader)  # a Hub name selects its own loader
        limit = None if options.num_eval_prompts == -1 else options.num_eval_prompts
        held_out = load_named(eval_loader, eval_name, split=options.dataset_eval_split or task.eval_split,
                              limit=limit, **formatting)
    return Task(train, [reward], held_out, name=name)


for _name in PAPER_TASKS:
    TASKS[_name] = (lambda n: lambda options=None, **_: build_paper_task(n, options))(_name)


def build_reward(kind: str, options):
    """A paper task's reward function, built (and its sandbox or Lean REPL checked) now, at start-up."""
    if kind == "math":
        from .rewards import math_reward

        return math_reward
    if kind == "code":
        from .rewards import SandboxConfig, make_code_reward

        limits = dict(timeout_s=options.code_timeout_s, memory_mb=options.code_memory_mb,
                      isolation=options.code_isolation, allow_unsafe_rlimits=options.code_allow_unsafe_rlimits,
                      sandbox_uid_base=options.code_sandbox_uid_base,
                      sandbox_uid_count=options.code_sandbox_uid_count, scratch_root=options.code_scratch_root)
        local_data = [str(Path(name).resolve()) for name in (options.dataset_name, options.eval_dataset_name)
                      if name and Path(name).exists()]  # a local dataset holds the reference solutions
        limits["hidden_paths"] = [*(options.code_hidden_paths or []), *local_data]
        if options.code_workers is not None:
            limits["workers"] = options.code_workers
        return make_code_reward(SandboxConfig(**limits), test_mode=options.code_test_mode)
    if kind == "lean":
        from .rewards import LeanConfig, make_lean_reward

        return make_lean_reward(LeanConfig(
            repl_command=options.lean_repl_command, project_dir=options.lean_project_dir,
            timeout_s=options.lean_timeout_s, workers=options.lean_workers,
        ))
    raise ValueError(f"Unknown reward kind {kind!r}.")


@register_task("reverse_word")
def reverse_word_task(num_train_prompts: int = 4000, num_eval_prompts: int = 200, train_seed: int = 0,
                      eval_seed: int = 1, num_letters: int = 8) -> Task:
    """The second headroom task (trl_rapid/headroom_reverse.py): reverse a word; partial credit in training, exact-match
    accuracy held out."""
    from .headroom_reverse import make_reverse_word_dataset, reverse_word_accuracy, reverse_word_reward

    held_out = make_reverse_word_dataset(num_eval_prompts, seed=eval_seed, num_letters=num_letters) \
        if num_eval_prompts else None
    return Task(make_reverse_word_dataset(num_train_prompts, seed=train_seed, num_letters=num_letters),
                [reverse_word_reward], held_out, [reverse_word_accuracy], name="reverse_word")

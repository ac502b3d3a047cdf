"""The arguments that choose and build a task of the registry (trl_rapid/tasks.py): its name, data and reward settings.

The training script's arguments extend `TaskArguments` (trl_rapid/cli/arguments.py) and the evaluation builds its
rewards from one (trl_rapid/evaluation.py), so a task is wired one way everywhere: `task_from_args(args)`. Every reward
is built before any dataset or model is loaded, so a missing Lean toolchain or a broken code sandbox stops a run at
start-up, never in the middle of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .tasks import PAPER_TASKS, Task, build_task

DEMO_TASK = "repeat_digit"
HEADROOM_TASK = "sort_digits"


@dataclass
class TaskArguments:
    """Which task to train or evaluate on, its data, and its reward's settings (the code sandbox, the Lean REPL)."""

    task: str = field(
        default=DEMO_TASK,
        metadata={"help": f"Task (dataset + reward, trl_rapid/tasks.py): '{DEMO_TASK}' (the embedded demo task, "
                          f"built locally), '{HEADROOM_TASK}' (the headroom task, built locally, with --warm_start), "
                          + ", ".join(repr(t) for t in PAPER_TASKS) + ", another registered task, or your own "
                          "builder as 'package.module:function' (see --task_args)."},
    )
    task_args: str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of a locally built or imported task's builder: a JSON object on the "
                          "command line, a mapping in the YAML config (e.g. {num_digits: 6})."},
    )
    # Data
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Train set: a Hub dataset name or a local .jsonl/.json/.parquet file in the Hub schema "
                          "(default: the task's Hub dataset, see trl_rapid/data.py)."},
    )
    dataset_train_split: str | None = field(
        default=None,
        metadata={"help": "Split to train on (default: the task's; 'train', or 'valid' for minif2f). For mbppplus "
                          "'train'/'test' are the 264/114 split of the Hub's single split; for minif2f rows are "
                          "filtered by their 'split' column."},
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Held-out set, Hub name or local file (default: MATH-500 for math, else dataset_name)."},
    )
    dataset_eval_split: str | None = field(
        default=None,
        metadata={"help": "Split of the held-out set (default: the task's, 'test')."},
    )
    num_train_prompts: int | None = field(
        default=None,
        metadata={"help": "Use only the first N prompts of the train split (default: all of them; the demo task "
                          "generates 4000)."},
    )
    num_eval_prompts: int = field(
        default=0,
        metadata={"help": "Held-out prompts scored with greedy decoding before and after training, and passed to the "
                          "trainer as eval_dataset when eval_strategy is not 'no' (0: no held-out set; -1: the whole "
                          "eval split; 100 prompts for the demo task)."},
    )
    conversational: bool = field(
        default=False,
        metadata={"help": "Give prompts as chat messages ([{'role': 'user', ...}]) for the tokenizer's chat template "
                          "instead of plain text (paper tasks only)."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message prepended to conversational prompts."},
    )

    # Code reward (mbppplus)
    code_test_mode: str = field(
        default="all",
        metadata={"help": "MBPP+ tests a completion must pass: 'all' (base + plus, the official criterion), 'base' "
                          "or 'plus'.", "choices": ["all", "base", "plus"]},
    )
    code_timeout_s: float = field(default=10.0, metadata={"help": "Wall-clock seconds per sandboxed program."})
    code_memory_mb: int = field(default=2048, metadata={"help": "Address-space limit of a sandboxed program (MiB)."})
    code_workers: int | None = field(
        default=None, metadata={"help": "Sandboxed programs run in parallel (default: min(8, CPU count))."}
    )
    code_isolation: str = field(
        default="auto",
        metadata={"help": "Sandbox isolation: 'auto', 'namespaces' (nsjail) or 'rlimits' (the fallback; see "
                          "docs/sandbox.md).",
                  "choices": ["auto", "namespaces", "rlimits"]},
    )
    code_allow_unsafe_rlimits: bool = field(
        default=False,
        metadata={"help": "Consent to isolation 'rlimits' as a non-root user, where the programs run as your own user "
                          "(they can read the trainer's environment, e.g. HF_TOKEN, your files, and kill the trainer). "
                          "Refused without it; use only inside a disposable container."},
    )
    code_sandbox_uid_base: int = field(
        default=61000,
        metadata={"help": "As root, each trainer process leases 2 x code_workers sandbox uids from "
                          "[code_sandbox_uid_base, + code_sandbox_uid_count) (a lock file per uid), so several "
                          "trainers or ranks on one machine never share one. Pick a range no account uses."},
    )
    code_sandbox_uid_count: int = field(
        default=1024, metadata={"help": "Size of that uid range (machine-wide: 2 uids per sandbox worker)."}
    )
    code_scratch_root: str | None = field(
        default=None, metadata={"help": "Directory for the sandbox's per-run scratch dirs (default: the temp dir)."}
    )
    code_hidden_paths: list[str] | None = field(
        default=None,
        metadata={"help": "Extra absolute paths the sandboxed programs must not read (isolation 'namespaces' covers "
                          "them with an empty tmpfs), e.g. an output_dir outside the working directory or a dataset "
                          "copy. Always hidden: the HF caches, the working directory, HOME, /root, /home and a local "
                          "dataset_name / eval_dataset_name. 'rlimits' cannot hide files."},
    )

    # Lean reward (minif2f)
    lean_repl_command: str | None = field(
        default=None,
        metadata={"help": "Command starting the Lean 4 REPL, e.g. 'lake exe repl' (default: the TRL_RAPID_LEAN_REPL "
                          "environment variable). Without one the minif2f task stops at start-up."},
    )
    lean_project_dir: str | None = field(
        default=None,
        metadata={"help": "Lake project (with Mathlib and the REPL built) the command runs in (default: "
                          "TRL_RAPID_LEAN_PROJECT)."},
    )
    lean_timeout_s: float = field(default=120.0, metadata={"help": "Seconds to check one proof."})
    lean_workers: int = field(default=1, metadata={"help": "Lean REPL processes checking proofs in parallel."})


def task_from_args(args: TaskArguments) -> Task:
    """The task named by `args.task`, from the registry: a paper task from the data and reward arguments; a locally
    built or imported task from `num_train_prompts` / `num_eval_prompts` (train prompts drawn with seed 0, held-out
    with seed 1; 0 held-out prompts unless asked, -1 the task's default) and `task_args`."""
    if args.task in PAPER_TASKS:
        return build_task(args.task, options=args)
    builder_args = args.task_args or {}
    if isinstance(builder_args, str):
        builder_args = json.loads(builder_args)
    if not isinstance(builder_args, dict):
        raise ValueError(f"task_args must be a mapping of the task builder's arguments, got {builder_args!r}.")
    builder_args = dict(builder_args)
    if args.num_train_prompts is not None:
        builder_args.setdefault("num_train_prompts", args.num_train_prompts)
    if args.num_eval_prompts != -1:
        builder_args.setdefault("num_eval_prompts", args.num_eval_prompts)
    return build_task(args.task, **builder_args)

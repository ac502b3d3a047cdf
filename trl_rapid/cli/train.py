"""`trl-rapid` / `scripts/rapid.py`: the TRL-style training script for RAPID and its baselines.

    accelerate launch scripts/rapid.py --config configs/demo.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/rapid.py --config configs/math/rapid_h8.yaml
    trl-rapid --config configs/demo.yaml --max_steps 50        # same job; command-line flags override the YAML

Arguments are TRL's (`TrlParser` over the script arguments below, `RapidConfig` and `ModelConfig`). With
`trainer: grpo` the same script runs TRL's `GRPOTrainer` from a `GRPOConfig` (the GRPO, PG and DAPO baselines), so
comparisons share one code path.

Tasks (`--task`; dataset and reward; the registry in trl_rapid/tasks.py, shared with the benchmark and the evaluation):

    repeat_digit  the embedded demo task, built locally (trl_rapid/tiny.py)
    sort_digits   the headroom task, built locally (trl_rapid/headroom.py): sort 8 digits, from a cached SFT warm start
    math          MATH train (trl_rapid.data.load_math), held out on MATH-500; math_reward
    gsm8k         GSM8K train, held out on GSM8K test; math_reward
    mbppplus      MBPP+ train split (264 of 378), held out on its 114-task test split; sandboxed code reward
    minif2f       MiniF2F valid, held out on MiniF2F test; Lean 4 REPL reward (needs a configured Lean toolchain)
    pkg.mod:fn    your own task: fn(**task_args) returns a trl_rapid.tasks.Task (train prompts, rewards, held-out set)

Every reward is built before any dataset or model is loaded, so a missing Lean toolchain or a broken code sandbox
stops the script at start-up, never in the middle of a run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .evaluation import greedy_mean_reward, greedy_rewards  # noqa: F401  (held-out scoring; re-exported)
from .tasks import EVAL_ONLY, PAPER, PAPER_TASKS, TASKS, Task, build_reward, build_task, is_import_path  # noqa: F401

TRAINERS = ("rapid", "grpo")


DEMO_TASK = "repeat_digit"
HEADROOM_TASK = "sort_digits"


@dataclass
class RapidScriptArguments:
    """Script arguments of `scripts/rapid.py` (the model comes from TRL's `ModelConfig`, training from the config)."""

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
    trainer: str = field(
        default="rapid",
        metadata={"help": "'rapid' (RapidTrainer + RapidConfig) or 'grpo' (TRL's GRPOTrainer + GRPOConfig, baselines).",
                  "choices": list(TRAINERS)},
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={"help": "Build the embedded tiny model and tokenizer at model_name_or_path if nothing is there."},
    )
    warm_start: bool = field(
        default=False,
        metadata={"help": "Tasks sort_digits and reverse_word: train from the task's SFT warm start "
                          "(trl_rapid/headroom.py, headroom_reverse.py; default recipe), built on first use and cached under "
                          "outputs/warm_start/; replaces model_name_or_path."},
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
        metadata={"help": "Sandbox isolation: 'auto', 'namespaces' or 'rlimits' (see trl_rapid/rewards/sandbox/).",
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


def _config_class(argv: list[str]):
    """Pick RapidConfig or GRPOConfig from `--trainer`, given on the command line or in the YAML `--config`."""
    from trl import GRPOConfig

    from .config import RapidConfig

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--config")
    peek.add_argument("--trainer")
    known, _ = peek.parse_known_args(argv)
    trainer = known.trainer
    if trainer is None and known.config:
        trainer = (yaml.safe_load(Path(known.config).read_text()) or {}).get("trainer", "rapid")
    trainer = trainer or "rapid"
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}.")
    return RapidConfig if trainer == "rapid" else GRPOConfig


def parse_args(argv: list[str] | None = None):
    from trl import ModelConfig, TrlParser

    argv = sys.argv[1:] if argv is None else argv
    parser = TrlParser((RapidScriptArguments, _config_class(argv), ModelConfig))
    return parser.parse_args_and_config(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Task: reward first (fails fast), then the train and held-out sets
# ---------------------------------------------------------------------------------------------------------------------


def script_task(script_args) -> Task:
    """The task named by `script_args.task`, from the registry (trl_rapid/tasks.py): a paper task from the script's
    data and reward arguments; a locally built or imported task from `num_train_prompts` / `num_eval_prompts` (train
    prompts drawn with seed 0, held-out with seed 1; 0 held-out prompts unless asked, -1 the task's default) and
    `task_args`."""
    if script_args.task in PAPER_TASKS:
        return build_task(script_args.task, options=script_args)
    args = script_args.task_args or {}
    if isinstance(args, str):
        args = json.loads(args)
    if not isinstance(args, dict):
        raise ValueError(f"task_args must be a mapping of the task builder's arguments, got {args!r}.")
    if script_args.num_train_prompts is not None:
        args.setdefault("num_train_prompts", script_args.num_train_prompts)
    if script_args.num_eval_prompts != -1:
        args.setdefault("num_eval_prompts", script_args.num_eval_prompts)
    return build_task(script_args.task, **args)


def load_task(script_args):
    """Return (train_dataset, held-out dataset or None, reward_funcs) for `script_args.task`."""
    task = script_task(script_args)
    return task.train, task.eval_dataset, task.reward_funcs


# ---------------------------------------------------------------------------------------------------------------------
# Held-out check and reward curve
# ---------------------------------------------------------------------------------------------------------------------


def plot_reward_curve(log_history: list[dict], path: Path) -> Path | None:
    """Save reward (and RAPID's staleness, when logged) against optimizer step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["reward"]) for h in log_history if _finite(h.get("reward"))]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker="o", markersize=3, label="mean reward (each inference batch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None):
    script_args, training_args, model_args = parse_args(argv)
    from .trainer.scale_out import check_launch_environment

    check_launch_environment(training_args)  # RapidConfig checks it too; this covers `trainer: grpo`

    import torch.distributed as dist
    from accelerate import PartialState
    from transformers import AutoTokenizer
    from trl import GRPOTrainer, get_peft_config, get_quantization_config

    from . import console
    from .checkpoints import resolve_resume_checkpoint
    from .data import is_local
    from .trainer import RapidTrainer

    state = PartialState()
    # `--resume_from_checkpoint true` (or a run folder): the newest complete checkpoint, partial ones skipped.
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    # Rewards first: a task whose reward cannot run (no Lean toolchain, no sandbox) stops before any model is loaded.
    task = script_task(script_args)
    train_dataset, held_out, reward_funcs = task.train, task.eval_dataset, task.reward_funcs

    model_path = Path(model_args.model_name_or_path)
    if script_args.build_tiny_model:
        from .tiny import build_tiny_model

        with state.main_process_first():  # one process writes the model, the others read it
            if state.is_main_process and not (model_path / "config.json").exists():
                build_tiny_model(model_path, seed=training_args.seed)
    if script_args.warm_start:
        from . import headroom_reverse
        from .headroom import DEFAULT_RECIPE, build_warm_start

        recipes = {HEADROOM_TASK: DEFAULT_RECIPE, headroom_reverse.TASK_NAME: headroom_reverse.DEFAULT_RECIPE}
        if script_args.task not in recipes:
            raise ValueError(f"warm_start is for tasks {sorted(recipes)}, not {script_args.task!r}: drop --warm_start.")
        with state.main_process_first():  # the main process builds the cache (atomically), the others reuse it
            model_args.model_name_or_path = str(build_warm_start(recipes[script_args.task]))

    # As TRL's grpo script: ModelConfig's loading options reach from_pretrained (explicit model_init_kwargs win).
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    # transformers 5 may map a config to a tokenizer class that re-tokenises a custom vocabulary: load it explicitly.
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    trainer_cls = RapidTrainer if script_args.trainer == "rapid" else _scale_out_grpo_trainer(GRPOTrainer)
    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=held_out if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )

    generations = 0
    generate = trainer._generate_and_score_completions

    def counted_generate(inputs):
        nonlocal generations
        generations += trainer.model.training
        return generate(inputs)

    trainer._generate_and_score_completions = counted_generate

    # Completions no reward function scored (None, NaN or ±inf from all): TRL's reward matrix, gathered over processes.
    scoring = {"completions": 0, "unscorable": 0}
    calculate_rewards = trainer._calculate_rewards

    def counted_rewards(*args, **kwargs):
        rewards_per_func = calculate_rewards(*args, **kwargs)
        if trainer.model.training:
            scoring["completions"] += len(rewards_per_func)
            scoring["unscorable"] += int((~rewards_per_func.isfinite()).all(dim=1).sum())
        return rewards_per_func

    trainer._calculate_rewards = counted_rewards
    console.install(trainer)  # a progress bar and a summary table instead of one raw metrics dict per log

    before = after = None
    max_new = training_args.max_completion_length
    # Under FSDP (after training) and DeepSpeed ZeRO-3 (from loading on) the weights are sharded: every process takes
    # part in the held-out forward passes, or the main process waits for the others forever.
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)
    if held_out is not None and (state.is_main_process or sharded):
        with _gathered_before_training(trainer.model):
            before = greedy_mean_reward(trainer.model, tokenizer, held_out, task.eval_funcs, max_new)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - start
    trainer.save_model(training_args.output_dir)
    if held_out is not None and (state.is_main_process or sharded):
        after = greedy_mean_reward(trainer.accelerator.unwrap_model(trainer.model), tokenizer, held_out,
                                   task.eval_funcs, max_new)

    if state.is_main_process:
        summary = _summary(trainer, script_args, generations, elapsed, before, after)
        summary.update(held_out_prompts=len(held_out) if held_out is not None else 0,
                       train_completions=scoring["completions"], unscorable_completions=scoring["unscorable"],
                       skipped_updates=getattr(trainer, "_skipped_updates", 0))
        out = Path(training_args.output_dir)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot = plot_reward_curve(trainer.state.log_history, out / "reward_curve.png")
        written = [out / "summary.json"] + ([plot] if plot else [])
        print(console.format_summary(summary, trainer.state.log_history, written))
    if training_args.push_to_hub:
        name = script_args.dataset_name
        trainer.push_to_hub(dataset_name=name if name and not is_local(name) else script_args.task)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # without it one rank can abort at exit
    return trainer


def _gathered_before_training(model):
    """Under DeepSpeed ZeRO-3 the parameters are partitioned from loading on, and until DeepSpeed's engine wraps the
    model in `train` nothing gathers them for a forward pass: gather them (a collective: every process enters)."""
    from contextlib import nullcontext

    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


def _scale_out_grpo_trainer(base):
    """TRL's GRPOTrainer for the baselines, with RapidTrainer's launch handling (trainer/scale_out.py): an FSDP launch on
    CPU processes shards instead of silently running plain data parallel."""
    from .trainer.scale_out import ScaleOutMixin

    return type("GRPOTrainer", (ScaleOutMixin, base), {"__doc__": _scale_out_grpo_trainer.__doc__})


def _summary(trainer, script_args, generations, elapsed, before, after) -> dict:
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history if _finite(h.get("reward"))]  # TRL logs None for an unscorable batch
    first, last = rewards[: max(1, len(rewards) // 10)], rewards[-max(1, len(rewards) // 10):]
    return {
        "trainer": script_args.trainer,
        "task": script_args.task,
        "optimizer_steps": trainer.state.global_step,
        "generation_calls": generations,
        "processes": trainer.accelerator.num_processes,
        "distributed": trainer.accelerator.distributed_type.value,  # e.g. "NO", "MULTI_CPU", "FSDP", "DEEPSPEED"
        "train_seconds": round(elapsed, 1),
        "reward_first_10pct": sum(first) / len(first) if rewards else None,
        "reward_last_10pct": sum(last) / len(last) if rewards else None,
        "held_out_reward_before": before,
        "held_out_reward_after": after,
    }


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run() -> None:
    """Console entry point `trl-rapid`: like `main`, but returns nothing, so the process exits with status 0."""
    main()


if __name__ == "__main__":
    main()

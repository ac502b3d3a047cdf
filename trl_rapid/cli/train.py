"""The training run: task and rewards first, then the model, the trainer, held-out scores around `train`, the summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..evaluation import greedy_mean_reward
from ..task_args import HEADROOM_TASK, task_from_args
from .arguments import parse_args
from .counting import counted
from .summary import plot_reward_curve, run_summary


def main(argv: list[str] | None = None):
    """Parse `argv` (default: the command line), train, write summary.json and reward_curve.png; return the trainer."""
    script_args, training_args, model_args = parse_args(argv)
    from ..trainer.scale_out import check_launch_environment

    check_launch_environment(training_args)  # RapidConfig checks it too; this covers `trainer: grpo`

    from accelerate import PartialState
    from transformers import AutoTokenizer
    from trl import GRPOTrainer, get_peft_config, get_quantization_config

    from .. import console
    from ..checkpoints import resolve_resume_checkpoint
    from ..data import is_local
    from ..trainer import RapidTrainer

    state = PartialState()
    # `--resume_from_checkpoint true` (or a run folder): the newest complete checkpoint, partial ones skipped.
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    # Rewards first: a task whose reward cannot run (no Lean toolchain, no sandbox) stops before any model is loaded.
    task = task_from_args(script_args)
    held_out = task.eval_dataset
    _prepare_model(script_args, training_args, model_args, state)

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
    trainer = counted(trainer_cls)(
        model=model_args.model_name_or_path,
        reward_funcs=task.reward_funcs,
        args=training_args,
        train_dataset=task.train,
        eval_dataset=held_out if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
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
        summary = run_summary(trainer, script_args, elapsed, before, after,
                              held_out_prompts=len(held_out) if held_out is not None else 0)
        out = Path(training_args.output_dir)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot = plot_reward_curve(trainer.state.log_history, out / "reward_curve.png")
        written = [out / "summary.json"] + ([plot] if plot else [])
        print(console.format_summary(summary, trainer.state.log_history, written))
    if training_args.push_to_hub:
        name = script_args.dataset_name
        trainer.push_to_hub(dataset_name=name if name and not is_local(name) else script_args.task)
    _leave_together()
    return trainer


def _leave_together() -> None:
    """Every process waits for the others, then the process group is destroyed (without it one rank can abort at
    exit).

    Why wait: with CPU processes (gloo) the group's threads outlive `destroy_process_group` once DDP has used it (torch
    2.13), and a process that exited while another was still saving aborted once in that teardown ("terminate called
    without an active exception", machine loaded). The main process's held-out evaluation and upload may take long,
    so gloo's monitored_barrier waits up to a day; NCCL runs keep TRL's behaviour (no wait).
    """
    from datetime import timedelta

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        dist.monitored_barrier(timeout=timedelta(days=1))
    dist.destroy_process_group()


def run() -> None:
    """Console entry point `trl-rapid`: like `main`, but returns nothing, so the process exits with status 0."""
    main()


def _prepare_model(script_args, training_args, model_args, state) -> None:
    """`--build_tiny_model`: write the embedded tiny model where model_name_or_path points, if nothing is there.
    `--warm_start`: point model_name_or_path at the task's cached SFT warm start (built on first use)."""
    model_path = Path(model_args.model_name_or_path)
    if script_args.build_tiny_model:
        from ..tiny import build_tiny_model

        with state.main_process_first():  # one process writes the model, the others read it
            if state.is_main_process and not (model_path / "config.json").exists():
                build_tiny_model(model_path, seed=training_args.seed)
    if script_args.warm_start:
        from .. import headroom_reverse
        from ..headroom import DEFAULT_RECIPE, build_warm_start

        recipes = {HEADROOM_TASK: DEFAULT_RECIPE, headroom_reverse.TASK_NAME: headroom_reverse.DEFAULT_RECIPE}
        if script_args.task not in recipes:
            raise ValueError(f"warm_start is for tasks {sorted(recipes)}, not {script_args.task!r}: drop --warm_start.")
        with state.main_process_first():  # the main process builds the cache (atomically), the others reuse it
            model_args.model_name_or_path = str(build_warm_start(recipes[script_args.task]))


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
    from ..trainer.scale_out import ScaleOutMixin

    return type("GRPOTrainer", (ScaleOutMixin, base), {"__doc__": _scale_out_grpo_trainer.__doc__})

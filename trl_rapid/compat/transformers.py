"""transformers 5.17.0 internals (and TRL 1.16.0's checkpoint override): checkpoints written into a staging folder,
the optimizer loaded on CPU processes, and the logits processors `generate` would build.

- `StagedCheckpointAdapter._save_checkpoint` mirrors TRL 1.16.0 `GRPOTrainer._save_checkpoint` and the transformers
  5.17.0 `Trainer._save_checkpoint` it extends, line for line, except that every file goes into a staging folder that
  ../checkpoints.py `publish`es (renames) once every process has written its files. It calls transformers' private
  `_get_output_dir`, `_save_optimizer_and_scheduler`, `_save_scaler`, `_save_rng_state`, `_push_from_checkpoint`.
- `StagedCheckpointAdapter._load_optimizer_and_scheduler` takes the plain-DDP branch of transformers 5.17.0
  `Trainer._load_optimizer_and_scheduler` for CPU processes (`load_optimizer_and_scheduler_on_cpu`).
- `logits_processors_of_generate` replays what transformers 5.17.0 `GenerationMixin.generate` does before sampling
  (`_prepare_generation_config`, `_prepare_special_tokens`, `_get_logits_processor`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import reissue_pt_warnings
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy, rotate_checkpoints
from transformers.training_args import ParallelMode
from transformers.utils import check_torch_load_is_safe

from ..checkpoints import STAGING_PREFIX, publish


class StagedCheckpointAdapter:
    """Put before `GRPOTrainer` in the bases: checkpoints are complete or absent (see ../checkpoints.py)."""

    def _save_checkpoint(self, model, trial):
        # Replaces TRL 1.16.0 `GRPOTrainer._save_checkpoint` and transformers 5.17.0 `Trainer._save_checkpoint`:
        # written into tmp-checkpoint-<step>, renamed to checkpoint-<step> when complete.
        save_checkpoint_staged(self, model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # Mirrors the plain-DDP branch of transformers 5.17.0 `Trainer._load_optimizer_and_scheduler` for CPU
        # processes: with world_size > 1 it maps the optimizer state to args.device, which is `cpu:0` there, and torch
        # 2.13's `torch.load` refuses that location. Everything else (one process, GPUs, DeepSpeed, FSDP) goes to TRL.
        if not (checkpoint and load_optimizer_and_scheduler_on_cpu(self, checkpoint)):
            super()._load_optimizer_and_scheduler(checkpoint)


def save_checkpoint_staged(trainer, model, trial) -> None:
    """TRL 1.16.0 `GRPOTrainer._save_checkpoint` + transformers 5.17.0 `Trainer._save_checkpoint`, writing into
    `tmp-checkpoint-<step>` and renaming it to `checkpoint-<step>` once every process has written its files. Rotation
    and hub pushes see only complete folders."""
    args, state = trainer.args, trainer.state
    # TRL: the model card goes with every checkpoint.
    trainer.create_model_card(model_name=Path(args.output_dir).name if args.hub_model_id is None
                              else args.hub_model_id.split("/")[-1])
    checkpoint_folder = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
    if trainer.hp_search_backend is None and trial is None:
        trainer.store_flos()

    run_dir = trainer._get_output_dir(trial=trial)
    output_dir = os.path.join(run_dir, checkpoint_folder)
    staging = os.path.join(run_dir, STAGING_PREFIX + checkpoint_folder)
    if args.should_save:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while writing this step
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(staging, _internal_call=True)

    if args.save_strategy in [SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST] and state.best_global_step:
        if args.parallel_mode == ParallelMode.DISTRIBUTED:
            trainer.accelerator.wait_for_everyone()
        best_checkpoint_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}")
        # The folder being written counts: it exists under its final name once renamed below.
        if best_checkpoint_dir == output_dir or os.path.exists(best_checkpoint_dir):
            state.best_model_checkpoint = best_checkpoint_dir

    if not args.save_only_model:
        trainer._save_optimizer_and_scheduler(staging)
        trainer._save_scaler(staging)
        trainer._save_rng_state(staging)

    if args.should_save:
        for callback in [cb for cb in trainer.callback_handler.callbacks + [trainer.control]
                         if isinstance(cb, ExportableState)]:
            name, callback_state = callback.__class__.__name__, callback.state()
            if isinstance(state.stateful_callbacks[name], list):
                state.stateful_callbacks[name].append(callback_state)
            else:
                state.stateful_callbacks[name] = callback_state
        state.save_to_json(os.path.join(staging, TRAINER_STATE_NAME))
    if getattr(trainer, "use_adaptive_entropy", False) and args.should_save:  # TRL: adaptive entropy control's state
        with open(os.path.join(staging, "entropy_ctrl_state.json"), "w") as f:
            json.dump({"entropy_coef": trainer.entropy_coef, "last_world_entropy": trainer._last_world_entropy}, f)

    trainer.accelerator.wait_for_everyone()  # every process has written its files (rng states, shards)
    if args.should_save:
        publish(staging, output_dir)
    trainer.accelerator.wait_for_everyone()

    if args.push_to_hub:
        trainer._push_from_checkpoint(output_dir)
    if args.should_save:
        rotate_checkpoints(output_dir=run_dir, save_total_limit=args.save_total_limit,
                           best_model_checkpoint=state.best_model_checkpoint, use_mtime=True)


def load_optimizer_and_scheduler_on_cpu(trainer, checkpoint: str) -> bool:
    """The plain-DDP branch of transformers 5.17.0 `Trainer._load_optimizer_and_scheduler`, for processes on CPU: loads
    optimizer.pt with map_location="cpu" where transformers passes args.device (`cpu:0` when world_size > 1, which
    torch 2.13's `torch.load` cannot restore to). Returns False, loading nothing, in every other case."""
    args = trainer.args
    optimizer_file = os.path.join(checkpoint, OPTIMIZER_NAME)
    scheduler_file = os.path.join(checkpoint, SCHEDULER_NAME)
    if (args.world_size == 1 or args.device.type != "cpu" or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
            or not (os.path.isfile(optimizer_file) and os.path.isfile(scheduler_file))):
        return False
    check_torch_load_is_safe()
    trainer.optimizer.load_state_dict(torch.load(optimizer_file, map_location="cpu", weights_only=True))
    with warnings.catch_warnings(record=True) as caught_warnings:
        check_torch_load_is_safe()
        trainer.lr_scheduler.load_state_dict(torch.load(scheduler_file, weights_only=True))
    reissue_pt_warnings(caught_warnings)
    return True


def generation_config_of_generate(model, generation_config):
    """The generation config transformers 5.17.0 `GenerationMixin.generate` samples with: the model's own
    `generation_config` merged into the given one (`_prepare_generation_config`). `model`: a plain transformers
    model."""
    config, _ = model._prepare_generation_config(copy.deepcopy(generation_config))
    return config


def logits_processors_of_generate(model, config):
    """The logits processors transformers 5.17.0 `GenerationMixin.generate` builds for `config` (as returned by
    `generation_config_of_generate`): special tokens set (`_prepare_special_tokens`), then `_get_logits_processor`."""
    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
    return model._get_logits_processor(config, input_ids_seq_length=1, device="cpu")

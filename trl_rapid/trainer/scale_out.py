"""Scale-out launches that accelerate 1.16 gets wrong on a machine without GPUs, made to work or to fail clearly.

- **FSDP on CPU.** accelerate enables FSDP only when its processes run on an accelerator (`AcceleratorState` promotes
  MULTI_GPU / MULTI_XPU / … to FSDP, never MULTI_CPU), so `accelerate launch --config_file <FSDP config>` with
  `use_cpu: true` silently trained plain replicated data parallel. torch's FSDP2 (`fully_shard`) shards, runs
  forward / backward / the optimizer step and saves and loads checkpoints on CPU over gloo, so here the FSDP plugin is
  honoured: while the trainer's `Accelerator` is built, the CPU processes are presented to accelerate as a multi-device
  group (../compat/accelerate.py), which is the only branch that turns the plugin on; everything after it (sharding,
  the device mesh, checkpoints) is accelerate's and torch's own code on the CPU device.
- **DeepSpeed without a GPU.** DeepSpeed (0.19) falls back to its CPU accelerator (gloo), and with `use_cpu: true`
  ZeRO-2 and ZeRO-3 run on CPU processes as they are.
- **Launches without `use_cpu` on a CPU-only machine.** transformers joins the processes only with `use_cpu: true`:
  without it every process trained its own copy alone (FSDP did not shard either), and DeepSpeed stopped with a
  batch-size assertion from inside its engine. `check_launch_environment` (called by `RapidConfig` before transformers
  builds a DeepSpeed plugin or any model is loaded, by RapidTrainer, and by the training script) makes both a start-up
  error.
"""

from __future__ import annotations

import os

import torch

from ..compat.accelerate import fsdp_on_cpu_processes

ALONE_WITHOUT_USE_CPU = (
    "{what} on a machine without a GPU, and the training config does not say use_cpu: true. On such a machine "
    "transformers joins the processes only with use_cpu=True: without it {consequence} Set `use_cpu: true` in the "
    "training config (or --use_cpu true); the CPU launch configs are configs/accelerate/cpu_2proc.yaml (DDP), "
    "fsdp_cpu.yaml (FSDP2), zero2_cpu.yaml and zero3_cpu.yaml (DeepSpeed)."
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def has_accelerator_device() -> bool:
    """True when torch sees a GPU (or another accelerator device) this process could train on."""
    try:
        return torch.accelerator.current_accelerator(check_available=True) is not None
    except (AttributeError, TypeError, RuntimeError):
        return torch.cuda.is_available()


def deepspeed_requested(args=None) -> bool:
    """Launched by accelerate with a DeepSpeed config, or configured with TrainingArguments' `deepspeed`."""
    return _env_flag("ACCELERATE_USE_DEEPSPEED") or bool(getattr(args, "deepspeed", None))


def _launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def check_launch_environment(args=None) -> None:
    """Raise a clear error at start-up (before any model is loaded) for a launch of several processes, or a DeepSpeed
    launch, on a machine without a GPU and without `use_cpu`: DeepSpeed would fail later from inside its engine, and
    otherwise each process would train its own copy alone."""
    if has_accelerator_device() or getattr(args, "use_cpu", False):
        return
    if deepspeed_requested(args):
        raise RuntimeError(ALONE_WITHOUT_USE_CPU.format(
            what="DeepSpeed was launched (e.g. configs/accelerate/zero2.yaml or zero3.yaml)",
            consequence="transformers counts one process where DeepSpeed counts them all, and DeepSpeed stops with "
                        "\"Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * "
                        "gradient_acc_step * world_size\" (with use_cpu, ZeRO-2 and ZeRO-3 run on the CPU processes).",
        ))
    world_size = _launched_world_size()
    if world_size > 1:
        raise RuntimeError(ALONE_WITHOUT_USE_CPU.format(
            what=f"This process was launched as one of {world_size} (WORLD_SIZE)",
            consequence="every process trains its own copy of the model alone, and FSDP would not shard.",
        ))


class ScaleOutMixin:
    """Put before `GRPOTrainer` in the bases: extends transformers 5.17 `Trainer.create_accelerator_and_postprocess`."""

    def create_accelerator_and_postprocess(self) -> None:
        check_launch_environment(self.args)
        with fsdp_on_cpu_processes():
            super().create_accelerator_and_postprocess()

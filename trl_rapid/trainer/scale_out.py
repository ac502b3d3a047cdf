"""Scale-out launches that accelerate 1.16 gets wrong on a machine without GPUs, made to work or to fail clearly.

- **FSDP on CPU.** accelerate enables FSDP only when its processes run on an accelerator (`AcceleratorState` promotes
  MULTI_GPU / MULTI_XPU / … to FSDP, never MULTI_CPU), so `accelerate launch --config_file <FSDP config>` with
  `use_cpu: true` silently trained plain replicated data parallel. torch's FSDP2 (`fully_shard`) shards, runs
  forward / backward / the optimizer step and saves and loads checkpoints on CPU over gloo, so here the FSDP plugin is
  honoured: while the trainer's `Accelerator` is built, the CPU processes are presented to accelerate as a multi-device
  group, which is the only branch that turns the plugin on; everything after it (sharding, the device mesh,
  checkpoints) is accelerate's and torch's own code on the CPU device.
- **Processes that train alone.** Launched with several processes on a CPU-only machine without `use_cpu: true`,
  transformers does not join the process group and every process trains its own copy (each believing it is alone).
  That is a start-up error now.
- **DeepSpeed without a GPU.** DeepSpeed's CPU support needs Intel's extension (`intel_extension_for_pytorch` and
  oneCCL), not installable here; with `use_cpu: true` accelerate ignored the DeepSpeed config (plain data parallel
  again), without it each process trained alone. `check_launch_environment` (called by `RapidConfig` before
  transformers builds its DeepSpeed plugin, and by the training script) stops such a launch at start-up instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

DEEPSPEED_NEEDS_GPU = (
    "DeepSpeed (ZeRO-2 / ZeRO-3, e.g. configs/accelerate/zero2.yaml, zero3.yaml) needs a GPU here: this machine has "
    "none (torch sees no CUDA or other accelerator device). DeepSpeed's CPU backend needs Intel's "
    "intel_extension_for_pytorch and oneCCL, and accelerate 1.16 ignores a DeepSpeed config on CPU processes, so the run "
    "would not be sharded at all. On CPU shard with FSDP2 instead: accelerate launch --config_file "
    "configs/accelerate/fsdp_cpu.yaml ... (with use_cpu: true in the training config)."
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


def check_launch_environment(args=None) -> None:
    """Raise a clear error, at start-up, for a launch that cannot run on this machine (DeepSpeed without a GPU)."""
    if deepspeed_requested(args) and not has_accelerator_device():
        raise RuntimeError(DEEPSPEED_NEEDS_GPU)


def _launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@contextmanager
def fsdp_on_cpu_processes():
    """While the trainer's Accelerator is built: if accelerate launched FSDP (`ACCELERATE_USE_FSDP`) on CPU processes
    (distributed type MULTI_CPU), present them as a multi-device group so that `AcceleratorState` turns the FSDP plugin
    on (it then records DistributedType.FSDP itself). Anything else is left untouched."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    shared = PartialState._shared_state
    promote = _env_flag("ACCELERATE_USE_FSDP") and shared.get("distributed_type") == DistributedType.MULTI_CPU
    if promote:
        shared["distributed_type"] = DistributedType.MULTI_GPU
    try:
        yield promote
    finally:
        if promote and shared.get("distributed_type") == DistributedType.MULTI_GPU:  # the Accelerator was not built
            shared["distributed_type"] = DistributedType.MULTI_CPU


class ScaleOutMixin:
    """Put before `GRPOTrainer` in the bases: extends transformers 5.17 `Trainer.create_accelerator_and_postprocess`."""

    def create_accelerator_and_postprocess(self) -> None:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        check_launch_environment(self.args)
        world_size = _launched_world_size()
        if world_size > 1 and PartialState().distributed_type == DistributedType.NO:
            raise RuntimeError(
                f"This process was launched as one of {world_size} (WORLD_SIZE) but transformers did not join them: "
                "on a machine without GPUs it does so only with use_cpu=True. Set `use_cpu: true` in the training "
                "config (or --use_cpu true); otherwise every process trains its own copy of the model alone."
            )
        with fsdp_on_cpu_processes():
            super().create_accelerator_and_postprocess()

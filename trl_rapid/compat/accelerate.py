"""accelerate 1.16.0 internals: FSDP on CPU processes (why: ../trainer/scale_out.py)."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def fsdp_on_cpu_processes():
    """While the trainer's Accelerator is built: if accelerate launched FSDP (`ACCELERATE_USE_FSDP`) on CPU processes
    (distributed type MULTI_CPU), present them as a multi-device group so that accelerate 1.16.0's `AcceleratorState`
    turns the FSDP plugin on (it then records DistributedType.FSDP itself): the shared state of `PartialState`
    (`_shared_state["distributed_type"]`) reads MULTI_GPU meanwhile. Anything else is left untouched."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    shared = PartialState._shared_state
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")
    promote = fsdp and shared.get("distributed_type") == DistributedType.MULTI_CPU
    if promote:
        shared["distributed_type"] = DistributedType.MULTI_GPU
    try:
        yield promote
    finally:
        if promote and shared.get("distributed_type") == DistributedType.MULTI_GPU:  # the Accelerator was not built
            shared["distributed_type"] = DistributedType.MULTI_CPU

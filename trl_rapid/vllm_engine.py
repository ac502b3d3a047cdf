"""Pass engine options that TRL 1.16 does not expose to the `vllm.LLM` that its colocate mode builds.

In colocate mode TRL builds the engine itself, in `trl.generation.vllm_generation.VLLMGeneration._init_vllm`
(TRL 1.16.0, called from `GRPOTrainer.__init__`):

    self.llm = LLM(
        model=model.name_or_path, tensor_parallel_size=..., gpu_memory_utilization=..., max_model_len=...,
        max_num_seqs=..., enable_sleep_mode=..., model_impl=..., distributed_executor_backend="external_launcher",
        seed=..., max_num_batched_tokens=4096, logprobs_mode="processed_logprobs", quantization=...,
        trust_remote_code=...,
    )

with `LLM` imported at module level (`from vllm import LLM`). Missing there: `dtype` (vLLM's "auto" then picks the
checkpoint's dtype, or bfloat16 for a float32 checkpoint on CPU), `enforce_eager`, `kv_cache_memory_bytes`, and a
`max_num_batched_tokens` other than 4096. `GRPOTrainer` already sets `max_num_seqs = per_device_train_batch_size x
vllm_tensor_parallel_size x steps_per_generation`, i.e. one whole generation batch per process.

The narrowest hook is that module-level name: `engine_kwargs_override` rebinds `trl.generation.vllm_generation.LLM`
(compat/vllm.py) to a function that merges the overrides into TRL's keyword arguments and calls the real `LLM`, only
for the duration of a `with` block around the trainer's `__init__`. Nothing else in TRL or vLLM changes, and TRL's own arguments are kept
unless an override names the same key. The engine is a plain `vllm.LLM` instance.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any

from .compat.vllm import rebinding_trl_llm

__all__ = ["engine_kwargs_override", "server_weight_sync", "vllm_setup"]


@contextmanager
def engine_kwargs_override(**overrides: Any):
    """Inside the block, every `LLM(...)` that TRL's `VLLMGeneration` builds gets `overrides` merged into its kwargs.

    Example (our trainer's `__init__`)::

        with engine_kwargs_override(dtype="float32", enforce_eager=True, max_num_batched_tokens=8192) as seen:
            super().__init__(...)           # GRPOTrainer.__init__ builds the LLM in colocate mode
        seen  # list of the final kwargs of each LLM built inside the block

    Overrides win over TRL's values for the same key; any `vllm.LLM` / `EngineArgs` keyword is accepted (e.g.
    `dtype`, `enforce_eager`, `kv_cache_memory_bytes`, `max_num_seqs`, `max_num_batched_tokens`, `enable_prefix_caching`).
    Yields a list that receives the final kwargs of every engine built in the block. Server mode builds no engine, so
    there the block is a no-op. Not meant for concurrent trainer construction from several threads (it rebinds a module
    attribute); nested blocks compose, inner overrides winning.
    """
    built: list[dict[str, Any]] = []

    def with_overrides(llm):
        def build_llm(*args: Any, **kwargs: Any):
            kwargs.update(overrides)
            built.append(dict(kwargs))
            return llm(*args, **kwargs)

        build_llm.__wrapped__ = llm  # type: ignore[attr-defined]
        return build_llm

    with rebinding_trl_llm(with_overrides):
        yield built


def server_weight_sync(args) -> str:
    """The weight sync a server-mode trainer uses: the configured one, or NCCL with CUDA and the filesystem without."""
    if args.vllm_weight_sync != "auto":
        return args.vllm_weight_sync
    return "nccl" if _cuda_available() else "filesystem"


@contextmanager
def vllm_setup(args):
    """Around `GRPOTrainer.__init__` (which builds TRL's vLLM engine or client): CPU workarounds, the engine options
    TRL does not expose, and no NCCL handshake when the server syncs weights through the filesystem."""
    if not args.use_vllm:
        yield
        return
    from .vllm_cpu import apply_cpu_workarounds, cpu_engine_kwargs, needs_cpu_workarounds

    on_cpu = needs_cpu_workarounds()
    with ExitStack() as stack:
        if args.vllm_mode == "colocate":
            options = {}
            if on_cpu:
                apply_cpu_workarounds()
                options.update(cpu_engine_kwargs(dtype="float32" if args.vllm_dtype == "auto" else args.vllm_dtype))
            elif args.vllm_dtype != "auto":
                options["dtype"] = args.vllm_dtype
            if args.vllm_enforce_eager is not None:
                options["enforce_eager"] = args.vllm_enforce_eager
            # TRL sizes max_num_seqs to a whole per-process generation batch; let one decode step hold all of it too.
            sequences = args.per_device_train_batch_size * args.steps_per_generation * args.vllm_tensor_parallel_size
            options["max_num_batched_tokens"] = max(4096, sequences)
            options.update(args.vllm_engine_kwargs or {})
            stack.enter_context(engine_kwargs_override(**options))
        elif server_weight_sync(args) == "filesystem":
            from .vllm_server import without_nccl_weight_transfer

            stack.enter_context(without_nccl_weight_transfer())
        yield


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

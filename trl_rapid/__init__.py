"""trl-rapid: the RAPID algorithm (arXiv 2510.03515) on Hugging Face TRL."""

from typing import TYPE_CHECKING

__all__ = ["RapidConfig", "RapidTrainer"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import RapidConfig
    from .trainer import RapidTrainer


def __getattr__(name):
    # Lazy: vLLM's worker processes import `trl_rapid.vllm_server`, and should not pay for (or depend on) TRL.
    if name == "RapidConfig":
        from .config import RapidConfig

        return RapidConfig
    if name == "RapidTrainer":
        from .trainer import RapidTrainer

        return RapidTrainer
    raise AttributeError(f"module 'trl_rapid' has no attribute {name!r}")

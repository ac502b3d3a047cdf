"""trl-rapid: the RAPID algorithm (arXiv 2510.03515) on Hugging Face TRL."""

from .config import RapidConfig
from .trainer import RapidTrainer

__all__ = ["RapidConfig", "RapidTrainer"]
__version__ = "0.1.0"

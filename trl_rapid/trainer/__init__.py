"""RapidTrainer (rapid_trainer.py: rollout → advantage → update, glue over TRL 1.16's GRPOTrainer), its buffered
batch (batches.py), the "rows" layout's weight cache (row_layout.py), and its opt-in parts: µ from the sampler
(sampler_behaviour.py), adaptive H (adaptive_h.py), fault tolerance (fault_tolerance.py). Where TRL, transformers,
vLLM or accelerate internals are touched: ../compat/."""

from .batches import GROUP_IDS, MODEL_INPUT_KEYS, REWARD_SCALE, REWARDS, shuffle_groups
from .rapid_trainer import RapidTrainer

__all__ = ["RapidTrainer", "shuffle_groups", "REWARDS", "GROUP_IDS", "REWARD_SCALE", "MODEL_INPUT_KEYS"]

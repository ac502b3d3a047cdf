"""What the script's summary counts inside training: generation calls, and completions no reward function scored.

TRL fires no callback event per generation or per reward matrix, so a `TrainerCallback` cannot see them; the counts
come from a mixin over the trainer class instead (the way `trainer/scale_out.py` extends TRL's GRPOTrainer), which
only observes: each override returns what the trainer computed, unchanged.
"""

from __future__ import annotations


class RunCountsMixin:
    """Counts into `self.run_counts` while the model trains (held-out generation is not counted)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_counts = {"generation_calls": 0, "train_completions": 0, "unscorable_completions": 0}

    def _generate_and_score_completions(self, inputs):
        self.run_counts["generation_calls"] += bool(self.model.training)
        return super()._generate_and_score_completions(inputs)

    def _calculate_rewards(self, *args, **kwargs):
        # TRL's reward matrix (completions × reward functions), gathered over processes: a row that is not finite in
        # any column (None, NaN or ±inf from every function) is a completion nothing could score.
        rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        if self.model.training:
            self.run_counts["train_completions"] += len(rewards_per_func)
            self.run_counts["unscorable_completions"] += int((~rewards_per_func.isfinite()).all(dim=1).sum())
        return rewards_per_func


def counted(trainer_cls: type) -> type:
    """`trainer_cls` with `run_counts` (same name, same behaviour)."""
    return type(trainer_cls.__name__, (RunCountsMixin, trainer_cls), {"__doc__": trainer_cls.__doc__})

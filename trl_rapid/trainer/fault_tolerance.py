"""Fault tolerance for RapidTrainer: no non-finite update, no non-finite or partial checkpoint, no resume from a
partial one (the helpers live in ../faults.py and ../checkpoints.py; this mixin is where they hook into the Trainer;
the checkpoint save that writes into a staging folder mirrors transformers' and lives in ../compat/transformers.py)."""

from __future__ import annotations

import warnings

from ..checkpoints import check_finite_weights, remove_stale_staging, resolve_resume_checkpoint
from ..compat.transformers import StagedCheckpointAdapter
from ..faults import DEEPSPEED_GUARD_INACTIVE, is_finite_norm, skip_update


class FaultToleranceMixin(StagedCheckpointAdapter):
    """Put before `GRPOTrainer` in the bases: each method extends the transformers 5.17 / TRL 1.16 one it names;
    checkpoints are written complete or not at all (StagedCheckpointAdapter)."""

    _skipped_updates = 0  # optimizer steps skipped for a non-finite gradient (running total, logged by RapidTrainer)

    def _get_grad_norm(self, model, grad_norm=None):
        # Extends transformers 5.17 `Trainer._get_grad_norm`, called once per optimizer step just before
        # `optimizer.step()`: a non-finite norm (all processes see the same one) means the update would write NaN.
        # Under DeepSpeed the engine has already applied the update inside `accelerator.backward` (faults.py): nothing
        # is left to skip, so the guard stays off (train() says so) rather than count a skip that did not happen.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if not self.is_deepspeed_enabled and not is_finite_norm(grad_norm):
            self._skipped_updates += 1
            skip_update(model, self.state.global_step, grad_norm, self._skipped_updates)
        return grad_norm

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        # Extends transformers 5.17: weights holding NaN or inf are never written (NonFiniteWeightsError instead).
        check_finite_weights(self.model, self.accelerator, f"the model to {output_dir or self.args.output_dir}")
        super().save_model(output_dir, _internal_call)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        # Extends transformers 5.17: `resume_from_checkpoint=True` takes the newest complete checkpoint (skipping
        # partial ones with a warning); a named partial checkpoint is an error before any work. Then the staging
        # folders of a killed save are removed (main process), and under DeepSpeed a warning says the gradient guard
        # is off.
        resume = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if self.args.should_save:
            remove_stale_staging(self.args.output_dir)
        if self.is_deepspeed_enabled and not getattr(self, "_warned_deepspeed_guard", False):
            self._warned_deepspeed_guard = True
            warnings.warn(DEEPSPEED_GUARD_INACTIVE, stacklevel=2)
        return super().train(resume_from_checkpoint=resume, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval,
                             **kwargs)

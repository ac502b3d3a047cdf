"""The adapter between RAPID's two hooks and TRL 1.16.0's `GRPOTrainer`, which offers no seam for either.

- **Advantage.** TRL 1.16.0's `_compute_loss` runs the micro-batch's forward pass
  (`self._get_per_token_logps_and_entropies(model, ...)`, once) and then reads `inputs["advantages"]`, all in one
  method. RAPID's advantage depends on that forward's log-probs, and a second forward per micro-batch would cost as much
  as the loss's own. `GRPOForwardAdapter` hands TRL the micro-batch without "advantages"; right after the loss's forward
  it calls the trainer's `advantages_from_loss_forward(micro_batch, policy_logps)` and puts the result where TRL
  reads it.
- **µ from the sampler.** TRL 1.16.0's `_generate_and_score_completions` recomputes the behaviour log-probs
  (`old_per_token_logps`) with a no-grad forward when `trl_recomputes_behaviour_logps` holds; that pass is its first
  forward, before the reference model's. The adapter offers it to the trainer's `behaviour_logps_from_sampler(...)`
  first, and runs TRL's forward only when that returns None.

What this relies on in TRL 1.16.0 is checked at run time, each violation a RuntimeError naming the TRL version
(`ORDER_CHANGED`), and on the real TRL by tests/test_compat.py: (1) `_compute_loss` calls
`_get_per_token_logps_and_entropies` before it reads `inputs["advantages"]`; (2) it calls it at all; (3) the first
forward of `_generate_and_score_completions` runs on `self.model` whenever `trl_recomputes_behaviour_logps` holds.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

ORDER_CHANGED = (
    "TRL changed the order RapidTrainer relies on ({what}). trl_rapid/compat/grpo.py mirrors TRL 1.16.0's "
    "GRPOTrainer; re-read `_compute_loss` and `_generate_and_score_completions` of the installed TRL and update it."
)


def trl_recomputes_behaviour_logps(trainer) -> bool:
    """Whether TRL 1.16.0's `_generate_and_score_completions` runs its no-grad µ pass (`old_per_token_logps`): when a
    generation batch serves more than one micro-step of an optimizer step, or for vLLM's importance-sampling
    correction."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    return trainer.args.gradient_accumulation_steps % generate_every != 0 or bool(
        trainer.use_vllm and trainer.vllm_importance_sampling_correction
    )


def trl_forward_logps(trainer, model, input_ids, attention_mask, logits_to_keep, **model_inputs) -> torch.Tensor:
    """Per-token log-probs of the last `logits_to_keep` tokens from TRL 1.16.0's own forward
    (`GRPOTrainer._get_per_token_logps_and_entropies`; `model_inputs`: its multimodal keywords), without the adapter's
    hooks. For the trainer's extra no-grad passes."""
    logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        trainer, model, input_ids, attention_mask, logits_to_keep, **model_inputs
    )
    return logps


class _AdvantagesAfterForward(dict):
    """The micro-batch TRL's `_compute_loss` sees: everything but "advantages", which the adapter sets after the
    forward. Reading it earlier means TRL's order changed."""

    def __missing__(self, key):
        if key == "advantages":
            raise RuntimeError(ORDER_CHANGED.format(what="_compute_loss read the advantages before its forward"))
        raise KeyError(key)

    def get(self, key, default=None):  # dict.get bypasses __missing__
        return self[key] if key == "advantages" else super().get(key, default)


class GRPOForwardAdapter:
    """Put directly before `GRPOTrainer` in the bases. Subclasses implement the two hooks below; the three overrides
    are the only place trl-rapid touches TRL's forward passes (see the module docstring)."""

    _loss_micro_batch = None  # (micro-batch, what TRL sees) while the loss's forward is awaited
    _awaiting_behaviour_pass = False  # inside `_generate_and_score_completions`, before TRL's µ pass

    # -- the hooks ----------------------------------------------------------------------------------------------------
    def advantages_from_loss_forward(self, micro_batch: dict, policy_logps: torch.Tensor) -> torch.Tensor:
        """Return the advantage of every row of a training micro-batch, given the per-token log-probs under the
        current θ (`policy_logps`, detached, (rows, completion tokens)) from the loss's own forward pass. Called once
        per training micro-batch, after that forward and before the loss reads any advantage; θ is the one the loss
        differentiates. Default: the advantages TRL stored."""
        return micro_batch["advantages"]

    def behaviour_logps_from_sampler(self, input_ids, attention_mask, logits_to_keep) -> torch.Tensor | None:
        """Return µ per completion token ((rows, logits_to_keep), 0 on padding) for TRL's µ pass over a training
        generation batch (`input_ids`: prompts + completions), or None to let TRL run its forward. Default: None."""
        return None

    # -- TRL 1.16.0 overrides -----------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        # Extends TRL 1.16.0: marks its first forward as the µ pass, when it runs one (training only).
        self._awaiting_behaviour_pass = self.model.training and trl_recomputes_behaviour_logps(self)
        try:
            output = super()._generate_and_score_completions(inputs)
            if self._awaiting_behaviour_pass:
                raise RuntimeError(ORDER_CHANGED.format(what="_generate_and_score_completions ran no µ pass"))
            return output
        finally:
            self._awaiting_behaviour_pass = False

    def _compute_loss(self, model, inputs):
        # Extends TRL 1.16.0: TRL sees the micro-batch without "advantages" until its forward has run and
        # `advantages_from_loss_forward` has answered; `inputs` receives them too.
        if not self.model.training:
            return super()._compute_loss(model, inputs)
        seen_by_trl = _AdvantagesAfterForward((k, v) for k, v in inputs.items() if k != "advantages")
        self._loss_micro_batch = (inputs, seen_by_trl)
        try:
            loss = super()._compute_loss(model, seen_by_trl)
            if self._loss_micro_batch is not None:
                raise RuntimeError(ORDER_CHANGED.format(what="_compute_loss ran no forward pass"))
            return loss
        finally:
            self._loss_micro_batch = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        # Extends TRL 1.16.0: the µ pass may be answered by the sampler; the loss's forward sets the advantages.
        if self._awaiting_behaviour_pass:
            self._awaiting_behaviour_pass = False
            if model is not self.model:
                raise RuntimeError(ORDER_CHANGED.format(what="the first forward of a generation is not the µ pass"))
            behaviour = self.behaviour_logps_from_sampler(input_ids, attention_mask, logits_to_keep)
            if behaviour is not None:
                return behaviour, None, None
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if self._loss_micro_batch is not None:
            (micro_batch, seen_by_trl), self._loss_micro_batch = self._loss_micro_batch, None
            advantages = self.advantages_from_loss_forward(micro_batch, logps.detach())
            micro_batch["advantages"] = seen_by_trl["advantages"] = advantages
        return logps, entropies, aux_loss

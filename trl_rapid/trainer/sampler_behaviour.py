"""µ read off the sampler (`behaviour_logprobs="sampler"`): TRL's `generate` records the sampled tokens' log-probs,
and TRL's no-grad µ pass over the inference batch is answered from that record instead of a forward pass.

A mixin of RapidTrainer over TRL 1.16's GRPOTrainer; the recording itself lives in ../sampler_logprobs.py, and the
adapter that offers TRL's µ pass to `behaviour_logps_from_sampler` in ../compat/grpo.py.
"""

from __future__ import annotations

import torch
from accelerate.logging import get_logger

from ..config import RapidConfig
from ..sampler_logprobs import plain_sampling_violations, recording_sampled_logprobs

logger = get_logger(__name__)


class SamplerBehaviourMixin:
    """Sets `self._sampled_behaviour` ({"tokens", "logps"}) during a training `generate` call; TRL's µ pass
    (`old_per_token_logps`) of the same generation consumes it through `behaviour_logps_from_sampler`. RapidTrainer
    sets `behaviour_logprobs` and `_mu_from_sampler` in its `__init__`."""

    _sampled_behaviour = None  # the record of the current training generation, until TRL's µ pass takes it

    def _behaviour_logprobs_source(self, args: RapidConfig) -> str:
        """args.resolved_behaviour_logprobs, checked against what only the built trainer knows: µ from the sampler
        needs TRL's single-turn transformers `generate` with nothing but the temperature shaping its distribution."""
        source = args.resolved_behaviour_logprobs
        if source != "sampler":
            return source
        blockers = [name for name, active in (("rollout_func", self.rollout_func is not None), ("tools", bool(self.tools)),
                                              ("environment_factory", self.environment_factories is not None)) if active]
        blockers += plain_sampling_violations(self.accelerator.unwrap_model(self.model), self.generation_config)
        if args.behaviour_logprobs == "auto":
            # In low precision a KV-cached sampling step and the trainer's full forward round differently, so weights
            # at inner step 0 would not be 1: "auto" promises exactness, so it recomputes µ there.
            low = sorted({str(p.dtype) for p in self.model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
            if low:
                blockers.append(f"parameters in {', '.join(low)}")
        if not blockers:
            return source
        if args.behaviour_logprobs == "sampler":
            raise ValueError(
                f"behaviour_logprobs='sampler' needs TRL's single-turn transformers generation under plain temperature "
                f"sampling, but this run has {', '.join(blockers)} (logits processors come from the model's "
                "generation_config or the run's settings). Set behaviour_logprobs='trainer' (or 'auto')."
            )
        logger.info(f"µ is recomputed by the trainer: the sampler's log-probs are not exact here ({', '.join(blockers)}).")
        return "trainer"

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # Extends TRL 1.16: with µ from the sampler, TRL's `generate` call also records the sampled tokens' log-probs.
        if not (self._mu_from_sampler and self.model.training):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        with recording_sampled_logprobs(self.accelerator.unwrap_model(self.model_wrapped), self.temperature) as record:
            output = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if not record:
            raise RuntimeError("behaviour_logprobs='sampler': TRL's generation did not go through `model.generate`.")
        self._sampled_behaviour = record
        return output

    def _generate_and_score_completions(self, inputs):
        # Extends TRL 1.16: a record not taken by TRL's µ pass (an error in between) never serves another generation.
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._sampled_behaviour = None

    def behaviour_logps_from_sampler(self, input_ids, attention_mask, logits_to_keep):
        """The µ hook (../compat/grpo.py): µ of the generation batch from the sampler's record, if there is one."""
        if self._sampled_behaviour is None:
            return None
        record, self._sampled_behaviour = self._sampled_behaviour, None
        return self._sampler_behaviour_logps(record, input_ids, attention_mask, logits_to_keep)

    @staticmethod
    def _sampler_behaviour_logps(record, input_ids, attention_mask, logits_to_keep) -> torch.Tensor:
        """µ per completion token, laid out as TRL's batch ((B, logits_to_keep), 0 on padding), from the sampler's
        record; checks that the recorded tokens are the batch's tokens, so rows cannot be misaligned."""
        completion_ids, mask = input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:].bool()
        tokens, logps = record["tokens"].to(completion_ids.device), record["logps"].to(completion_ids.device)
        width = min(logits_to_keep, tokens.size(1))
        behaviour = torch.zeros(completion_ids.shape, dtype=logps.dtype, device=completion_ids.device)
        behaviour[:, :width] = logps[:, :width]
        same = tokens.size(0) == completion_ids.size(0) and not mask[:, width:].any() and torch.equal(
            tokens[:, :width][mask[:, :width]], completion_ids[:, :width][mask[:, :width]]
        )
        if not same:
            raise RuntimeError("behaviour_logprobs='sampler': the recorded tokens do not match the generated batch.")
        return behaviour.masked_fill(~mask, 0.0)

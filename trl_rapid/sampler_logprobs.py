"""µ from the sampling pass: per-token log-probs of the sampled tokens, read off transformers `generate` itself.

Under plain temperature sampling, `generate` draws token y_t from softmax(z_t / T), z_t being the model's raw logits
at step t. The behaviour log-prob is then log µ(y_t) = log_softmax(z_t / T)[y_t], the same quantity the trainer's
no-grad recomputation (TRL's `old_per_token_logps`) evaluates with a second forward pass over the whole batch. Reading
it off the sampler skips that pass; the two agree to float rounding (a KV-cached step vs. a full-sequence forward).

Only valid when nothing but the temperature shapes the sampling distribution: `plain_sampling_violations` lists every
logits processor transformers would add on top of it (top-k/top-p/min-p, repetition penalty, suppressed tokens, a
model's own `generation_config` defaults, …); the trainer falls back to the recomputation when it is not empty.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper

from .compat.transformers import generation_config_of_generate, logits_processors_of_generate


class SampledTokenLogProbs(LogitsProcessor):
    """Records log_softmax(z_t / T) at the token `generate` samples at each step.

    transformers applies a user-given processor before its sampling warpers (temperature, top-k, …), so with no other
    processor configured the scores seen here are the raw logits z_t. The token sampled from step t's scores is only
    known at step t + 1 (the last column of `input_ids`), so each call settles the previous step, and `finish` settles
    the last one from the returned sequences. Only one (batch, vocabulary) distribution is held at a time.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.prompt_length = None
        self._pending = None  # log_softmax(z_t / T) of the step whose token is not known yet
        self._logps = []  # one (B,) tensor per settled step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.size(1)
        else:
            self._logps.append(self._pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self._pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.LongTensor) -> tuple[torch.LongTensor, torch.Tensor]:
        """(sampled tokens, their log-probs), both (B, steps) and aligned, from `generate`'s returned sequences."""
        tokens = sequences[:, self.prompt_length:]
        logps = self._logps
        if tokens.size(1) > len(logps):  # the last sampled token was never seen as input
            logps = [*logps, self._pending.gather(1, tokens[:, len(logps)].unsqueeze(1)).squeeze(1)]
        # generate may run steps past the stop and undo them (deferred stop checks): keep the returned steps only
        logps = torch.stack(logps[: tokens.size(1)], dim=1) if tokens.size(1) else tokens.new_zeros(tokens.shape).float()
        self._pending, self._logps = None, []
        return tokens, logps


@contextmanager
def recording_sampled_logprobs(model, temperature: float):
    """Within the context, `model.generate` also records the sampled tokens' log-probs; yields a dict that receives
    `tokens` and `logps` ((B, steps) each) after every call.

    `model` is the object TRL calls `generate` on (the unwrapped model, a PEFT wrapper included); the processor is
    passed as `generate`'s own `logits_processor` argument, so sampling itself is unchanged.
    """
    record = {}
    had_own = "generate" in vars(model)
    original = model.generate

    def generate(*args, **kwargs):
        recorder = SampledTokenLogProbs(temperature)
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), recorder])
        sequences = original(*args, **kwargs)
        record["tokens"], record["logps"] = recorder.finish(sequences)
        return sequences

    model.generate = generate
    try:
        yield record
    finally:
        if had_own:
            model.generate = original
        else:
            del model.generate


def plain_sampling_violations(model, generation_config) -> list[str]:
    """Logits processors, beyond the temperature, that transformers' `generate` would apply for `generation_config`.

    Replays what `generate` does before sampling (../compat/transformers.py: merge the model's own `generation_config`
    into the given one, set the special tokens, build the processor list). An empty list means the sampler draws from
    softmax(logits / T) exactly; anything else names what changes it.
    """
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        config = generation_config_of_generate(model, generation_config)
        if not config.do_sample or (config.num_beams or 1) > 1:
            return [f"do_sample={config.do_sample}, num_beams={config.num_beams}"]
        processors = logits_processors_of_generate(model, config)
    except Exception as error:  # a transformers version whose internals moved: recomputing µ is always correct
        return [f"could not inspect generate's logits processors ({type(error).__name__}: {error})"]
    return [type(p).__name__ for p in processors if not isinstance(p, TemperatureLogitsWarper)]

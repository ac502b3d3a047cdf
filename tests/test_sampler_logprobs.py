"""µ read off transformers `generate` (behaviour_logprobs="sampler") against the trainer's recomputation, on CPU."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.sampler_logprobs import plain_sampling_violations, recording_sampled_logprobs
from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward


@torch.no_grad()
def test_recorded_logprobs_equal_a_full_forward_pass_with_padding_and_eos(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    temperature = 0.7
    config = GenerationConfig(max_new_tokens=24, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                              disable_compile=True)
    assert plain_sampling_violations(model, config) == []
    prompts = [tokenizer(p)["input_ids"] for p in ["12>", "4567>", "9>", "abc 12>"] * 4]  # unequal: left padding
    width = max(map(len, prompts))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != tokenizer.pad_token_id).long()
    torch.manual_seed(0)
    with recording_sampled_logprobs(model, temperature) as record:
        sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    assert "generate" not in vars(model)  # the wrapper is gone after the context
    completion = sequences[:, width:]
    assert torch.equal(record["tokens"], completion)
    is_eos = completion == tokenizer.eos_token_id
    mask = (is_eos.int().cumsum(1) - is_eos.int()) == 0  # up to and including the first EOS
    assert (~mask).any() and mask.sum(1).max() == completion.size(1)  # some rows stopped early, some ran to the end

    logits = model(input_ids=sequences, attention_mask=torch.cat([attention_mask, mask.long()], 1)).logits
    logits = logits[:, width - 1 : -1].float() / temperature
    recomputed = torch.log_softmax(logits, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    difference = ((recomputed - record["logps"]).abs() * mask).max().item()
    assert difference < 1e-5, difference  # seen: 7e-7 (float32, KV-cached steps vs one full forward)


def test_distribution_changes_are_detected(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base = dict(max_new_tokens=4, do_sample=True, temperature=0.9, top_k=0, top_p=1.0, disable_compile=True,
                eos_token_id=1, pad_token_id=0)
    assert plain_sampling_violations(model, GenerationConfig(**base)) == []
    assert plain_sampling_violations(model, GenerationConfig(**{**base, "top_k": 5})) == ["TopKLogitsWarper"]
    assert "RepetitionPenaltyLogitsProcessor" in plain_sampling_violations(
        model, GenerationConfig(**{**base, "repetition_penalty": 1.2}))
    model.generation_config.min_new_tokens = 2  # a default the model's own generation_config brings
    assert plain_sampling_violations(model, GenerationConfig(**base)) == ["MinNewTokensLengthLogitsProcessor"]


def _config(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                    optimizer_steps_per_generation=3, max_completion_length=6, learning_rate=2e-2, max_steps=3,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                    disable_tqdm=True, seed=0, temperature=0.8)
    settings.update(overrides)
    return RapidConfig(**settings)


class BufferRecordingTrainer(RapidTrainer):
    """Keeps each training generation batch, and counts the model's no-grad scoring passes (TRL's µ recomputation)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.no_grad_scoring_passes = [], 0

        def count(module, args, kwargs):
            if kwargs.get("fused_lm_head") and not torch.is_grad_enabled():
                self.no_grad_scoring_passes += 1

        self.model.register_forward_pre_hook(count, with_kwargs=True)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.batches.append({k: v.clone() for k, v in output.items() if isinstance(v, torch.Tensor)})
        return output


def _train(tiny_model_dir, tmp_path, model=None, **overrides):
    trainer = BufferRecordingTrainer(
        model=model or tiny_model_dir, reward_funcs=repeat_digit_reward, args=_config(tmp_path, **overrides),
        train_dataset=make_repeat_digit_dataset(32), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    return trainer


def test_trainer_takes_mu_from_the_sampler_without_a_recompute_pass_and_it_equals_the_recompute(tiny_model_dir,
                                                                                                 tmp_path):
    sampler = _train(tiny_model_dir, tmp_path / "sampler")  # auto: transformers, float32, plain temperature
    trainer = _train(tiny_model_dir, tmp_path / "trainer", behaviour_logprobs="trainer")
    assert sampler.behaviour_logprobs == "sampler" and trainer.behaviour_logprobs == "trainer"
    assert sampler.no_grad_scoring_passes == 0 and trainer.no_grad_scoring_passes > 0
    # Same seed, and recording draws no random numbers: the same completions, so the two µ are comparable row by row.
    mine, theirs = sampler.batches[0], trainer.batches[0]
    assert torch.equal(mine["completion_ids"], theirs["completion_ids"])
    mask = mine["completion_mask"].bool()
    assert not torch.all(mask)  # EOS and padding were in play
    difference = (mine["old_per_token_logps"] - theirs["old_per_token_logps"])[mask].abs().max().item()
    assert difference < 1e-5, difference
    assert torch.all(mine["old_per_token_logps"][~mask] == 0)
    assert "sampling_per_token_logps" not in mine  # nothing else of TRL's changes: no engine log-probs appear


def test_sampler_falls_back_to_the_recompute_where_its_distribution_differs(tiny_model_dir, tmp_path):
    filtered = RapidTrainer(model=tiny_model_dir, reward_funcs=repeat_digit_reward, args=_config(tmp_path, top_k=5),
                            train_dataset=make_repeat_digit_dataset(8),
                            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert filtered.behaviour_logprobs == "trainer" and not filtered._mu_from_sampler

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generation_config.no_repeat_ngram_size = 2  # the model's own default changes the sampler: auto falls back
    auto = RapidTrainer(model=model, reward_funcs=repeat_digit_reward, args=_config(tmp_path),
                        train_dataset=make_repeat_digit_dataset(8),
                        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert auto.behaviour_logprobs == "trainer"
    with pytest.raises(ValueError, match="NoRepeatNGramLogitsProcessor.*behaviour_logprobs='trainer'"):
        RapidTrainer(model=model, reward_funcs=repeat_digit_reward, args=_config(tmp_path, behaviour_logprobs="sampler"),
                     train_dataset=make_repeat_digit_dataset(8),
                     processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_diagnostics_buffered_on_the_device_average_like_trls_metrics(tiny_model_dir, tmp_path):
    # logging_steps=1 logs each optimizer step's diagnostics; logging_steps=3 (= H) must log their mean (max: mean of
    # the per-step maxima), exactly as when they were appended to TRL's metrics at every micro-batch.
    per_step = _train(tiny_model_dir, tmp_path / "one", logging_steps=1, max_steps=6)
    windowed = _train(tiny_model_dir, tmp_path / "three", logging_steps=3, max_steps=6)
    names = ("rapid/weight_mean", "rapid/weight_max", "rapid/ess", "rapid/staleness", "rapid/truncated_frac")
    steps = [h for h in per_step.state.log_history if names[0] in h]
    windows = [h for h in windowed.state.log_history if names[0] in h]
    assert len(steps) == 6 and len(windows) == 2
    for window, chunk in zip(windows, (steps[:3], steps[3:])):
        for name in names:
            assert window[name] == pytest.approx(sum(h[name] for h in chunk) / 3, rel=1e-5), name

"""RapidTrainer on the real TRL GRPOTrainer, with a tiny locally built model, on CPU."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig

from helpers.trainer import logs_with, train
from trl_rapid import RapidConfig


def test_one_generation_call_per_outer_step_then_h_optimizer_steps(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, gradient_accumulation_steps=2, optimizer_steps_per_generation=3, max_steps=6)
    assert trainer.state.global_step == 6
    # H = 3: steps 1 and 4 start an outer step; each call makes N_inference = 4 × 2 × 3 completions
    assert trainer.generation_sizes == [24, 24]
    assert [h["rapid/inner_step"] for h in logs_with(trainer, "rapid/inner_step")] == [0, 1, 2, 0, 1, 2]
    assert [h["step"] for h in logs_with(trainer, "reward")] == [1, 4]
    timings = logs_with(trainer, "rapid/generation_time")
    assert [h["step"] for h in timings] == [3, 6]
    assert all(h["rapid/generation_time"] > 0 and h["rapid/train_time"] > 0 for h in timings)


def test_layout_groups_puts_whole_groups_of_one_prompt_in_every_micro_batch(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                    micro_batch_layout="groups")
    assert len(trainer.loss_batches) == 12
    for _, prompts, groups in trainer.loss_batches:
        members = {}
        for prompt, group in zip(prompts, groups):
            members.setdefault(group, []).append(prompt)
        assert all(len(rows) == 4 and len(set(rows)) == 1 for rows in members.values()), members


def test_layout_rows_draws_each_micro_batch_from_many_prompts(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2)
    assert len(trainer.loss_batches) == 12
    # 12 groups of 4 per inference batch, 8 rows per micro-batch: whole groups would give exactly 2 prompts each.
    distinct = [len(set(groups)) for _, _, groups in trainer.loss_batches]
    assert sum(distinct) / len(distinct) > 4, distinct
    for _, prompts, groups in trainer.loss_batches:  # a group id still names one prompt
        assert all(len({p for p, g in zip(prompts, groups) if g == group}) == 1 for group in groups)


def test_groups_spanning_micro_batches_stay_within_one_optimizer_step(tiny_model_dir, tmp_path):
    with pytest.warns(UserWarning, match="extra no-grad forward"):
        trainer = train(tiny_model_dir, tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                        micro_batch_layout="groups")
    per_step = {}
    for step, prompts, groups in trainer.loss_batches:
        for prompt, group in zip(prompts, groups):
            per_step.setdefault(step, {}).setdefault(group, []).append(prompt)
    for groups in per_step.values():
        assert all(len(rows) == 4 and len(set(rows)) == 1 for rows in groups.values()), groups


@pytest.mark.parametrize(
    "layout, per_device_train_batch_size, scale_rewards",
    [("groups", 4, "none"), ("groups", 2, "none"), ("groups", 4, "group"),
     ("rows:cache", 4, "none"), ("rows:cache", 2, "group"), ("rows:forward", 4, "none"), ("rows:forward", 2, "group")],
    ids=["whole-groups", "spanning-groups", "scale-group", "rows-cache", "rows-cache-scale-group", "rows-forward",
         "rows-forward-scale-group"],
)
def test_advantages_match_an_independent_computation_at_every_step(tiny_model_dir, tmp_path, layout,
                                                                    per_device_train_batch_size, scale_rewards):
    layout, _, source = layout.partition(":")
    trainer = train(tiny_model_dir, tmp_path, per_device_train_batch_size=per_device_train_batch_size,
                    gradient_accumulation_steps=2, scale_rewards=scale_rewards, learning_rate=2e-2,
                    micro_batch_layout=layout, baseline_weight_source=source or "cache")
    # one check per micro-batch (whole groups, rows) or per optimizer step (spanning groups)
    spanning = layout == "groups" and per_device_train_batch_size == 2
    assert len(trainer.advantage_errors) == (6 if spanning else 12)
    assert trainer.max_log_weight > 1e-3  # θ moved away from µ, so the weights were not trivially 1
    assert max(trainer.advantage_errors) < 1e-4


@pytest.mark.parametrize(
    "overrides",
    [{"beta": 0.04}, {"num_iterations": 2}, {"loss_type": "vespo"}, {"loss_type": "luspo", "importance_sampling_level":
     "sequence"}, {"scale_rewards": "batch"}, {"beta": 0.04, "per_device_train_batch_size": 2}],
    ids=["beta", "num_iterations", "vespo", "luspo", "scale-batch", "beta-spanning"],
)
def test_advantages_stay_exact_with_other_trl_features(tiny_model_dir, tmp_path, overrides):
    settings = {"gradient_accumulation_steps": 2, "learning_rate": 2e-2, "max_steps": 4, **overrides}
    trainer = train(tiny_model_dir, tmp_path, **settings)
    assert trainer.advantage_errors and max(trainer.advantage_errors) < 1e-4


def test_h_equal_one_gives_trls_on_policy_advantages(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, optimizer_steps_per_generation=1, max_steps=4)
    assert len(trainer.generation_sizes) == 4
    assert trainer.on_policy_gap < 1e-6  # θ = µ: RAPID's baseline is TRL's plain group mean (scale_rewards="none")


# µ recomputed by the trainer: the same forward pass as θ's, so exactly 1. µ from the sampler: a KV-cached pass,
# equal to float32 rounding (tests/test_sampler_logprobs.py).
@pytest.mark.parametrize("behaviour_logprobs, tolerance", [("trainer", 0.0), ("sampler", 1e-5)])
def test_weights_are_one_after_generation_and_move_afterwards(tiny_model_dir, tmp_path, behaviour_logprobs, tolerance):
    trainer = train(tiny_model_dir, tmp_path, learning_rate=2e-2, behaviour_logprobs=behaviour_logprobs)
    logs = logs_with(trainer, "rapid/weight_mean")
    first = [h for h in logs if h["rapid/inner_step"] == 0]
    later = [h for h in logs if h["rapid/inner_step"] > 0]
    assert first and all(abs(h["rapid/weight_mean"] - 1.0) <= tolerance and abs(h["rapid/weight_max"] - 1.0) <= tolerance
                         and h["rapid/staleness"] <= tolerance for h in first)
    assert any(abs(h["rapid/weight_mean"] - 1.0) > 1e-3 for h in later)
    assert all(0.0 < h["rapid/ess"] <= 1.0 and 0.0 <= h["rapid/truncated_frac"] <= 1.0 for h in logs)


def test_parameters_change(tiny_model_dir, tmp_path):
    before = {n: p.clone() for n, p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters()}
    trainer = train(tiny_model_dir, tmp_path)
    after = dict(trainer.model.named_parameters())
    changed = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    assert len(changed) > len(before) // 2, changed


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "cispo", "sapo", "dapo"])
def test_trl_loss_types_train(tiny_model_dir, tmp_path, loss_type):
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.embed_tokens.weight.clone()
    trainer = train(tiny_model_dir, tmp_path, loss_type=loss_type, max_steps=3)
    losses = [h["loss"] for h in logs_with(trainer, "loss")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, trainer.model.model.embed_tokens.weight.detach())


def test_lora_trains_only_the_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].self_attn.q_proj.weight.clone()
    trainer = train(tiny_model_dir, tmp_path, learning_rate=2e-2,
                    peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    q_proj = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    assert torch.equal(q_proj.base_layer.weight.detach(), base)
    assert q_proj.lora_B["default"].weight.abs().sum() > 0  # B starts at zero, so any value means it trained
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_resume_inside_an_outer_step_regenerates_with_a_known_behaviour_policy(tiny_model_dir, tmp_path):
    first = train(tiny_model_dir, tmp_path, optimizer_steps_per_generation=4, max_steps=6, save_strategy="steps",
                  save_steps=2)
    checkpoint = Path(first.args.output_dir) / "checkpoint-2"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"):
        assert (checkpoint / name).exists(), name

    resumed = train(tiny_model_dir, tmp_path, optimizer_steps_per_generation=4, max_steps=6, save_strategy="steps",
                    save_steps=2, resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    # Steps 3-4 finish the interrupted outer step on a regenerated batch (µ = restored θ); step 5 starts the next one,
    # exactly where the uninterrupted run started it.
    assert len(resumed.generation_sizes) == 2
    new_logs = [h for h in logs_with(resumed, "rapid/inner_step") if h["step"] > 2]
    assert [(h["step"], h["rapid/inner_step"]) for h in new_logs] == [(3, 2), (4, 3), (5, 0), (6, 1)]
    assert new_logs[0]["rapid/weight_mean"] == pytest.approx(1.0, abs=1e-5)  # first step on the regenerated batch: θ = µ
    assert [h["step"] for h in logs_with(first, "reward")] == [1, 5]


def test_model_card_is_tagged_rapid_and_cites_the_paper(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, max_steps=1)
    trainer.create_model_card(model_name="tiny-rapid")
    card = (Path(trainer.args.output_dir) / "README.md").read_text()
    assert "- rapid" in card and "2510.03515" in card and "RAPID" in card


def test_config_round_trips_through_json(tmp_path):
    # No training needed: the trainer never changes its args. RAPID's own fields survive `to_json_string` and build
    # the same config again.
    args = RapidConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none",
                       per_device_train_batch_size=4, num_generations=4, optimizer_steps_per_generation=3)
    saved = json.loads(args.to_json_string())
    assert saved["eta"] == 2.0 and saved["optimizer_steps_per_generation"] == 3
    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    own = [f.name for f in dataclasses.fields(RapidConfig) if f.name not in trl_fields]
    again = RapidConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=4,
                        num_generations=4, **{name: saved[name] for name in own})
    assert {name: getattr(again, name) for name in own} == {name: getattr(args, name) for name in own}

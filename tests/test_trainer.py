"""RapidTrainer on the real TRL GRPOTrainer, with a tiny locally built model, on CPU."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_rapid import RapidConfig, RapidTrainer
from trl_rapid.estimator import group_baseline, truncated_weights
from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward
from trl_rapid.trainer import GROUP_IDS, REWARDS
from trl_rapid.trainer.row_layout import ROW_INDEX


class RecordingTrainer(RapidTrainer):
    """RapidTrainer that records what it did, and checks each advantage against an independent computation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_sizes = []  # completions per generation call (this process)
        self.loss_batches = []  # (optimizer step, prompts of each row, group ids) per micro-batch
        self.advantage_errors = []
        self.reference_log_weights = {}  # layout "rows": row → log w from the reference's own forward passes

    def _generate_and_score_completions(self, inputs):
        if self.model.training:
            self.generation_sizes.append(len(inputs))
        output = super()._generate_and_score_completions(inputs)
        output["trl_advantages"] = output["advantages"].clone()  # TRL's own (on-policy) advantages, for comparison
        return output

    def _compute_loss(self, model, inputs):
        if self.model.training and (self._rows_layout or self._whole_groups_per_micro_batch):
            # Poison the stored advantages: the loss must use the ones RAPID writes from this very forward pass.
            inputs["advantages"] = torch.full_like(inputs["advantages"], float("nan"))
        loss = super()._compute_loss(model, inputs)
        assert torch.isfinite(loss), "the loss read advantages RAPID had not set"
        if self.model.training:
            prompts = [tuple(row[mask.bool()].tolist()) for row, mask in zip(inputs["prompt_ids"], inputs["prompt_mask"])]
            self.loss_batches.append((self.state.global_step, prompts, inputs[GROUP_IDS].tolist()))
        return loss

    def _set_advantages(self, micro_batches, logps):
        if self._rows_layout:
            # This micro-batch's rows are trained now: their weights under the current θ enter the reference's cache.
            rows = micro_batches[0][ROW_INDEX].tolist()
            self.reference_log_weights.update(zip(rows, _fresh_log_weights(self, micro_batches[0]).tolist()))
        super()._set_advantages(micro_batches, logps)
        if self._rows_layout:
            self.advantage_errors.append(_rows_reference_error(self, micro_batches[0]))
            return
        merged = {key: torch.cat([mb[key] for mb in micro_batches]) for key in micro_batches[0]
                  if isinstance(micro_batches[0][key], torch.Tensor) and micro_batches[0][key].ndim > 0}
        self.advantage_errors.append(_reference_error(self, merged))

    def _resample_stale_rows(self, generation_batch):
        first = self._resample_from
        stale = torch.cat([mb[ROW_INDEX] for mb in self._buffered_inputs[first:]]).tolist() if self._rows_layout else []
        super()._resample_stale_rows(generation_batch)
        for row in stale:  # fresh completions with µ = the current θ: weight 1 until trained
            self.reference_log_weights.pop(row, None)

    def _prepare_inputs(self, generation_batch):
        buffer = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if self._buffered_inputs is not buffer:  # a new inference batch: every weight is 1 again (θ = µ)
            self.reference_log_weights = {}
        return inputs


@torch.no_grad()
def _fresh_log_weights(trainer, batch) -> torch.Tensor:
    """log w of every row of `batch` from a fresh forward pass of the unwrapped model (temperature 1)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    completion_len = batch["completion_ids"].size(1)
    token_logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)[:, -completion_len:]
    behaviour = batch.get("old_per_token_logps", token_logps)
    return ((token_logps - behaviour) * batch["completion_mask"]).sum(-1)


def _expected_advantages(trainer, rewards, groups, log_w, reward_scale):
    expected = rewards - group_baseline(truncated_weights(log_w, trainer.eta), rewards, groups, trainer.args.baseline)
    if reward_scale is not None:  # with a scale, a group whose rewards are all equal has no advantage
        expected = expected / (reward_scale + 1e-4)
        same = torch.tensor([len(set(rewards[groups == g].tolist())) == 1 for g in groups.tolist()])
        expected = torch.where(same, torch.zeros_like(expected), expected)
    return expected


@torch.no_grad()
def _rows_reference_error(trainer, batch) -> float:
    """Layout "rows": max |A − A_ref| over the micro-batch, A_ref over each row's whole group under the documented
    freshness rule — "cache": a member's weight from the fresh forward made when it was last trained in this inference
    batch, 1 if not yet; "forward": every member's weight from a fresh forward now."""
    buffer = {key: torch.cat([mb[key] for mb in trainer._buffered_inputs]) for key in
              (ROW_INDEX, REWARDS, GROUP_IDS, "prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
               "old_per_token_logps", "rapid_reward_scale") if key in batch}
    order = torch.argsort(buffer[ROW_INDEX])
    buffer = {key: value[order] for key, value in buffer.items()}
    assert torch.equal(buffer[ROW_INDEX], torch.arange(len(order))), "the buffer lost or repeated a row"
    if trainer.args.baseline_weight_source == "forward":
        log_w = _fresh_log_weights(trainer, buffer)
    else:
        log_w = torch.tensor([trainer.reference_log_weights.get(row, 0.0) for row in range(len(order))])
    expected = _expected_advantages(trainer, buffer[REWARDS], buffer[GROUP_IDS], log_w,
                                    buffer.get("rapid_reward_scale"))[batch[ROW_INDEX]]
    trainer.max_log_weight = max(getattr(trainer, "max_log_weight", 0.0), log_w.abs().max().item())
    trainer.on_policy_gap = max(getattr(trainer, "on_policy_gap", 0.0),
                                (batch["trl_advantages"] - batch["advantages"]).abs().max().item())
    return (expected - batch["advantages"]).abs().max().item()


@torch.no_grad()
def _reference_error(trainer, batch) -> float:
    """max |A − A_ref|, A_ref from a fresh forward pass of the unwrapped model (temperature 1) over whole groups."""
    groups = batch[GROUP_IDS]
    assert min(Counter(groups.tolist()).values()) == trainer.num_generations, "advantages set on partial groups"
    log_w = _fresh_log_weights(trainer, batch)
    rewards = batch[REWARDS]
    expected = _expected_advantages(trainer, rewards, groups, log_w, batch.get("rapid_reward_scale"))
    trainer.on_policy_gap = max(getattr(trainer, "on_policy_gap", 0.0),
                                (batch["trl_advantages"] - batch["advantages"]).abs().max().item())
    trainer.max_log_weight = max(getattr(trainer, "max_log_weight", 0.0), log_w.abs().max().item())
    return (expected - batch["advantages"]).abs().max().item()


def train(tiny_model_dir, tmp_path, trainer_cls=RecordingTrainer, dataset_size=64, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_generations=4,
        optimizer_steps_per_generation=3,
        max_completion_length=4,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        max_steps=6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    peft_config = settings.pop("peft_config", None)
    resume = settings.pop("resume_from_checkpoint", None)
    trainer = trainer_cls(
        model=tiny_model_dir,
        reward_funcs=repeat_digit_reward,
        args=RapidConfig(**settings),
        train_dataset=make_repeat_digit_dataset(dataset_size),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def logs_with(trainer, key):
    return [h for h in trainer.state.log_history if key in h]


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


def test_config_round_trips_through_json(tiny_model_dir, tmp_path):
    trainer = train(tiny_model_dir, tmp_path, max_steps=1)
    saved = json.loads(trainer.args.to_json_string())
    assert saved["eta"] == 2.0 and saved["optimizer_steps_per_generation"] == 3

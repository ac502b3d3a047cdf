"""RapidTrainer on the tiny model, recording what it did and checking every advantage against an independent
computation: used by tests/test_trainer*.py and by the launched workers (tests/scale_out_worker.py,
tests/vllm_server_worker.py)."""

from collections import Counter

import torch
from transformers import AutoTokenizer

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

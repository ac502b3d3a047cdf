"""Adaptive H in the trainer (`optimizer_steps_per_generation="auto"`): after each optimizer step, decide from the
step's ESS whether the rest of the inference batch is stale (the rule: ../adaptive.py), and re-sample it.

A mixin of RapidTrainer over TRL 1.16's GRPOTrainer. RapidTrainer's `__init__` calls `_init_adaptive_h`, its
`_set_advantages` `_record_step_ess`, its `_prepare_inputs` `_resample_stale_rows` (when `_resample_from` is set); the
decision after each optimizer step and the logged totals are this mixin's `training_step` and `log`.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid

from ..adaptive import AdaptiveH
from .batches import GROUP_IDS, REWARD_SCALE, REWARDS
from .row_layout import ROW_INDEX


class AdaptiveHMixin:
    """Re-samples the stale rest of an inference batch when the rule says so (see the module docstring)."""

    def _init_adaptive_h(self, args):
        """The rule (adaptive.py; None when H is fixed), and its state: the ESS of the optimizer step being taken, where
        a re-sample starts, and the buffer's prompts (a re-sample must see the same ones)."""
        self._adaptive_h = (
            AdaptiveH(args.num_optimizer_steps_per_generation, args.adaptive_ess_threshold) if args.adaptive_h else None
        )
        self._step_ess = []  # (Σ ESS/G over groups, number of groups) per micro-batch of the current optimizer step
        self._resample_from = None  # first buffered micro-batch to re-sample at the next `_prepare_inputs`
        self._resampling_rows = False  # re-sampling single rows of groups (layout "rows")
        self._buffer_prompts = None

    def _record_step_ess(self, ess: torch.Tensor, num_groups: float):
        """A micro-batch's ESS/G, weighted by its whole groups (rows / G of them), towards its optimizer step's."""
        if self._adaptive_h is not None:
            self._step_ess.append(torch.stack([ess * num_groups, ess.new_tensor(num_groups)]))

    def training_step(self, model, inputs, num_items_in_batch):
        # Extends TRL 1.16 (which advances `self._step`): after each optimizer step, decide whether to re-sample.
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._adaptive_h is not None and self._step % self.args.gradient_accumulation_steps == 0:
            self._decide_h()
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Extends TRL 1.16: running totals, like skipped_updates (TRL would average them).
        if self._adaptive_h is not None and self.model.training and "loss" in logs:
            logs["rapid/resamples"] = float(self._adaptive_h.resamples)
            logs["rapid/wasted_completions"] = float(self._adaptive_h.wasted_rows * self.accelerator.num_processes)
        super().log(logs, start_time)

    def _resample_stale_rows(self, generation_batch):
        """Adaptive H: the micro-batches from `_resample_from` on are stale; sample their prompts again with the current
        policy, which is their µ from now on. Same prompts, same micro-batch layout, fresh completions.

        Layout "groups": those micro-batches hold whole groups, which are sampled again. Layout "rows": they hold single
        rows of many groups; each is sampled again on its own (one completion per stale row) and keeps its place in its
        group, whose baseline then mixes members of two behaviour policies, each weighted by its own µ."""
        first, self._resample_from = self._resample_from, None
        if [x.get("prompt") for x in generation_batch] != self._buffer_prompts:
            raise RuntimeError("Adaptive H: the data loader changed prompts inside an outer step; cannot re-sample.")
        group_size, rows_per_micro_batch = self.num_generations, self.args.per_device_train_batch_size
        if self._rows_layout:
            stale_rows = torch.cat([mb[ROW_INDEX] for mb in self._buffered_inputs[first:]]).cpu()
            stale_inputs = [generation_batch[row] for row in stale_rows.tolist()]
            self._resampling_rows = True
            try:
                batch = split_pixel_values_by_grid(self._generate_and_score_completions(stale_inputs))
            finally:
                self._resampling_rows = False
            step = self._step // self.args.gradient_accumulation_steps
            self._buffer_weights.replace(stale_rows, batch[REWARDS], batch.get(REWARD_SCALE), step, self.scale_rewards)
            stale_rows = stale_rows.to(batch[REWARDS].device)
            batch[ROW_INDEX], batch[GROUP_IDS] = stale_rows, self._buffer_weights.group_ids[stale_rows]
            if REWARD_SCALE in batch:
                batch[REWARD_SCALE] = self._buffer_weights.reward_scale[stale_rows]
        else:
            groups = self._buffer_group_order[first * rows_per_micro_batch // group_size :].tolist()
            stale_inputs = [generation_batch[g * group_size + i] for g in groups for i in range(group_size)]
            batch = split_pixel_values_by_grid(self._generate_and_score_completions(stale_inputs))
        # TRL's token-level losses (dapo, cispo, vespo) divide by num_items_in_batch × GA / steps_per_generation, i.e.
        # the tokens of one optimizer step on average over a full buffer; this part-buffer covers fewer steps.
        remaining = self.args.steps_per_generation - first
        if "num_items_in_batch" in batch:
            batch["num_items_in_batch"] = batch["num_items_in_batch"] * self.args.steps_per_generation / remaining
        micro_batches = split_tensor_dict(batch, remaining)
        self._buffered_inputs[first:] = [unsplit_pixel_values_by_grid(micro_batch) for micro_batch in micro_batches]
        self._locate_rows(first)

    def _decide_h(self):
        """Adaptive H, after each optimizer step: one reduction of the step's ESS over processes (so every process takes
        the same decision), then the rule of adaptive.py; logs `rapid/h` whenever a sample's use ends."""
        rule, ga = self._adaptive_h, self.args.gradient_accumulation_steps
        totals = self.accelerator.reduce(torch.stack(self._step_ess).sum(dim=0), reduction="sum")
        self._step_ess = []
        step_in_outer = (self._step // ga - 1) % rule.max_h
        closed = len(rule.h_history)
        rows_per_step = self.args.per_device_train_batch_size * ga
        if rule.after_optimizer_step(step_in_outer, (totals[0] / totals[1]).item(), rows_per_step):
            self._resample_from = self._step % self.args.steps_per_generation
        if len(rule.h_history) > closed:  # TRL logs an empty metric as None: add `rapid/h` only when a sample closed
            self._metrics["train"]["rapid/h"].extend(float(h) for h in rule.h_history[closed:])

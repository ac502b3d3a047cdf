"""RapidTrainer: TRL's GRPOTrainer with RAPID's importance-weighted group advantage (arXiv 2510.03515).

One outer step, read top to bottom:
  1. rollout   — `_prepare_inputs` asks TRL for one generation batch of N_inference completions (N_inference / world
                 size per process), with rewards and the behaviour log-probs µ (read off the sampler when it is exact,
                 see sampler_logprobs.py, else recomputed); it is shuffled by whole groups and cut into micro-batches.
  2. advantage — at every optimizer step, `_set_advantages` recomputes A_i = R_i − (1/G) Σ_j min(π_θ/µ, η) R_j with the
                 current θ (estimator.py), reusing the log-probs of the loss's own forward pass.
  3. update    — TRL's `_compute_loss` applies its surrogate (any `loss_type`) with that advantage; H optimizer steps
                 consume the buffer before the next rollout.

Every override mirrors TRL 1.16.0's `GRPOTrainer` and names the method it extends. Fault tolerance (gradient guard,
finite and atomic checkpoints, resume) is the mixin in fault_tolerance.py.
"""

from __future__ import annotations

import textwrap
import time
import warnings
from pathlib import Path

import torch
from accelerate.logging import get_logger
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    get_config_model_id,
    nanstd,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from ..adaptive import AdaptiveH
from ..config import RapidConfig
from ..estimator import rapid_advantages, sequence_log_weights, truncated_weights, weight_diagnostics
from ..faults import non_finite_rewards_to_nan
from ..sampler_logprobs import plain_sampling_violations, recording_sampled_logprobs
from ..vllm_engine import server_weight_sync, vllm_setup
from .batches import GROUP_IDS, MODEL_INPUT_KEYS, REWARD_SCALE, REWARDS, shuffle_groups
from .fault_tolerance import FaultToleranceMixin
from .scale_out import ScaleOutMixin

logger = get_logger(__name__)

class RapidTrainer(FaultToleranceMixin, ScaleOutMixin, GRPOTrainer):
    """
    Trainer for RAPID: large-batch inference, then H off-policy mini-batch policy-gradient steps whose advantage uses an
    importance-weighted group baseline. A drop-in replacement for [`~trl.GRPOTrainer`]: same constructor, reward
    functions, PEFT, logging, checkpointing and Hub upload; configure it with [`RapidConfig`].

    Logged under `rapid/`: `weight_mean`, `weight_max` (raw importance weights π_θ/µ), `truncated_frac` (share above
    η), `ess` (per-group effective sample size / G), `staleness` (|log mean w̄|), `inner_step` (0..H-1 within the
    outer step), `generation_time` and `train_time` (seconds of each outer step spent producing the batch vs updating),
    `skipped_updates` (running count of optimizer steps skipped for a non-finite gradient).

    Fault tolerance (fault_tolerance.py, ../faults.py, ../checkpoints.py): a ±inf reward is unscorable like None; a
    non-finite gradient skips its update (not under DeepSpeed, whose engine steps first: a warning says so); non-finite
    weights are never saved; checkpoints are complete or absent, and resume skips partial ones.
    """

    _tag_names = ["trl", "rapid"]
    _name = "RAPID"
    _paper = {
        "title": "RAPID: An Efficient Reinforcement Learning Algorithm for Small Language Models",
        "id": "2510.03515",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{huang2025rapid,
                title        = {{RAPID: An Efficient Reinforcement Learning Algorithm for Small Language Models}},
                author       = {Lianghuan Huang and Sagnik Anupam and Insup Lee and Shuo Li and Osbert Bastani},
                year         = 2025,
                eprint       = {arXiv:2510.03515},
            }"""),
    }

    def __init__(self, model, reward_funcs=None, args: RapidConfig | None = None, *positional, **kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RapidConfig(f"{model_name.split('/')[-1]}-RAPID")
        elif not isinstance(args, RapidConfig):
            raise TypeError(
                f"RapidTrainer needs a RapidConfig, got {type(args).__name__}. RapidConfig takes every GRPOConfig "
                "argument: replace `GRPOConfig(...)` with `RapidConfig(...)`."
            )
        with vllm_setup(args):
            super().__init__(model, reward_funcs, args, *positional, **kwargs)
        if self.use_vllm and self.vllm_mode == "server" and server_weight_sync(args) == "filesystem":
            from ..vllm_server import enable_filesystem_weight_sync

            folder = args.vllm_weight_sync_dir or str(Path(args.output_dir) / "vllm-weights")
            enable_filesystem_weight_sync(self.vllm_generation, folder)

        self.eta = args.eta
        self.behaviour_logprobs = self._behaviour_logprobs_source(args)
        # TRL 1.16 recomputes µ after generation whenever a batch serves more than one micro-step; with µ from the
        # sampler that pass is answered from what `generate` recorded (see _get_per_token_logps_and_entropies).
        self._mu_from_sampler = self.behaviour_logprobs == "sampler" and (
            args.gradient_accumulation_steps % (args.steps_per_generation * self.num_iterations) != 0
        )
        self._sampled_behaviour = None  # {"tokens", "logps"} of the last training generate call, until TRL asks for µ
        self._weight_stats = []  # per micro-batch diagnostics, kept on the device until the next log
        dropout = {k: v for k, v in self.model.config.to_dict().items() if "dropout" in k and isinstance(v, float) and v > 0}
        if dropout:
            warnings.warn(
                f"The model has dropout ({dropout}): log-probs of the same completion differ between forward passes, so "
                "RAPID's importance weights are not exactly 1 on the first step after generation. Set these to 0 in "
                "the model config (the paper's models have none).",
                stacklevel=2,
            )
        # The loss's own forward pass gives every group member's log-prob only when micro-batches hold whole groups.
        self._whole_groups_per_micro_batch = args.per_device_train_batch_size % args.num_generations == 0
        if not self._whole_groups_per_micro_batch:
            warnings.warn(
                f"per_device_train_batch_size={args.per_device_train_batch_size} is not a multiple of "
                f"num_generations={args.num_generations}, so a group spans micro-batches: RapidTrainer runs one extra "
                "no-grad forward pass per optimizer step to compute exact advantages. Make per_device_train_batch_size "
                "a multiple of num_generations to avoid it.",
                stacklevel=2,
            )
        self._gathered_rewards_per_func = None  # set by _calculate_rewards, consumed right after
        self._warned_infinite_rewards = set()  # reward functions already warned about ±inf (warn once each)
        self._skipped_updates = 0  # optimizer steps skipped for a non-finite gradient
        self._loss_inputs_awaiting_advantages = None  # see _compute_loss
        # Adaptive H (adaptive.py): the rule, the ESS of the optimizer step being taken, and where a re-sample starts.
        self._adaptive_h = (
            AdaptiveH(args.num_optimizer_steps_per_generation, args.adaptive_ess_threshold) if args.adaptive_h else None
        )
        self._step_ess = []  # (Σ ESS/G over groups, number of groups) per micro-batch of the current optimizer step
        self._resample_from = None  # first buffered micro-batch to re-sample at the next `_prepare_inputs`
        self._buffer_prompts, self._buffer_group_order = None, None
        self._outer_step_times = {"generation": 0.0, "total": 0.0}

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

    # ---------------------------------------------------------------------------------------------------------------
    # 1. Rollout
    # ---------------------------------------------------------------------------------------------------------------
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

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Extends TRL 1.16: keep the raw rewards (gathered over processes), which TRL turns into advantages and drops;
        # ±inf becomes NaN, unscorable like None, before TRL (or RAPID) builds a baseline from it.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        rewards_per_func = non_finite_rewards_to_nan(rewards_per_func, self.reward_func_names,
                                                     self._warned_infinite_rewards)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        # Extends TRL 1.16: adds each row's raw reward, group id and reward scale, and sets µ, to the training batch.
        start = time.perf_counter()
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._sampled_behaviour = None  # consumed by TRL's µ pass, or not needed
        if not self.model.training:
            return output  # evaluation runs on-policy (θ = µ): TRL's group-mean advantage is RAPID's

        group_size = self.num_generations
        prompts = [x.get("prompt") for x in inputs]
        if len(prompts) % group_size or any(
            prompts[i] != prompts[i - i % group_size] for i in range(len(prompts))
        ):
            raise RuntimeError(
                "RapidTrainer expects each process's generation batch to arrive as whole groups of num_generations "
                "consecutive completions of one prompt; this one does not. Was the train sampler replaced?"
            )

        gathered = self._gathered_rewards_per_func
        rewards = (gathered * self.reward_weights.to(gathered.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(gathered).all(dim=1)] = torch.nan  # unscorable: no reward function returned a value
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))

        output[REWARDS] = rewards[local]
        output[GROUP_IDS] = torch.arange(len(inputs), device=rewards.device) // group_size
        if self.scale_rewards == "group":
            std = nanstd(rewards.view(-1, group_size), dim=1).repeat_interleave(group_size)
            output[REWARD_SCALE] = std[local]
        elif self.scale_rewards == "batch":
            output[REWARD_SCALE] = nanstd(rewards).expand(len(inputs)).clone()
        if self.behaviour_logprobs == "engine" and "sampling_per_token_logps" in output:
            # µ is the sampler itself, so the PPO ratio π_θ/µ already covers the trainer–engine mismatch: TRL's extra
            # vLLM importance-sampling factor would count it twice. TRL still logs the gap (sampling/*) from its
            # recomputed log-probs.
            # A token vLLM could not score (NaN) takes the trainer's recomputed log-prob (the config ensures TRL made it).
            sampled = output["sampling_per_token_logps"]
            output["old_per_token_logps"] = torch.where(torch.isnan(sampled), output["old_per_token_logps"], sampled)
            if "importance_sampling_ratio" in output:
                output["importance_sampling_ratio"] = torch.ones_like(output["importance_sampling_ratio"])
        self._outer_step_times["generation"] += time.perf_counter() - start
        return output

    def _prepare_inputs(self, generation_batch):
        # Mirrors TRL 1.16 `GRPOTrainer._prepare_inputs` (train branch) with two changes: the buffer is shuffled by
        # whole groups instead of row by row, and a resume realigns the outer steps (see the comment below).
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._buffered_inputs is None and self.state.global_step > 0:
            # Resumed from a checkpoint. The buffer and its µ were not saved, so the outer step is regenerated with the
            # restored θ as µ (fresh samples of the same prompts), and the remaining inner steps train on it. Restoring
            # TRL's micro-step counter keeps later outer steps where they were.
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
            if self._step % generate_every:
                logger.warning(
                    f"Resumed inside an outer step (global step {self.state.global_step}): regenerating its inference "
                    "batch with the restored policy as the behaviour policy µ."
                )
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            batch = split_pixel_values_by_grid(batch)
            self._buffer_group_order = torch.randperm(len(generation_batch) // self.num_generations)
            self._buffer_prompts = [x.get("prompt") for x in generation_batch]
            batch = shuffle_groups(batch, self.num_generations, self._buffer_group_order)
            micro_batches = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(micro_batch) for micro_batch in micro_batches]
            self._resample_from = None
        elif self._resample_from is not None:
            self._resample_stale_rows(generation_batch)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _resample_stale_rows(self, generation_batch):
        """Adaptive H: the micro-batches from `_resample_from` on are stale; sample their prompts again with the current
        policy, which is their µ from now on. Same prompts, same micro-batch layout, fresh completions."""
        first, self._resample_from = self._resample_from, None
        if [x.get("prompt") for x in generation_batch] != self._buffer_prompts:
            raise RuntimeError("Adaptive H: the data loader changed prompts inside an outer step; cannot re-sample.")
        group_size, rows_per_micro_batch = self.num_generations, self.args.per_device_train_batch_size
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

    # ---------------------------------------------------------------------------------------------------------------
    # 2. Advantage, recomputed at every optimizer step with the current θ
    # ---------------------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        # Extends TRL 1.16: TRL's `_compute_loss` runs one forward pass of the micro-batch, then reads
        # inputs["advantages"]. RAPID's advantage depends on that pass's log-probs, so when the micro-batch holds whole
        # groups we hand it to `_get_per_token_logps_and_entropies`, which fills the advantages in between.
        if self.model.training:
            if self._step % self.args.gradient_accumulation_steps == 0:
                inner_step = (self._step % (self.args.steps_per_generation * self.num_iterations)) // (
                    self.args.gradient_accumulation_steps
                )
                self._metrics["train"]["rapid/inner_step"].append(float(inner_step))
            if self._whole_groups_per_micro_batch:
                self._loss_inputs_awaiting_advantages = inputs
            elif self._step % self.args.gradient_accumulation_steps == 0:
                self._set_optimizer_step_advantages()
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs_awaiting_advantages = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        # Extends TRL 1.16 twice. (1) Its first call after a recorded generation is the no-grad µ pass of
        # `_generate_and_score_completions` (`old_per_token_logps`): answered from the sampler, without a forward pass.
        # (2) After the loss's forward pass, set the waiting micro-batch's advantages from its log-probs.
        if self._sampled_behaviour is not None:
            record, self._sampled_behaviour = self._sampled_behaviour, None
            return self._sampler_behaviour_logps(record, input_ids, attention_mask, logits_to_keep), None, None
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if self._loss_inputs_awaiting_advantages is not None:
            inputs, self._loss_inputs_awaiting_advantages = self._loss_inputs_awaiting_advantages, None
            self._set_advantages([inputs], [logps.detach()])
        return logps, entropies, aux_loss

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

    @torch.no_grad()
    def _set_optimizer_step_advantages(self):
        """Groups span micro-batches: one no-grad forward over the optimizer step's micro-batches gives every member's
        log-prob under θ, which stays fixed across gradient accumulation, so the advantages are exact."""
        first = self._step % self.args.steps_per_generation
        micro_batches = self._buffered_inputs[first : first + self.args.gradient_accumulation_steps]
        logps = []
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            for micro_batch in micro_batches:
                completion_ids = micro_batch["completion_ids"]
                input_ids = torch.cat([micro_batch["prompt_ids"], completion_ids], dim=1)
                attention_mask = torch.cat([micro_batch["prompt_mask"], micro_batch["completion_mask"]], dim=1)
                step_logps, _, _ = super()._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, completion_ids.size(1),
                    **{key: micro_batch.get(key) for key in MODEL_INPUT_KEYS},
                )
                logps.append(step_logps)
        self._set_advantages(micro_batches, logps)

    def _set_advantages(self, micro_batches: list[dict], logps: list[torch.Tensor]):
        """Write RAPID's advantage into each micro-batch (in place) and log the weight diagnostics."""

        def cat(key):
            return torch.cat([micro_batch[key] for micro_batch in micro_batches])

        # With H = 1 TRL stores no µ, since θ = µ: the current log-probs are the behaviour log-probs.
        behaviour = torch.cat(
            [micro_batch.get("old_per_token_logps", lp) for micro_batch, lp in zip(micro_batches, logps, strict=True)]
        )
        masks = [mb["completion_mask"] * mb["tool_mask"] if "tool_mask" in mb else mb["completion_mask"] for mb in micro_batches]
        log_weights = sequence_log_weights(torch.cat(logps), behaviour, torch.cat(masks))
        group_ids = cat(GROUP_IDS)
        reward_scale = cat(REWARD_SCALE) if REWARD_SCALE in micro_batches[0] else None
        advantages = rapid_advantages(
            cat(REWARDS), truncated_weights(log_weights, self.eta), group_ids, reward_scale, self.args.baseline
        )
        for micro_batch, chunk in zip(micro_batches, advantages.split([len(mb[REWARDS]) for mb in micro_batches])):
            micro_batch["advantages"] = chunk
        stats = self._log_weight_diagnostics(log_weights, group_ids)
        if self._adaptive_h is not None:  # the step's ESS/G, weighted by its whole groups (rows / G of them)
            num_groups = len(group_ids) / self.num_generations
            self._step_ess.append(torch.stack([stats["ess"] * num_groups, stats["ess"].new_tensor(num_groups)]))

    def _log_weight_diagnostics(self, log_weights, group_ids):
        # Kept on the device: gathered over processes and read back once per logging step (see `log`), so a
        # micro-batch costs no collective and no host sync here.
        stats = weight_diagnostics(log_weights, self.eta, group_ids)
        self._weight_stat_names = list(stats)
        self._weight_stats.append(torch.stack(list(stats.values())).float())
        return stats

    def _flush_weight_diagnostics(self):
        """Called by `log` before TRL averages its metrics: the buffered diagnostics become TRL's per-micro-batch
        values (max of weight_max over processes, mean of the others), averaged over the logging window as before."""
        if self.model.training and self._weight_stats:
            stats = self.accelerator.gather(torch.stack(self._weight_stats).unsqueeze(0))  # (processes, batches, stats)
            self._weight_stats = []
            for name, column in zip(self._weight_stat_names, stats.unbind(-1), strict=True):
                per_batch = column.max(dim=0).values if name == "weight_max" else column.mean(dim=0)
                self._metrics["train"][f"rapid/{name}"].extend(per_batch.tolist())

    # ---------------------------------------------------------------------------------------------------------------
    # 3. Update: TRL's surrogate loss runs unchanged; only wall time is added here
    # ---------------------------------------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch):
        # Extends TRL 1.16 (which counts micro-steps in `self._step`): log generation vs training time per outer step.
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        times = self._outer_step_times
        times["total"] += time.perf_counter() - start
        if self._step % (self.args.steps_per_generation * self.num_iterations) == 0:
            self._metrics["train"]["rapid/generation_time"].append(times["generation"])
            self._metrics["train"]["rapid/train_time"].append(times["total"] - times["generation"])
            self._outer_step_times = {"generation": 0.0, "total": 0.0}
        if self._adaptive_h is not None and self._step % self.args.gradient_accumulation_steps == 0:
            self._decide_h()
        return loss

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

    # ---------------------------------------------------------------------------------------------------------------
    # Logging: the buffered weight diagnostics and RAPID's running totals
    # ---------------------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Extends TRL 1.16: every training log carries the running count of skipped updates (none under DeepSpeed,
        # where nothing is skipped).
        self._flush_weight_diagnostics()  # RAPID's weight diagnostics, buffered on the device since the last log
        if self.model.training and "loss" in logs:
            if not self.is_deepspeed_enabled:
                logs["rapid/skipped_updates"] = float(self._skipped_updates)
            if self._adaptive_h is not None:  # running totals, like skipped_updates (TRL would average them)
                logs["rapid/resamples"] = float(self._adaptive_h.resamples)
                logs["rapid/wasted_completions"] = float(self._adaptive_h.wasted_rows * self.accelerator.num_processes)
        super().log(logs, start_time)

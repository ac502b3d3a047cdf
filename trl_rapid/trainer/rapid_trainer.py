"""RapidTrainer: TRL's GRPOTrainer with RAPID's importance-weighted group advantage (arXiv 2510.03515).

One outer step, read top to bottom:
  1. rollout   — `_prepare_inputs` asks TRL for one generation batch of N_inference completions (N_inference / world
                 size per process), with rewards and the behaviour log-probs µ (read off the sampler when it is exact,
                 see sampler_logprobs.py, else recomputed); it is shuffled row by row (layout "rows", as TRL does) or
                 by whole groups (layout "groups") and cut into micro-batches.
  2. advantage — at every micro-batch, the hook `advantages_from_loss_forward` recomputes
                 A_i = R_i − (1/G) Σ_j min(π_θ/µ, η) R_j with the current θ (estimator.py) from the log-probs of the
                 loss's own forward pass; under "rows" the other group members' weights come from the buffer's cache
                 (row_layout.py). TRL 1.16 has no seam there: ../compat/grpo.py is the adapter that calls the hook.
  3. update    — TRL's `_compute_loss` applies its surrogate (any `loss_type`) with that advantage; H optimizer steps
                 consume the buffer before the next rollout.

Every override mirrors TRL 1.16.0's `GRPOTrainer` and names the method it extends. Opt-in parts live in mixins beside
this file: µ read off the sampler (sampler_behaviour.py), adaptive H (adaptive_h.py), fault tolerance (gradient guard,
finite and atomic checkpoints, resume: fault_tolerance.py); the "rows" layout's weight cache is row_layout.py.
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
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from ..compat.grpo import GRPOForwardAdapter, trl_forward_logps, trl_recomputes_behaviour_logps
from ..config import RapidConfig
from ..estimator import rapid_advantages, sequence_log_weights, truncated_weights, weight_diagnostics
from ..faults import non_finite_rewards_to_nan
from ..vllm_engine import server_weight_sync, vllm_setup
from .adaptive_h import AdaptiveHMixin
from .batches import GROUP_IDS, MODEL_INPUT_KEYS, REWARD_SCALE, REWARDS, shuffle_groups
from .fault_tolerance import FaultToleranceMixin
from .row_layout import ROW_INDEX, BufferWeights
from .sampler_behaviour import SamplerBehaviourMixin
from .scale_out import ScaleOutMixin

logger = get_logger(__name__)


class RapidTrainer(FaultToleranceMixin, ScaleOutMixin, SamplerBehaviourMixin, AdaptiveHMixin, GRPOForwardAdapter,
                   GRPOTrainer):
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
        if args.micro_batch_layout == "rows" and args.baseline_weight_source == "forward" and self._sharded_model():
            raise ValueError(
                "baseline_weight_source='forward' runs a data-dependent number of no-grad forward passes on each "
                "process, which a sharded model (FSDP, DeepSpeed ZeRO-3) cannot take: every forward is a collective. "
                "Use baseline_weight_source='cache' (the default) or micro_batch_layout='groups'."
            )
        self.behaviour_logprobs = self._behaviour_logprobs_source(args)
        # TRL recomputes µ after generation whenever a batch serves more than one micro-step; with µ from the sampler
        # that pass is answered from what `generate` recorded (SamplerBehaviourMixin.behaviour_logps_from_sampler).
        self._mu_from_sampler = self.behaviour_logprobs == "sampler" and trl_recomputes_behaviour_logps(self)
        self._weight_stats = []  # per micro-batch diagnostics, kept on the device until the next log
        dropout = {k: v for k, v in self.model.config.to_dict().items() if "dropout" in k and isinstance(v, float) and v > 0}
        if dropout:
            warnings.warn(
                f"The model has dropout ({dropout}): log-probs of the same completion differ between forward passes, so "
                "RAPID's importance weights are not exactly 1 on the first step after generation. Set these to 0 in "
                "the model config (the paper's models have none).",
                stacklevel=2,
            )
        # Layout "rows": the buffer's per-row rewards, groups and cached weights (row_layout.py), and where each row
        # sits among the buffered micro-batches (for baseline_weight_source="forward").
        self._rows_layout = args.micro_batch_layout == "rows"
        self._buffer_weights, self._row_micro_batch, self._row_position = None, None, None
        # Layout "groups": the loss's own forward pass gives every group member's log-prob only when micro-batches hold
        # whole groups.
        self._whole_groups_per_micro_batch = args.per_device_train_batch_size % args.num_generations == 0
        if not self._rows_layout and not self._whole_groups_per_micro_batch:
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
        self._buffer_group_order = None  # layout "groups": the order of the buffer's groups
        self._init_adaptive_h(args)  # off unless optimizer_steps_per_generation="auto" (adaptive_h.py)
        self._outer_step_times = {"generation": 0.0, "total": 0.0}

    def _sharded_model(self) -> bool:
        """True under FSDP or DeepSpeed ZeRO-3, where a forward pass gathers parameters from every process."""
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        return bool(self.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3))

    # ---------------------------------------------------------------------------------------------------------------
    # 1. Rollout
    # ---------------------------------------------------------------------------------------------------------------
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
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output  # evaluation runs on-policy (θ = µ): TRL's group-mean advantage is RAPID's

        group_size = self.num_generations
        prompts = [x.get("prompt") for x in inputs]
        # (An adaptive-H re-sample under layout "rows" brings single rows of many groups: checked against the buffer.)
        if not self._resampling_rows and (len(prompts) % group_size or any(
            prompts[i] != prompts[i - i % group_size] for i in range(len(prompts))
        )):
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
        # Mirrors TRL 1.16 `GRPOTrainer._prepare_inputs` (train branch) with three changes: layout "rows" keeps TRL's
        # row shuffle but records each row's place (its weight is cached per row), layout "groups" shuffles whole
        # groups instead, and a resume realigns the outer steps (see the comment below).
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
            self._buffer_prompts = [x.get("prompt") for x in generation_batch]
            if self._rows_layout:
                batch[ROW_INDEX] = torch.arange(len(generation_batch), device=batch[REWARDS].device)
                self._buffer_weights = BufferWeights(batch[REWARDS], batch[GROUP_IDS], batch.get(REWARD_SCALE),
                                                     step=self._step // self.args.gradient_accumulation_steps)
                batch = shuffle_sequence_dict(batch)  # TRL's own row shuffle, as in (b)
            else:
                self._buffer_group_order = torch.randperm(len(generation_batch) // self.num_generations)
                batch = shuffle_groups(batch, self.num_generations, self._buffer_group_order)
            micro_batches = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(micro_batch) for micro_batch in micro_batches]
            self._locate_rows(0)
            self._resample_from = None
        elif self._resample_from is not None:
            self._resample_stale_rows(generation_batch)
        if self._step % self.args.gradient_accumulation_steps == 0:  # which of the H optimizer steps this one is
            inner_step = (self._step % generate_every) // self.args.gradient_accumulation_steps
            self._metrics["train"]["rapid/inner_step"].append(float(inner_step))
        micro_batch = self._buffered_inputs[self._step % self.args.steps_per_generation]
        self._before_loss_forward(micro_batch)
        return micro_batch

    def _locate_rows(self, first: int):
        """Layout "rows": remember which buffered micro-batch (from `first` on) holds each row, and where."""
        if not self._rows_layout:
            return
        if first == 0:
            size = len(self._buffer_weights.rewards)
            self._row_micro_batch = torch.full((size,), -1, dtype=torch.long)
            self._row_position = torch.full((size,), -1, dtype=torch.long)
        for index, micro_batch in enumerate(self._buffered_inputs[first:], start=first):
            rows = micro_batch[ROW_INDEX].cpu()
            self._row_micro_batch[rows] = index
            self._row_position[rows] = torch.arange(len(rows))

    # ---------------------------------------------------------------------------------------------------------------
    # 2. Advantage, recomputed at every micro-batch with the current θ
    # ---------------------------------------------------------------------------------------------------------------
    def advantages_from_loss_forward(self, micro_batch: dict, policy_logps: torch.Tensor) -> torch.Tensor:
        """The advantage hook: RAPID's advantage of every row of a training micro-batch, from `policy_logps`, the
        per-token log π_θ of its rows from the loss's own forward pass (detached). Called once per training micro-batch,
        after that forward and before TRL's loss reads any advantage (../compat/grpo.py); also stored in `micro_batch`.

        Layout "rows", or "groups" with whole groups per micro-batch: computed here. Groups spanning micro-batches: the
        whole optimizer step's advantages were set before its first forward (`_before_loss_forward`)."""
        if self._rows_layout or self._whole_groups_per_micro_batch:
            self._set_advantages([micro_batch], [policy_logps])
        return micro_batch["advantages"]

    def _before_loss_forward(self, micro_batch: dict):
        """What the advantage needs before the loss's forward pass, with the θ it will differentiate (no-grad passes
        run here, before the loss's graph holds memory): layout "rows" with baseline_weight_source="forward" refreshes
        the other group members' weights; groups spanning micro-batches get the optimizer step's exact advantages."""
        if self._rows_layout:
            if self.args.baseline_weight_source == "forward":
                self._refresh_member_weights(micro_batch)
        elif not self._whole_groups_per_micro_batch and self._step % self.args.gradient_accumulation_steps == 0:
            self._set_optimizer_step_advantages()

    @torch.no_grad()
    def _forward_logps(self, micro_batch: dict, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log π_θ (current θ, no grad) of a buffered micro-batch's completions, or of its rows `positions`."""
        def pick(value):
            return value if positions is None else value[positions]

        completion_ids = pick(micro_batch["completion_ids"])
        input_ids = torch.cat([pick(micro_batch["prompt_ids"]), completion_ids], dim=1)
        attention_mask = torch.cat([pick(micro_batch["prompt_mask"]), pick(micro_batch["completion_mask"])], dim=1)
        extra = {key: micro_batch.get(key) for key in MODEL_INPUT_KEYS}
        if positions is not None and any(value is not None for value in extra.values()):
            raise ValueError("baseline_weight_source='forward' cannot take a subset of a multimodal micro-batch's rows; "
                             "use baseline_weight_source='cache' or micro_batch_layout='groups'.")
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            return trl_forward_logps(self, self.model, input_ids, attention_mask, completion_ids.size(1), **extra)

    @staticmethod
    def _loss_mask(micro_batch: dict) -> torch.Tensor:
        """m_t: the completion tokens TRL's loss counts (tool outputs excluded)."""
        mask = micro_batch["completion_mask"]
        return mask * micro_batch["tool_mask"] if "tool_mask" in micro_batch else mask

    def _sequence_log_weights(self, micro_batch: dict, logps: torch.Tensor, positions=None) -> torch.Tensor:
        """log w of a micro-batch's rows (or of its rows `positions`) from their log-probs under θ."""
        # With H = 1 TRL stores no µ, since θ = µ: the current log-probs are the behaviour log-probs.
        behaviour = micro_batch.get("old_per_token_logps")
        if behaviour is None:
            behaviour = logps
        elif positions is not None:
            behaviour = behaviour[positions]
        mask = self._loss_mask(micro_batch)
        return sequence_log_weights(logps, behaviour, mask if positions is None else mask[positions])

    def _set_optimizer_step_advantages(self):
        """Layout "groups", groups spanning micro-batches: one no-grad forward over the optimizer step's micro-batches
        gives every member's log-prob under θ, which stays fixed across gradient accumulation, so the advantages are
        exact."""
        first = self._step % self.args.steps_per_generation
        micro_batches = self._buffered_inputs[first : first + self.args.gradient_accumulation_steps]
        self._set_advantages(micro_batches, [self._forward_logps(micro_batch) for micro_batch in micro_batches])

    def _refresh_member_weights(self, inputs: dict):
        """Layout "rows", baseline_weight_source="forward": before the loss, one no-grad forward pass over the members
        of the micro-batch's groups whose cached weight is not from the current θ (its own rows come from the loss's
        forward), in chunks of per_device_train_batch_size rows, so every weight its baselines read is exact."""
        step = self._step // self.args.gradient_accumulation_steps
        needed = self._buffer_weights.stale_members(inputs[ROW_INDEX], step).cpu()
        chunk = self.args.per_device_train_batch_size
        for index in self._row_micro_batch[needed].unique().tolist():
            micro_batch = self._buffered_inputs[index]
            rows = needed[self._row_micro_batch[needed] == index]
            for part in rows.split(chunk):
                positions = self._row_position[part].to(micro_batch["completion_ids"].device)
                logps = self._forward_logps(micro_batch, positions)
                self._buffer_weights.update(part, self._sequence_log_weights(micro_batch, logps, positions), step)

    def _set_advantages(self, micro_batches: list[dict], logps: list[torch.Tensor]):
        """Write RAPID's advantage into each micro-batch (in place) and log the weight diagnostics.

        Layout "groups": the micro-batches hold whole groups, and the baseline comes from their own log-weights.
        Layout "rows" (one micro-batch): its fresh log-weights go into the buffer's cache first, and each row's baseline
        is taken over its whole group from there (row_layout.py states how fresh each weight is)."""

        def cat(key):
            return torch.cat([micro_batch[key] for micro_batch in micro_batches])

        log_weights = torch.cat([self._sequence_log_weights(mb, lp) for mb, lp in zip(micro_batches, logps, strict=True)])
        if self._rows_layout:
            rows, step = cat(ROW_INDEX), self._step // self.args.gradient_accumulation_steps
            self._buffer_weights.update(rows, log_weights, step)
            advantages = self._buffer_weights.advantages(rows, self.eta, self.args.baseline)
            # A step holds ~one row per group: its ESS is that of its own rows pooled, not per group.
            group_ids = torch.zeros_like(rows)
            ages = self._buffer_weights.member_ages(rows, step)
        else:
            group_ids, ages = cat(GROUP_IDS), None
            reward_scale = cat(REWARD_SCALE) if REWARD_SCALE in micro_batches[0] else None
            advantages = rapid_advantages(
                cat(REWARDS), truncated_weights(log_weights, self.eta), group_ids, reward_scale, self.args.baseline
            )
        for micro_batch, chunk in zip(micro_batches, advantages.split([len(mb[REWARDS]) for mb in micro_batches])):
            micro_batch["advantages"] = chunk
        stats = self._log_weight_diagnostics(log_weights, group_ids, ages)
        self._record_step_ess(stats["ess"], len(group_ids) / self.num_generations)  # adaptive H (adaptive_h.py)

    def _log_weight_diagnostics(self, log_weights, group_ids, ages=None):
        # Kept on the device: gathered over processes and read back once per logging step (see `log`), so a
        # micro-batch costs no collective and no host sync here.
        stats = weight_diagnostics(log_weights, self.eta, group_ids)
        if ages is not None:  # layout "rows": how old the cached weights the baselines read were, in optimizer steps
            stats["weight_age"], stats["weight_age_max"] = ages.double().mean(), ages.double().max()
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
                per_batch = column.max(dim=0).values if name.endswith("_max") else column.mean(dim=0)
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
        return loss

    # ---------------------------------------------------------------------------------------------------------------
    # Logging: the buffered weight diagnostics and the running count of skipped updates
    # ---------------------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Extends TRL 1.16: every training log carries the running count of skipped updates (none under DeepSpeed,
        # where nothing is skipped); adaptive H adds its own totals (adaptive_h.py).
        self._flush_weight_diagnostics()  # RAPID's weight diagnostics, buffered on the device since the last log
        if self.model.training and "loss" in logs and not self.is_deepspeed_enabled:
            logs["rapid/skipped_updates"] = float(self._skipped_updates)
        super().log(logs, start_time)

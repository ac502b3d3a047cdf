"""The "rows" micro-batch layout: the buffer is shuffled row by row, as TRL does, and the baseline still spans groups.

With whole groups per micro-batch (layout "groups") an optimizer step of N_step rows holds N_step / G prompts; TRL's
own big-batch mode shuffles rows, so its steps hold ~N_step distinct prompts, and that alone measured +0.05 held-out
accuracy on the headroom task (issue 15). Under "rows" a step holds about one row per group, so the loss's forward
pass gives the current weight w_j = π_θ(y_j|x)/µ(y_j|x) of its own rows only. `BufferWeights` keeps, per buffered row,
the last log-weight computed for it, and the baseline b(x) of every row is taken over its whole group from there.

Freshness rule (what the baseline of a row trained at optimizer step s reads for a member j of its group):
- `baseline_weight_source="cache"` (no extra forward): log w_j from the last forward pass that touched j since µ
  sampled it — the loss's forward at the step j was trained in, or at step s itself for the rows of step s and of
  earlier micro-batches of the same optimizer step; a member not trained on yet keeps w_j = 1, its value at θ = µ.
  A weight is therefore at most `H × num_iterations − 1` optimizer steps old; `rapid/weight_age` logs the mean age of
  the weights each baseline read (in optimizer steps), `rapid/weight_age_max` the oldest.
- `baseline_weight_source="forward"`: before the loss, one no-grad forward pass over the members of the micro-batch's
  groups whose weight is not from the current θ: every weight is fresh (age 0), the estimator exact, at the cost of a
  forward over ~(G − 1) rows per trained row.

Groups never leave one process's buffer (each process generates whole groups), so nothing is gathered across
processes.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd

from ..estimator import rapid_advantages, truncated_weights

# Key of each buffered row's index in the process's inference batch (its row in `BufferWeights`); TRL ignores it.
ROW_INDEX = "rapid_row_index"


class BufferWeights:
    """Per-row state of one process's buffered inference batch: reward, group, reward scale, and the cached log-weight.

    `updated_at[j]` is the optimizer step whose parameters gave `log_weights[j]`. A row starts at the step whose θ
    sampled it, with log w_j = 0: exact, since θ = µ there.
    """

    def __init__(self, rewards: torch.Tensor, group_ids: torch.Tensor, reward_scale: torch.Tensor | None, step: int):
        self.rewards = rewards.clone()
        self.group_ids = group_ids.clone()
        self.num_groups = int(group_ids.max()) + 1 if len(group_ids) else 0  # ids are 0 … groups − 1
        self.reward_scale = None if reward_scale is None else reward_scale.clone()
        self.log_weights = torch.zeros(len(rewards), dtype=torch.float32, device=rewards.device)
        self.updated_at = torch.full((len(rewards),), step, dtype=torch.long, device=rewards.device)

    def update(self, rows: torch.Tensor, log_weights: torch.Tensor, step: int) -> None:
        """Cache the log-weights of `rows` under the parameters of optimizer step `step`."""
        rows = rows.to(self.log_weights.device)
        self.log_weights[rows] = log_weights.detach().float().to(self.log_weights.device)
        self.updated_at[rows] = step

    def advantages(self, rows: torch.Tensor, eta: float, baseline: str) -> torch.Tensor:
        """A_i for `rows`: R_i − b(x) with b over each row's whole group, from the cached weights (estimator.py)."""
        all_advantages = rapid_advantages(self.rewards, truncated_weights(self.log_weights, eta), self.group_ids,
                                          self.reward_scale, baseline)
        return all_advantages[rows.to(all_advantages.device)]

    def members(self, rows: torch.Tensor) -> torch.Tensor:
        """Boolean mask over the buffer: the rows of the groups that `rows` belong to."""
        # Group ids are 0 … groups − 1 (RapidTrainer numbers each process's groups so): a lookup, no sort.
        chosen = torch.zeros(self.num_groups, dtype=torch.bool, device=self.group_ids.device)
        chosen[self.group_ids[rows.to(self.group_ids.device)]] = True
        return chosen[self.group_ids]

    def stale_members(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """Rows of the groups of `rows`, other than `rows`, whose cached weight is not from step `step`'s parameters."""
        stale = self.members(rows) & (self.updated_at != step)
        stale[rows.to(stale.device)] = False
        return stale.nonzero().squeeze(1)

    def member_ages(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """Age in optimizer steps of every weight the baselines of `rows` read (one entry per member, float)."""
        return (step - self.updated_at[self.members(rows)]).float()

    def replace(self, rows: torch.Tensor, rewards: torch.Tensor, reward_scale: torch.Tensor | None, step: int,
                scale_rewards: str) -> None:
        """Adaptive H re-sampled `rows` (same prompts, fresh completions, µ = θ at `step`): they take their new rewards
        and w = 1, and with `scale_rewards="group"` each group's reward std is taken again over its members now."""
        rows = rows.to(self.rewards.device)
        self.rewards[rows] = rewards.to(self.rewards.device)
        self.log_weights[rows] = 0.0
        self.updated_at[rows] = step
        if self.reward_scale is None:
            return
        if scale_rewards == "group":
            for group in torch.unique(self.group_ids[rows]):
                in_group = self.group_ids == group
                self.reward_scale[in_group] = nanstd(self.rewards[in_group])
        else:  # "batch": the re-sampled rows carry the std of the re-sampled batch (as with layout "groups")
            self.reward_scale[rows] = reward_scale.to(self.reward_scale.device)


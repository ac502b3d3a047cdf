"""RAPID's importance-weighted group advantage (arXiv 2510.03515, spec: shared/RAPID.md), as pure tensor functions.

Symbols, paper → code:

| paper | code | meaning |
|---|---|---|
| G | `group_ids` (rows sharing an id) | completions of one prompt: the group a baseline averages over |
| µ(y_t \\| x, y_<t) | `behaviour_logps` (B, T) | per-token log-prob under the behaviour policy that sampled the batch |
| π_θ(y_t \\| x, y_<t) | `logps` (B, T) | per-token log-prob under the current parameters θ |
| m_t | `mask` (B, T) | 1 for completion tokens, 0 for padding and anything after EOS |
| log w_j | `log_weights` (B,) | Σ_t m_t (log π_θ − log µ): sequence-level log importance weight |
| η | `eta` | truncation threshold: w̄ = min(w, η) |
| R_j | `rewards` (B,) | scalar outcome reward; NaN marks a completion no reward function could score |
| b(x) | `group_baseline(...)` | (1/G) Σ_j w̄_j R_j over the prompt's own group |
| A_i | `rapid_advantages(...)` | R_i − b(x) |

Nothing here keeps state or needs gradients: the trainer calls these with detached tensors at every optimizer step.
"""

from __future__ import annotations

import math

import torch

# exp() of a float64 overflows past ~709.78; diagnostics that report raw (untruncated) weights clamp there.
_MAX_LOG_FLOAT64 = 700.0


def sequence_log_weights(logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log w_j = Σ_t m_jt · (log π_θ(y_jt) − log µ(y_jt)), shape (B,).

    Masked positions are dropped with `where`, not multiplied by 0, so a NaN or ±inf log-prob on a padding token
    (vLLM can report those) never reaches the sum.
    """
    diff = torch.where(mask.bool(), logps.float() - behaviour_logps.float(), torch.zeros((), device=logps.device))
    return diff.sum(dim=-1)


def truncated_weights(log_weights: torch.Tensor, eta: float) -> torch.Tensor:
    """w̄_j = min(w_j, η), computed as exp(min(log w_j, log η)) so no unclamped sum is ever exponentiated."""
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}.")
    return torch.exp(torch.clamp(log_weights, max=math.log(eta)))


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids to 0..num_groups-1 (row → group index)."""
    _, index = torch.unique(group_ids, return_inverse=True)
    return index, int(index.max().item()) + 1 if index.numel() else 0


def group_baseline(weights: torch.Tensor, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """b(x) = (1/G) Σ_{j ∈ group(x)} w̄_j R_j, broadcast back to every row of the group, shape (B,).

    Groups are the rows sharing a `group_ids` value (one prompt's G completions), never a block of rows, so shuffling
    rows cannot mix prompts. Rows whose reward is NaN (unscorable) are left out of both the sum and G, as TRL does.
    """
    index, num_groups = _group_index(group_ids)
    scored = ~torch.isnan(rewards)
    weighted = torch.where(scored, weights * rewards, torch.zeros((), device=rewards.device))
    sums = torch.zeros(num_groups, dtype=weighted.dtype, device=rewards.device).index_add_(0, index, weighted)
    counts = torch.zeros(num_groups, dtype=weighted.dtype, device=rewards.device).index_add_(
        0, index, scored.to(weighted.dtype)
    )
    return (sums / counts.clamp(min=1.0))[index]


def rapid_advantages(
    rewards: torch.Tensor,
    weights: torch.Tensor,
    group_ids: torch.Tensor,
    reward_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """A_i = R_i − b(x), shape (B,). Unscorable rows (NaN reward) get A = 0, so they do not move the policy.

    `reward_scale`, when given, divides the advantage (TRL's `scale_rewards` option: a per-row reward std). The paper's
    form has no scaling, which is RapidConfig's default.
    """
    advantages = rewards - group_baseline(weights, rewards, group_ids)
    if reward_scale is not None:
        advantages = advantages / (reward_scale + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def weight_diagnostics(log_weights: torch.Tensor, eta: float, group_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagnostics of the importance weights, each a 0-dim float tensor.

    - `weight_mean`, `weight_max`: of the raw weights w before truncation (exp of log weights clamped at 700, so they
      stay finite in float64).
    - `truncated_frac`: share of rows with w > η.
    - `ess`: per-group effective sample size (Σ w̄)² / (G Σ w̄²) of the truncated weights, averaged over groups;
      1 when all weights in a group are equal, 1/G when one completion carries the group.
    - `staleness`: |log mean_j w̄_j|, the authors' staleness measure; 0 on-policy.
    """
    log_w = log_weights.double()
    raw = torch.exp(torch.clamp(log_w, max=_MAX_LOG_FLOAT64))
    w_bar = truncated_weights(log_w, eta)

    index, num_groups = _group_index(group_ids)
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=log_w.device)
    sum_w = zeros.clone().index_add_(0, index, w_bar)
    sum_w2 = zeros.clone().index_add_(0, index, w_bar * w_bar)
    size = zeros.clone().index_add_(0, index, torch.ones_like(w_bar))
    ess = torch.where(sum_w2 > 0, sum_w * sum_w / (size * sum_w2).clamp(min=1e-300), torch.zeros_like(sum_w))

    return {
        "weight_mean": raw.mean(),
        "weight_max": raw.max(),
        "truncated_frac": (log_w > math.log(eta)).double().mean(),
        "ess": ess.mean(),
        "staleness": torch.log(w_bar.mean().clamp(min=1e-300)).abs(),
    }

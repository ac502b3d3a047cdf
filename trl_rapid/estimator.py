"""RAPID's importance-weighted group advantage (arXiv 2510.03515, spec: docs/RAPID.md), as pure tensor functions.

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
| b(x) | `group_baseline(...)` | the importance-weighted group baseline; `kind` picks its form (below) |
| A_i | `rapid_advantages(...)` | R_i − b(x) |

Baseline forms (`BASELINES`; same truncated weights w̄_j, same group, NaN rewards left out of every sum and of G):

| kind | b for row i | at θ = µ (every w̄ = 1) |
|---|---|---|
| `paper` | (1/G) Σ_j w̄_j R_j, the sample itself included | the group mean (GRPO) |
| `self_normalized` | Σ_j w̄_j R_j / Σ_j w̄_j: the weights average to 1 inside the group | the group mean |
| `leave_one_out` | (1/(G−1)) Σ_{j≠i} w̄_j R_j: no correlation with row i's own gradient term | RLOO's baseline |

Nothing here keeps state or needs gradients: the trainer calls these with detached tensors at every optimizer step.
"""

from __future__ import annotations

import math

import torch

# exp() of a float64 overflows past ~709.78; diagnostics that report raw (untruncated) weights clamp there.
_MAX_LOG_FLOAT64 = 700.0


def sequence_log_weights(logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log w_j = Σ_t m_jt · (log π_θ(y_jt) − log µ(y_jt)), shape (B,), float32.

    Masked positions are dropped with `where`, not multiplied by 0, so a NaN or ±inf log-prob on a padding token
    (vLLM can report those) never reaches the sum. The differences are summed in float64 and rounded once to float32:
    on 4096 tokens whose ±3-nat log-ratios nearly cancel, a float32 sum was off by 5e-5 nats (5e-5 relative in w),
    this by 3e-8 (tests/test_log_weight_precision.py).
    """
    wide = torch.float32 if logps.device.type == "mps" else torch.float64  # MPS has no float64
    zero = torch.zeros((), dtype=wide, device=logps.device)
    diff = torch.where(mask.bool(), logps.to(wide) - behaviour_logps.to(wide), zero)
    return diff.sum(dim=-1).float()


def truncated_weights(log_weights: torch.Tensor, eta: float) -> torch.Tensor:
    """w̄_j = min(w_j, η), computed as exp(min(log w_j, log η)) so no unclamped sum is ever exponentiated."""
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}.")
    return torch.exp(torch.clamp(log_weights, max=math.log(eta)))


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids to 0..num_groups-1 (row → group index)."""
    _, index = torch.unique(group_ids, return_inverse=True)
    return index, int(index.max().item()) + 1 if index.numel() else 0


BASELINES = ("paper", "self_normalized", "leave_one_out")


def group_baseline(
    weights: torch.Tensor, rewards: torch.Tensor, group_ids: torch.Tensor, kind: str = "paper"
) -> torch.Tensor:
    """b(x) for every row, shape (B,): the importance-weighted baseline of the row's own group (forms: module docstring).

    Groups are the rows sharing a `group_ids` value (one prompt's G completions), never a block of rows, so shuffling
    rows cannot mix prompts. Rows whose reward is NaN (unscorable) are left out of the sums and of G, as TRL does.
    Degenerate groups: `self_normalized` falls back to the plain mean of the scored rewards when every weight
    underflowed to 0; `leave_one_out` gives a row with no other scored member the baseline R_i (advantage 0: nothing
    to compare it with).
    """
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}.")
    index, num_groups = _group_index(group_ids)
    scored = ~torch.isnan(rewards)
    zero = torch.zeros((), dtype=weights.dtype, device=rewards.device)
    weighted = torch.where(scored, weights * rewards, zero)

    def group_sum(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, values)

    sums, counts = group_sum(weighted), group_sum(scored.to(weighted.dtype))
    if kind == "paper":
        return (sums / counts.clamp(min=1.0))[index]
    if kind == "self_normalized":
        weight_sums = group_sum(torch.where(scored, weights, zero))
        plain_mean = group_sum(torch.where(scored, rewards, zero)) / counts.clamp(min=1.0)
        return torch.where(weight_sums > 0, sums / weight_sums.clamp(min=1e-30), plain_mean)[index]
    others = counts[index] - scored.to(weighted.dtype)  # scored members other than row i
    leave_one_out = (sums[index] - weighted) / others.clamp(min=1.0)
    return torch.where(others > 0, leave_one_out, rewards)


def rapid_advantages(
    rewards: torch.Tensor,
    weights: torch.Tensor,
    group_ids: torch.Tensor,
    reward_scale: torch.Tensor | None = None,
    baseline: str = "paper",
) -> torch.Tensor:
    """A_i = R_i − b(x), shape (B,). Unscorable rows (NaN reward) get A = 0, so they do not move the policy.

    `baseline` picks the form of b (`BASELINES`). `reward_scale`, when given, divides the advantage (TRL's
    `scale_rewards` option: a per-row reward std). The paper's form has no scaling, which is RapidConfig's default.

    With a scale, a group whose scored rewards are all equal gets A = 0, as GRPO's does. It carries no signal, but the
    paper's and the leave-one-out baselines are not its reward: the truncated weights need not average to 1, so every
    member gets R(1 − mean w̄) ≠ 0, and a std of 0 (+1e-4) would multiply that by 10⁴ (seen: accuracy collapsing to
    ~0 on the headroom task once most groups answered alike).
    """
    advantages = rewards - group_baseline(weights, rewards, group_ids, baseline)
    if reward_scale is not None:
        scaled = advantages / (reward_scale + 1e-4)
        advantages = torch.where(constant_reward_groups(rewards, group_ids), torch.zeros_like(scaled), scaled)
    return torch.nan_to_num(advantages, nan=0.0)


def constant_reward_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Per row, True when every scored reward of its group is equal (NaN rows left out), shape (B,)."""
    index, num_groups = _group_index(group_ids)
    scored = ~torch.isnan(rewards)
    inf = torch.full_like(rewards, math.inf)
    high = torch.full((num_groups,), -math.inf, dtype=rewards.dtype, device=rewards.device).scatter_reduce(
        0, index, torch.where(scored, rewards, -inf), reduce="amax")
    low = torch.full((num_groups,), math.inf, dtype=rewards.dtype, device=rewards.device).scatter_reduce(
        0, index, torch.where(scored, rewards, inf), reduce="amin")
    return (high == low)[index]


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

    return {
        "weight_mean": raw.mean(),
        "weight_max": raw.max(),
        "truncated_frac": (log_w > math.log(eta)).double().mean(),
        "ess": group_ess(log_w, eta, group_ids).mean(),
        "staleness": torch.log(w_bar.mean().clamp(min=1e-300)).abs(),
    }


def group_ess(log_weights: torch.Tensor, eta: float, group_ids: torch.Tensor) -> torch.Tensor:
    """ESS/G of each group, shape (num_groups,), float64: (Σ_j w̄_j)² / (G Σ_j w̄_j²) of the truncated weights.

    1 when every weight of the group is equal (on-policy: θ = µ), 1/G when one completion carries the group. Adaptive H
    (`adaptive.py`) reads its mean over the groups of an optimizer step.
    """
    w_bar = truncated_weights(log_weights.double(), eta)
    index, num_groups = _group_index(group_ids)
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=w_bar.device)
    sum_w = zeros.clone().index_add_(0, index, w_bar)
    sum_w2 = zeros.clone().index_add_(0, index, w_bar * w_bar)
    size = zeros.clone().index_add_(0, index, torch.ones_like(w_bar))
    return torch.where(sum_w2 > 0, sum_w * sum_w / (size * sum_w2).clamp(min=1e-300), torch.zeros_like(sum_w))

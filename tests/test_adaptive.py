"""The adaptive-H rule on hand-written ESS sequences."""

from trl_rapid.adaptive import AdaptiveH
from trl_rapid.estimator import group_ess


def run(rule, ess_per_step):
    return [rule.after_optimizer_step(k % rule.max_h, ess, rows_per_step=8) for k, ess in enumerate(ess_per_step)]


def test_a_policy_that_barely_moves_keeps_the_whole_batch():
    rule = AdaptiveH(max_h=4, threshold=0.8)
    assert run(rule, [1.0, 0.99, 0.97, 0.95] * 2) == [False] * 8
    assert rule.h_history == [4, 4] and rule.resamples == 0 and rule.wasted_rows == 0


def test_the_rest_is_resampled_once_ess_falls_below_the_threshold():
    rule = AdaptiveH(max_h=4, threshold=0.8)
    # step 1 is stale (0.7 < 0.8): steps 2 and 3 get fresh rows, whose ESS starts at 1 again
    decisions = run(rule, [1.0, 0.7, 1.0, 0.9])
    assert decisions == [False, True, False, False]
    assert rule.h_history == [2, 2]
    assert rule.resamples == 1 and rule.wasted_rows == 2 * 8


def test_the_last_step_of_an_outer_step_never_refreshes():
    rule = AdaptiveH(max_h=2, threshold=0.8)
    assert run(rule, [1.0, 0.1]) == [False, False]
    assert rule.wasted_rows == 0 and rule.h_history == [2]


def test_group_ess_hand_computed():
    import math

    import torch

    # group 0: w̄ = 1, 1 → ESS/G = 1 ; group 1: w̄ = 2 (truncated from e^3), 0.5 → (2.5)² / (2 · 4.25) = 0.735…
    log_w = torch.tensor([0.0, 0.0, 3.0, math.log(0.5)])
    ess = group_ess(log_w, eta=2.0, group_ids=torch.tensor([5, 5, 9, 9]))
    torch.testing.assert_close(ess, torch.tensor([1.0, 6.25 / 8.5], dtype=torch.float64))


def test_a_sample_serves_at_least_two_steps_even_at_threshold_one():
    # µ read off the sampler differs from the trainer's forward by rounding, so ESS at a sample's first step can be
    # 1 − 1e-7: with threshold 1 that must not re-sample after every step.
    rule = AdaptiveH(max_h=4, threshold=1.0)
    decisions = run(rule, [1 - 1e-7, 1 - 1e-3, 1 - 1e-7, 1 - 1e-3])
    assert decisions == [False, True, False, False]
    assert rule.h_history == [2, 2]

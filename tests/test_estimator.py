import math

import pytest
import torch

from trl_rapid.estimator import (
    group_baseline,
    rapid_advantages,
    sequence_log_weights,
    truncated_weights,
    weight_diagnostics,
)

GROUPS = torch.tensor([0, 0, 1, 1])


def test_sequence_log_weights_sum_masked_token_differences():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -4.0]])
    behaviour = torch.tensor([[-1.5, -2.0, -10.0], [-2.0, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # row 0: 0.5 + 0 ; row 1: 1 - 0.5 ; the third (masked) column never counts
    torch.testing.assert_close(sequence_log_weights(logps, behaviour, mask), torch.tensor([0.5, 0.5]))


def test_padding_and_tokens_after_eos_change_no_weight():
    torch.manual_seed(0)
    logps, behaviour = -torch.rand(3, 6), -torch.rand(3, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    reference = sequence_log_weights(logps, behaviour, mask)

    noisy_logps, noisy_behaviour = logps.clone(), behaviour.clone()
    padding = mask == 0
    noisy_logps[padding] = torch.tensor([float("nan"), float("inf"), -1e9, 3.0, 5.0, 7.0, 9.0, 1.0])
    noisy_behaviour[padding] = float("-inf")
    torch.testing.assert_close(sequence_log_weights(noisy_logps, noisy_behaviour, mask), reference)


def test_hand_computed_advantages_with_truncation():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    log_w = torch.log(torch.tensor([1.5, 0.5, 4.0, 1.0]))
    w_bar = truncated_weights(log_w, eta=2.0)
    torch.testing.assert_close(w_bar, torch.tensor([1.5, 0.5, 2.0, 1.0]))
    # group 0: b = (1.5·1 + 0.5·0)/2 = 0.75 ; group 1: b = (2·1 + 1·1)/2 = 1.5
    torch.testing.assert_close(group_baseline(w_bar, rewards, GROUPS), torch.tensor([0.75, 0.75, 1.5, 1.5]))
    torch.testing.assert_close(rapid_advantages(rewards, w_bar, GROUPS), torch.tensor([0.25, -0.75, -0.5, -0.5]))


def test_on_policy_weights_give_the_plain_group_mean():
    rewards = torch.tensor([0.2, 0.6, 1.0, 3.0, 5.0, 7.0])
    groups = torch.tensor([4, 4, 4, 9, 9, 9])
    w = truncated_weights(torch.zeros(6), eta=2.0)
    assert torch.equal(w, torch.ones(6))
    torch.testing.assert_close(rapid_advantages(rewards, w, groups), torch.tensor([-0.4, 0.0, 0.4, -2.0, 0.0, 2.0]))


def test_groups_are_ids_not_blocks_of_rows():
    # Interleaved rows, as after a row-level shuffle: the baseline must still average within each prompt's group.
    rewards = torch.tensor([1.0, 10.0, 3.0, 30.0])
    groups = torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(rapid_advantages(rewards, torch.ones(4), groups), torch.tensor([-1.0, -10.0, 1.0, 10.0]))


def test_one_groups_advantages_ignore_other_groups_rewards():
    w = torch.tensor([1.2, 0.7, 1.9, 0.3])
    base = rapid_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), w, GROUPS)
    changed = rapid_advantages(torch.tensor([1.0, 0.0, 100.0, -7.0]), w, GROUPS)
    torch.testing.assert_close(changed[:2], base[:2])
    assert not torch.allclose(changed[2:], base[2:])


def test_truncation_is_min_not_max():
    w = truncated_weights(torch.log(torch.tensor([0.1, 1.0, 2.0, 5.0])), eta=2.0)
    torch.testing.assert_close(w, torch.tensor([0.1, 1.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match="eta"):
        truncated_weights(torch.zeros(1), eta=0.0)


def test_extreme_log_ratios_stay_finite():
    logps = torch.tensor([[1e4, 0.0], [-1e4, 0.0], [0.0, 0.0], [0.0, 0.0]])
    log_w = sequence_log_weights(logps, torch.zeros(4, 2), torch.ones(4, 2))
    w = truncated_weights(log_w, eta=2.0)
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 1.0, 1.0]))
    advantages = rapid_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0]), w, GROUPS)
    assert torch.isfinite(advantages).all()
    stats = weight_diagnostics(log_w, 2.0, GROUPS)
    assert all(torch.isfinite(v) for v in stats.values()), stats


def test_unscorable_rewards_leave_the_baseline_and_get_zero_advantage():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 1.0])
    advantages = rapid_advantages(rewards, torch.ones(4), GROUPS)
    torch.testing.assert_close(advantages, torch.tensor([0.0, 0.0, -0.5, 0.5]))


def test_reward_scale_divides_the_advantage():
    advantages = rapid_advantages(torch.tensor([0.0, 2.0, 0.0, 2.0]), torch.ones(4), GROUPS, torch.full((4,), 2.0))
    torch.testing.assert_close(advantages, torch.tensor([-1.0, 1.0, -1.0, 1.0]) / (2.0 + 1e-4))


def test_weight_diagnostics_hand_computed():
    log_w = torch.log(torch.tensor([1.5, 0.5, 4.0, 1.0]))
    stats = weight_diagnostics(log_w, eta=2.0, group_ids=GROUPS)
    assert stats["weight_mean"].item() == pytest.approx((1.5 + 0.5 + 4.0 + 1.0) / 4)
    assert stats["weight_max"].item() == pytest.approx(4.0)
    assert stats["truncated_frac"].item() == pytest.approx(0.25)
    # ESS/G: group 0 (1.5, 0.5) → 2²/(2·2.5) = 0.8 ; group 1 (2, 1) → 3²/(2·5) = 0.9
    assert stats["ess"].item() == pytest.approx(0.85)
    assert stats["staleness"].item() == pytest.approx(abs(math.log((1.5 + 0.5 + 2.0 + 1.0) / 4)))


def test_on_policy_diagnostics_are_neutral():
    stats = weight_diagnostics(torch.zeros(6), 2.0, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert {k: v.item() for k, v in stats.items()} == {
        "weight_mean": 1.0, "weight_max": 1.0, "truncated_frac": 0.0, "ess": 1.0, "staleness": 0.0,
    }

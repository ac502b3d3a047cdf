"""The three baseline forms of RAPID's importance-weighted group baseline, against hand-computed values."""

import pytest
import torch

from trl_rapid.estimator import BASELINES, group_baseline, rapid_advantages, truncated_weights

NAN = float("nan")
# Group 7: rewards 1, 0, 1 with truncated weights 1.5, 0.5, 2.0 (Σ w̄R = 3.5, Σ w̄ = 4).
# Group 3: rewards 2, NaN, 4 with weights 1, 1.2, 0.5 — the NaN row is unscorable (Σ w̄R = 4, Σ w̄ = 1.5, G = 2).
REWARDS = torch.tensor([1.0, 0.0, 1.0, 2.0, NAN, 4.0])
WEIGHTS = torch.tensor([1.5, 0.5, 2.0, 1.0, 1.2, 0.5])
GROUPS = torch.tensor([7, 7, 7, 3, 3, 3])


def test_paper_form_includes_the_sample_itself():
    expected = torch.tensor([3.5 / 3, 3.5 / 3, 3.5 / 3, 2.0, 2.0, 2.0])
    torch.testing.assert_close(group_baseline(WEIGHTS, REWARDS, GROUPS, "paper"), expected)
    # the default is the paper's form
    torch.testing.assert_close(group_baseline(WEIGHTS, REWARDS, GROUPS), expected)


def test_self_normalized_form_divides_by_the_weight_sum():
    expected = torch.tensor([3.5 / 4, 3.5 / 4, 3.5 / 4, 4 / 1.5, 4 / 1.5, 4 / 1.5])
    torch.testing.assert_close(group_baseline(WEIGHTS, REWARDS, GROUPS, "self_normalized"), expected)


def test_leave_one_out_form_leaves_the_sample_out():
    baseline = group_baseline(WEIGHTS, REWARDS, GROUPS, "leave_one_out")
    # row 0: (3.5 − 1.5)/2, row 1: (3.5 − 0)/2, row 2: (3.5 − 2)/2; row 3: (4 − 2)/1, row 5: (4 − 2)/1
    torch.testing.assert_close(baseline[[0, 1, 2, 3, 5]], torch.tensor([1.0, 1.75, 0.75, 2.0, 2.0]))


@pytest.mark.parametrize("kind", BASELINES)
def test_unscorable_rows_get_zero_advantage_in_every_form(kind):
    advantages = rapid_advantages(REWARDS, WEIGHTS, GROUPS, baseline=kind)
    assert advantages[4] == 0.0
    assert torch.isfinite(advantages).all()


def test_on_policy_paper_and_self_normalized_are_the_group_mean():
    rewards = torch.tensor([0.2, 0.6, 1.0, 3.0, 5.0, 7.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    on_policy = truncated_weights(torch.zeros(6), eta=2.0)  # H = 1: θ = µ
    mean = torch.tensor([0.6, 0.6, 0.6, 5.0, 5.0, 5.0])
    for kind in ("paper", "self_normalized"):
        torch.testing.assert_close(group_baseline(on_policy, rewards, groups, kind), mean)


def test_on_policy_leave_one_out_is_rloo():
    # RLOO (Kool et al. 2019; Ahmadian et al. 2024): b_i = mean of the other G − 1 rewards of the prompt.
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0])
    groups = torch.zeros(4, dtype=torch.long)
    expected = torch.tensor([(12 - 1) / 3, (12 - 2) / 3, (12 - 3) / 3, (12 - 6) / 3])
    advantages = rapid_advantages(rewards, torch.ones(4), groups, baseline="leave_one_out")
    torch.testing.assert_close(advantages, rewards - expected)
    # RLOO's advantage is G/(G−1) times the mean-centred one
    torch.testing.assert_close(advantages, (rewards - rewards.mean()) * 4 / 3)


def test_degenerate_groups():
    # one scored member: leave-one-out has nothing to compare with (advantage 0); self-normalised with weights that
    # underflowed to 0 falls back to the plain mean.
    rewards = torch.tensor([5.0, NAN, 1.0, 3.0])
    weights = torch.tensor([1.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1])
    loo = rapid_advantages(rewards, weights, groups, baseline="leave_one_out")
    assert loo[0] == 0.0 and loo[1] == 0.0
    torch.testing.assert_close(group_baseline(weights, rewards, groups, "self_normalized")[2:], torch.tensor([2.0, 2.0]))


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline must be one of"):
        group_baseline(WEIGHTS, REWARDS, GROUPS, "mean")


@pytest.mark.parametrize("kind", BASELINES)
def test_with_reward_scaling_a_group_that_answered_alike_gets_no_advantage(kind):
    # Group 0: all 8 answers right (R = 1) with weights averaging 0.95; TRL's group std is 0. Unscaled, the paper form
    # gives every member 1 − 0.95 = 0.05; divided by (0 + 1e-4) that would be 500. Group 1 has signal and keeps it.
    rewards = torch.tensor([1.0] * 4 + [1.0, 0.0, 1.0, NAN])
    weights = torch.tensor([0.9, 1.0, 0.9, 1.0, 1.2, 0.8, 1.0, 1.0])
    groups = torch.tensor([0] * 4 + [1] * 4)
    scale = torch.tensor([0.0] * 4 + [0.5] * 4)
    unscaled = rapid_advantages(rewards, weights, groups, baseline=kind)
    scaled = rapid_advantages(rewards, weights, groups, reward_scale=scale, baseline=kind)
    assert torch.equal(scaled[:4], torch.zeros(4))
    torch.testing.assert_close(scaled[4:7], unscaled[4:7] / (0.5 + 1e-4))
    assert scaled[7] == 0.0  # unscorable
    if kind == "paper":
        torch.testing.assert_close(unscaled[:4], torch.full((4,), 0.05))  # the bias the rule removes


def test_constant_reward_groups_ignores_unscorable_rows():
    from trl_rapid.estimator import constant_reward_groups

    rewards = torch.tensor([0.5, NAN, 0.5, 1.0, 0.0, NAN, NAN])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    assert constant_reward_groups(rewards, groups).tolist() == [True, True, True, False, False, False, False]

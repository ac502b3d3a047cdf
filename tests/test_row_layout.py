"""The "rows" layout's per-row weight cache (trl_rapid/trainer/row_layout.py), against hand-computed values."""

import math

import pytest
import torch

from trl_rapid.trainer.row_layout import BufferWeights

# Two groups of G = 3: rewards R, group ids, sampled by µ at optimizer step 0.
REWARDS = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_untouched_members_weigh_one_so_the_baseline_is_the_group_mean():
    buffer = BufferWeights(REWARDS, GROUPS, None, step=0)
    advantages = buffer.advantages(torch.tensor([0, 1, 5]), eta=2.0, baseline="paper")
    assert advantages.tolist() == pytest.approx([1 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3])


def test_cached_weights_enter_their_groups_baseline_truncated_at_eta():
    buffer = BufferWeights(REWARDS, GROUPS, None, step=0)
    buffer.update(torch.tensor([0, 3]), torch.tensor([math.log(1.5), math.log(3.0)]), step=1)
    # group 0: b = (1.5·1 + 1·0 + 1·1) / 3; group 1: w̄ = min(3, 2) on a zero reward, b = (0 + 0 + 1·1) / 3
    advantages = buffer.advantages(torch.tensor([0, 2, 5]), eta=2.0, baseline="paper")
    assert advantages.tolist() == pytest.approx([1 - 2.5 / 3, 1 - 2.5 / 3, 1 - 1 / 3])
    # self-normalised: b = Σ w̄R / Σ w̄ = 2.5 / 3.5 for group 0
    assert buffer.advantages(torch.tensor([0]), eta=2.0, baseline="self_normalized").item() == pytest.approx(1 - 2.5 / 3.5)


def test_stale_members_are_the_groups_other_rows_not_yet_seen_at_this_step():
    buffer = BufferWeights(REWARDS, GROUPS, None, step=0)
    assert buffer.stale_members(torch.tensor([0]), step=0).tolist() == []  # θ = µ: every weight is exactly 1
    assert buffer.stale_members(torch.tensor([0]), step=1).tolist() == [1, 2]
    buffer.update(torch.tensor([1]), torch.tensor([0.1]), step=1)
    assert buffer.stale_members(torch.tensor([0]), step=1).tolist() == [2]
    assert buffer.stale_members(torch.tensor([0]), step=2).tolist() == [1, 2]  # a later θ: row 1's weight is stale
    assert buffer.stale_members(torch.tensor([0, 4]), step=2).tolist() == [1, 2, 3, 5]


def test_member_ages_count_optimizer_steps_since_each_weight_was_computed():
    buffer = BufferWeights(REWARDS, GROUPS, None, step=0)
    buffer.update(torch.tensor([0, 1]), torch.tensor([0.2, -0.1]), step=1)
    # at step 3: rows 0 and 1 were computed at step 1 (age 2); row 2 still holds its value at µ, from step 0 (age 3)
    assert sorted(buffer.member_ages(torch.tensor([0]), step=3).tolist()) == [2.0, 2.0, 3.0]


def test_a_resampled_row_takes_its_new_reward_and_weight_one_and_its_group_std_is_taken_again():
    scale = torch.tensor([0.57735] * 6)
    buffer = BufferWeights(REWARDS, GROUPS, scale, step=0)
    buffer.update(torch.tensor([0, 1, 2]), torch.tensor([math.log(1.5), math.log(0.5), 0.3]), step=1)
    buffer.replace(torch.tensor([2]), torch.tensor([0.0]), None, step=3, scale_rewards="group")
    assert buffer.log_weights[2] == 0 and buffer.updated_at[2] == 3
    # group 0 is now R = [1, 0, 0]: std (Bessel) 0.57735; b = (1.5·1 + 0.5·0 + 1·0) / 3 = 0.5
    assert buffer.reward_scale[:3].tolist() == pytest.approx([torch.tensor([1.0, 0.0, 0.0]).std().item()] * 3)
    expected = (1 - 0.5) / (torch.tensor([1.0, 0.0, 0.0]).std().item() + 1e-4)
    assert buffer.advantages(torch.tensor([0]), eta=2.0, baseline="paper").item() == pytest.approx(expected)
    assert buffer.reward_scale[3:].tolist() == pytest.approx([0.57735] * 3)  # the other group is untouched


def test_a_group_whose_rewards_are_equal_gets_no_advantage_under_reward_scaling():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    buffer = BufferWeights(rewards, GROUPS, torch.full((6,), 0.5), step=0)
    buffer.update(torch.tensor([0]), torch.tensor([math.log(0.5)]), step=1)  # paper's b = 2.5/3 ≠ 1
    assert buffer.advantages(torch.tensor([0, 1]), eta=2.0, baseline="paper").tolist() == [0.0, 0.0]

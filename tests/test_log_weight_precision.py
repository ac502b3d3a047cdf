"""sequence_log_weights sums in float64: what a float32 sum loses on a long, far-off-policy sequence."""

import math

import torch

from trl_rapid.estimator import sequence_log_weights


def test_log_weights_of_long_far_off_policy_sequences_match_an_exact_sum():
    torch.manual_seed(0)
    rows, tokens = 16, 4096
    logps = -torch.rand(rows, tokens) * 20
    # per-token log-ratios of ±3 nats that nearly cancel: |log w| stays small, where the weight is not truncated
    mask = torch.ones(rows, tokens)
    mask[:, -7:] = 0  # padding stays out, however large its log-ratio
    ratios = torch.randn(rows, tokens, dtype=torch.float64) * 3
    kept = ratios[:, :-7]
    ratios[:, :-7] = kept - kept.mean(dim=1, keepdim=True) + 0.5 * torch.randn(rows, 1, dtype=torch.float64) / kept.size(1)
    ratios[:, -7:] = 1e4
    behaviour = (logps.double() - ratios).float()
    differences = (logps.double() - behaviour.double()) * mask.double()
    exact = torch.tensor([math.fsum(row) for row in differences.tolist()], dtype=torch.float64)  # hand computation

    float32_sum = torch.where(mask.bool(), logps - behaviour, torch.zeros(())).sum(dim=-1)  # the former code
    log_weights = sequence_log_weights(logps, behaviour, mask)

    assert log_weights.dtype == torch.float32
    float32_error = (float32_sum.double() - exact).abs().max().item()
    error = (log_weights.double() - exact).abs().max().item()
    assert float32_error > 1e-5, float32_error  # seen: 5.1e-5 nats, i.e. 5e-5 relative error in w
    assert error < 1e-7, error  # seen: 2.9e-8, one rounding of |log w| < 1 to float32

"""sequence_log_weights on a long, far-off-policy sequence: exact to one float32 rounding, padding left out.

Per-token log-ratios of ±3 nats over 4089 tokens that nearly cancel: a float32 running sum loses ~5e-5 nats here
(a 5e-5 relative error in w), so the bound below holds only for a sum taken in higher precision.
"""

import math

import torch

from trl_rapid.estimator import sequence_log_weights


def test_log_weights_of_long_far_off_policy_sequences_match_an_exact_sum():
    torch.manual_seed(0)
    rows, tokens = 16, 4096
    logps = -torch.rand(rows, tokens) * 20
    mask = torch.ones(rows, tokens)
    mask[:, -7:] = 0  # padding stays out, however large its log-ratio
    ratios = torch.randn(rows, tokens, dtype=torch.float64) * 3
    kept = ratios[:, :-7]
    ratios[:, :-7] = kept - kept.mean(dim=1, keepdim=True) + 0.5 * torch.randn(rows, 1, dtype=torch.float64) / kept.size(1)
    ratios[:, -7:] = 1e4
    behaviour = (logps.double() - ratios).float()
    differences = (logps.double() - behaviour.double()) * mask.double()
    exact = torch.tensor([math.fsum(row) for row in differences.tolist()], dtype=torch.float64)  # hand computation

    log_weights = sequence_log_weights(logps, behaviour, mask)

    assert log_weights.dtype == torch.float32
    error = (log_weights.double() - exact).abs().max().item()
    assert error < 1e-7, error  # seen: 2.9e-8, one rounding of |log w| < 1 to float32

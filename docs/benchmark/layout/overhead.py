"""What RAPID's "rows" bookkeeping costs per optimizer step, on CPU, against the training step it rides on.

    python docs/benchmark/layout/overhead.py > docs/benchmark/layout/overhead.md   # also writes overhead.json

Per optimizer step with layout "rows" and cached weights the trainer adds to TRL's loss: the step's sequence log-weights,
the cache update, the advantages over the whole buffer (estimator.py), the weights' ages and the diagnostics
(`RapidTrainer._set_advantages`). This times exactly those calls on tensors shaped like the headroom sweeps' (G = 8,
N_step = 32, 24 completion tokens, one torch thread), per H; the sweeps' training step takes ~65 ms of CPU there
(16.6 s over 256 optimizer steps for (b), docs/benchmark/layout/lr5e-5).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trl_rapid.estimator import sequence_log_weights, weight_diagnostics
from trl_rapid.trainer.row_layout import BufferWeights

G, N_STEP, TOKENS, REPEATS = 8, 32, 24, 2000


def step_cost_ms(h: int, baseline: str) -> float:
    generator = torch.Generator().manual_seed(0)
    size = h * N_STEP
    rewards = torch.rand(size, generator=generator).round()
    group_ids = torch.arange(size) // G
    weights = BufferWeights(rewards, group_ids, torch.rand(size, generator=generator), step=0)
    order = torch.randperm(size, generator=generator)
    logps = torch.randn(N_STEP, TOKENS, generator=generator)
    behaviour = logps + 0.01 * torch.randn(N_STEP, TOKENS, generator=generator)
    mask = torch.ones(N_STEP, TOKENS)

    def one_step(step: int):
        rows = order[(step % h) * N_STEP:(step % h + 1) * N_STEP]
        log_weights = sequence_log_weights(logps, behaviour, mask)
        weights.update(rows, log_weights, step)
        weights.advantages(rows, 2.0, baseline)
        ages = weights.member_ages(rows, step)
        stats = weight_diagnostics(log_weights, 2.0, torch.zeros_like(rows))
        stats["weight_age"], stats["weight_age_max"] = ages.double().mean(), ages.double().max()
        torch.stack(list(stats.values())).float()

    for step in range(100):
        one_step(step)
    start = time.process_time()
    for step in range(REPEATS):
        one_step(step)
    return (time.process_time() - start) / REPEATS * 1e3


if __name__ == "__main__":
    torch.set_num_threads(1)
    rows = [{"h": h, "baseline": b, "ms_per_optimizer_step": step_cost_ms(h, b)}
            for h in (4, 8, 16) for b in ("paper", "self_normalized")]
    print("| H | baseline | CPU ms per optimizer step | share of a 65 ms training step |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['h']} | {r['baseline']} | {r['ms_per_optimizer_step']:.3f} | {r['ms_per_optimizer_step'] / 65:.1%} |")
    Path(__file__).with_name("overhead.json").write_text(json.dumps(
        {"torch": torch.__version__, "repeats": REPEATS, "rows": rows}, indent=1) + "\n")

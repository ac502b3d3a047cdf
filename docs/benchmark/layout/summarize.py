"""Issue 15's verdict tables from the layout sweeps' results.json files (accuracy: Welch; time: ratio of means).

    python docs/benchmark/layout/summarize.py docs/benchmark/layout/lr5e-5/results.json \
        docs/benchmark/layout/lr2e-4/results.json > docs/benchmark/layout/verdict.md

Accuracy differences are the benchmark's own unpaired Welch intervals (trl_rapid.benchmark.stats.compare_samples) with
the minimum detectable difference; time ratios (CPU seconds of each run's process) are a ratio of means with a 95 %
percentile bootstrap over runs, resampled within each arm (unpaired).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy import stats

from trl_rapid.benchmark.stats import compare_samples, stats_settings

# (A, B): A − B. The A/A pair comes first: its interval must cover 0 before any other row is believed.
ACCURACY_PAIRS = [
    ("grpo_on_policy_aa1", "grpo_on_policy"),
    ("rapid_h8_rows", "grpo_off_policy_H8"),
    ("rapid_h8_rows_self_normalized", "grpo_off_policy_H8"),
    ("rapid_h8_groups", "grpo_off_policy_H8"),
    ("rapid_h8_rows", "rapid_h8_groups"),
    ("rapid_h8_rows_self_normalized", "rapid_h8_rows"),
    ("rapid_h8_rows", "grpo_on_policy"),
    ("rapid_h8_rows_self_normalized", "grpo_on_policy"),
]
# (A, B, time key): mean time of A / mean time of B.
TIME_RATIOS = [
    ("rapid_h8_rows", "grpo_off_policy_H8", "total"),
    ("rapid_h8_rows_self_normalized", "grpo_off_policy_H8", "total"),
    ("rapid_h8_groups", "grpo_off_policy_H8", "total"),
    ("rapid_h8_rows", "grpo_on_policy", "training"),
    ("rapid_h8_rows_self_normalized", "grpo_on_policy", "training"),
    ("rapid_h8_groups", "grpo_on_policy", "training"),
]


def _ratio_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    ratio = np.mean(a) / np.mean(b)
    boot = stats.bootstrap((np.array(a), np.array(b)), lambda x, y, axis=-1: np.mean(x, axis) / np.mean(y, axis),
                           paired=False, vectorized=True, n_resamples=10000, method="percentile",
                           random_state=np.random.default_rng(0))
    return ratio, boot.confidence_interval.low, boot.confidence_interval.high


def summarize(path: str) -> str:
    result = json.loads(open(path).read())
    st = stats_settings(result["config"])
    runs: dict[str, dict[int, dict]] = {}
    for run in result["runs"]:
        runs.setdefault(run["method"], {})[run["seed"]] = run
    lr = result["runs"][0]["learning_rate"]
    out = [f"### learning rate {lr:g}", "", "| arm | n | final accuracy (95 % t) | CPU s per run | training CPU s |",
           "|---|---:|---:|---:|---:|"]
    for method, by_seed in sorted(runs.items()):
        acc = [r["eval"]["final_reward"] for r in by_seed.values()]
        low, high = stats.t.interval(0.95, len(acc) - 1, loc=np.mean(acc), scale=stats.sem(acc))
        out.append(f"| {method} | {len(acc)} | {np.mean(acc):.3f} [{low:.3f}, {high:.3f}] | "
                   f"{np.mean([r['times']['total'] for r in by_seed.values()]):.1f} | "
                   f"{np.mean([r['times']['training'] for r in by_seed.values()]):.1f} |")
    out += ["", "| A − B (final accuracy) | n A / n B | difference, Welch 95 % | MDD | covers 0 |", "|---|---:|---:|---:|---|"]
    for a, b in ACCURACY_PAIRS:
        if a not in runs or b not in runs:
            continue
        score = compare_samples({s: r["eval"]["final_reward"] for s, r in runs[a].items()},
                                {s: r["eval"]["final_reward"] for s, r in runs[b].items()},
                                st["confidence"], st["power"], st["bootstrap_resamples"], st["bootstrap_seed"])
        w = score["welch"]
        covers = "yes" if w["low"] <= 0 <= w["high"] else "**no**"
        out.append(f"| {a} − {b} | {len(runs[a])} / {len(runs[b])} | {w['mean']:+.3f} [{w['low']:+.3f}, "
                   f"{w['high']:+.3f}] | {w['mdd']:.3f} | {covers} |")
    out += ["", "| A / B (CPU seconds) | what | ratio of means [95 % bootstrap] |", "|---|---|---:|"]
    for a, b, key in TIME_RATIOS:
        if a in runs and b in runs:
            ratio, low, high = _ratio_interval([r["times"][key] for r in runs[a].values()],
                                               [r["times"][key] for r in runs[b].values()])
            out.append(f"| {a} / {b} | {key} | {ratio:.3f} [{low:.3f}, {high:.3f}] |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print("\n".join(summarize(path) for path in sys.argv[1:]))

"""Issue 15's verdict tables from the layout sweeps' results.json files (accuracy: Welch; time: ratio of means).

    python docs/benchmark/layout/summarize.py docs/benchmark/layout/{lr5e-5,lr2e-4_30,h4_h16,h4_h16_4x_30,reverse,reverse_h_30}/results.json \
        > docs/benchmark/layout/verdict.md

First the grid (task × learning rate × H: RAPID with its defaults against (b) at the same H, with the A/A check of that
task and rate), then each sweep's own tables. An arm is compared only with arms of its own sweep (same seeds, same code),
except the A/A check, which is per task and rate.

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


def _by_rate(result: dict) -> dict[float, dict[str, dict[int, dict]]]:
    """{learning rate: {method: {seed: run}}}."""
    rates: dict[float, dict[str, dict[int, dict]]] = {}
    for run in result["runs"]:
        rates.setdefault(run["learning_rate"], {}).setdefault(run["method"], {})[run["seed"]] = run
    return rates


def _welch(result: dict, a: dict[int, dict], b: dict[int, dict]) -> dict:
    st = stats_settings(result["config"])
    return compare_samples({s: r["eval"]["final_reward"] for s, r in a.items()},
                           {s: r["eval"]["final_reward"] for s, r in b.items()},
                           st["confidence"], st["power"], st["bootstrap_resamples"], st["bootstrap_seed"])["welch"]


def _mean(runs: dict[int, dict]) -> float:
    return float(np.mean([r["eval"]["final_reward"] for r in runs.values()]))


# RAPID with today's defaults (rows, cached weights, baseline auto = self-normalised under group scaling), by H.
DEFAULTS_ARMS = ("rapid_H{h}", "rapid_h{h}_rows_self_normalized")


def grid(paths: list[str]) -> str:
    """One line per task × learning rate × H: RAPID (defaults) − (b), the targets (mean ≥ 0, lower bound ≥ −0.025),
    the A/A check of that task and rate, and RAPID's CPU time against (b) (total) and (a) (training)."""
    results = [json.loads(open(path).read()) for path in paths]
    aa = {}
    for result in results:
        for lr, runs in _by_rate(result).items():
            if "grpo_on_policy_aa1" in runs and "grpo_on_policy" in runs:
                aa[(result["config"]["task"]["name"], lr)] = _welch(result, runs["grpo_on_policy_aa1"],
                                                                   runs["grpo_on_policy"])
    out = ["| task | lr | H | n | (b) | RAPID | RAPID − (b), Welch 95 % | MDD | targets met | A/A covers 0 | "
           "RAPID / (b) CPU | RAPID / (a) training |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    rows = []
    for result in results:
        task = result["config"]["task"]["name"]
        for lr, runs in _by_rate(result).items():
            for h in sorted({r["h"] for method in runs.values() for r in method.values()}):
                arm = next((name.format(h=h) for name in DEFAULTS_ARMS if name.format(h=h) in runs), None)
                b = runs.get(f"grpo_off_policy_H{h}")
                if arm is None or b is None:
                    continue
                w = _welch(result, runs[arm], b)
                met = "yes" if w["mean"] >= 0 and w["low"] >= -0.025 else "**no**"
                check = aa.get((task, lr))
                covers = "n/a" if check is None else ("yes" if check["low"] <= 0 <= check["high"] else "**no**")
                total = _ratio_interval([r["times"]["total"] for r in runs[arm].values()],
                                        [r["times"]["total"] for r in b.values()])
                training = ("n/a" if "grpo_on_policy" not in runs else "{:.3f} [{:.3f}, {:.3f}]".format(*_ratio_interval(
                    [r["times"]["training"] for r in runs[arm].values()],
                    [r["times"]["training"] for r in runs["grpo_on_policy"].values()])))
                rows.append((task, lr, h, f"| {task} | {lr:g} | {h} | {len(runs[arm])} / {len(b)} | {_mean(b):.3f} | "
                             f"{_mean(runs[arm]):.3f} | {w['mean']:+.3f} [{w['low']:+.3f}, {w['high']:+.3f}] | "
                             f"{w['mdd']:.3f} | {met} | {covers} | {total[0]:.3f} [{total[1]:.3f}, {total[2]:.3f}] | "
                             f"{training} |"))
    return "\n".join(out + [line for *_, line in sorted(rows)]) + "\n"


def summarize(path: str) -> str:
    result = json.loads(open(path).read())
    return "\n".join(_summarize_rate(result, lr, runs) for lr, runs in sorted(_by_rate(result).items()))


def _rapid_arms(runs: dict) -> list[str]:
    return sorted(m for m in runs if m.startswith("rapid_"))


def _accuracy_pairs(runs: dict) -> list[tuple[str, str]]:
    """The fixed pairs of the H = 8 sweeps, then every other RAPID arm against (b) at its H and against (a)."""
    pairs = [(a, b) for a, b in ACCURACY_PAIRS if a in runs and b in runs]
    for arm in _rapid_arms(runs):
        h = next(iter(runs[arm].values()))["h"]
        for b in (f"grpo_off_policy_H{h}", "grpo_on_policy"):
            if b in runs and (arm, b) not in pairs:
                pairs.append((arm, b))
    return pairs


def _time_pairs(runs: dict) -> list[tuple[str, str, str]]:
    pairs = [p for p in TIME_RATIOS if p[0] in runs and p[1] in runs]
    for arm in _rapid_arms(runs):
        h = next(iter(runs[arm].values()))["h"]
        for b, key in ((f"grpo_off_policy_H{h}", "total"), ("grpo_on_policy", "training")):
            if b in runs and (arm, b, key) not in pairs:
                pairs.append((arm, b, key))
    return pairs


def _summarize_rate(result: dict, lr: float, runs: dict[str, dict[int, dict]]) -> str:
    out = [f"### {result['config']['task']['name']}, learning rate {lr:g} ({result['config']['name']})", "", "| arm | n | final accuracy (95 % t) | CPU s per run | training CPU s |",
           "|---|---:|---:|---:|---:|"]
    for method, by_seed in sorted(runs.items()):
        acc = [r["eval"]["final_reward"] for r in by_seed.values()]
        low, high = stats.t.interval(0.95, len(acc) - 1, loc=np.mean(acc), scale=stats.sem(acc))
        out.append(f"| {method} | {len(acc)} | {np.mean(acc):.3f} [{low:.3f}, {high:.3f}] | "
                   f"{np.mean([r['times']['total'] for r in by_seed.values()]):.1f} | "
                   f"{np.mean([r['times']['training'] for r in by_seed.values()]):.1f} |")
    out += ["", "| A − B (final accuracy) | n A / n B | difference, Welch 95 % | MDD | covers 0 |", "|---|---:|---:|---:|---|"]
    for a, b in _accuracy_pairs(runs):
        w = _welch(result, runs[a], runs[b])
        covers = "yes" if w["low"] <= 0 <= w["high"] else "**no**"
        out.append(f"| {a} − {b} | {len(runs[a])} / {len(runs[b])} | {w['mean']:+.3f} [{w['low']:+.3f}, "
                   f"{w['high']:+.3f}] | {w['mdd']:.3f} | {covers} |")
    out += ["", "| A / B (CPU seconds) | what | ratio of means [95 % bootstrap] |", "|---|---|---:|"]
    for a, b, key in _time_pairs(runs):
        if a in runs and b in runs:
            ratio, low, high = _ratio_interval([r["times"][key] for r in runs[a].values()],
                                               [r["times"][key] for r in runs[b].values()])
            out.append(f"| {a} / {b} | {key} | {ratio:.3f} [{low:.3f}, {high:.3f}] |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print("## The grid: RAPID (defaults) against (b) at equal H\n")
    print(grid(sys.argv[1:]))
    print("\n".join(summarize(path) for path in sys.argv[1:]))

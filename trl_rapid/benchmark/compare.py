"""Paired comparisons of any two arms of a finished benchmark, from its results.json.

    python -m trl_rapid.benchmark.compare docs/benchmark/headroom/results.json \
        --pairs rapid_h8_self_normalized:rapid_H8 rapid_auto:rapid_H16 --output docs/benchmark/headroom/pairs.md

For each pair `A:B` (method names; every learning rate the results hold) and each seed both ran: the difference of
final held-out scores A − B and of time-to-target A − B, each with its 95 % percentile bootstrap (the benchmark's
resamples and seed) and t-interval. Time-to-target is the benchmark's own (first evaluation at or above (a)'s mean
final score at that learning rate); a seed where either arm never got there is left out of that difference and counted.
Runs are deterministic per seed, so A and B see the same prompts in the same order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .stats import bootstrap_ci, t_interval


def _fmt(ci: dict, digits: int) -> str:
    if ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:
        return f"{ci['mean']:+.{digits}f} (n = {ci['n']})"
    return f"{ci['mean']:+.{digits}f} [{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]"


def compare(result: dict, a: str, b: str) -> list[dict]:
    """One row per learning rate at which both methods ran."""
    stats_cfg = {"confidence": 0.95, "bootstrap_resamples": 10000, "bootstrap_seed": 0,
                 **(result["config"].get("stats") or {})}
    level = stats_cfg["confidence"]
    rows = []
    for arm_a, entry_a in result["summary"].items():
        if entry_a["method"] != a:
            continue
        arm_b = next((name for name, e in result["summary"].items()
                      if e["method"] == b and e["learning_rate"] == entry_a["learning_rate"]), None)
        if arm_b is None:
            continue
        final = {arm: {r["seed"]: r["eval"]["final_reward"] for r in result["runs"] if r["arm"] == arm}
                 for arm in (arm_a, arm_b)}
        ttt = {arm: result["summary"][arm].get("time_to_target", {}).get("per_seed", {}) for arm in (arm_a, arm_b)}
        seeds = sorted(set(final[arm_a]) & set(final[arm_b]))
        score_diffs = [final[arm_a][s] - final[arm_b][s] for s in seeds]
        both = [s for s in seeds if ttt[arm_a].get(str(s)) is not None and ttt[arm_b].get(str(s)) is not None]
        time_diffs = [ttt[arm_a][str(s)] - ttt[arm_b][str(s)] for s in both]
        rows.append({
            "a": arm_a, "b": arm_b, "learning_rate": entry_a["learning_rate"], "seeds": seeds,
            "score": {"per_seed": score_diffs, "t": t_interval(score_diffs, level),
                      "bootstrap": bootstrap_ci(score_diffs, level, stats_cfg["bootstrap_resamples"],
                                                stats_cfg["bootstrap_seed"])},
            "time_to_target": {"seeds_both_reached": both, "per_seed": time_diffs, "t": t_interval(time_diffs, level),
                               "bootstrap": bootstrap_ci(time_diffs, level, stats_cfg["bootstrap_resamples"],
                                                         stats_cfg["bootstrap_seed"]) if time_diffs else {}},
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [
        "| A − B | lr | seeds | final score, bootstrap | final score, t | time-to-target s, bootstrap | both reached |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ttt = row["time_to_target"]
        lines.append(
            f"| {row['a'].split('@')[0]} − {row['b'].split('@')[0]} | {row['learning_rate']:g} | {len(row['seeds'])} "
            f"| {_fmt(row['score']['bootstrap'], 3)} | {_fmt(row['score']['t'], 3)} "
            f"| {_fmt(ttt['bootstrap'], 1) if ttt['per_seed'] else '–'} | {len(ttt['seeds_both_reached'])}/"
            f"{len(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a benchmark's results.json")
    parser.add_argument("--pairs", nargs="+", required=True, help="A:B method names, e.g. rapid_auto:rapid_H16")
    parser.add_argument("--output", help="write the table (markdown) and, beside it, the rows as JSON")
    args = parser.parse_args(argv)
    result = json.loads(Path(args.results).read_text())
    rows = []
    for pair in args.pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            parser.error(f"--pairs takes A:B method names, got {pair!r}")
        found = compare(result, a, b)
        if not found:
            parser.error(f"no learning rate at which both {a!r} and {b!r} ran in {args.results}")
        rows += found
    text = format_rows(rows)
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()

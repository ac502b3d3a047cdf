"""Comparisons of any two arms of a finished benchmark, from its results.json.

    python -m trl_rapid.benchmark.compare docs/benchmark/layout/lr5e-5/results.json \
        --pairs rapid_h8_rows:rapid_h8_groups rapid_h8_rows:grpo_off_policy_H8 --output /tmp/pairs.md

For each pair `A:B` (method names; every learning rate the results hold), as in the benchmark's own report
(stats.py): the difference of mean final held-out scores A − B over the seeds each ran, with Welch's unpaired interval
(the primary view), n per arm and the minimum detectable difference (MDD) at those seeds; the per-seed paired
difference over the seeds both ran, with its t-interval and percentile bootstrap (secondary: same seed, same prompt
order). Time-to-target (the benchmark's own: first evaluation at or above (a)'s mean final score at that learning
rate) is compared the same way over the seeds that reached the target in each arm; the others are counted.
When the results hold an A/A arm (`methods.aa_arms`), its check is printed first, with a warning if it fails.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .report import aa_lines
from .stats import compare_samples, stats_settings


def _fmt(ci: dict, digits: int) -> str:
    if ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:
        return f"{ci['mean']:+.{digits}f} (no interval)"
    return f"{ci['mean']:+.{digits}f} [{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]"


def compare(result: dict, a: str, b: str) -> list[dict]:
    """One row per learning rate at which both methods ran."""
    st = stats_settings(result["config"])
    args = (st["confidence"], st["power"], st["bootstrap_resamples"], st["bootstrap_seed"])
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
        ttt = {arm: {int(s): v for s, v in (result["summary"][arm].get("time_to_target") or {})
                     .get("per_seed", {}).items()} for arm in (arm_a, arm_b)}
        score = compare_samples(final[arm_a], final[arm_b], *args)
        time = compare_samples(*(ttt[arm] for arm in (arm_a, arm_b)), *args)
        rows.append({
            "a": arm_a, "b": arm_b, "learning_rate": entry_a["learning_rate"], "seeds": score["paired"]["seeds"],
            "score": score,
            "time_to_target": dict(time, reached={arm: sum(v is not None for v in ttt[arm].values())
                                                  for arm in (arm_a, arm_b)},
                                   runs={arm: len(ttt[arm]) for arm in (arm_a, arm_b)}),
        })
    return rows


def aa_rows(result: dict) -> list[dict]:
    """The A/A comparisons of the results: each A/A arm against the method it repeats, at each learning rate."""
    rows = []
    for name in dict.fromkeys(e["method"] for e in result["summary"].values() if e.get("aa_of")):
        of = next(e["aa_of"] for e in result["summary"].values() if e["method"] == name)
        rows += [dict(r, kind="aa", welch=r["score"]["welch"], paired=r["score"]["paired"])
                 for r in compare(result, name, of)]
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [
        "| A − B | lr | n A / n B | final score, Welch | MDD | final score, paired t | time-to-target s, Welch | "
        "reached A, B |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        w, ttt = row["score"]["welch"], row["time_to_target"]
        reached = ", ".join(f"{ttt['reached'][arm]}/{ttt['runs'][arm]}" for arm in (row["a"], row["b"]))
        mdd = "–" if w["mdd"] is None else f"{w['mdd']:.3f}"
        lines.append(
            f"| {row['a'].split('@')[0]} − {row['b'].split('@')[0]} | {row['learning_rate']:g} | {w['n_a']} / "
            f"{w['n_b']} | {_fmt(w, 3)} | {mdd} | {_fmt(row['score']['paired']['t'], 3)} "
            f"| {_fmt(ttt['welch'], 1)} | {reached} |")
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
    aa = aa_rows(result)
    level = round(100 * stats_settings(result["config"])["confidence"])
    text = ("\n".join(aa_lines(aa, level)) + "\n\n" if aa else "") + format_rows(rows)
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()

"""Comparisons of two arms of a finished benchmark (trl_rapid.benchmark.compare) on hand-made results: unpaired Welch
intervals first, the per-seed paired view second, and the A/A check when the results hold an A/A arm."""

import json
import statistics

import pytest
from scipy import stats as scipy_stats

from trl_rapid.benchmark import compare as C


def _result(aa_finals=None):
    runs, summary = [], {}
    finals = {"x": [0.6, 0.7, 0.5], "y": [0.5, 0.5, 0.5, 0.6]}  # y ran a 4th seed: unpaired intervals use it
    reach = {"x": [10.0, 12.0, None], "y": [14.0, 13.0, 20.0, 15.0]}  # x never reaches the target on seed 2
    aa_of = {}
    if aa_finals is not None:
        finals["y_aa1"], reach["y_aa1"], aa_of["y_aa1"] = aa_finals, [14.0] * len(aa_finals), "y"
    for method in finals:
        arm = f"{method}@lr=0.001"
        for seed, score in enumerate(finals[method]):
            runs.append({"arm": arm, "seed": seed, "eval": {"final_reward": score}})
        summary[arm] = {"method": method, "learning_rate": 0.001, "aa_of": aa_of.get(method),
                        "time_to_target": {"per_seed": {str(s): v for s, v in enumerate(reach[method])}}}
    return {"config": {"stats": {"bootstrap_resamples": 2000, "bootstrap_seed": 0}}, "runs": runs, "summary": summary}


def test_unpaired_welch_first_then_paired_differences():
    (row,) = C.compare(_result(), "x", "y")
    w = row["score"]["welch"]
    ref = scipy_stats.ttest_ind([0.6, 0.7, 0.5], [0.5, 0.5, 0.5, 0.6], equal_var=False).confidence_interval(0.95)
    assert w["mean"] == pytest.approx(0.6 - 0.525) and (w["n_a"], w["n_b"]) == (3, 4)
    assert (w["low"], w["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high)) and w["mdd"] > w["high"] - w["mean"]
    paired = row["score"]["paired"]
    assert row["seeds"] == paired["seeds"] == [0, 1, 2]
    assert paired["per_seed"] == pytest.approx([0.1, 0.2, 0.0]) and paired["t"]["mean"] == pytest.approx(0.1)
    assert 0.0 <= paired["bootstrap"]["low"] <= 0.1 <= paired["bootstrap"]["high"] <= 0.2
    # Time-to-target: over the seeds that reached it in each arm (x: 2 of 3), unpaired.
    ttt = row["time_to_target"]
    assert ttt["welch"]["mean"] == pytest.approx(11.0 - statistics.fmean([14.0, 13.0, 20.0, 15.0]))
    assert ttt["reached"] == {"x@lr=0.001": 2, "y@lr=0.001": 4} and ttt["paired"]["seeds"] == [0, 1]
    table = C.format_rows([row])
    assert "x − y" in table and "| 3 / 4 |" in table and "2/3, 4/4" in table


def test_cli_writes_the_table_and_refuses_unknown_methods(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_result()))
    rows = C.main([str(path), "--pairs", "x:y", "--output", str(tmp_path / "pairs.md")])
    assert len(rows) == 1 and (tmp_path / "pairs.md").read_text().startswith("| A − B")
    assert "A/A" not in capsys.readouterr().out  # no A/A arm, no A/A line
    with pytest.raises(SystemExit):
        C.main([str(path), "--pairs", "x:nope"])
    assert "no learning rate" in capsys.readouterr().err


def test_cli_prints_the_aa_check_and_warns_when_it_fails(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_result(aa_finals=[0.55, 0.5, 0.45, 0.55])))  # y_aa1 − y: −0.025, noise
    C.main([str(path), "--pairs", "x:y"])
    out = capsys.readouterr().out
    assert "A/A check, y_aa1 − y at lr 0.001" in out and "covers 0" in out and "WARNING" not in out
    path.write_text(json.dumps(_result(aa_finals=[0.8, 0.85, 0.8, 0.82])))  # y differs from itself: broken
    C.main([str(path), "--pairs", "x:y"])
    out = capsys.readouterr().out
    assert "does NOT cover 0" in out and "WARNING" in out and "verdicts below are not to be believed" in out
    assert out.index("WARNING") < out.index("| A − B")

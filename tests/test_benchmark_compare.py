"""Paired comparisons of two arms of a finished benchmark (trl_rapid.benchmark.compare) on hand-made results."""

import json

import pytest

from trl_rapid.benchmark import compare as C


def _result():
    runs, summary = [], {}
    finals = {"x": [0.6, 0.7, 0.5], "y": [0.5, 0.5, 0.5]}
    reach = {"x": [10.0, 12.0, None], "y": [14.0, 13.0, 20.0]}  # x never reaches the target on seed 2
    for method in ("x", "y"):
        arm = f"{method}@lr=0.001"
        for seed, score in enumerate(finals[method]):
            runs.append({"arm": arm, "seed": seed, "eval": {"final_reward": score}})
        summary[arm] = {"method": method, "learning_rate": 0.001,
                        "time_to_target": {"per_seed": {str(s): v for s, v in enumerate(reach[method])}}}
    return {"config": {"stats": {"bootstrap_resamples": 2000, "bootstrap_seed": 0}}, "runs": runs, "summary": summary}


def test_paired_differences_of_score_and_time_to_target():
    (row,) = C.compare(_result(), "x", "y")
    assert row["seeds"] == [0, 1, 2]
    assert row["score"]["per_seed"] == pytest.approx([0.1, 0.2, 0.0])
    assert row["score"]["t"]["mean"] == pytest.approx(0.1)
    low, high = row["score"]["bootstrap"]["low"], row["score"]["bootstrap"]["high"]
    assert 0.0 <= low <= 0.1 <= high <= 0.2  # resampled means of {0.1, 0.2, 0.0} lie in [0, 0.2]
    # seed 2 is left out of the time difference: x never got there
    assert row["time_to_target"]["seeds_both_reached"] == [0, 1]
    assert row["time_to_target"]["per_seed"] == pytest.approx([-4.0, -1.0])
    assert "x − y" in C.format_rows([row]) and "2/3" in C.format_rows([row])


def test_cli_writes_the_table_and_refuses_unknown_methods(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_result()))
    rows = C.main([str(path), "--pairs", "x:y", "--output", str(tmp_path / "pairs.md")])
    assert len(rows) == 1 and (tmp_path / "pairs.md").read_text().startswith("| A − B")
    with pytest.raises(SystemExit):
        C.main([str(path), "--pairs", "x:nope"])
    assert "no learning rate" in capsys.readouterr().err

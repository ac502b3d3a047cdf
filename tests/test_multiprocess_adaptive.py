"""Adaptive H with two training processes (real `accelerate launch`): every process takes the same decisions."""

import json

import pytest

from test_multiprocess import REPO, launch


@pytest.mark.slow
def test_two_processes_take_the_same_h_decisions(tiny_model_dir, tmp_path, free_port):
    launch([str(REPO / "tests" / "multiprocess_worker.py"), tiny_model_dir, str(tmp_path), "adaptive"], tmp_path,
           free_port)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["global_step"] for r in ranks] == [6, 6]
    histories = [r["h_history"] for r in ranks]
    assert histories[0] == histories[1] and sum(histories[0]) == 6
    assert min(histories[0]) < 3, "the strict threshold should have made the trainer re-sample at least once"
    # each re-sample is one generation call on each process, with whole groups of the prompts it replaces
    calls = [len(r["records"]) for r in ranks]
    assert calls[0] == calls[1] == len(histories[0])
    for record in ranks[0]["records"]:
        assert record["rewards"] == pytest.approx(record["recomputed"])
        for start in range(0, len(record["prompts"]), 4):
            assert len(set(record["prompts"][start:start + 4])) == 1

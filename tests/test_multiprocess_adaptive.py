"""Adaptive H with two training processes (real `accelerate launch`): every process takes the same decisions."""

import json

import pytest

from helpers.launch import REPO, launch


@pytest.mark.slow
def test_two_processes_take_the_same_h_decisions(tiny_model_dir, tmp_path, free_port):
    launch([str(REPO / "tests" / "multiprocess_worker.py"), tiny_model_dir, str(tmp_path), "adaptive"], tmp_path,
           free_port)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["global_step"] for r in ranks] == [6, 6]
    histories = [r["h_history"] for r in ranks]
    assert histories[0] == histories[1] and sum(histories[0]) == 6
    assert min(histories[0]) < 3, "the strict threshold should have made the trainer re-sample at least once"
    # each re-sample is one generation call on each process; under the default layout "rows" it draws one fresh
    # completion for each stale row, i.e. prompts of that process's own inference batch
    calls = [len(r["records"]) for r in ranks]
    assert calls[0] == calls[1] == len(histories[0])
    for rank in ranks:
        batch_prompts = None
        for record in rank["records"]:
            assert record["rewards"] == pytest.approx(record["recomputed"])
            if len(record["prompts"]) == 4 * 2 * 3:  # a new inference batch: whole groups of G = 4
                batch_prompts = set(record["prompts"])
                assert all(len(set(record["prompts"][s:s + 4])) == 1 for s in range(0, 24, 4))
            else:
                assert batch_prompts is not None and set(record["prompts"]) <= batch_prompts

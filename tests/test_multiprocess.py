"""Two training processes on CPU through the real `accelerate launch` (gloo backend)."""

import json

import pytest

from helpers.launch import REPO, launch


@pytest.mark.slow
def test_two_processes_train_on_whole_groups_with_their_own_rewards(tiny_model_dir, tmp_path, free_port):
    launch([str(REPO / "tests" / "multiprocess_worker.py"), tiny_model_dir, str(tmp_path)], tmp_path, free_port)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [6, 6]
    # H = 3 over 6 steps: two generation calls on each process, each of N_inference / 2 = 4 × 2 × 3 completions
    assert [len(r["records"]) for r in ranks] == [2, 2]
    for call in range(2):
        rows = [r["records"][call] for r in ranks]
        for record in rows:
            assert len(record["prompts"]) == 24
            # whole groups: each block of G = 4 rows is one prompt with one group id
            for start in range(0, 24, 4):
                assert len(set(record["prompts"][start:start + 4])) == 1
                assert len(set(record["groups"][start:start + 4])) == 1
            # each process keeps the rewards of its own completions from the gathered reward tensor
            assert record["rewards"] == pytest.approx(record["recomputed"])
        # the two processes hold different groups: 6 distinct prompts each, none shared
        prompts_0, prompts_1 = set(rows[0]["prompts"]), set(rows[1]["prompts"])
        assert len(prompts_0) == len(prompts_1) == 6 and not prompts_0 & prompts_1
    inner = [h["rapid/inner_step"] for h in ranks[0]["logs"] if "rapid/inner_step" in h]
    assert inner == [0, 1, 2, 0, 1, 2]

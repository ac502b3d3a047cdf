"""vLLM server mode with two trainer processes on CPU: the engine in its own process (`python -m
trl_rapid.vllm_server`, started by the `vllm_server` fixture of tests/conftest.py), two gloo trainer processes under
the real `accelerate launch`, filesystem weight sync (tests/vllm_server_worker.py)."""

import json

import pytest
import torch

from helpers.launch import REPO, assert_same_state, load_dump, launch
from helpers.vllm import GAP_TOLERANCE

WORKER = str(REPO / "tests" / "vllm_server_worker.py")


def _checkpoint_checksum(folder) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("lm_head.weight", None)  # tied to the embedding: the model holds (and the server sums) it once
    return sum(float(t.double().sum()) for t in weights.values())


@pytest.mark.slow
@pytest.mark.vllm
def test_two_trainer_processes_sync_weights_to_one_server_and_resume(vllm_server, tmp_path,
                                                                     free_port_factory):
    out = tmp_path / "out"
    model_dir, base_url = vllm_server["model_dir"], vllm_server["base_url"]
    launch([WORKER, model_dir, str(out), base_url, "first"], tmp_path, free_port_factory(), timeout=240)
    first = [json.loads((out / f"rank{r}-first.json").read_text()) for r in (0, 1)]
    for report in first:
        assert report["world_size"] == 2 and report["behaviour_logprobs"] == "engine"  # µ = the engine's log-probs
        assert report["steps"] == [1, 2, 3, 4, 5, 6]
        # H = 2: one engine request per outer step (the main process sends every process's prompts), 16 rows each
        assert report["generation_sizes"] == [16, 16, 16]
        assert [s["step"] for s in report["syncs"]] == [0, 2, 4]
        assert report["advantage_checks"] == 6 and report["max_advantage_error"] < 1e-4
        # µ is consistent: the engine's sampling log-probs match the trainer's own, so RAPID's weights are 1 at inner
        # step 0 of every outer step.
        assert report["logp_gaps"] and max(report["logp_gaps"]) < GAP_TOLERANCE
        assert all(abs(w - 1) < 1e-4 for w in report["weight_max_at_inner_step_0"])
    # Both processes hold the same weights at each sync, and after each sync the engine samples with exactly them.
    assert [s["local"] for s in first[0]["syncs"]] == [s["local"] for s in first[1]["syncs"]]
    assert all(s["server"] == [s["local"]] for s in first[0]["syncs"])
    assert len({s["local"] for s in first[0]["syncs"]}) == 3  # the weights changed between syncs

    # Resume from checkpoint-2 while the server still holds step 4's weights: the first sync sends the restored ones.
    launch([WORKER, model_dir, str(out), base_url, "resume"], tmp_path, free_port_factory(), timeout=240)
    resumed = [json.loads((out / f"rank{r}-resume.json").read_text()) for r in (0, 1)]
    restored = _checkpoint_checksum(out / "checkpoint-2")
    for report in resumed:
        assert report["steps"] == [3, 4, 5, 6] and report["generation_sizes"] == [16, 16]
        assert [s["step"] for s in report["syncs"]] == [2, 4]
        assert report["syncs"][0]["local"] == pytest.approx(restored, rel=1e-12)
        assert report["advantage_checks"] == 4 and report["max_advantage_error"] < 1e-4
        assert all(abs(w - 1) < 1e-4 for w in report["weight_max_at_inner_step_0"])
    assert resumed[0]["syncs"][0]["server"] == [resumed[0]["syncs"][0]["local"]] != [first[0]["syncs"][-1]["local"]]
    assert all(s["server"] == [s["local"]] for s in resumed[0]["syncs"])
    for rank in (0, 1):  # the optimizer state, learning rate and weights each process held at checkpoint-2
        assert_same_state(load_dump(out / f"state-first-rank{rank}.pt"), load_dump(out / f"state-resume-rank{rank}.pt"),
                          step=2)

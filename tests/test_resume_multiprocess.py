"""Resuming a two-process CPU run (`accelerate launch`, gloo) from its checkpoint: transformers 5.17 maps the optimizer
state to `cpu:0` there, which torch 2.13 refuses to load; RapidTrainer loads it to "cpu" (checkpoints.py)."""

import json

import pytest
from helpers.launch import REPO, launch

WORKER = str(REPO / "tests" / "resume_multiprocess_worker.py")


@pytest.mark.slow
def test_a_two_process_cpu_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, free_port_factory):
    out = tmp_path / "out"
    launch([WORKER, tiny_model_dir, str(out), "first", "4"], tmp_path, free_port_factory(), timeout=180)
    first = [json.loads((out / f"rank{i}-first.json").read_text()) for i in range(2)]
    assert [r["world_size"] for r in first] == [2, 2]
    assert first[0]["device"] == "cpu:0"  # where transformers maps the optimizer state on resume
    assert [r["steps"] for r in first] == [[1, 2, 3, 4]] * 2
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2", "checkpoint-4"]

    launch([WORKER, tiny_model_dir, str(out), "resume"], tmp_path, free_port_factory(), timeout=180)
    resumed = [json.loads((out / f"rank{i}-resume.json").read_text()) for i in range(2)]
    assert [r["steps"] for r in resumed] == [[5, 6]] * 2  # continued after checkpoint-4, on both ranks
    assert [r["global_step"] for r in resumed] == [6, 6]
    # The optimizer and scheduler states were restored: Adam counts 6 steps, and the linear decay reached 0 at step 6
    # (an optimizer restarted at step 4 would count 2; a restarted scheduler would still be at full learning rate).
    assert [r["optimizer_steps_in_state"] for r in resumed] == [[6], [6]]
    assert [r["learning_rate"] for r in resumed] == [0.0, 0.0]
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # One NaN parameter, replicated on both ranks, is refused on both and counted once.
    assert all("Refusing to write" in r["nan_error"] and " 1 parameter tensor(s) of " in r["nan_error"]
               for r in resumed)
    assert not (out / "nan-model").exists()

"""Launching trainer processes on CPU with the real `accelerate launch` (gloo), and comparing the state each process
dumped before a kill and after its resume (tests/scale_out_worker.py, tests/vllm_server_worker.py)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from helpers.timing import scaled

REPO = Path(__file__).resolve().parents[2]  # the repository root
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(args, tmp_path, port, timeout=300):
    """Runs `accelerate launch` with 2 processes on `args`; fails with its output unless it exits 0 within `timeout`
    seconds (on an idle machine: scaled to the load)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # A fixed rendezvous port can collide with another job on the machine; take a free one.
    result = subprocess.run(LAUNCH + ["--main_process_port", str(port)] + args, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=scaled(timeout))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def load_dump(path):
    dump = torch.load(path, weights_only=False)
    dump["param_groups"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
                            for g in dump["param_groups"]]
    return dump


def assert_same_state(before, after, step=4):
    assert before["global_step"] == after["global_step"] == step
    assert before["learning_rate"] == after["learning_rate"]
    assert before["param_groups"] == after["param_groups"]
    assert before["optimizer"].keys() == after["optimizer"].keys() and before["optimizer"]
    for index, state in before["optimizer"].items():
        assert state.keys() == after["optimizer"][index].keys()
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["optimizer"][index][key])), (index, key)
    for name, value in before["master"].items():  # the optimizer's master weights (this process's partition)
        assert torch.equal(value, after["master"][name]), name
    assert before["params"].keys() == after["params"].keys() and before["params"]
    for name, value in before["params"].items():
        assert torch.equal(value, after["params"][name]), name

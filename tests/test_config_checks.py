"""Bad configs fail when RapidConfig is built, naming the field and the fix (trl_rapid/config_checks.py)."""

import math
import re
from pathlib import Path

import pytest
import trl

from trl_rapid import RapidConfig

REPO = Path(__file__).resolve().parents[1]
BASE = {"output_dir": "unused", "report_to": "none", "use_cpu": True, "bf16": False,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4}

# (field, bad value, extra settings): the 49 configs of issue 11 that were not rejected clearly, and their relatives.
BAD = [
    ("num_generations", 0, {}), ("num_generations", 1, {}), ("num_generations", -4, {}), ("num_generations", "4", {}),
    ("num_generations", None, {}),
    ("gradient_accumulation_steps", 0, {}), ("gradient_accumulation_steps", -1, {}),
    ("per_device_train_batch_size", 0, {}), ("steps_per_generation", 0, {}), ("generation_batch_size", -32, {}),
    ("optimizer_steps_per_generation", True, {}), ("optimizer_steps_per_generation", 0, {}),
    ("num_iterations", 0, {}), ("num_generations_eval", 0, {}), ("max_completion_length", 0, {}),
    ("max_steps", -5, {}), ("num_train_epochs", -1.0, {}),
    ("eta", "2.0", {}), ("eta", None, {}), ("eta", math.nan, {}), ("eta", True, {}), ("eta", 0.0, {}),
    ("epsilon", -0.2, {}), ("epsilon", math.nan, {}), ("epsilon_high", -0.1, {}), ("delta", 0.0, {}),
    ("beta", -0.1, {}), ("beta", math.nan, {}), ("top_entropy_quantile", 1.5, {}),
    ("loss_type", "ppo", {}), ("scale_rewards", "std", {}), ("scale_rewards", "true", {}),
    ("importance_sampling_level", "seq", {}),
    ("temperature", 0.0, {}), ("temperature", -1.0, {}), ("temperature", math.nan, {}),
    ("top_p", 0.0, {}), ("top_p", 1.5, {}), ("top_k", -2, {}), ("min_p", 1.5, {}), ("repetition_penalty", 0.0, {}),
    ("learning_rate", math.nan, {}), ("learning_rate", math.inf, {}), ("learning_rate", -1e-3, {}),
    ("weight_decay", math.nan, {}), ("max_grad_norm", math.nan, {}), ("warmup_steps", -1, {}),
    ("adam_beta2", 1.0, {}), ("adam_epsilon", 0.0, {}),
    ("vllm_dtype", "fp17", {}), ("vllm_mode", "remote", {}), ("vllm_importance_sampling_mode", "bogus", {}),
    ("vllm_gpu_memory_utilization", 0.0, {}), ("vllm_gpu_memory_utilization", 1.5, {}),
    ("mask_truncated_completions", "false", {}), ("use_vllm", "no", {}),
    ("reward_weights", [1.0, math.nan], {}),
    ("logging_steps", -1, {}), ("save_steps", 0, {"save_strategy": "steps"}),
]


@pytest.mark.parametrize("field, value, extra", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_value_fails_at_construction_naming_the_field(field, value, extra, monkeypatch):
    def trl_post_init(self):
        raise AssertionError("TRL's __post_init__ ran before the field checks")

    monkeypatch.setattr(trl.GRPOConfig, "__post_init__", trl_post_init)
    with pytest.raises(ValueError) as error:
        RapidConfig(**{**BASE, field: value, **extra})
    message = str(error.value)
    assert re.search(rf"(?<![a-z_]){field}\b", message), message
    assert "must" in message  # what the field must be, then the fix


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        RapidConfig(**{**BASE, "num_generations": 0, "temperature": 0.0, "loss_type": "ppo"})
    assert all(f in str(error.value) for f in ("num_generations=0", "temperature=0.0", "loss_type='ppo'"))


@pytest.mark.parametrize(
    "settings",
    [{"scale_rewards": True}, {"scale_rewards": False}, {"scale_rewards": "batch"}, {"max_completion_length": None},
     {"top_k": -1}, {"top_k": 0}, {"max_steps": -1}, {"max_grad_norm": 0.0}, {"min_p": None}, {"min_p": 0.05},
     {"epsilon": 0.0}, {"epsilon_high": 0.28}, {"learning_rate": 0.0}, {"top_entropy_quantile": 0.0},
     {"warmup_steps": 0.1}, {"loss_type": "cispo", "epsilon_high": 5.0}, {"vllm_dtype": "bfloat16"},
     {"logging_steps": 0.1}, {"save_strategy": "no", "save_steps": 0}, {"eta": 2}, {"num_generations_eval": 1}],
    ids=lambda s: ",".join(f"{k}={v!r}" for k, v in s.items()),
)
def test_values_trl_accepts_stay_accepted(settings):
    RapidConfig(**{**BASE, **settings})


def test_yaml_and_command_line_values_are_converted_before_the_checks(tmp_path):
    from trl_rapid.cli import parse_args

    recipe = tmp_path / "recipe.yaml"
    # YAML 1.1 reads 1e-3 and a quoted "4" as strings; the parser converts them to the field types.
    recipe.write_text('num_generations: "4"\nlearning_rate: 1e-3\neta: 2\nper_device_train_batch_size: 8\n'
                      f"output_dir: {tmp_path}\nuse_cpu: true\nreport_to: none\n")
    _, config, _ = parse_args(["--config", str(recipe), "--temperature", "0.7"])
    assert (config.num_generations, config.learning_rate, config.eta, config.temperature) == (4, 1e-3, 2.0, 0.7)

    with pytest.raises(ValueError, match=r"num_generations=0 must be a whole number >= 2"):
        parse_args(["--config", str(recipe), "--num_generations", "0"])

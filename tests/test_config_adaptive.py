"""RapidConfig fields of adaptive H, the baseline forms and the micro-batch layout: resolution and the errors bad values
give."""

import pytest
from transformers import HfArgumentParser

from trl_rapid import RapidConfig


def make(**kwargs):
    base = dict(output_dir="unused", report_to="none", use_cpu=True, bf16=False, per_device_train_batch_size=8,
                num_generations=4, gradient_accumulation_steps=2)
    base.update(kwargs)
    return RapidConfig(**base)


def test_auto_sizes_the_inference_batch_from_the_maximum_h():
    args = make(optimizer_steps_per_generation="auto", max_optimizer_steps_per_generation=6)
    assert args.adaptive_h
    assert args.num_optimizer_steps_per_generation == 6
    assert args.steps_per_generation == 12 and args.generation_batch_size == 6 * 8 * 2
    assert not make(optimizer_steps_per_generation=4).adaptive_h


def test_auto_baseline_and_layout_parse_from_the_command_line():
    parser = HfArgumentParser(RapidConfig)
    argv = ["--output_dir", "x", "--use_cpu", "--report_to", "none", "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--baseline", "leave_one_out"]
    (auto,) = parser.parse_args_into_dataclasses(argv + ["--optimizer_steps_per_generation", "auto"])
    assert auto.adaptive_h and auto.baseline == "leave_one_out"
    assert (auto.micro_batch_layout, auto.baseline_weight_source) == ("rows", "cache")  # the defaults
    (groups,) = parser.parse_args_into_dataclasses(argv + ["--micro_batch_layout", "groups"])
    assert groups.micro_batch_layout == "groups"
    with pytest.raises(SystemExit):  # argparse's choices: the CLI refuses a typo before RapidConfig is built
        parser.parse_args_into_dataclasses(argv + ["--baseline_weight_source", "exact"])
    (fixed,) = parser.parse_args_into_dataclasses(argv + ["--optimizer_steps_per_generation", "8"])
    assert fixed.optimizer_steps_per_generation == 8 and fixed.steps_per_generation == 8


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(baseline="mean"), "baseline"),
        (dict(micro_batch_layout="row"), "micro_batch_layout"),
        (dict(baseline_weight_source="exact"), "baseline_weight_source"),
        (dict(optimizer_steps_per_generation="often"), "optimizer_steps_per_generation"),
        (dict(optimizer_steps_per_generation="auto", max_optimizer_steps_per_generation=1),
         "max_optimizer_steps_per_generation"),
        (dict(optimizer_steps_per_generation="auto", max_optimizer_steps_per_generation=True),
         "max_optimizer_steps_per_generation"),
        (dict(optimizer_steps_per_generation="auto", adaptive_ess_threshold=0.0), "adaptive_ess_threshold"),
        (dict(optimizer_steps_per_generation="auto", adaptive_ess_threshold=1.5), "adaptive_ess_threshold"),
        (dict(optimizer_steps_per_generation="auto", adaptive_ess_threshold=float("nan")), "adaptive_ess_threshold"),
        (dict(optimizer_steps_per_generation="auto", steps_per_generation=8), "steps_per_generation"),
        (dict(optimizer_steps_per_generation="auto", num_iterations=2), "num_iterations"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make(**kwargs)


def test_the_paper_baseline_with_reward_scaling_warns_with_the_measured_alternative():
    with pytest.warns(UserWarning, match="baseline='self_normalized'"):
        make(scale_rewards="group", baseline="paper")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(baseline="paper")  # the paper's setting: no scaling
        make(scale_rewards="batch")  # the default baseline, "auto", picks the self-normalised form here


@pytest.mark.parametrize("scale_rewards, expected", [("none", "paper"), (False, "paper"), ("group", "self_normalized"),
                                                     ("batch", "self_normalized"), (True, "self_normalized")])
def test_the_auto_baseline_follows_the_reward_scaling(scale_rewards, expected):
    assert make(scale_rewards=scale_rewards).baseline == expected
    assert make(scale_rewards=scale_rewards, baseline="leave_one_out").baseline == "leave_one_out"  # explicit wins

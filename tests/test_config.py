import pytest
from trl import GRPOConfig

from trl_rapid import RapidConfig, RapidTrainer


def make(**kwargs):
    kwargs.setdefault("output_dir", "unused")
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("use_cpu", True)
    kwargs.setdefault("bf16", False)
    return RapidConfig(**kwargs)


def test_defaults_follow_the_paper():
    args = make(per_device_train_batch_size=8, gradient_accumulation_steps=2, num_generations=4)
    assert args.eta == 2.0
    assert args.beta == 0.0 and args.epsilon == 0.2
    assert args.scale_rewards == "none"
    # H defaults to 4: N_inference = 4 × N_step
    assert args.num_optimizer_steps_per_generation == 4
    assert args.steps_per_generation == 8
    assert args.generation_batch_size == 4 * 8 * 2


def test_h_field_sets_steps_per_generation():
    args = make(per_device_train_batch_size=4, gradient_accumulation_steps=3, num_generations=4,
                optimizer_steps_per_generation=2)
    assert args.steps_per_generation == 6 and args.num_optimizer_steps_per_generation == 2


def test_trl_fields_still_set_h():
    args = make(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4, generation_batch_size=32)
    assert args.num_optimizer_steps_per_generation == 4
    on_policy = make(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4,
                     steps_per_generation=2)
    assert on_policy.num_optimizer_steps_per_generation == 1


def test_h_agreeing_with_trl_field_is_accepted():
    args = make(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4,
                optimizer_steps_per_generation=3, steps_per_generation=6)
    assert args.num_optimizer_steps_per_generation == 3


@pytest.mark.parametrize(
    "kwargs, field, fix",
    [
        ({"eta": 0.0}, "eta", "> 0"),
        ({"eta": -1.0}, "eta", "> 0"),
        ({"eta": float("inf")}, "eta", "finite"),
        ({"generation_batch_size": 32, "optimizer_steps_per_generation": 4}, "generation_batch_size", "Set only one"),
        ({"use_vllm": True, "behaviour_logprobs": "engine", "top_p": 0.9}, "top_p=0.9", "behaviour_logprobs='trainer'"),
        ({"use_vllm": True, "behaviour_logprobs": "engine", "repetition_penalty": 1.1}, "repetition_penalty",
         "behaviour_logprobs='trainer'"),
        ({"use_vllm": True, "behaviour_logprobs": "engine", "vllm_importance_sampling_correction": False},
         "vllm_importance_sampling_correction", "True"),
        ({"optimizer_steps_per_generation": 0}, "optimizer_steps_per_generation", ">= 1"),
        ({"optimizer_steps_per_generation": 2, "steps_per_generation": 6}, "optimizer_steps_per_generation", "Set only one"),
        ({"steps_per_generation": 3}, "steps_per_generation", "multiple of 2"),
        ({"generation_batch_size": 24}, "generation_batch_size", "multiple of 16"),
        ({"per_device_train_batch_size": 3, "gradient_accumulation_steps": 1, "generation_batch_size": 24},
         "num_generations", "multiple of 4"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "multi_objective_aggregation", "sum_then_normalize"),
        ({"behaviour_logprobs": "vllm"}, "behaviour_logprobs", "one of"),
        ({"behaviour_logprobs": "sampler", "top_k": 20}, "top_k=20", "behaviour_logprobs='trainer'"),
        ({"behaviour_logprobs": "sampler", "use_vllm": True}, "use_vllm", "behaviour_logprobs='engine'"),
        ({"behaviour_logprobs": "engine"}, "use_vllm", "behaviour_logprobs='trainer'"),
        ({"vllm_engine_kwargs": "{max_num_seqs: 4"}, "vllm_engine_kwargs", "JSON object"),
        ({"vllm_weight_sync": "rsync"}, "vllm_weight_sync", "one of"),
        ({"vllm_weight_sync": "filesystem"}, "vllm_weight_sync", "vllm_mode='server'"),
    ],
)
def test_inconsistent_configs_are_rejected_with_the_field_and_the_fix(kwargs, field, fix):
    base = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4}
    with pytest.raises(ValueError) as error:
        make(**{**base, **kwargs})
    assert field in str(error.value) and fix in str(error.value)


def test_h_agreeing_with_generation_batch_size_is_accepted():
    args = make(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4,
                generation_batch_size=32, optimizer_steps_per_generation=4)
    assert args.steps_per_generation == 8


def test_auto_behaviour_logprobs_uses_the_engine_only_when_it_samples_plain_temperature():
    # transformers generation: the sampler's own log-probs in full precision, the recomputation otherwise
    assert make(per_device_train_batch_size=8, num_generations=4).resolved_behaviour_logprobs == "sampler"
    for other in ({"top_p": 0.9}, {"bf16": True}, {"cast_lm_head_to_fp32": True}):
        assert make(per_device_train_batch_size=8, num_generations=4, **other).resolved_behaviour_logprobs == "trainer"
    assert make(per_device_train_batch_size=8, num_generations=4, use_vllm=True).resolved_behaviour_logprobs == "engine"
    filtered = make(per_device_train_batch_size=8, num_generations=4, use_vllm=True, top_k=20)
    assert filtered.resolved_behaviour_logprobs == "trainer"


def test_engine_kwargs_accept_json_from_the_command_line():
    args = make(per_device_train_batch_size=8, num_generations=4, vllm_engine_kwargs='{"max_num_seqs": 64}')
    assert args.vllm_engine_kwargs == {"max_num_seqs": 64}


def test_trl_checks_still_apply():
    with pytest.raises(ValueError, match="auto_find_batch_size is not supported by GRPO"):
        make(per_device_train_batch_size=8, num_generations=4, auto_find_batch_size=True)


def test_trainer_rejects_a_plain_grpo_config(tiny_model_dir):
    args = GRPOConfig(output_dir="unused", report_to="none", use_cpu=True, bf16=False)
    with pytest.raises(TypeError, match="RapidConfig"):
        RapidTrainer(model=tiny_model_dir, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args)

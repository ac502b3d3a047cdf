"""The paper's recipes (configs/<benchmark>/<method>.yaml) and the accelerate configs, read by the real parsers.

Each recipe goes through the training script's own parser (`trl_rapid.cli.parse_args`: TrlParser over the script
arguments, RapidConfig or GRPOConfig, and ModelConfig), so the checks below are on the config objects the trainer gets.
The recipes target GPUs (bf16, vLLM); on this CPU machine `--use_cpu true` is added, because transformers refuses
bf16 without a GPU unless use_cpu is set. Nothing else is overridden.
"""

from pathlib import Path

import pytest
from trl import GRPOConfig

from trl_rapid import RapidConfig
from trl_rapid.cli import parse_args
from trl_rapid.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BENCHMARKS = ("math", "mbppplus", "minif2f")
H_VALUES = (2, 4, 8, 16)
BASELINES = {  # method: (beta, loss_type); all on-policy
    "grpo": (0.04, "grpo"),
    "pg": (0.0, "grpo"),
    "dapo": (0.0, "dapo"),
}
METHODS = tuple(f"rapid_h{h}" for h in H_VALUES) + tuple(BASELINES)
# The authors' MATH run used gradient_accumulation_steps 32 (steps_per_generation 256 at H = 8); elsewhere 4.
GRAD_ACCUM = {"math": 32, "mbppplus": 4, "minif2f": 4}


def parse_recipe(path: Path):
    return parse_args(["--config", str(path), "--use_cpu", "true"])


def test_one_recipe_per_benchmark_and_method():
    found = {p.relative_to(CONFIGS).as_posix() for b in BENCHMARKS for p in (CONFIGS / b).glob("*.yaml")}
    assert found == {f"{b}/{m}.yaml" for b in BENCHMARKS for m in METHODS}
    assert set(BENCHMARKS) <= set(TASKS)


@pytest.mark.parametrize("benchmark", BENCHMARKS)
@pytest.mark.parametrize("method", METHODS)
def test_recipe_has_the_papers_hyper_parameters(benchmark, method):
    script, args, model = parse_recipe(CONFIGS / benchmark / f"{method}.yaml")
    ga = GRAD_ACCUM[benchmark]

    assert script.task == benchmark
    assert model.model_name_or_path == "Qwen/Qwen2.5-0.5B"
    assert model.dtype == "float32"  # fp32 weights under bf16 autocast
    assert args.output_dir == f"outputs/{benchmark}/{method}"
    # the paper's reference setup
    assert (args.per_device_train_batch_size, args.num_generations, args.gradient_accumulation_steps) == (2, 4, ga)
    assert args.learning_rate == 1e-6
    assert args.num_train_epochs == 3
    assert args.bf16 is True
    assert args.max_completion_length == 2048
    assert args.temperature == 1.0
    assert args.epsilon == 0.2
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (True, "colocate", 0.3)
    assert not hasattr(args, "max_prompt_length")  # TRL 1.16 dropped it; the recipes say so in a comment

    if method.startswith("rapid_h"):
        h = int(method.removeprefix("rapid_h"))
        assert type(args) is RapidConfig and script.trainer == "rapid"
        assert args.num_optimizer_steps_per_generation == h
        assert args.steps_per_generation == h * ga
        assert (args.eta, args.beta, args.loss_type, args.scale_rewards) == (2.0, 0.0, "dapo", "none")
    else:
        beta, loss_type = BASELINES[method]
        assert type(args) is GRPOConfig and script.trainer == "grpo"
        assert args.steps_per_generation == args.gradient_accumulation_steps  # on-policy
        assert (args.beta, args.loss_type, args.num_iterations) == (beta, loss_type, 1)


def test_math_rapid_h8_is_the_authors_math_run():
    _, args, _ = parse_recipe(CONFIGS / "math" / "rapid_h8.yaml")
    assert (args.gradient_accumulation_steps, args.steps_per_generation) == (32, 256)


def test_recipe_values_can_be_overridden_on_the_command_line():
    script, args, model = parse_args(["--config", str(CONFIGS / "mbppplus" / "rapid_h4.yaml"), "--use_cpu", "true",
                                      "--gradient_accumulation_steps", "2", "--seed", "2"])
    # H stays the recipe's, steps_per_generation follows the new GA
    assert (args.num_optimizer_steps_per_generation, args.steps_per_generation, args.seed) == (4, 8, 2)


def test_demo_recipe_is_unchanged():
    script, args, model = parse_args(["--config", str(CONFIGS / "demo.yaml")])
    assert (script.task, script.trainer, script.build_tiny_model) == ("repeat_digit", "rapid", True)
    assert (script.num_train_prompts, script.num_eval_prompts) == (4000, 100)
    assert type(args) is RapidConfig and args.use_cpu and not args.bf16
    assert (args.num_generations, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 32, 1)
    assert (args.num_optimizer_steps_per_generation, args.max_steps, args.learning_rate) == (4, 400, 1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# accelerate configs: parsed and validated by accelerate's own launcher code (the GPU ones cannot run here)
# ---------------------------------------------------------------------------------------------------------------------

ACCELERATE = {  # file: (distributed_type, num_processes, num_machines, mixed_precision)
    "single_gpu.yaml": ("NO", 1, 1, "bf16"),
    "multi_gpu.yaml": ("MULTI_GPU", 4, 1, "bf16"),
    "zero2.yaml": ("DEEPSPEED", 4, 1, "bf16"),
    "zero3.yaml": ("DEEPSPEED", 4, 1, "bf16"),
    "zero2_cpu.yaml": ("DEEPSPEED", 2, 1, "no"),
    "zero3_cpu.yaml": ("DEEPSPEED", 2, 1, "no"),
    "fsdp.yaml": ("FSDP", 4, 1, "bf16"),
    "fsdp_cpu.yaml": ("FSDP", 2, 1, "no"),
    "multi_node.yaml": ("MULTI_GPU", 8, 2, "bf16"),
    "cpu_2proc.yaml": ("MULTI_GPU", 2, 1, "no"),
}


def test_accelerate_configs_present():
    assert {p.name for p in (CONFIGS / "accelerate").glob("*.yaml")} == set(ACCELERATE)


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_config_is_accepted_by_accelerate_launch(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = str(CONFIGS / "accelerate" / name)
    distributed_type, processes, machines, precision = ACCELERATE[name]
    config = load_config_from_file(path)
    assert config.distributed_type == distributed_type
    # What `accelerate launch --config_file <path>` resolves before it picks a launcher (private accelerate API).
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", path, "train.py"]))
    assert (args.num_processes, args.num_machines, args.mixed_precision) == (processes, machines, precision)
    if distributed_type == "DEEPSPEED":
        assert args.use_deepspeed and args.zero_stage == int(name[4])
    elif distributed_type == "FSDP":
        assert args.use_fsdp and args.fsdp_version == 2
    else:
        # MULTI_GPU selects the launcher that starts num_processes local processes (on CPU too, with gloo)
        assert args.multi_gpu == (distributed_type == "MULTI_GPU")

"""`trl-rapid` / `scripts/rapid.py`: the TRL-style training script for RAPID and its baselines.

    accelerate launch scripts/rapid.py --config configs/demo.yaml
    trl-rapid --config configs/demo.yaml --max_steps 50        # same job; command-line flags override the YAML

Arguments are TRL's (`TrlParser` over the script arguments below, `RapidConfig` and `ModelConfig`). With
`trainer: grpo` the same script runs TRL's `GRPOTrainer` from a `GRPOConfig` (the GRPO, PG and DAPO baselines), so
comparisons share one code path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TRAINERS = ("rapid", "grpo")


@dataclass
class RapidScriptArguments:
    """Script arguments of `scripts/rapid.py` (the model comes from TRL's `ModelConfig`, training from the config)."""

    task: str = field(
        default="repeat_digit",
        metadata={"help": "Task (dataset + reward): 'repeat_digit' (the embedded demo task, built locally)."},
    )
    trainer: str = field(
        default="rapid",
        metadata={"help": "'rapid' (RapidTrainer + RapidConfig) or 'grpo' (TRL's GRPOTrainer + GRPOConfig, baselines).",
                  "choices": list(TRAINERS)},
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={"help": "Build the embedded tiny model and tokenizer at model_name_or_path if nothing is there."},
    )
    num_train_prompts: int = field(default=4000, metadata={"help": "Prompts in the generated demo train set."})
    num_eval_prompts: int = field(
        default=0,
        metadata={"help": "Held-out prompts scored with greedy decoding before and after training (0: skip)."},
    )


def _config_class(argv: list[str]):
    """Pick RapidConfig or GRPOConfig from `--trainer`, given on the command line or in the YAML `--config`."""
    from trl import GRPOConfig

    from .config import RapidConfig

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--config")
    peek.add_argument("--trainer")
    known, _ = peek.parse_known_args(argv)
    trainer = known.trainer
    if trainer is None and known.config:
        trainer = (yaml.safe_load(Path(known.config).read_text()) or {}).get("trainer", "rapid")
    trainer = trainer or "rapid"
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}.")
    return RapidConfig if trainer == "rapid" else GRPOConfig


def parse_args(argv: list[str] | None = None):
    from trl import ModelConfig, TrlParser

    argv = sys.argv[1:] if argv is None else argv
    parser = TrlParser((RapidScriptArguments, _config_class(argv), ModelConfig))
    return parser.parse_args_and_config(argv)


def load_task(script_args):
    """Return (train_dataset, eval_dataset or None, reward_funcs) for `script_args.task`."""
    if script_args.task == "repeat_digit":
        from .tiny import make_repeat_digit_dataset, repeat_digit_reward

        train = make_repeat_digit_dataset(script_args.num_train_prompts, seed=0)
        held_out = make_repeat_digit_dataset(script_args.num_eval_prompts, seed=1) if script_args.num_eval_prompts else None
        return train, held_out, [repeat_digit_reward]
    raise ValueError(f"Unknown task {script_args.task!r}. Available: 'repeat_digit'.")


def greedy_mean_reward(model, tokenizer, dataset, reward_funcs, max_new_tokens: int) -> float:
    """Mean reward of greedy completions on `dataset` (plain-text prompts): a cheap held-out accuracy check."""
    import torch

    model.eval()
    prompts = list(dataset["prompt"])
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    columns = {k: list(dataset[k]) for k in dataset.column_names if k != "prompt"}
    totals = [0.0] * len(prompts)
    for func in reward_funcs:
        for i, r in enumerate(func(prompts=prompts, completions=completions, **columns)):
            totals[i] += r
    return sum(totals) / len(totals)


def plot_reward_curve(log_history: list[dict], path: Path) -> Path | None:
    """Save reward (and RAPID's staleness, when logged) against optimizer step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["reward"]) for h in log_history if "reward" in h]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker="o", markersize=3, label="mean reward (each inference batch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None):
    script_args, training_args, model_args = parse_args(argv)

    import torch.distributed as dist
    from accelerate import PartialState
    from transformers import AutoTokenizer
    from trl import GRPOTrainer, get_peft_config

    from .trainer import RapidTrainer

    state = PartialState()
    model_path = Path(model_args.model_name_or_path)
    if script_args.build_tiny_model:
        from .tiny import build_tiny_model

        with state.main_process_first():  # one process writes the model, the others read it
            if state.is_main_process and not (model_path / "config.json").exists():
                build_tiny_model(model_path, seed=training_args.seed)

    train_dataset, held_out, reward_funcs = load_task(script_args)
    # transformers 5 may map a config to a tokenizer class that re-tokenises a custom vocabulary: load it explicitly.
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    trainer_cls = RapidTrainer if script_args.trainer == "rapid" else GRPOTrainer
    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )

    generations = 0
    generate = trainer._generate_and_score_completions

    def counted_generate(inputs):
        nonlocal generations
        generations += trainer.model.training
        return generate(inputs)

    trainer._generate_and_score_completions = counted_generate

    before = after = None
    max_new = training_args.max_completion_length
    if held_out is not None and state.is_main_process:
        before = greedy_mean_reward(trainer.model, tokenizer, held_out, reward_funcs, max_new)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    elapsed = time.perf_counter() - start
    trainer.save_model(training_args.output_dir)
    if held_out is not None and state.is_main_process:
        after = greedy_mean_reward(trainer.accelerator.unwrap_model(trainer.model), tokenizer, held_out, reward_funcs,
                                   max_new)

    if state.is_main_process:
        summary = _summary(trainer, script_args, generations, elapsed, before, after)
        out = Path(training_args.output_dir)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot = plot_reward_curve(trainer.state.log_history, out / "reward_curve.png")
        print(_format_summary(summary, plot))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.task)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # without it one rank can abort at exit
    return trainer


def _summary(trainer, script_args, generations, elapsed, before, after) -> dict:
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history if "reward" in h]
    first, last = rewards[: max(1, len(rewards) // 10)], rewards[-max(1, len(rewards) // 10):]
    return {
        "trainer": script_args.trainer,
        "task": script_args.task,
        "optimizer_steps": trainer.state.global_step,
        "generation_calls": generations,
        "processes": trainer.accelerator.num_processes,
        "train_seconds": round(elapsed, 1),
        "reward_first_10pct": sum(first) / len(first) if rewards else None,
        "reward_last_10pct": sum(last) / len(last) if rewards else None,
        "held_out_reward_before": before,
        "held_out_reward_after": after,
    }


def _format_summary(summary: dict, plot: Path | None) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["", "=== trl-rapid summary ==="] + [f"  {k:<24} {fmt(v)}" for k, v in summary.items()]
    if plot:
        lines.append(f"  {'reward curve':<24} {plot}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

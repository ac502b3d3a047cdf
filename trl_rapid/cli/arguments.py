"""The training script's command line: TRL's `TrlParser` over the script's arguments, the trainer's config and TRL's
`ModelConfig`, from a YAML `--config` and flags (flags win). Flags use TRL's underscore style (`--code_timeout_s`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..task_args import TaskArguments

TRAINERS = ("rapid", "grpo")


@dataclass
class RapidScriptArguments(TaskArguments):
    """Arguments of `trl-rapid` / `scripts/rapid.py`: the task's (`TaskArguments`) and the trainer's (the model comes
    from TRL's `ModelConfig`, training from the config)."""

    trainer: str = field(
        default="rapid",
        metadata={"help": "'rapid' (RapidTrainer + RapidConfig) or 'grpo' (TRL's GRPOTrainer + GRPOConfig, baselines).",
                  "choices": list(TRAINERS)},
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={"help": "Build the embedded tiny model and tokenizer at model_name_or_path if nothing is there."},
    )
    warm_start: bool = field(
        default=False,
        metadata={"help": "Tasks sort_digits and reverse_word: train from the task's SFT warm start "
                          "(trl_rapid/headroom.py, headroom_reverse.py; default recipe), built on first use and cached under "
                          "outputs/warm_start/; replaces model_name_or_path."},
    )


def config_class(argv: list[str]):
    """Pick RapidConfig or GRPOConfig from `--trainer`, given on the command line or in the YAML `--config`."""
    from trl import GRPOConfig

    from ..config import RapidConfig

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
    parser = TrlParser((RapidScriptArguments, config_class(argv), ModelConfig))
    return parser.parse_args_and_config(argv)

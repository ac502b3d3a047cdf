"""Command line: `python scripts/benchmark.py --config configs/bench/<name>.yaml --output_dir <dir>`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from . import __doc__ as PACKAGE_DOC
from .config import load_config
from .runs import run_benchmark


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=PACKAGE_DOC.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="configs/bench/*.yaml")
    p.add_argument("--output_dir", default="docs/benchmark", help="where results.json, table.md and PNGs go")
    p.add_argument("--seeds", type=_int_list, help="override seeds, e.g. '0 1 2'")
    p.add_argument("--total_completions", type=int, help="override budget.total_completions")
    p.add_argument("--rapid_h", type=_int_list, help="override methods.rapid_h, e.g. '1 2 4 8' ('' for none)")
    p.add_argument("--grpo_off_policy_h", type=_int_list, help="override methods.grpo_off_policy_h ('' for none)")
    p.add_argument("--learning_rates", type=_float_list, help="override learning_rates, e.g. '1e-4 4e-4'")
    p.add_argument("--eval_every_steps", type=int, help="override eval.every_steps")
    p.add_argument("--isolation", choices=["forkserver", "spawn", "inprocess"], help="override isolation")
    p.add_argument("--workers", type=int, help="runs at a time, each in its own process (default: one per core on "
                   "CPU, 1 on an accelerator)")
    p.add_argument("--clock", choices=["process", "wall"], help="time in CPU seconds of each run's process or in wall "
                   "seconds (default: process on CPU, wall on an accelerator)")
    p.add_argument("--resume", action="store_true", help="reuse the finished runs in OUTPUT_DIR/runs.partial.jsonl "
                   "(an interrupted sweep of the same configuration) and run the rest")
    p.add_argument("--no_ideal", action="store_true", help="skip the ideal measurements")
    p.add_argument("--dry_run", action="store_true", help="parse and resolve the config, print the plan, exit")
    return p.parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict:
    o: dict[str, Any] = {}
    if args.seeds is not None:
        o["seeds"] = args.seeds
    if args.total_completions is not None:
        o["budget"] = {"total_completions": args.total_completions}
    methods = {}
    if args.rapid_h is not None:
        methods["rapid_h"] = args.rapid_h
    if args.grpo_off_policy_h is not None:
        methods["grpo_off_policy_h"] = args.grpo_off_policy_h
    if methods:
        o["methods"] = methods
    if args.learning_rates is not None:
        o["learning_rates"] = args.learning_rates
    if args.eval_every_steps is not None:
        o["eval"] = {"every_steps": args.eval_every_steps}
    if args.isolation is not None:
        o["isolation"] = args.isolation
    if args.workers is not None:
        o["workers"] = args.workers
    if args.clock is not None:
        o["clock"] = args.clock
    if args.no_ideal:
        o["ideal"] = {"enabled": False}
    return o


def main(argv: list[str] | None = None) -> dict | None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Worker processes import trl_rapid: make sure they find this checkout even when it is not installed.
    repo_root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    cfg = load_config(args.config, overrides_from_args(args))
    if args.dry_run:
        import torch

        from .workers import check_method_configs

        # Every arm's trainer config must build; bf16 needs an accelerator, so a CPU-only dry run checks it off.
        check_method_configs(cfg, **({} if torch.cuda.is_available() else {"bf16": False}))
        print(json.dumps({k: cfg[k] for k in ("name", "model", "task", "budget", "seeds", "learning_rates", "plan",
                                              "isolation", "workers", "torch_threads", "clock")}, indent=2))
        plan = cfg["plan"]
        print(f"[dry run] {len(plan['arms'])} arms × {len(cfg['seeds'])} seeds = "
              f"{len(plan['arms']) * len(cfg['seeds'])} runs of {plan['optimizer_steps']} optimizer steps; every "
              "arm's trainer config builds.")
        return None
    if from_command_line:
        command = shlex.join(["python", *sys.argv])
    else:
        command = shlex.join(["python", "-m", "trl_rapid.benchmark", *argv])
    # Flushed line by line: a long sweep's log (often redirected to a file) shows each run as it finishes.
    return run_benchmark(cfg, args.output_dir, command, resume=args.resume, log=lambda *a: print(*a, flush=True))


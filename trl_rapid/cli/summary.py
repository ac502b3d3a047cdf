"""What the script writes when training ends: `summary.json` (the run's numbers) and `reward_curve.png`."""

from __future__ import annotations

from pathlib import Path

from ..console import finite


def run_summary(trainer, script_args, elapsed: float, before, after, held_out_prompts: int) -> dict:
    """The run's numbers: steps, processes, time, training reward (first and last tenth), held-out reward before and
    after training, and the trainer's `run_counts` (cli/counting.py)."""
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history if finite(h.get("reward"))]  # TRL logs None for an unscorable batch
    first, last = rewards[: max(1, len(rewards) // 10)], rewards[-max(1, len(rewards) // 10):]
    counts = trainer.run_counts
    return {
        "trainer": script_args.trainer,
        "task": script_args.task,
        "optimizer_steps": trainer.state.global_step,
        "generation_calls": counts["generation_calls"],
        "processes": trainer.accelerator.num_processes,
        "distributed": trainer.accelerator.distributed_type.value,  # e.g. "NO", "MULTI_CPU", "FSDP", "DEEPSPEED"
        "train_seconds": round(elapsed, 1),
        "reward_first_10pct": sum(first) / len(first) if rewards else None,
        "reward_last_10pct": sum(last) / len(last) if rewards else None,
        "held_out_reward_before": before,
        "held_out_reward_after": after,
        "held_out_prompts": held_out_prompts,
        "train_completions": counts["train_completions"],
        "unscorable_completions": counts["unscorable_completions"],
        "skipped_updates": getattr(trainer, "_skipped_updates", 0),
    }


def plot_reward_curve(log_history: list[dict], path: Path) -> Path | None:
    """Save the mean reward of each logged inference batch against optimizer step as a PNG (None if none logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["reward"]) for h in log_history if finite(h.get("reward"))]
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

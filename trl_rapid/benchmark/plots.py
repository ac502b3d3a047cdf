"""The benchmark's plots: time breakdown per method, held-out reward vs wall time and vs completions."""

from __future__ import annotations

from pathlib import Path

from .timing import TIME_PARTS


def plot_time_breakdown(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, ideal = result["summary"], result["ideal"]
    labels, parts = [], {p: [] for p in TIME_PARTS}
    errors = []
    for e in summary.values():
        labels.append(e["label"].replace(", generation batch", "\ngen. batch"))
        for p in TIME_PARTS:
            parts[p].append(e[f"{p}_s"]["mean"])
        errors.append(e["total_s"]["std"])
    if ideal["per_seed"]:
        labels.append("ideal\n(gen. alone + train alone)")
        parts["generation"].append(ideal["summary"]["generation"]["mean"])
        parts["training"].append(ideal["summary"]["training"]["mean"])
        parts["other"].append(0.0)
        errors.append(ideal["summary"]["total"]["std"])
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 4.5))
    x = range(len(labels))
    bottom = [0.0] * len(labels)
    colors = {"generation": "#4c72b0", "training": "#dd8452", "other": "#8c8c8c"}
    for p in TIME_PARTS:
        ax.bar(x, parts[p], bottom=bottom, label=p, color=colors[p])
        bottom = [b + v for b, v in zip(bottom, parts[p])]
    ax.errorbar(x, bottom, yerr=errors, fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel(f"{_clock(result)} (s), mean over seeds")
    title = f"Time breakdown: {result['config']['name']}"
    if result["model"].get("note"):
        title += f" ({result['model']['note']})"
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reward_vs_time(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for e in result["summary"].values():
        curve = e["curve"]
        t = [p["wall_s"]["mean"] for p in curve]
        c = [p["completions"] for p in curve]
        r = [p["reward"]["mean"] for p in curve]
        s = [p["reward"]["std"] for p in curve]
        style = "--" if e["trainer"] == "grpo" else "-"
        (line,) = ax_t.plot(t, r, style, marker="o", markersize=3, label=e["label"])
        ax_t.fill_between(t, [a - b for a, b in zip(r, s)], [a + b for a, b in zip(r, s)], alpha=0.12,
                          color=line.get_color())
        ax_c.plot(c, r, style, marker="o", markersize=3, color=line.get_color())
    ax_t.set_xlabel(f"{_clock(result)} excluding evaluation (s), mean over seeds")
    ax_c.set_xlabel("completions generated")
    ax_t.set_ylabel("held-out reward (greedy), mean ± std over seeds")
    title = f"Reward vs time: {result['config']['name']}"
    if result["model"].get("note"):
        title += f" ({result['model']['note']})"
    fig.suptitle(title, fontsize=10)
    for ax in (ax_t, ax_c):
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_curves(result: dict, path: Path) -> Path:
    """Held-out score vs wall time and vs completions, one row per learning rate, mean with a 95 % t-band over
    seeds; the dotted line is the time-to-target's target ((a)'s mean final score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    lrs = sorted({e["learning_rate"] for e in summary.values()}, key=lambda x: (x is None, x))
    fig, axes = plt.subplots(len(lrs), 2, figsize=(12, 4.2 * len(lrs)), sharey=True, squeeze=False)
    colors = {}
    for row, lr in enumerate(lrs):
        ax_t, ax_c = axes[row]
        for name, e in summary.items():
            if e["learning_rate"] != lr:
                continue
            curve = e["curve"]
            t = [p["wall_s"]["mean"] for p in curve]
            c = [p["completions"] for p in curve]
            r = [p["reward"]["mean"] for p in curve]
            lo = [p["reward_ci"]["low"] if p["reward_ci"]["low"] is not None else p["reward"]["mean"] for p in curve]
            hi = [p["reward_ci"]["high"] if p["reward_ci"]["high"] is not None else p["reward"]["mean"] for p in curve]
            style = "--" if e["trainer"] == "grpo" else "-"
            color = colors.get(e["method"])
            (line,) = ax_t.plot(t, r, style, marker="o", markersize=3, label=e["label"], color=color)
            colors[e["method"]] = line.get_color()
            for ax, x in ((ax_t, t), (ax_c, c)):
                ax.fill_between(x, lo, hi, alpha=0.12, color=line.get_color())
            ax_c.plot(c, r, style, marker="o", markersize=3, color=line.get_color())
            if e.get("time_to_target") and e["method"] == "grpo_on_policy":
                for ax in (ax_t, ax_c):
                    ax.axhline(e["time_to_target"]["target"], color="gray", linestyle=":", linewidth=1)
        lr_text = f"learning rate {lr:g}" if lr is not None else ""
        ax_t.set_title(lr_text, fontsize=9)
        ax_c.set_title(lr_text, fontsize=9)
        ax_t.set_xlabel(f"{_clock(result)} excluding evaluation (s), mean over seeds")
        ax_c.set_xlabel("completions generated")
        ax_t.set_ylabel("held-out score (greedy), mean and 95 % t-band")
        for ax in (ax_t, ax_c):
            ax.grid(alpha=0.3)
        ax_t.legend(fontsize=7)
    fig.suptitle(f"Held-out score: {result['config']['name']} (dotted: (a)'s mean final score, the target)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clock(result: dict) -> str:
    return "CPU time" if result.get("clock") == "process" else "wall time"

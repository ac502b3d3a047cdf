"""What the training script prints: one progress bar with a few live numbers, then a compact summary table.

transformers prints every log as a raw dict (`ProgressCallback.on_log`, or `PrinterCallback` with `disable_tqdm`): with
TRL's 30-odd metrics that is ~1,500 characters per logging step. The script swaps those callbacks for
`CompactProgressCallback`; the logs themselves (`state.log_history`, `report_to`) are unchanged.

- On a terminal: a tqdm bar over optimizer steps, its postfix the latest reward, ESS, staleness (and skipped updates).
- Otherwise (CI logs, `| tee`, `disable_tqdm=True`): no carriage-return redraws; one short line per tenth of training.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from transformers import TrainerCallback

# (log key, column title, format) of the live numbers and the summary table, in that order; a key absent from the
# logs (e.g. rapid/* under TRL's own GRPOTrainer) is left out.
LIVE = (("reward", "reward", ".3f"), ("rapid/ess", "ess", ".3f"), ("rapid/staleness", "stale", ".3f"),
        ("rapid/skipped_updates", "skipped", ".0f"))
TABLE = (("reward", "reward", ".3f"), ("rapid/ess", "ess", ".3f"), ("rapid/staleness", "staleness", ".3f"),
         ("rapid/truncated_frac", "truncated", ".3f"), ("entropy", "entropy", ".2f"), ("loss", "loss", ".4f"))
SECTIONS = 10  # rows of the summary table, and lines of the non-interactive progress


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value, spec: str = ".3f") -> str:
    return format(value, spec) if finite(value) else "n/a"


class CompactProgressCallback(TrainerCallback):
    """Replaces transformers' ProgressCallback / PrinterCallback for the script's console (main process only)."""

    def __init__(self, interactive: bool | None = None, stream=None):
        self.interactive = interactive  # None: decide from the stream at train start
        self.stream = stream or sys.stderr
        self.bar = None
        self.latest: dict[str, float] = {}
        self.next_line_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        interactive = self.stream.isatty() if self.interactive is None else self.interactive
        if interactive and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            dynamic_ncols=True, file=self.stream)
        self.next_line_step = state.global_step + self._line_every(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.latest.update({key: logs[key] for key, _, _ in LIVE if finite(logs.get(key))})
        if self.bar is not None:
            self.bar.set_postfix_str(self._live(), refresh=True)
        elif state.global_step >= self.next_line_step and "loss" in logs:
            print(f"step {state.global_step}/{state.max_steps} ({100 * state.global_step / state.max_steps:.0f}%)  "
                  f"{self._live()}", file=self.stream, flush=True)
            self.next_line_step = state.global_step + self._line_every(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _live(self) -> str:
        shown = [(title, self.latest[key], spec) for key, title, spec in LIVE if key in self.latest]
        return "  ".join(f"{title} {fmt(value, spec)}" for title, value, spec in shown
                         if title != "skipped" or value > 0)

    @staticmethod
    def _line_every(state) -> int:
        return max(1, math.ceil(state.max_steps / SECTIONS))


def install(trainer, interactive: bool | None = None) -> CompactProgressCallback:
    """Swap transformers' per-log dict printing for the compact progress on `trainer`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    try:  # notebooks get transformers' NotebookProgressCallback instead
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
    except ImportError:
        pass
    callback = CompactProgressCallback(interactive)
    trainer.add_callback(callback)
    return callback


# ---------------------------------------------------------------------------------------------------------------------
# The summary printed after training
# ---------------------------------------------------------------------------------------------------------------------


def progress_table(log_history: list[dict], max_steps: int, sections: int = SECTIONS) -> list[str]:
    """One row per tenth of training: the mean of each TABLE metric over the logs of that tenth ("n/a" if none)."""
    logs = [h for h in log_history if "step" in h and "train_runtime" not in h]
    columns = [(key, title, spec) for key, title, spec in TABLE if any(key in h for h in logs)]
    if not logs or not columns or max_steps <= 0:
        return []
    width = math.ceil(max_steps / sections)
    header = f"  {'steps':>11}" + "".join(f"  {title:>9}" for _, title, _ in columns)
    rows = [header]
    for start in range(0, max_steps, width):
        window = [h for h in logs if start < h["step"] <= start + width]
        if not window:
            continue
        cells = []
        for key, _, spec in columns:
            values = [h[key] for h in window if finite(h.get(key))]
            cells.append(fmt(sum(values) / len(values), spec) if values else "n/a")
        rows.append(f"  {f'{start + 1}-{min(start + width, max_steps)}':>11}" + "".join(f"  {c:>9}" for c in cells))
    return rows


def format_summary(summary: dict, log_history: list[dict], written: list[Path]) -> str:
    """The script's closing report: the progress table, then the run's key figures in a few lines."""
    s = summary
    processes = f"{s['processes']} process{'es' if s['processes'] != 1 else ''}"
    lines = ["", "=== trl-rapid summary ===", *progress_table(log_history, s["optimizer_steps"]), ""]
    lines.append(f"  {s['trainer']} on {s['task']}: {s['optimizer_steps']} optimizer steps, {s['generation_calls']} "
                 f"generation calls, {processes}, {s['train_seconds']:.1f} s")
    lines.append(f"  {'reward, first → last tenth':<30} {_arrow(s['reward_first_10pct'], s['reward_last_10pct'])}")
    if s.get("held_out_prompts"):
        lines.append(f"  {'held-out reward (greedy)':<30} "
                     f"{_arrow(s['held_out_reward_before'], s['held_out_reward_after'], 'no scorable completion')}"
                     f"  ({s['held_out_prompts']} prompts)")
    unscorable, completions = s.get("unscorable_completions"), s.get("train_completions")
    if completions:
        note = "  (no reward function returned a finite value: not trained on)" if unscorable else ""
        lines.append(f"  {'unscorable completions':<30} {unscorable} of {completions}{note}")
    if s.get("skipped_updates"):
        lines.append(f"  {'skipped updates':<30} {s['skipped_updates']} (non-finite gradients)")
    lines.append(f"  {'written':<30} {', '.join(str(p) for p in written)}")
    return "\n".join(lines)


def _arrow(before, after, why: str = "no scorable completion") -> str:
    def one(v):
        return f"{v:.3f}" if finite(v) else f"n/a ({why})"

    if before is None and after is None:
        return f"n/a ({why})"
    return f"{one(before)} → {one(after)}"

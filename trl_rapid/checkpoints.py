"""Checkpoints that are complete or absent, resume that never picks a partial one, and no non-finite weights on disk.

transformers 5.17 writes `checkpoint-<step>` file by file, `trainer_state.json` last. A run killed in between
(`kill -9`, an out-of-memory kill, a pre-empted node) leaves a folder with some files empty or missing, and
`get_last_checkpoint` picks it because it only looks at the folder name. Here:

- RapidTrainer's checkpoint save (compat/transformers.py mirrors transformers' own) writes every file into
  `tmp-checkpoint-<step>`, and `publish` renames it to `checkpoint-<step>` once all processes have written theirs. A
  rename within one folder is atomic, and the `tmp-` prefix matches neither `get_last_checkpoint` nor checkpoint
  rotation, so a killed save leaves only a `tmp-` folder.
- `remove_stale_staging` (RapidTrainer's `train`, main process only, before any step) deletes the
  `tmp-checkpoint-<step>` folders a killed run left in output_dir, whatever step they were for. A run that never saves
  that step again (a new run with other `save_steps`, a resume with `save_strategy="no"`) would otherwise keep each,
  a full copy of the model and optimizer. Only names matching that exact pattern are touched; a complete
  `checkpoint-<step>` never is.
- `resolve_resume_checkpoint` replaces `get_last_checkpoint` for `resume_from_checkpoint=True` (and the script's
  `--resume_from_checkpoint true`): it takes the newest *complete* checkpoint and warns about each partial one it skips
  (left by a plain `Trainer`, or by an older trl-rapid).
- compat/transformers.py's `load_optimizer_and_scheduler_on_cpu` lets a multi-process CPU run resume: transformers
  maps the optimizer state to `cpu:0` there, which torch refuses to load to.
- `check_finite_weights` refuses to write weights holding NaN or ±inf: such a checkpoint would destroy every run
  resumed from it. Under DeepSpeed ZeRO-3 each process holds an empty placeholder per parameter, so each parameter is
  gathered for the check (`deepspeed.zero.GatheredParameters`; run at every save of the ZeRO-3 CPU launch in
  tests/test_scale_out.py, where the weights are finite: the refusal itself is tested under DDP).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

STAGING_PREFIX = "tmp-"  # tmp-checkpoint-<step>: being written
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# What a checkpoint save / `publish` leave when killed: tmp-checkpoint-<step> and tmp-checkpoint-<step>-replaced.
_STAGING = re.compile(rf"^{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-(\d+)(-replaced)?$")
LAST = ("true", "last", "latest")  # `--resume_from_checkpoint true`: the newest complete checkpoint of output_dir


class NonFiniteWeightsError(RuntimeError):
    """The model holds NaN or ±inf: writing it would produce a checkpoint no run can resume from."""


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def publish(staging: str, final: str) -> None:
    """Make `staging` durable, then rename it to `final` (replacing an older folder of that name)."""
    if not os.path.isdir(staging):
        if os.path.isdir(final):
            return  # another process sharing this folder (save_on_each_node) published it
        raise FileNotFoundError(f"Checkpoint staging folder {staging} disappeared before it was complete.")
    _fsync_tree(staging)
    replaced = None
    if os.path.exists(final):  # a second save at the same step: os.rename cannot replace a non-empty folder
        replaced = staging + "-replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.rename(staging, final)
    _fsync_dir(os.path.dirname(final) or ".")
    if replaced:
        shutil.rmtree(replaced, ignore_errors=True)


def _fsync_tree(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_staging(run_dir: str | os.PathLike) -> list[str]:
    """Delete the staging folders a killed run left in `run_dir` (call on the saving process, before training).

    `tmp-checkpoint-<step>` is always partial or unpublished: delete it. `tmp-checkpoint-<step>-replaced` is the
    complete checkpoint-<step> that `publish` moves aside for a second save at the same step; if the kill came before
    the new folder took its name, it is the only copy, so it is renamed back instead of deleted. Returns what was
    removed or restored, and warns about it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    done = []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir() and _STAGING.match(p.name)):
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{_STAGING.match(folder.name).group(1)}"
        try:
            if folder.name.endswith("-replaced") and not final.exists():
                os.rename(folder, final)
                done.append(f"{folder.name} -> {final.name} (restored)")
            else:
                shutil.rmtree(folder)
                done.append(folder.name)
        except FileNotFoundError:
            pass  # another process sharing this folder (save_on_each_node) got there first
    if done:
        warnings.warn(
            f"Removed staging folder(s) left in {run_dir} by a run killed while saving a checkpoint: "
            f"{', '.join(done)}.",
            stacklevel=2,
        )
    return done


@torch.no_grad()
def check_finite_weights(model, accelerator, what: str) -> None:
    """Raise NonFiniteWeightsError, on every process, if any parameter this run holds is NaN or ±inf."""
    names, bad = [], []
    for name, param in model.named_parameters():
        names.append(name)
        with _full_or_local(param) as local:
            bad.append(bool(local.numel()) and not bool(torch.isfinite(local).all()))
    # One flag per parameter, summed over processes: every process agrees (none raises while the others wait in a
    # collective), and a parameter replicated on every process (DDP) or gathered (ZeRO-3) is counted once.
    flags = accelerator.reduce(torch.tensor(bad, dtype=torch.float32, device=accelerator.device), reduction="sum")
    bad_names = [name for name, flag in zip(names, flags.tolist()) if flag > 0]
    if bad_names:
        raise NonFiniteWeightsError(
            f"Refusing to write {what}: {len(bad_names)} parameter tensor(s) of {len(names)} hold NaN or inf "
            f"(first: {bad_names[0]}). Training diverged; the last complete checkpoint is still on disk. Resume from "
            "it with a lower learning_rate (or max_grad_norm > 0), and check the reward functions for overflowing "
            "values."
        )


@contextmanager
def _full_or_local(param):
    """The values of `param` this process can see: FSDP2 DTensors give their local shard (the flags are summed over
    processes); a DeepSpeed ZeRO-3 parameter is an empty placeholder, so it is gathered, read-only, for the check."""
    if hasattr(param, "ds_id"):  # ZeRO-3 (run by the ZeRO-3 CPU launch of tests/test_scale_out.py)
        import deepspeed

        with deepspeed.zero.GatheredParameters(param, modifier_rank=None):
            yield param.data
    else:
        yield param.to_local() if hasattr(param, "to_local") else param


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete checkpoint (a short reason), or None when it is one."""
    folder = Path(folder)
    state_file = folder / TRAINER_STATE_NAME
    if not state_file.is_file():
        return f"no {TRAINER_STATE_NAME} (transformers writes it last)"
    try:
        json.loads(state_file.read_text())
    except (ValueError, OSError) as error:
        return f"{TRAINER_STATE_NAME} is unreadable ({error})"
    empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
    if empty:
        return f"empty file(s): {', '.join(empty)}"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"missing weight shard(s): {', '.join(missing)}"
    return None


def checkpoints_newest_first(folder: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>` folders of `folder`, newest step first (transformers' `get_last_checkpoint` order)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """Like transformers' `get_last_checkpoint`, but skips (with a warning) any checkpoint that is not complete."""
    for checkpoint in checkpoints_newest_first(folder):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        warnings.warn(
            f"Skipping incomplete checkpoint {checkpoint} ({problem}): it was being written when its run stopped. "
            "Resuming from the previous complete one; delete the folder once you no longer need it.",
            stacklevel=2,
        )
    return None


def resolve_resume_checkpoint(resume, output_dir: str) -> str | None:
    """The checkpoint to resume from, for `resume_from_checkpoint` given as True / "true" / "last", a checkpoint folder,
    or a run folder holding `checkpoint-<step>` folders. A named checkpoint that is incomplete is an error."""
    if resume is None or resume is False:
        return None
    if resume is True or (isinstance(resume, str) and resume.strip().lower() in LAST):
        found = last_complete_checkpoint(output_dir)
        if found is None:
            raise ValueError(
                f"resume_from_checkpoint asks for the last checkpoint, but {output_dir} holds no complete "
                "checkpoint-<step> folder. Train without resume_from_checkpoint, or point it at a checkpoint folder."
            )
        return found
    path = Path(resume)
    if path.is_dir() and not _CHECKPOINT.match(path.name) and checkpoints_newest_first(path):
        return resolve_resume_checkpoint(True, str(path))  # a run folder: its newest complete checkpoint
    if path.is_dir():
        problem = checkpoint_problem(path)
        if problem is not None:
            with warnings.catch_warnings():  # the error below already says which folder is partial
                warnings.simplefilter("ignore")
                fallback = last_complete_checkpoint(path.parent)
            hint = f"resume_from_checkpoint={fallback}" if fallback else "training from scratch"
            raise ValueError(
                f"resume_from_checkpoint={resume} is not a complete checkpoint ({problem}). Use {hint}, or "
                "resume_from_checkpoint=True for the last complete checkpoint of output_dir."
            )
    return str(path)  # a missing path: transformers reports it

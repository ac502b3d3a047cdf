"""Non-finite numbers never reach the parameters: rewards of ±inf are unscorable, and a non-finite gradient skips its
optimizer step.

TRL 1.16 treats a None reward (NaN) as "this function cannot score this completion" and leaves it out of the group
baseline, but keeps ±inf: one infinite reward makes its group's baseline infinite, the advantages inf − inf = NaN (or
±inf after `nan_to_num`), and the first update writes NaN into every parameter while the logged loss reads 0.

The gradient guard needs the step to be still ahead: transformers 5.17 calls `_get_grad_norm` just before
`optimizer.step()`. Under DeepSpeed it is not: accelerate 1.15's `DeepSpeedEngineWrapper.backward` runs
`engine.step()` (clip, update, zero_grad) inside the last micro-batch's backward, so by then the update is applied and
there is nothing to skip. RapidTrainer then leaves the guard off and says so once, at the start of training
(DEEPSPEED_GUARD_INACTIVE); non-finite weights are still refused at save time.
"""

from __future__ import annotations

import math
import warnings

import torch


def non_finite_rewards_to_nan(rewards_per_func: torch.Tensor, names: list[str], warned: set[str]) -> torch.Tensor:
    """±inf → NaN in TRL's (completions, reward functions) reward matrix, so ±inf counts as unscorable exactly like
    None: left out of the baseline, advantage 0. Warns once per reward function (its name is added to `warned`)."""
    infinite = torch.isinf(rewards_per_func)
    if not infinite.any():
        return rewards_per_func
    for column in infinite.any(dim=0).nonzero().flatten().tolist():
        name = names[column]
        if name not in warned:
            warned.add(name)
            count = int(infinite[:, column].sum())
            warnings.warn(
                f"Reward function '{name}' returned ±inf for {count} of {len(rewards_per_func)} completions. They are "
                "treated as unscorable (like None): left out of their group's baseline, advantage 0. Return a finite "
                "number, or None for a completion the function cannot score. (Warned once per function.)",
                stacklevel=3,
            )
    return rewards_per_func.masked_fill(infinite, math.nan)


DEEPSPEED_GUARD_INACTIVE = (
    "DeepSpeed is enabled: RapidTrainer's non-finite-gradient guard is inactive. DeepSpeed's engine applies each "
    "update inside `accelerator.backward`, before the gradient norm can be checked, so an update with a NaN or inf "
    "gradient is not skipped (rapid/skipped_updates is not logged). ±inf rewards are still unscorable, and weights "
    "holding NaN or inf are still never saved. To keep the guard, train without DeepSpeed (DDP or FSDP)."
)


def is_finite_norm(grad_norm) -> bool:
    """True when the gradient norm transformers computed before `optimizer.step()` (a tensor or a float) is finite."""
    if isinstance(grad_norm, torch.Tensor):
        return bool(torch.isfinite(grad_norm).all())
    return grad_norm is None or math.isfinite(grad_norm)


def skip_update(model, step: int, grad_norm, skipped: int) -> None:
    """Drop the gradients so that `optimizer.step()` leaves the parameters (and the optimizer's moments) unchanged:
    torch optimizers skip every parameter whose `.grad` is None."""
    model.zero_grad(set_to_none=True)
    warnings.warn(
        f"Optimizer step {step + 1}: the gradient norm is {float(grad_norm)}, so the update is skipped and the "
        f"parameters stay finite ({skipped} skipped so far, logged as rapid/skipped_updates). Common causes: rewards "
        "that overflow, a learning rate too large for the loss scale.",
        stacklevel=3,
    )

"""The buffered generation batch: the keys RapidTrainer adds to each row, and its shuffles (whole groups or rows)."""

from __future__ import annotations

import torch

# Keys RapidTrainer adds to each buffered row; TRL ignores them.
REWARDS, GROUP_IDS, REWARD_SCALE = "rapid_rewards", "rapid_group_ids", "rapid_reward_scale"
# Extra (multimodal) model inputs TRL 1.16's `_compute_loss` passes to its forward pass; the spanning-groups forward
# passes the same.
MODEL_INPUT_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)


def shuffle_groups(batch: dict, group_size: int, group_order: torch.Tensor | None = None) -> dict:
    """Shuffle a generation batch by whole groups of `group_size` consecutive rows, keeping each group contiguous.

    Replaces TRL's row-level `shuffle_sequence_dict`, which would scatter a prompt's completions across micro-batches.
    `group_order` (a permutation of the group indices) is drawn at random unless given.
    """
    num_rows = len(next(v for v in batch.values() if v is not None and not _is_scalar(v)))
    if group_order is None:
        group_order = torch.randperm(num_rows // group_size)
    permutation = (group_order[:, None] * group_size + torch.arange(group_size)).flatten()
    return _permute_rows(batch, permutation)


def _permute_rows(batch: dict, permutation: torch.Tensor) -> dict:
    """Reorder every per-row value of a generation batch by `permutation` (0-dim tensors and None are kept)."""

    def permute(value):
        if value is None or _is_scalar(value):
            return value
        if isinstance(value, torch.Tensor):
            return value[permutation.to(value.device)]
        return [value[i] for i in permutation.tolist()]

    return {key: permute(value) for key, value in batch.items()}


def _is_scalar(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 0


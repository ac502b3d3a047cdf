"""The values TRL accepts for its own choice fields (`loss_type`, `scale_rewards`, ...), read from TRL's code at run time.

`GRPOConfig` declares these fields as plain `str`, with no `choices` metadata, and TRL checks most of them only where it
uses them, mid-training (`raise ValueError(f"Unknown loss type: ...")` inside the loss). The code that uses a field is
what decides which values work: each value TRL handles appears in a comparison such as `self.loss_type == "dapo"` or
`args.loss_type in ["bnpo", "dr_grpo"]` in `trl/trainer/grpo_trainer.py` or `grpo_config.py`, and an alias appears
as `self.scale_rewards = {True: "group", False: "none"}.get(self.scale_rewards, ...)`. Reading those lines with
Python's `ast` (the source file is parsed, not imported) lets `RapidConfig` refuse a typo before any work, while a
value a newer TRL adds is accepted with no change here. The values quoted in the field's own help text
(`GRPOConfig`'s field metadata, "Supported values are 'grpo', 'dr_grpo', ...") are accepted too, so a value TRL
documents is never refused even if its code moves to a module not read here.

A read is trusted only if it finds the field's own `GRPOConfig` default among the values; otherwise the field is left
unchecked (TRL's own error still stands) and tests/test_trl_values.py fails, so the reader gets fixed.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import re
from collections.abc import Iterable

# GRPOConfig fields whose values TRL dispatches on by string comparison.
CHOICE_FIELDS = ("loss_type", "scale_rewards", "importance_sampling_level", "vllm_mode",
                 "vllm_importance_sampling_mode")
# Where TRL compares them: the trainer uses them, the config maps aliases.
SOURCE_MODULES = ("trl.trainer.grpo_trainer", "trl.trainer.grpo_config")


def values_in_source(source: str, fields: Iterable[str]) -> dict[str, tuple]:
    """For each field, the constants its attribute (`self.<field>`, `args.<field>`, ...) is compared with (`==`, `!=`,
    `in`, `not in`) in `source`, plus the keys of an alias mapping `self.<field> = {...}.get(self.<field>, ...)`; in
    order of first appearance."""
    fields = tuple(fields)
    found: dict[str, dict] = {f: {} for f in fields}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and _field_of(node.left, fields):
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                    for value in _constants(right):
                        found[node.left.attr].setdefault(value, None)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and _field_of(node.targets[0], fields):
            keys = _alias_keys(node.value, node.targets[0].attr)
            for key in keys:
                found[node.targets[0].attr].setdefault(key, None)
    return {f: tuple(values) for f, values in found.items()}


def _field_of(node, fields) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in fields


def _constants(node) -> list:
    items = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, (str, bool))]


def _alias_keys(value, field: str) -> list:
    """`{True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)` -> [True, False]."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "get"
            and isinstance(value.func.value, ast.Dict) and value.args and _field_of(value.args[0], (field,))):
        return []
    return [k.value for k in value.func.value.keys if isinstance(k, ast.Constant)]


def values_in_help(help_text: str) -> tuple:
    """The values quoted in a field's help text: 'dapo' or `'dapo'`, not another field's `x='dapo'`."""
    return tuple(dict.fromkeys(re.findall(r"(?<![=\w])'([A-Za-z_][\w-]*)'", help_text)))


@functools.cache
def trl_choices() -> dict[str, tuple]:
    """{field: the values the installed TRL accepts}, only for fields whose read is trusted (module docstring)."""
    from trl import GRPOConfig

    source = "\n".join(_read_source(m) for m in SOURCE_MODULES)
    read = values_in_source(source, CHOICE_FIELDS)
    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    choices = {}
    for name, values in read.items():
        if name in fields and fields[name].default in values:  # trusted: the code read found the default
            documented = values_in_help(fields[name].metadata.get("help", ""))
            choices[name] = tuple(dict.fromkeys((*values, *documented)))
    return choices


def _read_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as handle:
        return handle.read()


def trl_version() -> str:
    import trl

    return trl.__version__

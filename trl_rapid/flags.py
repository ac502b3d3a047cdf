"""Command-line flags take TRL's underscore style (`--max_new_tokens`); an older dashed spelling (`--max-new-tokens`)
stays accepted as a hidden alias that warns, so existing scripts keep running while they move to the new name."""

from __future__ import annotations

import argparse
import warnings


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated and will be removed: use {self.new}.", FutureWarning)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_flag(parser: argparse.ArgumentParser, name: str, *, deprecated: tuple[str, ...] = (), **kwargs):
    """`parser.add_argument(name, **kwargs)`, plus each `deprecated` spelling as a hidden alias that warns."""
    action = parser.add_argument(name, **kwargs)
    for old in deprecated:
        parser.add_argument(old, dest=action.dest, action=_DeprecatedAlias, new=name, nargs=action.nargs,
                            type=action.type, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action

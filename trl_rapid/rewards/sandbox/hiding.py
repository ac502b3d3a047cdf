"""What the namespace sandbox hides from the solution, and which interpreter trees it must keep readable."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from .config import SYSTEM_PATHS, SandboxConfig, default_hidden_paths


def tree_under_tmp(python: str) -> str:
    """The interpreter's environment root (e.g. a virtualenv: `<root>/bin/python`) if it lies below /tmp or /var/tmp,
    which the namespace sandbox covers with the scratch directory; else ""."""
    root = Path(os.path.abspath(python)).parent.parent  # not resolved: a venv's python is a link to the base one
    for tmp in (Path("/tmp"), Path("/var/tmp")):
        if tmp in root.parents:
            return str(root)
    return ""


def _interpreter_trees(python: str) -> list[str]:
    """Directories the programs' interpreter needs: its virtualenv root, the base installation behind its symlinks
    and, for the trainer's own interpreter, `sys.prefix`/`sys.base_prefix`."""
    trees = [Path(os.path.abspath(python)).parent.parent, Path(os.path.realpath(python)).parent.parent]
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        trees += [Path(sys.prefix), Path(sys.base_prefix)]
    return list(dict.fromkeys(os.path.normpath(t) for t in trees))


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _reachable_by_others(path: str) -> bool:
    """Whether a uid that owns nothing and has no groups can reach `path` (every directory on the way is o+x)."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = os.stat(current)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
    return True


def hide_plan(config: SandboxConfig, dedicated_uids: bool) -> tuple[str, str, str]:
    """What the namespace script hides: ("<mode> <ro|rw> <path>" lines hidden first, the interpreter trees they cover
    (bound back read-only), lines for paths inside those trees, hidden after). Paths under /tmp and /var/tmp are
    covered by the scratch directory already; missing paths have nothing to hide, nor (with dedicated sandbox uids,
    i.e. as root) paths those uids cannot reach anyway (e.g. below a 0700 /root); a path inside another hidden one is
    hidden with it. Each hidden directory costs one `mount` (two more per interpreter tree it covers)."""
    trees = [t for t in _interpreter_trees(config.python) if not _inside(t, "/tmp") and not _inside(t, "/var/tmp")]
    candidates = []
    for path in dict.fromkeys([*default_hidden_paths(), *config.hidden_paths]):
        path = os.path.realpath(path)
        if path in SYSTEM_PATHS or _inside(path, "/tmp") or _inside(path, "/var/tmp") or "\n" in path:
            continue
        if not os.path.lexists(path) or (dedicated_uids and not _reachable_by_others(path)):
            continue
        candidates.append(path)
    outer, inner = [], []
    for path in candidates:
        is_inner = any(_inside(path, t) and path != t for t in trees)
        if not is_inner and any(_inside(path, other) and path != other for other in candidates):
            continue  # hidden with the enclosing directory
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o755
        covers = any(_inside(t, path) for t in trees)
        (inner if is_inner else outer).append(f"{mode:o} {'rw' if covers else 'ro'} {path}")
    covered = [t for t in trees if any(_inside(t, line.split(" ", 2)[2]) for line in outer)]
    return "\n".join(outer), "\n".join(covered), "\n".join(inner)

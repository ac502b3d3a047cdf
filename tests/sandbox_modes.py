"""What the sandbox tests share: the isolation modes this machine can run, and the MBPP+ fixture rows."""

import json
import os
import stat
import time
from pathlib import Path

import pytest

from helpers.timing import scaled
from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError

FIXTURE = Path(__file__).parent / "fixtures" / "mbppplus.jsonl"
ROWS = {row["task_id"]: row for row in map(json.loads, FIXTURE.read_text().splitlines())}
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]


def _unavailable(isolation: str) -> str | None:
    """Why a Sandbox with this isolation cannot be built here (its own start-up error), or None."""
    try:
        Sandbox(SandboxConfig(isolation=isolation, workers=1)).close()
        return None
    except SandboxUnavailableError as exc:
        return str(exc)


def reachable_by_others(path: Path) -> bool:
    """Whether a uid that owns nothing can reach `path`: every directory on the way is o+x (a checkout or virtualenv
    inside a 0700 `mktemp -d` directory is not)."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.is_dir())


NAMESPACES = _unavailable("namespaces") is None
# "rlimits" runs the programs as dedicated uids only as root (as another user it needs explicit consent, tested in
# test_sandbox_faults.py), and only where those uids can run the interpreter: its start-up probe says why not.
RLIMITS_PROBLEM = _unavailable("rlimits") if IS_ROOT else "the rlimits mode runs as a dedicated uid only as root"
needs_rlimits = pytest.mark.skipif(RLIMITS_PROBLEM is not None, reason=f"rlimits unavailable: {RLIMITS_PROBLEM}")
MODES = (["rlimits"] if RLIMITS_PROBLEM is None else []) + (["namespaces"] if NAMESPACES else [])


def lasting(snapshot, grace_s: float = 10.0) -> set:
    """What `snapshot()` keeps returning for `grace_s` seconds (scaled to the machine's load, at most 20 s).

    A run of this session has removed its own processes and run directory when it returns, so whatever it leaves
    behind lasts; those of another test session or trainer on the same machine come and go with their runs (a check of
    the whole machine right after a run would count them). 20 s is shorter than any sleep a test's program leaves
    behind (30 s), so a leak is still seen."""
    seen = set(snapshot())
    end = time.monotonic() + min(20.0, scaled(grace_s))
    while seen and time.monotonic() < end:
        time.sleep(0.1)
        seen &= set(snapshot())
    return seen

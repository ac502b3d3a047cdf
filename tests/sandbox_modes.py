"""What the sandbox tests share: the isolation modes this machine can run, and the MBPP+ fixture rows."""

import json
import os
from pathlib import Path

from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError

FIXTURE = Path(__file__).parent / "fixtures" / "mbppplus.jsonl"
ROWS = {row["task_id"]: row for row in map(json.loads, FIXTURE.read_text().splitlines())}
IS_ROOT = os.geteuid() == 0


def _namespaces_available() -> bool:
    try:
        Sandbox(SandboxConfig(isolation="namespaces", workers=1)).close()
        return True
    except SandboxUnavailableError:
        return False


NAMESPACES = _namespaces_available()
# "rlimits" is only safe to test as root (as another user it needs explicit consent; see test_sandbox_faults.py)
MODES = (["rlimits"] if IS_ROOT else []) + (["namespaces"] if NAMESPACES else [])

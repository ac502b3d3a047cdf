"""Waits on a loaded machine: the suite runs next to other CPU-heavy jobs (a benchmark, another test session)."""

import os


def load_factor() -> float:
    """How many times slower than on an idle machine wall-clock work may run now: the 1-minute load average per usable
    CPU, at least 1, at most 8 (TRL_RAPID_TEST_LOAD_FACTOR, if set, replaces it). Tests scale by it the waits and the
    timeouts that they do not test; a test of a timeout keeps the timeout it tests."""
    if os.environ.get("TRL_RAPID_TEST_LOAD_FACTOR"):
        return max(1.0, float(os.environ["TRL_RAPID_TEST_LOAD_FACTOR"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8.0, max(1.0, os.getloadavg()[0] / cpus))


def scaled(seconds: float) -> float:
    """`seconds` on an idle machine, as a wait now (see `load_factor`)."""
    return seconds * load_factor()

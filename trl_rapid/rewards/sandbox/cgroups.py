"""Per-run control groups for the candidate's processes, where the kernel lets us make them (as root, or in a
delegated cgroup v2 subtree): a memory bound for all of its processes together (`memory_mb`, swap included; the
per-process `RLIMIT_AS` let 32 processes take 32 x `memory_mb`), a pids limit, and a CPU share of its own (31 busy
children share one run's share of the CPU instead of taking 31 shares from a neighbouring run).

cgroup v2 (one hierarchy) is used where the trainer's own cgroup can enable the memory, pids and cpu controllers for
its children; else cgroup v1 (one hierarchy per controller, e.g. a hybrid setup), as root. Nothing usable: `detect`
returns None and only the rlimits apply (said once in the log).
"""

from __future__ import annotations

import logging
import os
import secrets

logger = logging.getLogger(__name__)

_V1_CONTROLLERS = ("memory", "pids", "cpu")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fstype, _source, opts = (right.split() + ["", "", ""])[:3]
                if fstype in ("cgroup", "cgroup2"):
                    found.append((left.split()[4], fstype, set(opts.split(","))))
    except OSError:
        pass
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and "" for the v2 hierarchy."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def enter_cgroup(directories: list[str]) -> None:
    """Move the calling process into each cgroup directory (called between fork and exec)."""
    for directory in directories:
        _write(os.path.join(directory, "cgroup.procs"), "0")


class RunCgroups:
    """Creates one cgroup (v2) or one per controller (v1) per run below a parent made for this Sandbox."""

    def __init__(self, parents: list[str], version: int, memory_bytes: int, max_processes: int):
        self.parents, self.version = parents, version
        self.memory_bytes, self.max_processes = memory_bytes, max_processes

    @classmethod
    def detect(cls, memory_mb: int, max_processes: int) -> RunCgroups | None:
        memory_bytes = memory_mb * 1024 * 1024
        own = _own_paths()
        name = f"trl-rapid-sandbox-{os.getpid()}-{secrets.token_hex(4)}"
        problems = []
        for candidate in (cls._v2_parent, cls._v1_parents):
            try:
                parents, version = candidate(own, name)
            except OSError as exc:
                problems.append(f"{exc.strerror or exc}: {exc.filename or ''}")
                continue
            if parents:
                for parent in parents:
                    cls._remove_stale(os.path.dirname(parent))
                groups = cls(parents, version, memory_bytes, max_processes)
                try:  # a trial run: create, enter (from a child), remove
                    groups.remove(groups.create("probe"))
                except OSError as exc:
                    problems.append(f"{exc.strerror or exc}: {exc.filename or ''}")
                    groups.close()
                    continue
                return groups
        logger.info("sandbox: no per-run cgroups (%s); memory is bounded per process by RLIMIT_AS only",
                    "; ".join(problems) or "no writable cgroup hierarchy")
        return None

    @staticmethod
    def _v2_parent(own: dict[str, str], name: str):
        mount = next((m for m, fstype, _ in _mounts() if fstype == "cgroup2" and m == "/sys/fs/cgroup"), None)
        if mount is None or "" not in own:
            return [], 2
        base = os.path.normpath(mount + own[""])
        with open(os.path.join(base, "cgroup.controllers")) as fh:
            if not {"memory", "pids", "cpu"} <= set(fh.read().split()):
                return [], 2
        _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids +cpu")  # EBUSY: base has processes
        parent = os.path.join(base, name)
        os.mkdir(parent)
        try:
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu")
        except OSError:
            os.rmdir(parent)
            raise
        return [parent], 2

    @staticmethod
    def _v1_parents(own: dict[str, str], name: str):
        parents = []
        for controller in _V1_CONTROLLERS:
            mount = next((m for m, fstype, opts in _mounts() if fstype == "cgroup" and controller in opts), None)
            if mount is None or controller not in own:
                for p in parents:
                    os.rmdir(p)
                return [], 1
            parent = os.path.join(os.path.normpath(mount + own[controller]), name)
            try:
                os.mkdir(parent)
            except OSError:
                for p in parents:
                    os.rmdir(p)
                raise
            parents.append(parent)
        return parents, 1

    @staticmethod
    def _remove_stale(base: str) -> None:
        """Remove the (empty) parents left in `base` by sandboxes of processes that no longer exist."""
        try:
            names = [n for n in os.listdir(base) if n.startswith("trl-rapid-sandbox-")]
        except OSError:
            return
        for name in names:
            pid = name.split("-")[3] if name.count("-") >= 4 else ""
            if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
                continue
            parent = os.path.join(base, name)
            try:
                for child in os.listdir(parent):
                    if os.path.isdir(os.path.join(parent, child)):
                        os.rmdir(os.path.join(parent, child))
                os.rmdir(parent)
            except OSError:
                pass

    def create(self, token: str) -> list[str]:
        """The cgroup directories of one run, limits set."""
        made = []
        try:
            for parent in self.parents:
                directory = os.path.join(parent, token)
                os.mkdir(directory)
                made.append(directory)
                files = set(os.listdir(directory))
                if self.version == 2:
                    _write(os.path.join(directory, "memory.max"), str(self.memory_bytes))
                    if "memory.swap.max" in files:
                        _write(os.path.join(directory, "memory.swap.max"), "0")
                    _write(os.path.join(directory, "pids.max"), str(self.max_processes))
                elif "memory.limit_in_bytes" in files:
                    _write(os.path.join(directory, "memory.limit_in_bytes"), str(self.memory_bytes))
                    if "memory.memsw.limit_in_bytes" in files:
                        _write(os.path.join(directory, "memory.memsw.limit_in_bytes"), str(self.memory_bytes))
                elif "pids.max" in files:
                    _write(os.path.join(directory, "pids.max"), str(self.max_processes))
            return made
        except OSError:
            self.remove(made)
            raise

    def remove(self, directories: list[str]) -> None:
        """Remove a run's cgroups (once its processes are gone; a busy one is left, with a warning)."""
        for directory in directories:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("sandbox: could not remove cgroup %s: %s", directory, exc)

    def close(self) -> None:
        for parent in self.parents:
            try:
                os.rmdir(parent)
            except OSError:
                pass

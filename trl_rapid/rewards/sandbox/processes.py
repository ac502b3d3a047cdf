"""Process bookkeeping of the sandbox: finding and killing a run's processes, and leasing sandbox uids per process.

Every sandboxed process carries `TRL_RAPID_SANDBOX=<run token>` in its environment (inherited by all it forks) and,
when the trainer is root, runs under a uid that this trainer process has leased for itself alone, so a sweep can kill
"everything of this run" without touching another trainer's programs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import signal
import stat
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_TOKEN_KEY = "TRL_RAPID_SANDBOX"
LOCK_DIR_NAME = "trl-rapid-sandbox-uids"


def run_prefix(pid: int | None = None) -> str:
    """How the run tokens and run directories of the trainer process `pid` (default: this one) begin, so that a check
    for leftovers can tell them from those of another trainer on the machine."""
    return f"trl-rapid-sbx-{os.getpid() if pid is None else pid}-"


def find_sandbox_processes(token: str | None = None) -> list[int]:
    """PIDs whose environment carries the sandbox marker (any run, or only runs whose token starts with `token`, e.g.
    `run_prefix()`: this trainer's). Unreadable ones are skipped.

    This is how stray processes are found after a run and how tests check that none are left.
    """
    needle = f"{ENV_TOKEN_KEY}={token}".encode() if token else f"{ENV_TOKEN_KEY}=".encode()
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _environ_has(entry, needle)]


def _environ_has(pid: str, needle: bytes) -> bool:
    """True when process `pid`'s environment holds a variable starting with `needle` (False if it is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
    except OSError:
        return False
    return any(var.startswith(needle) for var in env.split(b"\0"))


def _state(pid: int) -> tuple[str, int]:
    """(state letter, parent pid) of `pid` from /proc/<pid>/stat; ("", 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1])
    except (OSError, IndexError, ValueError):
        return "", 0


def _run_processes(token: str | None, uids: frozenset[int], zombies_ok: bool = False,
                   keep: tuple[int, ...] = ()) -> list[int]:
    """PIDs of this run: owned by one of `uids`, or carrying `token` in their environment. A zombie that is our own
    child (the trainer is PID 1 or a subreaper, so orphans of the run come to it) is reaped here, unless in `keep`
    (a `Popen` of ours, reaped by its owner); other zombies count unless `zombies_ok`."""
    needle = f"{ENV_TOKEN_KEY}={token}".encode() if token else None
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            owned = bool(uids) and os.stat(f"/proc/{entry}").st_uid in uids
        except OSError:
            continue
        if not (owned or (needle is not None and _environ_has(entry, needle))):
            continue
        pid = int(entry)
        state, parent = _state(pid)
        if state == "Z":
            if parent == me and pid not in keep:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        continue
                except ChildProcessError:
                    continue
            if zombies_ok:
                continue
        found.append(pid)
    return found


def kill_run(token: str | None, uids=(), deadline_s: float = 10.0, exclude: tuple[int, ...] = (),
             zombies_ok: bool = False, keep: tuple[int, ...] = ()) -> bool:
    """SIGKILL every process of this run (setsid escapees included) but `exclude`, until none is left; True if none.

    `token` None: match by uid only.

    A process owned by a leased uid counts until it is reaped (a zombie still counts against RLIMIT_NPROC), so the
    uid is handed to the next program only when it owns nothing; `zombies_ok`: zombies do not count (they run no
    code). Orphans are reaped by the system's init, which may lag (hence the deadline), or here when the trainer is
    their reaper (PID 1 in a container, a subreaper): see `_run_processes`.
    """
    uids = frozenset(u for u in uids if u is not None)
    end = time.monotonic() + deadline_s
    while True:
        pids = [p for p in _run_processes(token, uids, zombies_ok, keep) if p not in exclude]
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                logger.warning("sandbox: cannot kill stray process %d (permission denied)", pid)
        if time.monotonic() > end:
            logger.warning("sandbox: %d process(es) of a run still alive after %.1fs: %s", len(pids), deadline_s, pids)
            return False
        time.sleep(0.005 if zombies_ok else 0.02)


def count_user_tasks(uid: int) -> int:
    """Processes+threads owned by `uid` (what `RLIMIT_NPROC` counts), read from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            total += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return total


def _lock_dir() -> Path:
    """A directory only its owner (root) can enter: a sandboxed program cannot pre-create, open or hold (`flock`
    works on a read-only descriptor) the lock files."""
    for parent in ("/run", "/var/run", tempfile.gettempdir()):
        if os.path.isdir(parent) and os.access(parent, os.W_OK):
            path = Path(parent) / LOCK_DIR_NAME
            try:
                path.mkdir(mode=0o700, exist_ok=True)
            except OSError:
                continue
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                if stat.S_IMODE(st.st_mode) != 0o700:  # made 0755 by an older version
                    os.chmod(path, 0o700)
                return path
            raise RuntimeError(
                f"sandbox uid lock directory {path} is not a directory owned by uid {os.geteuid()} and writable only "
                "by it; remove it (something else created it) and retry."
            )
    raise RuntimeError("no writable directory for the sandbox uid lock files (/run, /var/run or the temp dir).")


class UidLease:
    """`count` sandbox uids from [base, base + span), each held with an exclusive `flock` on its own lock file.

    The lock lives as long as this object (or the process: the kernel drops it when the process dies, however it
    dies), so concurrent trainers and ranks on one machine never share a uid, and a uid freed by a crashed trainer is
    picked up again. Uids that name a real account (`getpwuid`) are skipped. Leftover processes of a leased uid (from
    a trainer that died mid-run) are killed before it is used.
    """

    def __init__(self, base: int, count: int, span: int):
        self.uids: list[int] = []
        self._fds: list[int] = []
        directory = _lock_dir()
        for uid in range(base, base + span):
            if len(self.uids) == count:
                break
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never run programs under it
            except KeyError:
                pass
            fd = os.open(directory / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)  # lock files of an older version were 0644
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uids.append(uid)
            self._fds.append(fd)
        if len(self.uids) < count:
            held = len(self.uids)
            self.release()
            raise RuntimeError(
                f"only {held} of the {count} sandbox uids needed are free in [{base}, {base + span}): other sandboxes "
                f"on this machine hold the rest (lock files in {directory}). Raise SandboxConfig.sandbox_uid_count, "
                "pick another sandbox_uid_base, or lower workers."
            )
        if not kill_run(None, self.uids, deadline_s=5.0):
            logger.warning("sandbox: leftover processes of leased uids %s could not all be killed", self.uids)

    def release(self):
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __del__(self):
        self.release()

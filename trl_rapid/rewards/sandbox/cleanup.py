"""Deleting what a sandboxed program left behind, without recursion and without ever raising.

`remove_tree` walks with directory file descriptors and an explicit stack of names (one descriptor open at a time),
so depth is unbounded (5,000 nested directories, paths longer than PATH_MAX), symlinks are unlinked and never
followed, mode-000 directories are opened up first, and names with any bytes work. It is called only after every
process of the run is dead, and it gives up with a warning (never an exception) after `max_entries`.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import stat
import threading

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# World-writable places a program running under a sandbox uid can write to outside its scratch dir ("rlimits" as root).
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")


def _open_dir(name, dir_fd=None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:  # the program made it mode 000 (only matters when we are not root)
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _empty_dir(fd: int, budget: list[int]) -> str | None:
    """Unlink every non-directory entry of `fd`; return the name of one subdirectory, or None once it is empty."""
    try:
        os.fchmod(fd, 0o700)
    except OSError:
        pass
    while True:
        subdir, unlinked = None, 0
        with os.scandir(fd) as entries:
            for entry in entries:
                budget[0] -= 1
                if budget[0] < 0:
                    raise RuntimeError("too many entries")
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    subdir = subdir or entry.name
                    continue
                try:
                    os.unlink(entry.name, dir_fd=fd)
                    unlinked += 1
                except FileNotFoundError:
                    pass
        if subdir is not None or not unlinked:  # a pass that removed something rescans: unlinking while listing
            return subdir                        # may skip entries


def remove_tree(path: str | os.PathLike, max_entries: int = 2_000_000) -> bool:
    """Delete `path` (a directory, or anything else) and everything below it; True if it is gone. Never raises."""
    path = os.fspath(path)
    budget = [max_entries]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("sandbox: cannot stat %s: %s", path, exc)
        return False
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
        fd = _open_dir(path)
        names: list[str] = []  # path from `path` down to the directory `fd` is open on
        try:
            while True:
                subdir = _empty_dir(fd, budget)
                if subdir is not None:
                    child = _open_dir(subdir, dir_fd=fd)
                    os.close(fd)
                    fd, _ = child, names.append(subdir)
                    continue
                if not names:
                    break
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)  # the real parent: no mounts or links inside a run dir
                os.close(fd)
                fd = parent
                os.rmdir(names.pop(), dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(path)
        return True
    except Exception as exc:  # a cleanup problem must never end scoring
        logger.warning("sandbox: could not fully remove %s: %s: %s", path, type(exc).__name__, exc)
        return False


def remove_files_of_uids(uids, directories=SHARED_DIRS, max_depth: int = 3) -> list[str]:
    """Remove what `uids` own in the world-writable `directories` (and in world-writable directories below them).

    Only for uids dedicated to the sandbox: everything they own was written by a sandboxed program. Returns the paths
    removed. Never raises.
    """
    uids = set(uids)
    removed: list[str] = []
    stack = [(d, 0) for d in directories]
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as entries:
                found = list(entries)
        except OSError:
            continue
        for entry in found:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid in uids:
                if remove_tree(entry.path):
                    removed.append(entry.path)
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and depth < max_depth:
                stack.append((entry.path, depth + 1))
    return removed


def bytes_of_uids(directory: str, uids, max_entries: int = 20_000) -> float:
    """Bytes that `uids` hold in `directory` (its files and those below directories they own or that are world-
    writable); `inf` past `max_entries` entries (a flood of files counts as over any limit). Never raises."""
    uids = set(uids)
    total, seen, stack = 0, 0, [directory]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                found = list(entries)
        except OSError:
            continue
        for entry in found:
            seen += 1
            if seen > max_entries:
                return float("inf")
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if st.st_uid in uids or st.st_mode & 0o002:
                    stack.append(entry.path)
            elif st.st_uid in uids:
                total += st.st_blocks * 512
    return total


def remove_ipc_of_uids(uids) -> int:
    """Remove System V shared memory, message queues and semaphores owned by `uids` (in this IPC namespace: "rlimits"
    as root gives each process its own, so this is the fallback); the count removed. One `*ctl(IPC_RMID)` call each,
    no subprocess (32,000 `ipcrm` runs stalled a worker for 37-56 s)."""
    import ctypes

    uids = {str(u) for u in uids}
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    removers = {"shm": lambda i: libc.shmctl(i, 0, None), "msg": lambda i: libc.msgctl(i, 0, None),
                "sem": lambda i: libc.semctl(i, 0, 0)}  # IPC_RMID = 0
    removed = 0
    for kind, remove in removers.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                header, *rows = [line.split() for line in fh]
        except (OSError, ValueError):
            continue
        try:
            id_col, uid_col = 1, header.index("uid")
        except ValueError:
            continue
        for row in rows:
            if len(row) > uid_col and row[uid_col] in uids:
                try:
                    if remove(int(row[id_col])) == 0:
                        removed += 1
                except ValueError:
                    pass
    return removed


class _Reaper:
    """Deletes finished run directories on a background thread, off the scoring path (deleting is disk-bound: 5,000
    nested directories took ~8 s here). Directories are locked (mode 0700, root-owned) before they are queued, so no
    later program can reach them; `wait()` (also run at interpreter exit) blocks until every one is gone."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, path) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="trl-rapid-sandbox-cleanup", daemon=True)
                self._thread.start()
        self._queue.put(path)

    def _work(self):
        while True:
            path = self._queue.get()
            try:
                remove_tree(path)
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        self._queue.join()


REAPER = _Reaper()
atexit.register(REAPER.wait)


def wait_for_cleanup() -> None:
    """Block until every finished run directory has been deleted."""
    REAPER.wait()

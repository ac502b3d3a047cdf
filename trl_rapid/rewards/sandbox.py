"""Run untrusted Python (model completions + their unit tests) in a separate, resource-limited process.

Nothing a model writes is ever `exec`-ed in the trainer's process. Every program gets:

* a fresh `python -I -B` interpreter (isolated mode: no user site, no PYTHON* variables, no cwd on `sys.path`),
  started with `start_new_session=True` (its own session and process group) and stdin from /dev/null;
* resource limits set with `resource.setrlimit` in a `preexec_fn` before the interpreter starts: CPU seconds
  (`RLIMIT_CPU`), address space (`RLIMIT_AS`), processes+threads (`RLIMIT_NPROC`), file size (`RLIMIT_FSIZE`),
  open files (`RLIMIT_NOFILE`) and no core dumps (`RLIMIT_CORE` = 0);
* a wall-clock timeout after which its whole process group is SIGKILLed, followed by a sweep that kills any
  process still carrying this run's private token in its environment (catches `setsid` escapees);
* its own scratch directory as cwd, HOME and TMPDIR, deleted afterwards;
* an environment built from scratch (PATH, LANG, LC_ALL, HOME, TMPDIR, thread-count caps and the sweep token):
  nothing is inherited from the trainer, so no tokens or keys leak;
* stdout/stderr redirected to files opened by the trainer (never buffered in the trainer's memory), capped by
  `RLIMIT_FSIZE`; only a short tail is read back for diagnostics.

Passing is decided by a *success marker*, not by the exit status alone: the runner reads a random nonce (with the
program and tests) from an already-unlinked file descriptor, executes the solution, then the tests, and only then
writes the nonce to a result descriptor. `sys.exit(0)` / `os._exit(0)` before the tests therefore fail.

Isolation levels (`SandboxConfig.isolation`):

``"namespaces"`` (chosen by ``"auto"`` when a probe run succeeds) wraps the interpreter in
``unshare --pid --fork --kill-child --net --mount --mount-proc``:

* new PID namespace: the program is PID 1 of its own namespace, `os.getppid()` is 0, it cannot see or signal any
  process outside, and when it exits or is killed the kernel kills everything it forked (no stray processes);
* new network namespace with no interfaces: no network at all, loopback included;
* new mount namespace in which the scratch directory is bind-mounted over /tmp and /var/tmp, a small tmpfs is mounted
  over /dev/shm, and every other mount except /dev, /proc and /sys is remounted read-only: the program can write
  only to its scratch directory (and the private /dev/shm), all of which vanish afterwards;
* when the trainer runs as root, the program runs as an unprivileged uid (``sandbox_uid_base + worker slot``, one
  uid per parallel worker) with no supplementary groups and `no_new_privs`. Only then is `RLIMIT_NPROC` effective
  (the kernel ignores it for root), and the program cannot signal root processes or read root-only files;
* when the trainer is not root, an unprivileged user namespace is used instead (`--map-root-user`, every capability
  dropped with `setpriv` before the interpreter starts).

``"rlimits"`` (fallback when namespaces are unavailable, e.g. under a restrictive container seccomp profile) keeps
the rlimits, timeout, session, scratch cwd, environment and marker, plus:

* as root: the same per-slot unprivileged uid (via `setpriv`, or `subprocess`'s `user=`/`group=`), so NPROC and file
  permissions hold (root-owned files cannot be modified) and root processes cannot be signalled;
* an intermediate supervisor process: the program's parent is a forked copy of the runner, not the trainer, so a
  naive `os.kill(os.getppid(), SIGKILL)` hits the supervisor (the run scores 0) and the trainer survives. The
  supervisor is a child subreaper; with a dedicated uid it kills and reaps everything left when the program ends.

What is NOT enforced (be explicit when deploying):

* "rlimits" as non-root: the program runs as the trainer's own user. It can write/delete any file that user can
  (including outside the scratch dir, e.g. /tmp or the checkpoint directory), can find and signal the trainer by
  walking /proc (`os.kill(-1, SIGKILL)` kills every process of the user, the trainer included), and
  `RLIMIT_NPROC` counts all of the user's processes (we set it to "current count + max_processes"). Use namespaces,
  root, or a container.
* "rlimits" as root: world-writable directories (/tmp, /var/tmp, /dev/shm, /run/lock) stay writable, and files
  created there are not cleaned up; world-readable files are readable; the network is reachable.
* "namespaces": world-readable files (and, without root, the user's own files) stay readable; /sys and /dev keep
  their flags (writes there need privileges the program does not have); a mount whose flags a user namespace
  cannot preserve stays as it was (remounting is best effort); /dev/shm memory is bounded by `shm_mb`, not by
  `RLIMIT_AS`; disk use in the scratch directory is bounded per file by `RLIMIT_FSIZE`, not in total (no quota).
* In every mode the success marker lives in the program's own memory: code that deliberately introspects the
  interpreter (`gc.get_objects()`, frame walking) could find and print it, and tests can be fooled by values that
  override `__eq__`. These are reward-hacking risks of in-process unit tests, not sandbox escapes.
* If the program overwrites its own environment block, the token sweep cannot find its `setsid` escapees; in
  "namespaces" mode the PID namespace still kills them, in "rlimits" mode with a dedicated uid they are killed by uid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_TOKEN_KEY = "TRL_RAPID_SANDBOX"
_ISOLATIONS = ("auto", "namespaces", "rlimits")

# Executed by the sandboxed interpreter (`python -I -B -c RUNNER payload_fd result_fd supervise dedicated`). It never
# sees a file holding the tests: the payload arrives on a descriptor whose file was unlinked before the program started.
RUNNER = r"""
import os, sys
def _run():
    payload_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    supervise, dedicated = sys.argv[3] == "1", sys.argv[4] == "1"
    if supervise:
        try:  # adopt orphaned descendants so that their zombies are reaped here, not by a slow system init
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass
        pid = os.fork()
        if pid:
            os.close(payload_fd)
            os.close(result_fd)
            status = None
            while status is None:
                try:
                    done, st = os.waitpid(-1, 0)
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
                if done == pid:
                    status = st
            if dedicated:  # this uid belongs to the sandbox alone: kill every leftover, reap what comes back to us
                import signal, time
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    try:
                        if os.waitpid(-1, os.WNOHANG)[0] == 0:
                            time.sleep(0.005)
                    except ChildProcessError:
                        break
                    except InterruptedError:
                        continue
            code = 1 if status is None else os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)
    import json
    chunks = []
    while True:
        chunk = os.read(payload_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(payload_fd)
    job = json.loads(b"".join(chunks))
    del chunks
    nonce = job.pop("nonce").encode()
    namespace = {"__name__": "__solution__"}
    exec(compile(job.pop("solution"), "<solution>", "exec"), namespace)
    exec(compile(job.pop("tests"), "<tests>", "exec"), namespace)
    os.write(result_fd, nonce)
    os.close(result_fd)
_run()
"""

def _tree_under_tmp(python: str) -> str:
    """The interpreter's environment root (e.g. a virtualenv: `<root>/bin/python`) if it lies below /tmp or /var/tmp,
    which the namespace sandbox covers with the scratch directory; else ""."""
    root = Path(os.path.abspath(python)).parent.parent  # not resolved: a venv's python is a link to the base one
    for tmp in (Path("/tmp"), Path("/var/tmp")):
        if tmp in root.parents:
            return str(root)
    return ""


# Run by /bin/sh as PID 1 of the new namespaces (still privileged there), then replaced by the interpreter.
# "$1" scratch dir, "$2" uid to drop to ("" = keep the user-namespace root but drop every capability), "$6" the
# interpreter's own tree when it lives under /tmp or /var/tmp ("" otherwise).
_NS_SCRIPT = r"""
set -e
s="$1"; u="$2"; shm_mb="$3"; mount_bin="$4"; setpriv_bin="$5"; keep="$6"; shift 6
# A virtualenv under /tmp would vanish below the scratch directory: bind it into the scratch directory at the same
# relative path first (--rbind below carries it along; the loop below makes it read-only like everything else).
if [ -n "$keep" ]; then
  case "$keep" in /var/tmp/*) rel="${keep#/var/tmp/}" ;; *) rel="${keep#/tmp/}" ;; esac
  mkdir -p "$s/$rel" && "$mount_bin" --bind "$keep" "$s/$rel"
fi
[ -d /var/tmp ] && "$mount_bin" --rbind "$s" /var/tmp
[ -d /dev/shm ] && "$mount_bin" -t tmpfs -o "size=${shm_mb}m,mode=1777,nosuid,nodev" tmpfs /dev/shm
"$mount_bin" --rbind "$s" /tmp
# Everything else read-only, in this mount namespace only (best effort: keep each mount's other flags, which a user
# namespace may not drop; a mount that cannot be remounted stays as it was).
while read -r _id _parent _dev _root mnt opts _rest; do
  case "$mnt" in
    /tmp|/var/tmp|/dev|/dev/*|/proc|/proc/*|/sys|/sys/*) ;;
    *) opts="${opts#rw}"; opts="${opts#,}"
       "$mount_bin" -o "remount,bind,ro${opts:+,$opts}" "$mnt" 2>/dev/null || true ;;
  esac
done < /proc/self/mountinfo
cd /tmp
unset OLDPWD PWD
if [ -n "$u" ]; then
  exec "$setpriv_bin" --reuid="$u" --regid="$u" --clear-groups --no-new-privs --pdeathsig=KILL -- "$@"
else
  exec "$setpriv_bin" --inh-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL -- "$@"
fi
"""


class SandboxUnavailableError(RuntimeError):
    """The requested isolation level cannot be provided on this machine (raised at construction, never mid-run)."""


@dataclass
class SandboxConfig:
    """Limits and isolation for running untrusted code. Every field is validated in `__post_init__`.

    Attributes:
        timeout_s: wall-clock seconds per program (interpreter start-up included). `RLIMIT_CPU` is set to
            `ceil(timeout_s) + 1` CPU seconds.
        memory_mb: address-space limit (`RLIMIT_AS`) in MiB. Python + numpy need roughly 300 MiB of address space.
        max_processes: `RLIMIT_NPROC` (processes and threads) of the sandbox uid.
        max_output_bytes: `RLIMIT_FSIZE`: the most bytes the program can write to stdout, stderr or any one file.
        max_open_files: `RLIMIT_NOFILE`.
        workers: programs run in parallel (threads driving subprocesses).
        isolation: "auto" (namespaces if a probe run works, else rlimits), "namespaces" (fail at construction if
            unavailable) or "rlimits".
        python: interpreter for the programs; defaults to the trainer's so that numpy (used by MBPP+ tests) is there.
        sandbox_uid_base: when the trainer runs as root, worker slot `i` runs as uid/gid `sandbox_uid_base + i`;
            pick a range no real account uses.
        scratch_root: where per-run directories are created (default: the system temp dir).
        shm_mb: size of the private /dev/shm tmpfs in namespace mode.
    """

    timeout_s: float = 10.0
    memory_mb: int = 2048
    max_processes: int = 32
    max_output_bytes: int = 1 << 20
    max_open_files: int = 256
    workers: int = dataclasses.field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    isolation: str = "auto"
    python: str = sys.executable
    sandbox_uid_base: int = 61000
    scratch_root: str | None = None
    shm_mb: int = 64

    def __post_init__(self):
        def bad(field: str, fix: str):
            raise ValueError(f"SandboxConfig.{field}={getattr(self, field)!r} is invalid: {fix}")

        if not self.timeout_s > 0:
            bad("timeout_s", "use a positive number of seconds, e.g. 10.")
        if self.memory_mb < 64:
            bad("memory_mb", "use at least 64 (MiB); Python itself needs ~30 MiB of address space.")
        if self.max_processes < 1:
            bad("max_processes", "use at least 1.")
        if self.max_output_bytes < 1024:
            bad("max_output_bytes", "use at least 1024.")
        if self.max_open_files < 16:
            bad("max_open_files", "use at least 16.")
        if self.workers < 1:
            bad("workers", "use at least 1.")
        if self.isolation not in _ISOLATIONS:
            bad("isolation", f"choose one of {_ISOLATIONS}.")
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            bad("python", "point it at an executable Python interpreter (default: sys.executable).")
        if not 1000 <= self.sandbox_uid_base <= 2**31 - 1 - self.workers:
            bad("sandbox_uid_base", "use an unused uid range >= 1000, e.g. 61000.")
        if self.scratch_root is not None and not os.path.isdir(self.scratch_root):
            bad("scratch_root", "use an existing directory or None for the system temp dir.")
        if self.shm_mb < 1:
            bad("shm_mb", "use at least 1.")


@dataclass
class ExecutionResult:
    """Outcome of one program. `passed` is True iff it exited 0 *and* wrote the success marker after the tests."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "no_marker" | "error"
    returncode: int | None
    duration_s: float
    stdout_tail: str = ""
    stderr_tail: str = ""


# ---------------------------------------------------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------------------------------------------------


def find_sandbox_processes(token: str | None = None) -> list[int]:
    """PIDs whose environment carries the sandbox marker (any run, or only run `token`). Unreadable ones are skipped.

    Every sandboxed process is started with `TRL_RAPID_SANDBOX=<token>` in its environment, which is inherited by
    everything it forks; this is how stray processes are found after a run and how tests check none are left.
    """
    needle = f"{ENV_TOKEN_KEY}={token}".encode() if token else f"{ENV_TOKEN_KEY}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if any(var.startswith(needle) for var in env.split(b"\0")):
            found.append(int(entry))
    return found


def _kill_stragglers(token: str, deadline_s: float = 2.0, exclude: tuple[int, ...] = ()) -> list[int]:
    """SIGKILL every live process of this run (setsid escapees included) but `exclude`; return the PIDs found."""
    seen: list[int] = []
    end = time.monotonic() + deadline_s
    while True:
        pids = [p for p in find_sandbox_processes(token) if p != os.getpid() and p not in exclude]
        if not pids:
            return seen
        seen.extend(p for p in pids if p not in seen)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                logger.warning("sandbox: cannot kill stray process %d (permission denied)", pid)
        if time.monotonic() > end:
            logger.warning("sandbox: stray processes still alive after %.1fs: %s", deadline_s, pids)
            return seen
        time.sleep(0.02)


def _drain_uid(uid: int, deadline_s: float = 10.0) -> bool:
    """Kill every process of a sandbox-only uid and wait until none is left, zombies included; True if drained.

    Only used for the per-slot uids of a root trainer (nothing else runs under them). Orphans of a killed program are
    reaped by the system's init, which may lag by seconds; until then they still count against `RLIMIT_NPROC`, so a
    slot is handed to the next program only once its uid owns no task at all.
    """
    end = time.monotonic() + deadline_s
    while True:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        pids.append(int(entry))
                except OSError:
                    continue
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > end:
            logger.warning("sandbox: uid %d still owns %d process(es) after %.1fs", uid, len(pids), deadline_s)
            return False
        time.sleep(0.05)


def _count_user_tasks(uid: int) -> int:
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


def _read_tail(path: Path, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _rmtree(path: Path):
    """Delete a run directory even if the program removed permissions inside it."""

    def fix_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix_and_retry)


# ---------------------------------------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------------------------------------

_PROBE_CACHE: dict[tuple, str | None] = {}
_PROBE_LOCK = threading.Lock()


class Sandbox:
    """Runs `(solution, tests)` pairs in isolated subprocesses, in parallel over `config.workers` threads.

    Construction resolves the isolation level once (a probe program runs through the full pipeline) so that a
    misconfiguration fails at start-up with a message naming the setting, never in the middle of training.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.is_root = os.geteuid() == 0
        self._unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
        self._mount = shutil.which("mount", path="/usr/bin:/bin:/usr/sbin:/sbin")
        self._setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
        self._sh = shutil.which("sh", path="/usr/bin:/bin")
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.config.workers):
            self._slots.put(slot)
        self.isolation = self._resolve_isolation()

    # -- isolation ----------------------------------------------------------------------------------------------------
    def _resolve_isolation(self) -> str:
        cfg = self.config
        key = (cfg.python, os.geteuid(), cfg.sandbox_uid_base, cfg.scratch_root, cfg.memory_mb)
        if cfg.isolation in ("auto", "namespaces"):
            problem = self._cached_probe(key, "namespaces")
            if problem is None:
                return "namespaces"
            if cfg.isolation == "namespaces":
                raise SandboxUnavailableError(
                    f"SandboxConfig.isolation='namespaces' is not available here: {problem}. Set isolation='rlimits' "
                    "(weaker; see trl_rapid/rewards/sandbox.py) or 'auto', or run where unshare/mount namespaces are "
                    "allowed (root, or unprivileged user namespaces enabled)."
                )
            logger.warning("sandbox: namespaces unavailable (%s); falling back to isolation='rlimits'", problem)
        problem = self._cached_probe(key, "rlimits")
        if problem is not None:
            raise SandboxUnavailableError(
                f"the code sandbox cannot run SandboxConfig.python={cfg.python!r}: {problem}. Point "
                "SandboxConfig.python at an interpreter the sandbox user can execute (when the trainer runs as root "
                f"the programs run as uid {cfg.sandbox_uid_base}+, so every directory on the interpreter's path must "
                "be world-searchable) and check SandboxConfig.memory_mb is large enough for it to start."
            )
        return "rlimits"

    def _cached_probe(self, key: tuple, isolation: str) -> str | None:
        with _PROBE_LOCK:
            if (key, isolation) not in _PROBE_CACHE:
                _PROBE_CACHE[(key, isolation)] = self._probe(isolation)
            return _PROBE_CACHE[(key, isolation)]

    def _probe(self, isolation: str) -> str | None:
        """None if a trivial program passes through the `isolation` pipeline, else the reason it did not."""
        needed = (("unshare", self._unshare), ("mount", self._mount), ("setpriv", self._setpriv), ("sh", self._sh))
        if isolation == "namespaces":
            missing = [name for name, path in needed if path is None]
            if missing:
                return f"missing executables: {', '.join(missing)}"
        result = self._execute("x = 1\n", "assert x == 1\n", slot=0, isolation=isolation, timeout_s=20.0)
        if result.passed:
            return None
        detail = result.stderr_tail.strip()[-300:]
        return f"probe run ended with status={result.status} rc={result.returncode}: {detail}"

    # -- running ------------------------------------------------------------------------------------------------------
    def run(self, solution: str, tests: str) -> ExecutionResult:
        """Run one program (solution, then tests) and return its result. Thread-safe; blocks for a free slot."""
        slot = self._slots.get()
        try:
            return self._execute(solution, tests, slot=slot, isolation=self.isolation)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: list[tuple[str, str]]) -> list[ExecutionResult]:
        """Run many `(solution, tests)` pairs on `config.workers` threads; results keep the input order."""
        if not jobs:
            return []
        if len(jobs) == 1 or self.config.workers == 1:
            return [self.run(s, t) for s, t in jobs]
        with ThreadPoolExecutor(max_workers=min(self.config.workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self.run(*job), jobs))

    def _limits(self, sandbox_uid: int | None) -> list[tuple[int, tuple[int, int]]]:
        cfg = self.config
        cpu = int(math.ceil(cfg.timeout_s)) + 1
        nproc = cfg.max_processes
        if sandbox_uid is None:  # we run as the trainer's user: NPROC counts all of its tasks
            nproc += _count_user_tasks(os.getuid())
        mem = cfg.memory_mb * 1024 * 1024
        return [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (mem, mem)),
            (resource.RLIMIT_NPROC, (nproc, nproc)),
            (resource.RLIMIT_FSIZE, (cfg.max_output_bytes, cfg.max_output_bytes)),
            (resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]

    def _execute(self, solution: str, tests: str, slot: int, isolation: str, timeout_s: float | None = None):
        cfg = self.config
        timeout_s = cfg.timeout_s if timeout_s is None else timeout_s
        token = secrets.token_hex(16)
        nonce = secrets.token_hex(32)
        sandbox_uid = cfg.sandbox_uid_base + slot if self.is_root else None
        run_dir = Path(tempfile.mkdtemp(prefix="trl-rapid-sbx-", dir=cfg.scratch_root))
        scratch, private = run_dir / "scratch", run_dir / "private"
        scratch.mkdir(mode=0o700)
        private.mkdir(mode=0o700)
        if sandbox_uid is not None:
            os.chmod(run_dir, 0o711)  # the sandbox uid may traverse to its scratch dir, not list or enter private/
            os.chown(scratch, sandbox_uid, sandbox_uid)

        payload_path = private / "payload.json"
        payload_path.write_text(json.dumps({"nonce": nonce, "solution": solution, "tests": tests}))
        payload_fd = os.open(payload_path, os.O_RDONLY)
        payload_path.unlink()
        result_fd = os.open(private / "result", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stdout_path, stderr_path = private / "stdout", private / "stderr"

        home = "/tmp" if isolation == "namespaces" else str(scratch)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": home,
            "TMPDIR": home,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            ENV_TOKEN_KEY: token,
        }
        supervise = "1" if isolation == "rlimits" else "0"
        dedicated = "1" if sandbox_uid is not None else "0"
        program = [cfg.python, "-I", "-B", "-c", RUNNER, str(payload_fd), str(result_fd), supervise, dedicated]
        popen_kwargs: dict = {}
        if isolation == "namespaces":
            ns = ["--pid", "--fork", "--kill-child", "--net", "--mount", "--mount-proc", "--propagation", "private"]
            if not self.is_root:
                ns = ["--user", "--map-root-user", *ns]
            uid_arg = str(sandbox_uid) if sandbox_uid is not None else ""
            argv = [self._unshare, *ns, "--", self._sh, "-c", _NS_SCRIPT, "sh", str(scratch), uid_arg,
                    str(cfg.shm_mb), self._mount, self._setpriv, _tree_under_tmp(cfg.python), *program]
        elif sandbox_uid is not None and self._setpriv is not None:
            # setpriv resolves the interpreter path before the kernel drops its capabilities at exec, so an
            # interpreter under a root-only directory (e.g. pyenv in /root) still starts; the program has none.
            uid = str(sandbox_uid)
            argv = [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
                    *program]
        else:
            argv = program
            if sandbox_uid is not None:
                popen_kwargs.update(user=sandbox_uid, group=sandbox_uid, extra_groups=[])

        limits = self._limits(sandbox_uid)

        def preexec():  # runs in the child between fork and exec: only setrlimit calls
            for res, lim in limits:
                resource.setrlimit(res, lim)

        start = time.monotonic()
        timed_out = False
        returncode: int | None = None
        try:
            with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=str(scratch),
                    env=env,
                    pass_fds=(payload_fd, result_fd),
                    start_new_session=True,
                    preexec_fn=preexec,
                    close_fds=True,
                    **popen_kwargs,
                )
            os.close(payload_fd)
            os.close(result_fd)
            payload_fd = result_fd = -1
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                # Kill the program's processes first and let the direct child (unshare, or the supervisor) reap them
                # and exit on its own: killing everything at once leaves zombies for the system init to collect.
                _kill_stragglers(token, exclude=(proc.pid,))
                try:
                    returncode = proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, whether it finished or not
                except (ProcessLookupError, PermissionError):
                    pass
                if returncode is None:
                    returncode = proc.wait()
            duration = time.monotonic() - start
            stragglers = _kill_stragglers(token)
            if stragglers:
                logger.info("sandbox: killed %d stray process(es) after the run", len(stragglers))
            if sandbox_uid is not None:
                _drain_uid(sandbox_uid)
            marker = (private / "result").read_bytes()[:128]
            passed = (not timed_out) and returncode == 0 and marker == nonce.encode()
            if passed:
                status = "passed"
            elif timed_out:
                status = "timeout"
            elif returncode == 0:
                status = "no_marker"
            else:
                status = "failed"
            return ExecutionResult(
                passed=passed,
                status=status,
                returncode=returncode,
                duration_s=duration,
                stdout_tail=_read_tail(stdout_path),
                stderr_tail=_read_tail(stderr_path),
            )
        except OSError as exc:  # could not even start: report, never raise into the trainer
            return ExecutionResult(False, "error", None, time.monotonic() - start, "", f"{type(exc).__name__}: {exc}")
        finally:
            for fd in (payload_fd, result_fd):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            _rmtree(run_dir)

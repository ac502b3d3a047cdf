"""The `Sandbox`: one candidate process and one verdict process per completion, on `workers` threads."""

from __future__ import annotations

import json
import logging
import math
import importlib.util
import os
import queue
import resource
import secrets
import select
import shutil
import sys
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .cgroups import RunCgroups, enter_cgroup
from .cleanup import REAPER, bytes_of_uids, remove_files_of_uids, remove_ipc_of_uids, remove_tree
from .config import RLIMITS_AS_USER_EXPOSES, RLIMITS_CANNOT_HIDE, ExecutionResult, SandboxConfig
from .config import SandboxUnavailableError
from .jail import JailConfig, find_nsjail, jail_argv
from .processes import ENV_TOKEN_KEY, UidLease, count_user_tasks, kill_run, run_prefix
from .runners import CANDIDATE_SOURCE, VERDICT_SOURCE, VERDICT_WORDS

logger = logging.getLogger(__name__)

_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_PROBE_CACHE: dict[tuple, str | None] = {}
_PROBE_LOCK = threading.Lock()
SHM_POLL_S = 0.05  # "rlimits" as root: how often a run's /dev/shm use is checked


def _read_tail(path: Path, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _payload(data: bytes) -> int:
    """A read descriptor on an anonymous in-memory file (memfd) holding `data`: no name, no disk; only the process
    that inherits it can read it."""
    fd = os.memfd_create("trl-rapid-job", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _Tail:
    """What a program wrote to a pipe: everything is read (the writer never blocks or fails on a full pipe), the last
    `keep` bytes are kept."""

    def __init__(self, keep: int = 8192):
        self.keep, self.data = keep, bytearray()

    def add(self, chunk: bytes):
        self.data += chunk
        if len(self.data) > 2 * self.keep:
            del self.data[: len(self.data) - self.keep]

    def text(self, limit: int = 4096) -> str:
        return bytes(self.data[-limit:]).decode("utf-8", errors="replace")


try:  # unshare(CLONE_NEWIPC) in "rlimits" as root: System V IPC objects of a run vanish with it
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except (OSError, ImportError):  # pragma: no cover
    _LIBC = None
CLONE_NEWIPC = 0x08000000


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """`proc.wait(timeout)` without its polling loop (which sleeps up to 50 ms between checks): wait on a pidfd."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout=timeout)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, timeout))
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()


def _drain(fd: int, tail: _Tail, limit: int = 1 << 20):
    """Read what is already in pipe `fd` (at most `limit` bytes), without waiting for writers that are still alive."""
    os.set_blocking(fd, False)
    try:
        while limit > 0:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            tail.add(chunk)
            limit -= len(chunk)
    except (BlockingIOError, OSError):
        pass


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (/proc/<pid>/task/*/children, else a scan of /proc)."""
    try:
        found = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        return found
    except (OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _close(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Sandbox:
    """Scores `(solution, tests)` pairs: the solution runs in one sandboxed process, the tests and the verdict in
    another, which calls the solution's functions over a pipe that carries plain data only.

    Construction leases this process's sandbox uids (as root) and resolves the isolation level once (a probe program
    runs through the full pipeline), so a misconfiguration fails at start-up with a message naming the setting.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.is_root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv", path=_SYSTEM_PATH)
        self._nsjail, self._no_nsjail = find_nsjail()
        self._jail_config = JailConfig(self.config)  # hides the trainer's cwd and HOME as they are now
        weakref.finalize(self, self._jail_config.close)
        self._lease: UidLease | None = None
        if self.is_root:
            try:
                self._lease = UidLease(self.config.sandbox_uid_base, 2 * self.config.workers,
                                       self.config.sandbox_uid_count)
            except RuntimeError as exc:
                raise SandboxUnavailableError(str(exc)) from None
            weakref.finalize(self, self._lease.release)
        self._preludes: dict[str, str] = {}  # per isolation level: what `site` would have set up (see _site_prelude)
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.config.workers):
            self._slots.put(slot)
        self._dirty: set[int] = set()  # slots whose uids still owned a process after the last run
        self._cgroups = RunCgroups.detect(self.config.memory_mb, self.config.max_processes)
        if self._cgroups is not None:
            weakref.finalize(self, self._cgroups.close)
        self.isolation = self._resolve_isolation()

    @property
    def uids(self) -> list[int]:
        """The uids this sandbox leased (empty when the trainer is not root)."""
        return list(self._lease.uids) if self._lease else []

    def close(self):
        """Give the leased uids back now (also done when the Sandbox is garbage-collected or the process ends)."""
        if self._lease:
            self._lease.release()
        if self._cgroups is not None:
            self._cgroups.close()

    # -- isolation ----------------------------------------------------------------------------------------------------
    def _resolve_isolation(self) -> str:
        cfg = self.config
        key = (cfg.python, os.geteuid(), cfg.scratch_root, cfg.memory_mb)
        if cfg.isolation in ("auto", "namespaces"):
            problem = self._cached_probe(key, "namespaces")
            if problem is None:
                return "namespaces"
            if cfg.isolation == "namespaces":
                raise SandboxUnavailableError(
                    f"SandboxConfig.isolation='namespaces' (nsjail) is not available here: {problem}. Set "
                    "isolation='rlimits' (the weaker fallback; see trl_rapid/rewards/sandbox/__init__.py) or 'auto', "
                    "or run where nsjail can make namespaces (root, or unprivileged user namespaces enabled)."
                )
            if not self.is_root and not cfg.allow_unsafe_rlimits:
                raise SandboxUnavailableError(
                    f"SandboxConfig.isolation='auto': namespaces are unavailable here ({problem}), and the 'rlimits' "
                    "fallback as a non-root user is refused: " + RLIMITS_AS_USER_EXPOSES.format(uid=os.geteuid())
                    + ". Enable unprivileged user namespaces, run as root, or, inside a disposable container only, set "
                    "SandboxConfig.allow_unsafe_rlimits=True (--code_allow_unsafe_rlimits)."
                )
            logger.warning("sandbox: nsjail namespaces unavailable (%s); FALLING BACK to isolation='rlimits' (no "
                           "mount, PID or network namespace), where %s",
                           problem, RLIMITS_CANNOT_HIDE)
        problem = self._cached_probe(key, "rlimits")
        if problem is not None:
            raise SandboxUnavailableError(
                f"the code sandbox cannot run SandboxConfig.python={cfg.python!r}: {problem}. Point "
                "SandboxConfig.python at an interpreter the sandbox user can execute (when the trainer runs as root "
                f"the programs run as uids {cfg.sandbox_uid_base}+, so every directory on the interpreter's path "
                "must be world-searchable) and check SandboxConfig.memory_mb is large enough for it to start."
            )
        return "rlimits"

    def _cached_probe(self, key: tuple, isolation: str) -> str | None:
        if isolation == "namespaces" and self._nsjail is None:
            return self._no_nsjail
        with _PROBE_LOCK:
            if (key, isolation) not in _PROBE_CACHE:
                try:
                    self._preludes[isolation] = self._site_prelude(isolation)
                    _PROBE_CACHE[(key, isolation)] = (self._probe(isolation), self._preludes[isolation])
                except (OSError, ValueError, subprocess.SubprocessError) as exc:
                    _PROBE_CACHE[(key, isolation)] = (f"{type(exc).__name__}: {exc}", "")
            problem, self._preludes[isolation] = _PROBE_CACHE[(key, isolation)]
            return problem

    def _site_prelude(self, isolation: str) -> str:
        """Source giving a `python -I -S` what `site` gives it here: `sys.path` (site-packages included) and, in a
        virtualenv, `sys.prefix`, as seen inside this sandbox by its uid. The programs then start with `-S`, which
        skips `site` and every .pth hook (an editable install's finder alone cost ~8 ms per interpreter here)."""
        probe = "import sys, json; print(json.dumps([sys.path, sys.prefix, sys.exec_prefix]))"
        run_dir = Path(tempfile.mkdtemp(prefix=run_prefix(), dir=self.config.scratch_root))
        try:
            uid = self._slot_uids(0)[0]
            scratch = run_dir / "candidate"
            scratch.mkdir(mode=0o700)
            if uid is not None:
                os.chmod(run_dir, 0o711)
                os.chown(scratch, uid, uid)
            token = run_prefix() + secrets.token_hex(16)
            with open(run_dir / "out", "wb") as out, open(run_dir / "err", "wb") as err:
                proc = self._spawn(isolation, probe, [], [], uid, scratch, out, err, token, prelude=None)
            try:
                _wait(proc, 30.0)
            finally:
                self._stop([proc], token, [u for u in self._slot_uids(0) if u is not None])
            try:
                paths, prefix, exec_prefix = json.loads((run_dir / "out").read_text())
            except ValueError:
                raise ValueError(f"the interpreter did not start: {_read_tail(run_dir / 'err')[-300:]}") from None
            paths = [p for p in paths if isinstance(p, str) and p]
            return f"import sys\nsys.path[:] = {paths!r}\nsys.prefix, sys.exec_prefix = {prefix!r}, {exec_prefix!r}\n"
        finally:
            remove_tree(run_dir)

    def _probe(self, isolation: str) -> str | None:
        """None if a trivial program passes through the `isolation` pipeline, else the reason it did not."""
        # MBPP+'s "plus" tests import numpy: if the trainer has it, the sandbox uid must be able to import it too (a
        # virtualenv inside a 0700 directory runs, but its site-packages are unreadable there).
        same_interpreter = os.path.abspath(self.config.python) == os.path.abspath(sys.executable)  # a venv is its own
        needs_numpy = same_interpreter and importlib.util.find_spec("numpy") is not None
        tests = "assert probe() == 1\n" + ("import numpy\n" if needs_numpy else "")
        result = self._execute("def probe():\n    return 1\n", tests, slot=0, isolation=isolation, timeout_s=20.0)
        if result.passed:
            return None
        detail = (result.stderr_tail.strip() + " " + result.verdict_tail.strip())[-300:]
        if result.returncode in (137, -9) and not detail.strip():  # SIGKILL: the run's memory cgroup or RLIMIT_AS
            detail = (f"the interpreter was killed; SandboxConfig.memory_mb={self.config.memory_mb} is probably too "
                      "small for it (Python + numpy need ~300)")
        return f"probe run ended with status={result.status} rc={result.returncode}: {detail}"

    # -- running ------------------------------------------------------------------------------------------------------
    def run(self, solution: str, tests: str) -> ExecutionResult:
        """Score one solution against its tests. Thread-safe (blocks for a free slot); never raises."""
        start = time.monotonic()
        try:
            slot = self._slots.get()
        except Exception as exc:  # pragma: no cover - Queue.get does not fail
            return ExecutionResult(False, "error", None, 0.0, "", f"{type(exc).__name__}: {exc}")
        try:
            return self._execute(solution, tests, slot=slot, isolation=self.isolation)
        except Exception as exc:  # a bug or a resource problem here must not end scoring
            logger.warning("sandbox: run failed: %s: %s", type(exc).__name__, exc)
            return ExecutionResult(False, "error", None, time.monotonic() - start, "", f"{type(exc).__name__}: {exc}")
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

    def _slot_uids(self, slot: int) -> tuple[int | None, int | None]:
        if self._lease is None:
            return None, None
        return self._lease.uids[2 * slot], self._lease.uids[2 * slot + 1]

    def _limits(self, sandbox_uid: int | None) -> list[tuple[int, tuple[int, int]]]:
        cfg = self.config
        cpu = int(math.ceil(cfg.timeout_s)) + 1
        nproc = cfg.max_processes
        if sandbox_uid is None:  # we run as the trainer's user: NPROC counts all of its tasks
            nproc += count_user_tasks(os.getuid())
        mem = cfg.memory_mb * 1024 * 1024
        return [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (mem, mem)),
            (resource.RLIMIT_NPROC, (nproc, nproc)),
            (resource.RLIMIT_FSIZE, (cfg.max_output_bytes, cfg.max_output_bytes)),
            (resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]

    def _spawn(self, isolation: str, source: str, fds: list[int], extra: list[str], uid: int | None, scratch: Path,
               out, err, token: str, prelude: str | None, candidate: bool = True,
               cgroup: list[str] | None = None) -> subprocess.Popen:
        """Start `python -I -S -B -c prelude+source fds... extra...` under `isolation`, as `uid` (root) or in a user
        namespace (`prelude` None: with `site`, no -S), stdout/stderr to `out`/`err` (descriptors or files);
        `candidate`: runs model output (the seccomp policy of `jail.py` applies; "rlimits": the runner's own)."""
        cfg = self.config
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
        flags = ["-I", "-B"] if prelude is None else ["-I", "-S", "-B"]
        program = [cfg.python, *flags, "-c", (prelude or "") + source, *(str(fd) for fd in fds), *extra]
        popen_kwargs: dict = {}
        if isolation == "namespaces":
            time_limit = int(math.ceil(cfg.timeout_s)) + 5  # a backstop: the run's own deadline comes first
            config_fd = self._jail_config.fd()
            argv = jail_argv(self._nsjail, config_fd, uid, fds, env, time_limit, candidate, program)
            fds = [*fds, config_fd]
        elif uid is not None and self._setpriv is not None:
            # setpriv resolves the interpreter path before the kernel drops its capabilities at exec, so an
            # interpreter under a root-only directory (e.g. pyenv in /root) still starts; the program has none.
            argv = [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
                    *program]
        else:
            argv = program
            if uid is not None:
                popen_kwargs.update(user=uid, group=uid, extra_groups=[])
        limits = self._limits(uid)
        own_ipc = isolation == "rlimits" and self.is_root and _LIBC is not None

        def preexec():  # runs in the child between fork and exec: rlimits, cgroup, IPC namespace, OOM killer's pick
            for res, lim in limits:
                resource.setrlimit(res, lim)
            if cgroup:
                enter_cgroup(cgroup)
            if own_ipc:
                _LIBC.unshare(CLONE_NEWIPC)  # best effort: the sweep after the run covers a refusal
            try:
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write("1000")
            except OSError:
                pass

        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=str(scratch), env=env,
                                pass_fds=tuple(fds), start_new_session=True, preexec_fn=preexec, close_fds=True,
                                **popen_kwargs)

    def _execute(self, solution: str, tests: str, slot: int, isolation: str, timeout_s: float | None = None):
        cfg = self.config
        timeout_s = cfg.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        deadline = start + timeout_s
        token, nonce = run_prefix() + secrets.token_hex(16), secrets.token_hex(32)
        cand_uid, verdict_uid = self._slot_uids(slot)
        uids = [u for u in (cand_uid, verdict_uid) if u is not None]
        if slot in self._dirty:
            if not kill_run(None, uids, deadline_s=5.0):
                return ExecutionResult(False, "error", None, 0.0, "", f"sandbox uids {uids} still own processes")
            self._dirty.discard(slot)
        # Under nsjail each process writes to a tmpfs of its own; only "rlimits" needs scratch directories on the host.
        run_dir = None if isolation == "namespaces" else Path(tempfile.mkdtemp(prefix=run_prefix(),
                                                                                  dir=cfg.scratch_root))
        fds: list[int] = []  # descriptors to close when the run ends
        procs: list[subprocess.Popen] = []
        cgroup = None
        try:
            cand_dir, verdict_dir = (run_dir / "candidate", run_dir / "verdict") if run_dir else (Path("/"), Path("/"))
            for directory in (cand_dir, verdict_dir) if run_dir else ():
                directory.mkdir(mode=0o700)
            if self.is_root and run_dir:
                os.chmod(run_dir, 0o711)  # each uid may traverse to its own dir, not list or enter the others
                os.chown(cand_dir, cand_uid, cand_uid)
                os.chown(verdict_dir, verdict_uid, verdict_uid)

            def pipe():
                r, w = os.pipe()
                fds.extend((r, w))
                return r, w

            def close(*those):
                for fd in those:
                    os.close(fd)
                    fds.remove(fd)

            cand_payload = _payload(solution.encode("utf-8", "replace"))
            fds.append(cand_payload)
            verdict_payload = _payload(json.dumps({"token": nonce, "tests": tests}).encode())
            fds.append(verdict_payload)
            same_uid = "1" if not self.is_root and isolation == "rlimits" else "0"
            (calls_r, calls_w), (replies_r, replies_w), (armed_r, armed_w) = pipe(), pipe(), pipe()
            (result_r, result_w), (go_r, go_w) = pipe(), pipe()
            (cand_out_r, cand_out_w), (cand_err_r, cand_err_w), (verdict_out_r, verdict_out_w) = pipe(), pipe(), pipe()

            verdict_fds = [verdict_payload, result_w, calls_w, replies_r, armed_w, go_r]
            verdict = self._spawn(isolation, VERDICT_SOURCE, verdict_fds, [same_uid], verdict_uid, verdict_dir,
                                  verdict_out_w, verdict_out_w, token, self._preludes[isolation],
                                  candidate=False)
            procs.append(verdict)
            close(*verdict_fds, verdict_out_w)
            if same_uid == "1":
                # Same uid for both: start the candidate only once the verdict process is non-dumpable and has read
                # (and closed) its tests, so the candidate cannot open them through /proc/<pid>/fd meanwhile.
                ready, _, _ = select.select([armed_r], [], [], max(0.0, deadline - time.monotonic()))
                if not ready or not os.read(armed_r, 1):
                    raise TimeoutError("the verdict process did not start in time")
            supervise = "1" if isolation == "rlimits" else "0"
            dedicated = "1" if cand_uid is not None else "0"
            if self._cgroups is not None:
                try:
                    cgroup = self._cgroups.create(token)
                except OSError as exc:  # the rlimits still bound this run; never zero every run for it
                    logger.warning("sandbox: no cgroup for this run (%s); per-process limits only", exc)
            candidate = self._spawn(isolation, CANDIDATE_SOURCE, [cand_payload, calls_r, replies_w],
                                    [supervise, dedicated], cand_uid, cand_dir, cand_out_w, cand_err_w, token,
                                    self._preludes[isolation], cgroup=cgroup)
            procs.append(candidate)
            close(cand_payload, calls_r, replies_w, cand_out_w, cand_err_w, armed_r)

            outputs = {cand_out_r: _Tail(), cand_err_r: _Tail(), verdict_out_r: _Tail()}
            returncode, timed_out, over_shm, released, marker = self._watch(
                verdict, candidate, deadline, outputs, result_r, go_w, cand_uid, isolation, uids)
            # The verdict is in; the candidate normally exits by itself on EOF (which lets nsjail/the supervisor reap
            # its processes). Give it a moment, then kill what is left.
            if over_shm:
                for proc in (verdict, candidate):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            try:
                _wait(candidate, 0.0 if timed_out or over_shm or released
                      else min(1.0, max(0.05, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            if not self._stop(procs, token, uids):
                self._dirty.add(slot)
            procs = []
            for fd, tail in outputs.items():  # what is still buffered in the pipes
                _drain(fd, tail)
            if returncode is None and not timed_out:
                returncode = verdict.returncode
            duration = time.monotonic() - start
            passed = (not timed_out) and returncode == 0 and marker == nonce and not over_shm
            if passed:
                status = "passed"
            elif over_shm:
                status = "failed"
            elif timed_out:
                status = "timeout"
            elif marker in VERDICT_WORDS:
                status = marker
            elif returncode == 0:
                status = "no_marker"
            else:
                status = "failed"
            return ExecutionResult(
                passed=passed,
                status=status,
                returncode=returncode,
                duration_s=duration,
                stdout_tail=outputs[cand_out_r].text(),
                stderr_tail=outputs[cand_err_r].text(),
                verdict_tail=("killed: the program put more than shm_mb MiB in /dev/shm\n" if over_shm else "")
                + outputs[verdict_out_r].text(),
            )
        except (OSError, subprocess.SubprocessError, TimeoutError, ValueError) as exc:
            logger.warning("sandbox: could not run a program: %s: %s", type(exc).__name__, exc)
            return ExecutionResult(False, "error", None, time.monotonic() - start, "", f"{type(exc).__name__}: {exc}")
        finally:
            _close(fds)
            try:
                if procs and not self._stop(procs, token, uids):
                    self._dirty.add(slot)
                if uids and isolation == "rlimits":  # namespaces: /tmp, /dev/shm and IPC were private already
                    remove_files_of_uids(uids)
                    remove_ipc_of_uids(uids)
                if cgroup is not None:
                    self._cgroups.remove(cgroup)
            finally:
                if run_dir is not None:
                    try:
                        os.chmod(run_dir, 0o700)  # no later program of this uid may enter what is left of this run
                        REAPER.submit(run_dir)
                    except OSError:
                        remove_tree(run_dir)

    def _watch(self, verdict, candidate, deadline, outputs, result_r, go_w, cand_uid, isolation, uids):
        """Until the verdict process exits or the deadline: read every output pipe (kept as tails), the verdict's
        result pipe and, in "rlimits" as root, poll what the run's uids hold in the host's /dev/shm (RAM that
        RLIMIT_AS does not count; past `shm_mb` MiB the run fails). On the verdict's "R" (no more calls), end every
        process of the candidate, then answer "g". Returns (returncode or None, timed out, over shm_mb, released,
        the verdict's marker)."""
        watching_shm = isolation == "rlimits" and bool(uids)
        limit = self.config.shm_mb * 1024 * 1024
        result = bytearray()
        released = False
        open_fds = {result_r, *outputs}
        try:
            pidfd = os.pidfd_open(verdict.pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, True, False, released, ""
                wait = min(left, SHM_POLL_S) if (watching_shm or pidfd is None) else left
                ready, _, _ = select.select([*open_fds, *([pidfd] if pidfd is not None else [])], [], [], wait)
                exited = (pidfd in ready) if pidfd is not None else verdict.poll() is not None
                for fd in ready:
                    if fd == pidfd:
                        continue
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        open_fds.discard(fd)
                    elif fd == result_r:
                        result += chunk[:256]
                    else:
                        outputs[fd].add(chunk)
                if result.startswith(b"R") and not released:
                    released = True
                    if not self._end_candidate(candidate, cand_uid, isolation):
                        return None, True, False, released, ""
                    os.write(go_w, b"g")
                if exited:
                    returncode = verdict.wait()
                    while result_r in open_fds:  # the verdict is gone: its result pipe ends now
                        chunk = os.read(result_r, 256)
                        if not chunk:
                            break
                        result += chunk
                    marker = bytes(result[1:] if result.startswith(b"R") else result)[:128]
                    return returncode, False, False, released, marker.decode("ascii", "replace")
                if watching_shm and bytes_of_uids("/dev/shm", uids) > limit:
                    logger.warning("sandbox: a program put more than shm_mb=%d MiB in /dev/shm; killed",
                                   self.config.shm_mb)
                    return None, False, True, released, ""
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _end_candidate(self, candidate, cand_uid, isolation) -> bool:
        """SIGKILL every process of the candidate but the one we started, which reaps them (so no zombie is left
        for a slow system init): in "namespaces" the namespace's first process (the kernel kills the rest of the
        namespace with it; nsjail reaps it and exits), in "rlimits" everything its dedicated uid runs but the
        supervisor (which reaps them and exits). True once none of them can run any more code."""
        if isolation == "namespaces":
            for child in _children(candidate.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        elif cand_uid is not None:
            if not kill_run(None, [cand_uid], deadline_s=2.0, zombies_ok=True, exclude=(candidate.pid,)):
                return False
        else:  # "rlimits" as the trainer's own user (unsafe mode): its process group
            try:
                os.killpg(candidate.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            _wait(candidate, 2.0)
            return True
        except subprocess.TimeoutExpired:
            return False

    @staticmethod
    def _stop(procs: list[subprocess.Popen], token: str, uids: list[int]) -> bool:
        """Kill every process of the run; True once none is left (the uids own nothing, zombies included).

        Each direct child (nsjail, the supervisor) is left to reap the others first, so no zombie waits for init."""
        live = [p for p in procs if p.poll() is None]
        if live:
            kill_run(token, deadline_s=2.0, exclude=tuple(p.pid for p in live))
            for proc in live:
                try:
                    _wait(proc, 2.0)
                except subprocess.TimeoutExpired:
                    pass
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, whether it finished or not
            except (ProcessLookupError, PermissionError):
                pass
            if proc.returncode is None:
                proc.wait()
        return kill_run(token, uids, deadline_s=10.0)

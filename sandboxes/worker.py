"""The fork-server that runs *inside* a sandbox (local bwrap box, container or plain process).

It is started as ``python -I -S -c <this source> <config json>`` and speaks length-prefixed
JSON frames on fds 0/1 with the host. It imports a few modules once, then forks one process
per REPL *session*; a session keeps its globals between ``run`` calls. All user code runs in
session processes, never in this one.

Trust boundary (issue 10; see the README's "trust boundary" and reference/sandbox_search.md):

* this process is the only holder of the host channel, and it is out of user code's reach: it
  is PID 1 of the box's PID namespace where there is one (the kernel drops every signal a
  descendant sends to its namespace's init), non-dumpable (no ``ptrace``, ``/proc/1/fd``,
  ``/proc/1/mem``), and every session runs under a seccomp filter (built here by hand, no
  libseccomp) that refuses ``ptrace``, ``process_vm_*``, ``pidfd_*``, ``kcmp``, ``io_uring``,
  mount and namespace calls, signals aimed at this process, ``prlimit`` and scheduling changes
  aimed at any other process, and the kernel objects a reset could not wipe or the limits
  could not count (SysV IPC, POSIX message queues, keyrings, ``memfd``, extended attributes);
* a session is *stopped* (SIGSTOP) whenever it is not running a call: a run is over only when
  the kernel says the session stopped itself (a frame written by user code cannot end it), a
  session left with extra threads is replaced, its timers are cancelled, a session another
  one continued is stopped again, and nothing of a run executes after its reply;
* each call hands the session fresh pipes (stdout, stderr, report); this process never reads
  a channel a session could have written to before the call, so stale or forged frames go
  nowhere. A run that stops at a host call is *paused*, not over (the session is stopped,
  processes it started are killed as after a call, a session with extra threads is replaced);
  it keeps its pipes until the host's answer continues it or the session is killed;
* after each call every process except this one and the (stopped) sessions is SIGKILLed
  (after a call that ended normally, processes already dying, i.e. exiting or with a SIGKILL
  pending, are left to the kernel instead of being waited for: they run nothing more);
* files are read and written with ``O_NOFOLLOW`` on every component, ``O_NONBLOCK`` and an
  ``fstat`` check before any I/O (a FIFO cannot stall this process);
* frames are pure-ASCII JSON (lone surrogates travel escaped), decoded strictly; a bad
  request gets an error reply, never a dead worker.

Only the standard library is used, and the file must stay importable on Python 3.9+
(``socket.send_fds``); ``os.pidfd_open`` is used where present.
"""

import builtins
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time

_HDR = struct.Struct(">I")
_MAX_HOST_FRAME = 64 * 1024 * 1024
_MAX_REPORT = 64 * 1024
_GRACE = 0.05  # seconds to wait for the output pipes after the session stopped
_INT_GRACE = 0.5  # seconds between SIGINT and SIGKILL on a wall-clock timeout
_POLL = 0.05  # seconds between checks of the box-wide limits during a run
_SPAWN_TIMEOUT = 10.0

# exit codes of a session that could not set itself up (reported by op "new")
_SETUP_ERRORS = {5: "could not install the seccomp filter", 6: "could not drop privileges (prctl)"}


# --------------------------------------------------------------------------- framing
def _read_exact(fd, n, deadline=None):
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("frame read timed out")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("peer closed")
        buf += chunk
    return bytes(buf)


def _read_body(fd, limit, deadline=None):
    (n,) = _HDR.unpack(_read_exact(fd, 4, deadline))
    if n > limit:
        raise OverflowError("frame too large: %d bytes" % n)
    return _read_exact(fd, n, deadline)


def _decode(body):
    """Strict: frames are ASCII JSON (json.dumps' default escapes everything else)."""
    return json.loads(body.decode("ascii"))


def _read_frame(fd, limit, deadline=None):
    return _decode(_read_body(fd, limit, deadline))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _frame(obj):
    body = json.dumps(obj).encode("ascii")
    return _HDR.pack(len(body)) + body


def _last_frame(buf):
    """The last well-formed dict frame in ``buf`` (a session may have written several), or None."""
    found, i = None, 0
    while i + 4 <= len(buf):
        (n,) = _HDR.unpack(bytes(buf[i:i + 4]))
        if i + 4 + n > len(buf):
            break
        try:
            obj = _decode(bytes(buf[i + 4:i + 4 + n]))
            if isinstance(obj, dict):
                found = obj
        except ValueError:
            pass
        i += 4 + n
    return found


# --------------------------------------------------------------------------- seccomp (classic BPF by hand)
# Syscall numbers, taken from the kernel headers (x86_64: asm/unistd_64.h; aarch64: the
# asm-generic table) and checked against them; setxattrat (463, Linux 6.13+, newer than those
# headers) was checked on a 6.18 kernel, where it set an xattr.
_NR = {
    "x86_64": dict(
        ptrace=101, process_vm_readv=310, process_vm_writev=311, kcmp=312, pidfd_open=434, pidfd_getfd=438,
        pidfd_send_signal=424, process_madvise=440, process_mrelease=448, unshare=272, setns=308, mount=165,
        umount2=166, pivot_root=155, chroot=161, open_tree=428, move_mount=429, fsopen=430, fsconfig=431,
        fsmount=432, fspick=433, mount_setattr=442, name_to_handle_at=303, open_by_handle_at=304,
        perf_event_open=298, bpf=321, userfaultfd=323, keyctl=250, add_key=248, request_key=249,
        fanotify_init=300, acct=163, swapon=167, swapoff=168, reboot=169, kexec_load=246, kexec_file_load=320,
        init_module=175, finit_module=313, delete_module=176, quotactl=179, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427, memfd_create=319, memfd_secret=447, shmget=29, shmat=30,
        shmctl=31, shmdt=67, semget=64, semop=65, semctl=66, semtimedop=220, msgget=68, msgsnd=69, msgrcv=70,
        msgctl=71, mq_open=240, mq_unlink=241, mq_timedsend=242, mq_timedreceive=243, mq_notify=244,
        mq_getsetattr=245, setxattr=188, lsetxattr=189, fsetxattr=190, setxattrat=463, kill=62, tkill=200,
        tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, prlimit64=302, setpriority=141,
        sched_setscheduler=144, sched_setparam=142, sched_setattr=314, ioprio_set=251, migrate_pages=256,
        move_pages=279),
    "aarch64": dict(
        ptrace=117, process_vm_readv=270, process_vm_writev=271, kcmp=272, pidfd_open=434, pidfd_getfd=438,
        pidfd_send_signal=424, process_madvise=440, process_mrelease=448, unshare=97, setns=268, mount=40,
        umount2=39, pivot_root=41, chroot=51, open_tree=428, move_mount=429, fsopen=430, fsconfig=431,
        fsmount=432, fspick=433, mount_setattr=442, name_to_handle_at=264, open_by_handle_at=265,
        perf_event_open=241, bpf=280, userfaultfd=282, keyctl=219, add_key=217, request_key=218,
        fanotify_init=262, acct=89, swapon=224, swapoff=225, reboot=142, kexec_load=104, kexec_file_load=294,
        init_module=105, finit_module=273, delete_module=106, quotactl=60, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427, memfd_create=279, memfd_secret=447, shmget=194, shmat=196,
        shmctl=195, shmdt=197, semget=190, semop=193, semctl=191, semtimedop=192, msgget=186, msgsnd=189,
        msgrcv=188, msgctl=187, mq_open=180, mq_unlink=181, mq_timedsend=182, mq_timedreceive=183,
        mq_notify=184, mq_getsetattr=185, setxattr=5, lsetxattr=6, fsetxattr=7, setxattrat=463, kill=129,
        tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, prlimit64=261, setpriority=140,
        sched_setscheduler=119, sched_setparam=118, sched_setattr=274, ioprio_set=30, migrate_pages=238,
        move_pages=239),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_EPERM, _ENOSYS, _ENOTSUP = 1, 38, 95
# reach into other processes, namespaces, mounts, the kernel: refused
_DENY_EPERM = (
    "ptrace process_vm_readv process_vm_writev kcmp pidfd_open pidfd_getfd pidfd_send_signal process_madvise "
    "process_mrelease unshare setns mount umount2 pivot_root chroot open_tree move_mount fsopen fsconfig fsmount "
    "fspick mount_setattr name_to_handle_at open_by_handle_at perf_event_open bpf userfaultfd keyctl add_key "
    "request_key fanotify_init acct swapon swapoff reboot kexec_load kexec_file_load init_module finit_module "
    "delete_module quotactl").split()
# kernel objects outside every limit (memfd: no address space; SysV / mqueue / keys: survive
# their processes, so a reset could not wipe them; io_uring: bypasses this filter): absent
_DENY_ENOSYS = (
    "io_uring_setup io_uring_enter io_uring_register memfd_create memfd_secret shmget shmat shmctl shmdt semget "
    "semop semctl semtimedop msgget msgsnd msgrcv msgctl mq_open mq_unlink mq_timedsend mq_timedreceive "
    "mq_notify mq_getsetattr").split()
# tmpfs user xattrs are neither bounded by size= nor wiped with the directory they sit on
_DENY_ENOTSUP = "setxattr lsetxattr fsetxattr setxattrat".split()

_LD_ABS, _JA, _JEQ, _JGE, _RET = 0x20, 0x05, 0x15, 0x35, 0x06
_ALLOW = 0x7FFF0000


def _errno(e):
    return 0x00050000 | e


def _ins(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _arg(i):
    return 16 + 8 * i  # low 32 bits of seccomp_data.args[i] (little-endian); int arguments live there


def _bpf_tree(items):
    """Dispatch on the syscall number (in A) by binary search: a handful of comparisons per
    syscall instead of one per listed number. ``items``: sorted ``(nr, block)``, every block
    ending in a RET; numbers not listed are allowed."""
    if len(items) <= 4:
        out = []
        for nr, block in items:
            out.append(_ins(_JEQ, nr, 0, len(block)))
            out.extend(block)
        return out + [_ins(_RET, _ALLOW)]
    mid = len(items) // 2
    left, right = _bpf_tree(items[:mid]), _bpf_tree(items[mid:])
    # A >= items[mid]: take the JA over the left half; else skip the JA
    return [_ins(_JGE, items[mid][0], 0, 1), _ins(_JA, len(left))] + left + right


def _seccomp_program(worker_pid, worker_pgid, pidns, machine=None):
    """The session filter as bytes of ``struct sock_filter``, or (None, reason) on an unknown arch."""
    machine = machine or os.uname().machine
    nr = _NR.get(machine)
    if nr is None:
        return None, "no seccomp table for %s" % machine
    prog = [_ins(_LD_ABS, 4), _ins(_JEQ, _AUDIT_ARCH[machine], 1, 0), _ins(_RET, _errno(_ENOSYS)),
            _ins(_LD_ABS, 0)]
    if machine == "x86_64":  # the x32 ABI (nr | 0x40000000) would dodge every number below
        prog += [_ins(_JGE, 0x40000000, 0, 1), _ins(_RET, _errno(_ENOSYS))]
    rules = {}
    for names, err in ((_DENY_EPERM, _EPERM), (_DENY_ENOSYS, _ENOSYS), (_DENY_ENOTSUP, _ENOTSUP)):
        for name in names:
            rules[nr[name]] = [_ins(_RET, _errno(err))]

    def self_only(*args):  # every listed int argument must be 0 (this process / its own group)
        block = []
        for i, a in enumerate(args):
            left = 2 * (len(args) - i - 1)  # instructions of the checks still to come
            block += [_ins(_LD_ABS, _arg(a)), _ins(_JEQ, 0, 0, left + 1)]  # not 0: to the EPERM
        return block + [_ins(_RET, _ALLOW), _ins(_RET, _errno(_EPERM))]

    def not_worker(arg):  # signals: never at the fork-server (nor, unisolated, at everyone)
        bad = {worker_pid}
        if worker_pgid > 1:
            bad.add(-worker_pgid)
        if not pidns:
            bad.add(-1)
        block = [_ins(_LD_ABS, _arg(arg))]
        for v in sorted(bad):
            block += [_ins(_JEQ, v, 0, 1), _ins(_RET, _errno(_EPERM))]
        return block + [_ins(_RET, _ALLOW)]

    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules[nr[name]] = not_worker(0)
    for name in ("prlimit64", "sched_setscheduler", "sched_setparam", "sched_setattr", "migrate_pages",
                 "move_pages"):
        rules[nr[name]] = self_only(0)
    rules[nr["setpriority"]] = self_only(0, 1)  # PRIO_PROCESS (0) of itself (0) only
    prio = self_only(1)  # ioprio_set(IOPRIO_WHO_PROCESS=1, 0, ...) only
    rules[nr["ioprio_set"]] = [_ins(_LD_ABS, _arg(0)), _ins(_JEQ, 1, 0, len(prio))] + prio + [
        _ins(_RET, _errno(_EPERM))]
    prog += _bpf_tree(sorted(rules.items()))
    return b"".join(prog), None


class _Hardening:
    """prctl/seccomp through ctypes, prepared once in the fork-server and used in each session."""

    def __init__(self, cfg):
        self.error = None
        self.seccomp = False
        self.libc = None
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        want = cfg.get("seccomp", True)
        if not want:
            return
        prog, why = _seccomp_program(os.getpid(), os.getpgid(0), bool(cfg.get("pidns")))
        if prog is None:
            if want == "require":
                self.error = why
            return

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        self._buf = ctypes.create_string_buffer(prog, len(prog))
        self._fprog = SockFprog(len(prog) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self.seccomp = True

    def prctl(self, *args):
        return self.libc.prctl(*[int(a) for a in args] + [0] * (5 - len(args)))

    def lock_session(self):
        """In a fresh session, before any user code: no new privileges, then the filter.
        Returns an exit code from ``_SETUP_ERRORS`` on failure, else 0."""
        if self.prctl(38, 1) != 0:  # PR_SET_NO_NEW_PRIVS
            return 6
        if self.seccomp:
            ctypes = self.ctypes
            if self.libc.prctl(22, 2, ctypes.byref(self._fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
                return 5
        return 0


# --------------------------------------------------------------------------- files
def _open_beneath(root, rel, flags, mode=0o644):
    """Open ``rel`` under ``root``: no symlink in any component, no ``..``, no FIFO/device/socket
    (opened ``O_NONBLOCK`` and checked with ``fstat`` before any I/O), single-link files only."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise PermissionError("path must stay inside the work dir: %r" % rel)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for p in parts[:-1]:
            if flags & os.O_CREAT:
                try:
                    os.mkdir(p, 0o755, dir_fd=dfd)
                except FileExistsError:
                    pass
            nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        try:
            fd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd)
        except OSError as e:
            if e.errno == 6:  # ENXIO: a FIFO without a reader, or a socket
                raise PermissionError("not a plain single-link file: %r" % rel) from None
            raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise PermissionError("not a plain single-link file: %r" % rel)
    os.set_blocking(fd, True)
    return fd


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _wipe_tree(root):
    """Delete everything below ``root``, whatever its depth, width or permissions: iterative,
    two directory fds at a time, every directory entered once. Returns the failures."""
    failures = 0
    try:
        cur = os.open(root, _DIR_FLAGS)
    except OSError:
        return 1
    stack = []  # per level: (name of the dir we are in, its non-empty subdirs still to do)
    entered = None
    try:
        while True:
            subdirs = []
            try:
                with os.scandir(cur) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            except OSError:
                entries, failures = [], failures + 1
            for name, is_dir in entries:
                try:
                    if not is_dir:
                        os.unlink(name, dir_fd=cur)
                        continue
                    try:
                        os.rmdir(name, dir_fd=cur)
                    except OSError:
                        subdirs.append(name)
                except OSError:
                    failures += 1
            stack.append((entered, subdirs))
            while True:
                name_here, todo = stack[-1]
                if todo:
                    name = todo.pop()
                    try:
                        os.chmod(name, 0o700, dir_fd=cur)
                        nfd = os.open(name, _DIR_FLAGS, dir_fd=cur)
                    except OSError:
                        failures += 1
                        continue
                    os.close(cur)
                    cur, entered = nfd, name
                    break
                stack.pop()
                if not stack:
                    return failures
                parent = os.open("..", _DIR_FLAGS, dir_fd=cur)
                os.close(cur)
                cur = parent
                try:
                    os.rmdir(name_here, dir_fd=cur)
                except OSError:
                    failures += 1
    finally:
        os.close(cur)


# --------------------------------------------------------------------------- session side
class _CpuLimit(TimeoutError):
    pass


def _on_xcpu(signum, frame):
    raise _CpuLimit("CPU time limit exceeded")


def _session_setup(sock, cfg, hardening):
    """In a freshly forked session, before any user code: own session, no inherited fds,
    limits, seccomp, default signals; then the loop. Never returns."""
    import resource

    os.setsid()
    keep = sock.fileno()
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = 1 << 20 if top == resource.RLIM_INFINITY or top > 1 << 20 else top  # close_range is O(1) anyway
    os.closerange(3, keep)
    os.closerange(keep + 1, top)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    lim = cfg.get("limits", {})
    for res, val in ((resource.RLIMIT_AS, lim.get("memory_bytes")), (resource.RLIMIT_NPROC, lim.get("processes")),
                     (resource.RLIMIT_FSIZE, lim.get("file_size_bytes")),
                     (resource.RLIMIT_NOFILE, lim.get("open_files"))):
        if val:
            try:
                resource.setrlimit(res, (int(val), int(val)))
            except (ValueError, OSError):
                pass
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    try:  # the kernel's OOM killer takes user code before the fork-server
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    if hardening is not None:
        code = hardening.lock_session()
        if code:
            os._exit(code)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE -> EFBIG
    signal.signal(signal.SIGXCPU, _on_xcpu)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        os.chdir(cfg["workdir"])
    except OSError:
        pass
    globs = {"__name__": "__main__", "__builtins__": builtins}
    import types

    host = types.ModuleType("_rao_host", "The host channel of this REPL session (code mode): call(payload).")
    host.call = _host_call
    sys.modules["_rao_host"] = host
    _session_loop(sock, cfg, globs, devnull)


def _session_loop(sock, cfg, globs, devnull):
    """One REPL session: stop until the fork-server continues us with a call, answer it on the
    call's own report pipe, stop again (the stop, seen by the kernel, is what ends the call)."""
    my_pid = os.getpid()
    while True:
        msg, fds, req = _next_call(sock, my_pid)  # between calls nothing of ours runs
        if msg == b"R" and len(fds) == 3:
            _CALL.update(sock=sock, report=fds[2], pid=my_pid)
            reply = _session_run(req, fds[0], fds[1], globs, my_pid, devnull)
            _CALL.pop("report", None)
        elif msg == b"F" and len(fds) == 2:
            reply = _session_fork(sock, fds[0], fds[1], cfg, globs, devnull, req.get("warm"))
        else:
            os._exit(3)
        if os.getpid() != my_pid:  # a child forked by user code must never answer
            os._exit(0)
        try:
            _write_all(fds[-1], _frame(reply))
        except OSError:
            pass
        os.close(fds[-1])


def _next_call(sock, my_pid):
    """Stop until the fork-server continues us, then take its next message: ``(tag, fds,
    request frame)``. Our children are reaped first, and SIGCHLD ignored while we are stopped
    (:func:`_quiet_children`). Exits when the channel is gone or the message is malformed."""
    chld = _quiet_children()
    os.kill(my_pid, signal.SIGSTOP)
    if chld is not None:
        try:
            signal.signal(signal.SIGCHLD, chld)
        except (ValueError, OSError, TypeError):
            pass
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 1, 4, getattr(socket, "MSG_CMSG_CLOEXEC", 0))
    except (OSError, EOFError):
        os._exit(0)
    if not msg:
        os._exit(0)
    try:
        req = _read_frame(sock.fileno(), _MAX_HOST_FRAME, time.monotonic() + 10)
    except Exception:
        os._exit(3)
    return msg, fds, req


# --------------------------------------------------------------------------- host calls (code mode)
_CALL = {}  # the session's current call: socket, report pipe, pid (set per run), busy (in a host call)
_MAX_HOSTCALL = 60000  # characters of one host call's JSON (it travels in the 64 KiB report)


def _host_call(payload):
    """Ask the host for something in the middle of a run and return its answer (code mode).

    The session writes the request (``hostcall``, JSON text, with ``pause``) on the run's
    report pipe and stops; the run is *paused*, not over: the fork-server hands the request
    and the output so far to the host, keeps the run's pipes, and when the host answers (its
    next ``run`` of this session, whose code is the answer as JSON text) it sends the answer
    on the session's socket and continues the session, which returns it here. Exposed to
    session code as ``_rao_host.call``. Raises ``ValueError`` for a request that is not
    JSON-able or over :data:`_MAX_HOSTCALL` characters, ``RuntimeError`` outside a run, from
    another thread, or nested in another host call (e.g. from a signal handler).
    """
    st = _CALL
    if st.get("pid") != os.getpid() or "report" not in st:
        raise RuntimeError("host calls are only possible from the session's own cell")
    if st.get("busy"):
        raise RuntimeError("host calls cannot be nested")
    th = sys.modules.get("threading")
    if th is not None and th.current_thread() is not th.main_thread():
        raise RuntimeError("host calls are only possible from the cell's main thread")
    body = json.dumps(payload)
    if len(body) > _MAX_HOSTCALL:
        raise ValueError("the call is %d characters of JSON, over the %d limit" % (len(body), _MAX_HOSTCALL))
    for stream in (sys.stdout, sys.stderr):  # everything printed so far is in the pipes before the pause
        try:
            stream.flush()
        except BaseException:
            pass
    st["busy"] = True
    try:
        try:
            _write_all(st["report"], _frame({"exit": 0, "kind": None, "hostcall": body, "pause": True}))
        except OSError:
            pass
        msg, fds, req = _next_call(st["sock"], st["pid"])
        if msg != b"A" or fds:
            os._exit(3)
    finally:
        st["busy"] = False
    return json.loads(req["code"])


def _quiet_children():
    """Reap our children, then ignore SIGCHLD until the next call: the fork-server SIGKILLs
    whatever this call left running after we stop, and with SIGCHLD ignored the kernel reaps
    those at once (a stopped parent cannot), so no zombie counts against the process limit.
    Returns the disposition to restore."""
    if not _reap_children():
        return None  # no child at all: nothing can turn into a zombie, leave SIGCHLD alone
    try:
        prev = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    except (ValueError, OSError, TypeError):
        return None
    return prev if prev is not None else signal.SIG_DFL  # None: set outside Python


def _reap_children():
    """Reap finished children; True if some child (running) is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _session_run(req, out_w, err_w, globs, my_pid, devnull):
    import ast
    import io
    import traceback

    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    exit_code, kind = 0, None
    parsed = False
    try:
        tree = ast.parse(req["code"], "<sandbox>", "exec")
        parsed = True
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<sandbox>", "exec"), globs)
        if last is not None:
            value = eval(compile(last, "<sandbox>", "eval"), globs)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        code = e.code
        if code is None:
            exit_code = 0
        elif isinstance(code, int):
            exit_code = code
        else:
            print(code, file=sys.stderr)
            exit_code = 1
        kind = None if exit_code == 0 else "exception"
    except BaseException as e:  # noqa: BLE001 - report everything the snippet raised
        if os.getpid() != my_pid:
            os._exit(1)
        exit_code = 1
        if isinstance(e, MemoryError):
            kind = "memory"
        elif isinstance(e, (_CpuLimit, KeyboardInterrupt)):
            kind = "timeout"
        else:
            kind = "exception"
        try:
            tb = e.__traceback__
            # drop this function's frame so the traceback starts in the snippet
            tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
            if isinstance(e, SyntaxError) or not parsed:  # the code did not compile: no frames
                text = "".join(traceback.format_exception_only(type(e), e))
            else:
                text = "".join(traceback.format_exception(type(e), e, tb))
            sys.stderr.write(text)
        except BaseException:
            pass
    if os.getpid() != my_pid:
        os._exit(exit_code & 0xFF)
    try:  # timers set by this run must not fire into the next one
        for which in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            signal.setitimer(which, 0)
    except (OSError, ValueError):
        pass
    if "threading" in sys.modules:  # give threads that are finishing (or just joined) a moment
        end = time.monotonic() + 0.02
        try:
            while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < end:
                time.sleep(0.001)
        except OSError:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    # Replace the wrappers while fd 1/2 point at /dev/null, so anything they still buffer
    # (e.g. after a broken pipe) is flushed to nowhere, not into the next run's output.
    sys.stdout = sys.__stdout__
    sys.stderr = sys.__stderr__
    return {"exit": exit_code, "kind": kind}


_CLONE = {}  # "call": a raw clone(CLONE_PARENT | SIGCHLD) where ctypes and the syscall number are known
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120}  # not s390x: its first two arguments are swapped


def _clone_setup(libc, ctypes):
    """Prepare :func:`_clone_sibling` (in the fork-server, before any session exists)."""
    nr = _SYS_CLONE.get(os.uname().machine)
    if libc is None or nr is None:
        return
    fn = libc.syscall
    fn.restype = ctypes.c_long
    args = (ctypes.c_long(nr), ctypes.c_long(0x8000 | signal.SIGCHLD), ctypes.c_long(0), ctypes.c_long(0),
            ctypes.c_long(0), ctypes.c_long(0))
    _CLONE["call"] = lambda: fn(*args)


def _clone_sibling():
    """Fork this session into a *sibling*: a child of the fork-server (CLONE_PARENT), in one
    fork instead of the two an orphaned grandchild costs. The pid (0 in the new process), or
    None where a raw clone is not available. Only a single-threaded session calls this: the
    clone copies the calling thread only, as ``os.fork`` does, without CPython's fork hooks."""
    call = _CLONE.get("call")
    if call is None:
        return None
    pid = call()
    if pid < 0:
        raise OSError("clone failed")
    if pid == 0:  # what os.fork's hooks would redo here: a new seed for the random module
        try:
            seed = getattr(sys.modules.get("random"), "seed", None)
            if seed is not None:
                seed()
        except BaseException:  # noqa: BLE001 - the session's own state: never fatal here
            pass
    return pid


def _become_session(sock, new_sock_fd, report_fd, cfg, globs, devnull, warm=None):
    """In the new process of a session fork: say hello on the new channel, run ``warm`` (the
    host's code, if any: output to /dev/null, errors ignored), then serve as a session; never
    returns."""
    try:
        sock.close()
        os.close(report_fd)
        new_sock = socket.socket(fileno=new_sock_fd)
        pid = os.getpid()
        try:
            new_sock.sendall(_frame({"pid": pid}))
        except OSError:
            os._exit(0)
        if isinstance(warm, str):
            try:
                exec(compile(warm, "<warm>", "exec"), globs)
            except BaseException:  # noqa: BLE001 - a warm-up is only ever an optimisation
                pass
            if os.getpid() != pid:
                os._exit(0)
        _session_loop(new_sock, cfg, globs, devnull)
    finally:
        os._exit(0)


def _session_fork(sock, new_sock_fd, report_fd, cfg, globs, devnull, warm=None):
    """Fork this session; the copy (a child of the fork-server) becomes a new session (which runs ``warm`` first)."""
    th = sys.modules.get("threading")
    single = th is None or th.active_count() <= 1
    pid = _clone_sibling() if single else None
    if pid == 0:
        _become_session(sock, new_sock_fd, report_fd, cfg, globs, devnull, warm)
    if pid is None:  # no raw clone: fork twice, the grandchild is orphaned to the fork-server
        pid = os.fork()
        if pid == 0:
            try:
                if os.fork() == 0:
                    _become_session(sock, new_sock_fd, report_fd, cfg, globs, devnull, warm)
            finally:
                os._exit(0)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    os.close(new_sock_fd)
    return {"ok": True}


# --------------------------------------------------------------------------- fork-server side
_PF_EXITING = 0x4  # task flag: the process is in do_exit()
_LEAVE_DYING = 4  # at most this many dying processes are left to the kernel by a sweep
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _sigkill(pid):
    """SIGKILL ``pid``'s process group (if it leads one) and ``pid`` itself; never raises."""
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, signal.SIGKILL)
        except OSError:
            pass


def _stat_fields(pid):
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            st = f.read()
        return st[st.rindex(b")") + 2:].split()
    except (OSError, ValueError):
        return None


def _is_zombie(fields):
    """True for :func:`_stat_fields` of a process that is gone or a zombie."""
    return fields is None or fields[:1] in ([b"Z"], [b"X"])


def _is_dying(pid, fields=None):
    """True if ``pid`` can never run user code again: gone, a zombie, already exiting, or
    with a SIGKILL pending (the kernel delivers it before any return to user space).
    ``fields``: its :func:`_stat_fields`, if already read."""
    fields = _stat_fields(pid) if fields is None else fields
    try:
        if _is_zombie(fields) or int(fields[6]) & _PF_EXITING:
            return True
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & _SIGKILL_BIT:
                    return True
        return False
    except (OSError, ValueError, IndexError):
        return True  # gone already


class _Session:
    __slots__ = ("pid", "sock", "statfd", "pidfd")

    def __init__(self, pid, sock):
        self.pid = pid
        self.sock = sock
        sock.setblocking(False)
        try:
            self.statfd = os.open("/proc/%d/stat" % pid, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.statfd = -1
        try:  # readable once the process has exited: death wakes the pump without SIGCHLD
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = -1

    def stat(self):
        """``(state, cpu seconds, threads)`` of the session process, from the kernel, or None."""
        try:
            data = os.pread(self.statfd, 1024, 0)
            f = data[data.rindex(b")") + 2:].split()
            return f[0], (int(f[11]) + int(f[12])) / _CLK_TCK, int(f[17])
        except (OSError, ValueError, IndexError):
            return None

    def close(self):
        for fd in (self.statfd, self.pidfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            self.sock.close()
        except OSError:
            pass


try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError):
    _CLK_TCK = 100


def _append_capped(buf, data, cap):
    """Append to ``buf`` as much of ``data`` as fits in ``cap`` bytes; True if some was cut off."""
    room = cap - len(buf)
    buf += data[: max(room, 0)]
    return len(data) > room


class _RunOutput:
    """The stdout/stderr pipes of one run and the bytes read from each (at most ``cap``)."""

    def __init__(self, cap):
        self.cap = cap
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.bufs = {self.out_r: bytearray(), self.err_r: bytearray()}
        self.open_fds = [self.out_r, self.err_r]
        self.truncated = False

    def close_write_ends(self):
        """Close this process's copies of the write ends (the session holds its own)."""
        os.close(self.out_w)
        os.close(self.err_w)

    def _close(self, fd):
        os.close(fd)
        self.open_fds.remove(fd)

    def read(self, fd):
        """Read one chunk from ``fd``; close it at EOF, or once it overflows the cap (the
        writer then gets EPIPE / BrokenPipeError)."""
        data = os.read(fd, 65536)
        if not data:
            self._close(fd)
        elif _append_capped(self.bufs[fd], data, self.cap):
            self.truncated = True
            self._close(fd)

    def _read_available(self):
        """Read what the open pipes already hold, without blocking."""
        for fd in list(self.open_fds):
            try:
                while fd in self.open_fds and len(self.bufs[fd]) < self.cap:
                    r, _, _ = select.select([fd], [], [], 0)
                    if not r:
                        break
                    self.read(fd)
            except OSError:
                pass

    def drain(self):
        """Read what the open pipes already hold, without blocking, then close them."""
        self._read_available()
        self.close()

    def take(self):
        """``(stdout, stderr)`` read so far, with what the pipes hold now; the pipes stay open
        and the next ``take`` starts from empty buffers (a paused run: its host call)."""
        self._read_available()
        texts = self.text(self.out_r), self.text(self.err_r)
        for buf in self.bufs.values():
            buf.clear()
        return texts

    def close(self):
        """Close the read ends still open (a run that is over, or a paused one given up)."""
        for fd in self.open_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.open_fds = []

    def text(self, fd):
        """What was read from the pipe ``fd``, decoded (undecodable bytes replaced)."""
        return self.bufs[fd].decode("utf-8", "replace")


class _Run:
    """One run of a session: its output pipes and its report pipe, kept while the run is
    paused at a host call (until the host answers, or the session is killed)."""

    __slots__ = ("output", "rep_r", "rep_w", "report_buf", "t0", "deadline")

    def __init__(self, cap):
        self.output = _RunOutput(cap)
        self.rep_r, self.rep_w = os.pipe()
        self.report_buf = bytearray()
        self.t0 = self.deadline = 0.0

    def clock(self, timeout):
        """Start this segment's wall clock (the first one, or the one after a host call's answer)."""
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout

    def close_write_ends(self):
        """Close this process's copies of the write ends, once the session holds its own."""
        self.output.close_write_ends()
        os.close(self.rep_w)

    def close(self):
        """Close every read end still open."""
        self.output.close()
        if self.rep_r >= 0:
            os.close(self.rep_r)
            self.rep_r = -1


def _is_pause(report):
    """True for a report frame that says the session stopped at a host call (see :func:`_host_call`)."""
    return report is not None and report.get("pause") is True


def _with_notes(stderr, notes):
    """A run's stderr with the sandbox's own notes (lines) after it."""
    if not notes:
        return stderr
    return stderr + ("\n" if stderr and not stderr.endswith("\n") else "") + "\n".join(notes) + "\n"


def _classify(report, status, timed_out, timeout):
    """The outcome of one run as ``(exit code, error kind, notes for stderr)``.

    ``report`` is the session's own report, or None when it died or was killed (``status`` is
    then its wait status, or None if unknown); ``timed_out`` says the wall clock ran out.
    """
    if report is None:
        if timed_out:
            return -signal.SIGKILL, "timeout", [
                "[sandbox] wall-clock timeout after %.1fs: the session was killed" % timeout]
        exit_code, kind = -signal.SIGKILL, "crashed"
        if status is not None and os.WIFSIGNALED(status):
            exit_code = -os.WTERMSIG(status)
            if exit_code == -signal.SIGXCPU:
                kind = "timeout"
        elif status is not None and os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
        return exit_code, kind, ["[sandbox] the session process died (exit %d)" % exit_code]
    exit_code = report.get("exit", 0)
    if not isinstance(exit_code, int) or isinstance(exit_code, bool) or not -255 <= exit_code <= 255:
        exit_code = 1
    kind = report.get("kind")
    if kind not in (None, "exception", "memory", "timeout"):
        kind = "exception"
    if timed_out:
        return exit_code, "timeout", ["[sandbox] wall-clock timeout after %.1fs: interrupted" % timeout]
    return exit_code, kind, []


class Server:
    """The fork-server: owns the host channel, the sessions and the sweep.

    No SIGCHLD handler (a caught signal per stop and per continue would cost more than the
    whole call): a session's death wakes the pump through its pidfd, its stop is polled with
    ``waitpid`` once its report has arrived."""

    def __init__(self, cfg, hardening):
        self.cfg = cfg
        self.hardening = hardening
        self.sessions = {}
        self.pidns = bool(cfg.get("pidns"))
        self.out_cap = int(cfg.get("limits", {}).get("output_bytes") or 65536)
        self.my_pid = os.getpid()
        self.stopped = set()  # pids the kernel reported stopped (since they were last continued)
        self.paused = {}  # sid -> _Run stopped at a host call, waiting for the host's answer
        self.exited = {}  # session pid -> wait status
        roots = [cfg["workdir"]] + [m for m in cfg.get("scratch", []) if m != cfg["workdir"]]
        self.roots = {}
        for root in roots:  # modes to restore on reset
            try:
                self.roots[root] = stat.S_IMODE(os.lstat(root).st_mode)
            except OSError:
                pass
        self.inode_cap = int(cfg.get("inode_cap") or 0)
        self.inode_mounts = [m for m in cfg.get("scratch", []) if m in self.roots] if self.inode_cap else []
        self.inode_base = self.last_inodes = self._inodes()
        self.unchecked = 0.0  # run time since the file count was last checked
        self.last_pid_fd = -1  # /proc/sys/kernel/ns_last_pid: has anything forked since the sweep?
        self.swept_at = None
        self.pid_max = 32768
        if self.pidns:
            try:
                self.last_pid_fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY | os.O_CLOEXEC)
                with open("/proc/sys/kernel/pid_max") as f:
                    self.pid_max = int(f.read())
            except (OSError, ValueError):
                pass

    # ----- process helpers
    def _inodes(self):
        n = 0
        for m in self.inode_mounts:
            try:
                sv = os.statvfs(m)
                n += sv.f_files - sv.f_ffree
            except OSError:
                pass
        return n

    def _note(self, pid, status):
        if os.WIFSTOPPED(status):
            self.stopped.add(pid)
        elif os.WIFCONTINUED(status):
            self.stopped.discard(pid)
        else:
            self.stopped.discard(pid)
            if any(s.pid == pid for s in self.sessions.values()):
                self.exited[pid] = status

    def _collect(self):
        """Reap every child that changed state; note stops, continues and deaths of sessions."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._note(pid, status)

    def _poll(self, pid):
        """The news about child ``pid`` only (stopped / continued / dead); False if ``pid`` is
        not (or no longer) a child of ours."""
        while True:
            try:
                got, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                return False
            if not got:
                return True
            self._note(got, status)

    def _wait_stopped(self, pid, deadline):
        """Wait until child ``pid`` stops (True) or dies, is not ours, or the deadline passes
        (False): spin briefly (it is usually a few syscalls away), then poll."""
        spins = 0
        while True:
            ours = self._poll(pid)
            if pid in self.stopped:
                return True
            if pid in self.exited or not ours:
                return False
            now = time.monotonic()
            if now >= deadline:
                return False
            spins += 1
            if spins < 200:
                os.sched_yield()
            else:
                time.sleep(min(0.0005 if spins < 2200 else 0.005, deadline - now))

    def _kill_session(self, sid, wait=True):
        """SIGKILL session ``sid`` and forget it; its wait status (None if unknown). With
        ``wait=False`` its exit is not waited for: it runs nothing more, the kernel finishes it."""
        run = self.paused.pop(sid, None)
        if run is not None:
            run.close()
        s = self.sessions.pop(sid, None)
        if s is None:
            return None
        _sigkill(s.pid)
        s.close()
        status = self.exited.pop(s.pid, None)
        end = time.monotonic() + 1.0
        while status is None and wait:  # SIGKILL takes a moment to land (bounded: never hang here)
            try:
                got, st = os.waitpid(s.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if got and not os.WIFSTOPPED(st) and not os.WIFCONTINUED(st):
                status = st
            elif time.monotonic() > end:
                break
            else:
                time.sleep(0.0005)
        self.stopped.discard(s.pid)
        return status

    def _last_pid(self):
        try:
            return os.pread(self.last_pid_fd, 32, 0)
        except OSError:
            return None

    def sweep(self, duration=None, leave_dying=False):
        """Kill every process in this PID namespace except us, PID 1 and the sessions, and wait
        until they are gone. With ``leave_dying`` (after a run that ended normally), up to
        ``_LEAVE_DYING`` processes that were already dying when the sweep found them (see
        :func:`_is_dying`: e.g. a child the session SIGKILLed) are left for the kernel to
        finish, without waiting for their teardown; more than that are waited for too (they
        count against the box's process limit until gone).

        Skipped when no pid was allocated in the namespace since the last sweep (nothing new
        can exist) and the call was too short to have wrapped the pid space (a pid cannot be
        allocated in under a microsecond)."""
        if not self.pidns:
            return
        if (duration is not None and self.swept_at is not None and duration < self.pid_max * 1e-6
                and self._last_pid() == self.swept_at):
            return
        keep = {1, self.my_pid}
        keep.update(s.pid for s in self.sessions.values())
        end = time.monotonic() + 2.0  # a fork bomb keeps forking while we kill: repeat until empty
        killed = set()
        while time.monotonic() < end:
            victims, dying = [], []
            for name in os.listdir("/proc"):
                if name.isdigit():
                    pid = int(name)
                    if pid in keep:
                        continue
                    fields = _stat_fields(pid)
                    if _is_zombie(fields):
                        continue
                    if leave_dying and pid not in killed and _is_dying(pid, fields):
                        dying.append(pid)
                        continue
                    victims.append(pid)
            if leave_dying and len(dying) > _LEAVE_DYING:  # many (a fork bomb's): they count against
                leave_dying = False  # the process limit until gone, so wait for them after all
                continue
            if not victims:
                break
            killed.update(victims)
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)
            self._collect()
        self._collect()
        self.stopped.intersection_update(s.pid for s in self.sessions.values())
        self.swept_at = self._last_pid() if self.last_pid_fd >= 0 else None

    def _restop(self):
        """Between calls every session is stopped; one that another session continued
        (SIGCONT) is stopped again here, so it cannot run until its own next call."""
        self._collect()
        for s in list(self.sessions.values()):
            if s.pid not in self.stopped and s.pid not in self.exited:
                try:
                    os.kill(s.pid, signal.SIGSTOP)
                except OSError:
                    continue
                self._wait_stopped(s.pid, time.monotonic() + 1.0)

    def _spawn(self, sid):
        """Fork a fresh session and wait until it has locked itself down and stopped."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                parent_sock.close()
                _session_setup(child_sock, self.cfg, self.hardening)
            finally:
                os._exit(0)
        child_sock.close()
        parent_sock.shutdown(socket.SHUT_RD)  # nothing a session writes back is ever read
        s = self.sessions[sid] = _Session(pid, parent_sock)
        if not self._wait_stopped(pid, time.monotonic() + _SPAWN_TIMEOUT):
            status = self._kill_session(sid)
            why = "did not start"
            if status is not None and os.WIFEXITED(status):
                why = _SETUP_ERRORS.get(os.WEXITSTATUS(status), "exited with %d" % os.WEXITSTATUS(status))
            raise RuntimeError("the session " + why)
        return s

    def _cont(self, s):
        self.stopped.discard(s.pid)
        os.kill(s.pid, signal.SIGCONT)

    def _send(self, s, tag, fds, obj, deadline):
        """Hand the stopped session ``s`` a call (tag + fds + frame) and continue it: "sent",
        "timeout" (it does not read) or "dead". What fits in the socket buffer is written
        before the SIGCONT, so the session wakes once, with its call already there."""
        data = memoryview(_frame(obj))
        first = True
        woken = False
        while first or data:
            try:
                if first:
                    if fds:
                        socket.send_fds(s.sock, [tag], fds)
                    elif not s.sock.send(tag):
                        raise BlockingIOError
                    first = False
                else:
                    data = data[s.sock.send(data):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return "dead"
            if not woken:  # the rest needs the session reading
                self._cont(s)
                woken = True
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            select.select([], [s.sock], [], left)
        if not woken:
            self._cont(s)
        return "sent"

    def _ready(self, sid):
        """The session ``sid``, stopped and able to take a call, or None if it died since its
        last call (e.g. a sibling session killed it; a SIGKILLed stopped process is woken at
        once, so a session still in state T has nothing fatal pending)."""
        s = self.sessions.get(sid)
        if s is None:
            return None, None
        info = s.stat()  # None without /proc (the unisolated backend elsewhere): trust waitpid
        if (info is None or info[0] == b"T") and s.pid in self.stopped:
            return s, info
        self._collect()
        if s.pid not in self.exited and s.pid not in self.stopped:
            try:
                os.kill(s.pid, signal.SIGSTOP)
            except OSError:
                pass
        self._wait_stopped(s.pid, time.monotonic() + 1.0)
        info = s.stat()
        if s.pid in self.stopped and (info is None or info[0] == b"T"):
            return s, info
        return None, self._kill_session(sid)

    # ----- ops
    def op_new(self, req):
        """Start a fresh, empty session ``sid``."""
        sid = int(req["sid"])
        if sid in self.sessions:
            return {"error": "session %d exists" % sid}
        self._spawn(sid)
        return {"ok": True}

    def op_close(self, req):
        """Kill session ``sid`` and whatever it left running (the session's exit is not waited for)."""
        self._kill_session(int(req["sid"]), wait=False)
        self.sweep(leave_dying=True)
        return {"ok": True}

    def op_fork(self, req):
        """Fork session ``src`` into a new session ``sid`` with a copy of its globals; the new one
        first runs ``warm`` (optional host code, e.g. to take its first-write page faults before
        its first call)."""
        src, sid = int(req["src"]), int(req["sid"])
        if sid in self.sessions:
            return {"error": "session %d exists" % sid}
        s, _ = self._ready(src)
        if s is None:
            return {"error": "no session %d (it died)" % src, "agent": True}
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rep_r, rep_w = os.pipe()
        deadline = time.monotonic() + 10
        try:
            warm = req.get("warm")
            sent = self._send(s, b"F", [b.fileno(), rep_w], {"warm": warm} if isinstance(warm, str) else {}, deadline)
            b.close()
            os.close(rep_w)
            if sent != "sent" or not self._wait_stopped(s.pid, deadline):
                raise RuntimeError("the source session did not fork")
            hello = _read_frame(a.fileno(), 1024, deadline)
            pid = int(hello["pid"])
            if pid <= 1 or any(x.pid == pid for x in self.sessions.values()):
                raise RuntimeError("bad fork reply")
            # the new session must be our own (re-parented) child, and stopped: only then does
            # the kernel report its stop to us
            if not self._wait_stopped(pid, deadline):
                raise RuntimeError("the forked session did not start")
        except Exception as e:  # noqa: BLE001 - the source session's state is the agent's
            a.close()
            os.close(rep_r)
            self._kill_session(src)
            self.sweep()
            self._spawn(src)
            return {"error": "fork failed (%s); the source session was restarted" % e, "agent": True}
        os.close(rep_r)
        a.shutdown(socket.SHUT_RD)
        self.sessions[sid] = _Session(pid, a)
        self.sweep(leave_dying=True)  # a session closed just before may still be on its way out
        return {"ok": True}

    def op_run(self, req):
        """Run one cell in session ``sid`` (spawned if missing); reply with its output and outcome.

        The run is over when the session stops itself (the kernel says so: no frame user code
        writes can end it), dies, or overruns its wall clock (SIGINT, then SIGKILL). A session
        that died, was killed, stopped without a report or kept extra threads is replaced by a
        fresh one (``restarted``). A run that stopped at a host call (its report says
        ``pause``) is *paused*: the reply carries the request (``hostcall``) and the output so
        far, the run keeps its pipes, and the next ``run`` of the session is the host's answer
        (its ``code``, JSON text), sent on the session's socket, after which the same run goes on.
        """
        sid = int(req["sid"])
        notes = []
        existed = sid in self.sessions
        run = self.paused.pop(sid, None)
        s, info = self._ready(sid)
        died = s is None and existed
        if s is None:
            if run is not None:  # died while paused: the answer goes to a fresh session as code
                run.close()
                run = None
            if died:
                notes.append("[sandbox] the session had died (%s) since the last call; a fresh one was "
                             "started" % _status_text(info))
            s, info = self._spawn(sid), None
        timeout = float(req.get("timeout") or 10.0)
        resumed = run is not None
        if not resumed:
            run = _Run(self.out_cap)
        run.clock(timeout)
        self._set_cpu_limit(s, req.get("cpu"), info)
        if resumed:
            sent = self._send(s, b"A", [], {"code": req["code"]}, run.deadline)
        else:
            output = run.output
            sent = self._send(s, b"R", [output.out_w, output.err_w, run.rep_w], {"code": req["code"]}, run.deadline)
            run.close_write_ends()
        if sent == "sent":
            outcome, interrupted = self._pump(s, run)
        else:
            outcome, interrupted = sent, sent == "timeout"
        output, report_buf = run.output, run.report_buf
        duration = time.monotonic() - run.t0
        report, status = None, None
        _drain_into(run.rep_r, report_buf, _MAX_REPORT)  # the stop may be seen before the report was read
        if outcome in ("stopped", "paused"):
            report = _last_frame(report_buf)
            if outcome == "stopped" and _is_pause(report):
                outcome = "paused"
            info = s.stat()
            if report is None:
                notes.append("[sandbox] the session stopped before its code finished; it was restarted")
                outcome = "no-report"
            elif info is not None and info[2] > 1:
                notes.append("[sandbox] the code left %d thread(s) running; the session was restarted so "
                             "that nothing of this run executes after it" % (info[2] - 1))
                outcome = "threads"
            elif outcome == "paused" and interrupted:  # out of time on its way to the host call
                report, outcome = None, "timeout"
        if outcome == "paused":
            stdout, stderr = output.take()
            del report_buf[:]
            self.paused[sid] = run
            self.sweep(duration, leave_dying=True)
            return {"stdout": stdout, "stderr": _with_notes(stderr, notes), "exit": 0, "duration": duration,
                    "truncated": output.truncated, "error_kind": None, "restarted": died,
                    "hostcall": report["hostcall"] if isinstance(report.get("hostcall"), str) else ""}
        output.drain()
        run.close()
        if outcome == "files":
            notes.append("[sandbox] the code created more files and directories than the limit (%d); the "
                         "session was killed" % self.inode_cap)
        restart = outcome != "stopped"
        if restart:
            status = self._kill_session(sid)
        if outcome == "no-report":
            exit_code, kind = -signal.SIGKILL, "crashed"
        else:
            exit_code, kind, more = _classify(report, None if report is not None else status, interrupted, timeout)
            notes[:0] = more
        self.sweep(duration, leave_dying=not restart)
        if restart:
            self._spawn(sid)
            notes.append("[sandbox] a fresh session was started: variables from earlier calls are gone")
        return {
            "stdout": output.text(output.out_r),
            "stderr": _with_notes(output.text(output.err_r), notes),
            "exit": exit_code,
            "duration": duration,
            "truncated": output.truncated,
            "error_kind": kind,
            "restarted": restart or died,
        }

    def _set_cpu_limit(self, s, cpu, info):
        """The session's CPU backstop for this run, set from here (not by the session itself)
        and never lifted: soft RLIMIT_CPU = CPU used so far + ``cpu``."""
        if not cpu:
            return
        import resource

        if info is None:
            info = s.stat()
        used = info[1] if info is not None else 0.0
        soft = int(used + float(cpu)) + 1  # set every call: the code may have raised its own
        try:
            resource.prlimit(s.pid, resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            try:
                hard = resource.prlimit(s.pid, resource.RLIMIT_CPU)[1]
                if hard != resource.RLIM_INFINITY:
                    soft = min(soft, hard)
                resource.prlimit(s.pid, resource.RLIMIT_CPU, (soft, hard))
            except (ValueError, OSError):
                pass

    def _check_files(self, limit, duration):
        """True when the box holds more files than ``limit``; checked at least every 5 ms of
        run time (a short run cannot create many)."""
        self.unchecked += duration
        if self.unchecked < 0.005:
            return False
        self.unchecked = 0.0
        self.last_inodes = self._inodes()
        return self.last_inodes > limit

    def _pump(self, s, run):
        """Read the run's output and report until the session stops (then ``_GRACE`` more
        seconds for the pipes to reach EOF) or dies; enforce the wall clock and the box-wide
        file cap. Returns ``(outcome, interrupted)``: outcome "stopped", "paused" (stopped at a
        host call: its report says so, the pipes stay open), "dead", "timeout" (killed after
        the SIGINT grace) or "files"; ``interrupted``: the wall clock ran out."""
        output, rep_r, report_buf, deadline = run.output, run.rep_r, run.report_buf, run.deadline
        t0 = time.monotonic()
        interrupted_at = None
        stopped_at = None
        reported = False  # a complete frame arrived on the report pipe: poll for the stop
        pausing = False  # ... and the last one says the session stops at a host call
        spun = False
        rep_open = True
        pidfd = [s.pidfd] if s.pidfd >= 0 else []
        # the cap bounds growth: a run that starts above it (files left by a killed run) may
        # clean up, but not add
        inode_limit = max(self.inode_base + self.inode_cap, self.last_inodes) if self.inode_cap else 0
        next_poll = t0 + _POLL
        next_stop_poll = t0 + 0.01  # a session may also stop without reporting (user code did)
        while True:
            now = time.monotonic()
            interrupted = interrupted_at is not None
            if s.pid in self.exited:
                return ("timeout" if interrupted else "dead"), interrupted
            if stopped_at is None and (reported or not pidfd or now >= next_stop_poll):
                if reported and not spun:
                    spun = True
                    self._wait_stopped(s.pid, now + 0.0002)  # it stops right after reporting
                else:
                    self._poll(s.pid)
                    next_stop_poll = now + 0.01
                if s.pid in self.stopped:
                    stopped_at = now = time.monotonic()
                    if inode_limit and self._check_files(inode_limit, now - t0):
                        return "files", interrupted
                elif s.pid in self.exited:
                    continue
            if stopped_at is not None:
                if pausing:  # it flushed its output before the report: nothing more is coming
                    return "paused", interrupted
                if not output.open_fds or now >= stopped_at + _GRACE:
                    return "stopped", interrupted
            elif not interrupted and now >= deadline:
                interrupted_at = now
                try:
                    os.kill(s.pid, signal.SIGINT)
                except OSError:
                    pass
            elif interrupted and now >= interrupted_at + _INT_GRACE:
                return "timeout", True
            if inode_limit and now >= next_poll:
                self.unchecked = 1.0
                if self._check_files(inode_limit, 0.0):
                    return "files", interrupted
                next_poll = now + _POLL
            if stopped_at is not None:
                limit = stopped_at + _GRACE
            elif interrupted_at is not None:
                limit = interrupted_at + _INT_GRACE
            else:
                limit = deadline
            if inode_limit:
                limit = min(limit, next_poll)
            if stopped_at is None:  # poll for the stop
                limit = min(limit, now + 0.0002 if reported else next_stop_poll)  # it is a few syscalls away
            watch = output.open_fds + ([rep_r] if rep_open else []) + pidfd
            try:
                ready, _, _ = select.select(watch, [], [], max(0.0, limit - now))
            except InterruptedError:
                continue
            for fd in ready:
                if fd == rep_r:
                    chunk = os.read(rep_r, 65536)
                    if not chunk or len(report_buf) + len(chunk) > _MAX_REPORT:
                        rep_open = False  # closed, or flooded by user code: read later, once stopped
                    else:
                        report_buf += chunk
                        last = _last_frame(report_buf)
                        reported = reported or last is not None
                        pausing = _is_pause(last)
                elif pidfd and fd == pidfd[0]:
                    self._poll(s.pid)
                    if s.pid not in self.exited:  # exited but not ours to reap? treat as dead
                        self.exited[s.pid] = None
                    pidfd = []
                else:
                    output.read(fd)

    def op_reset(self, req):
        """Kill every session, wipe the work dir and the scratch mounts back to their fresh
        state, then start a new default session. ``clean`` says whether that succeeded."""
        for sid in list(self.sessions):
            self._kill_session(sid)
        self.sweep()
        clean = True
        for root, mode in self.roots.items():
            try:
                os.chmod(root, 0o700)
            except OSError:
                clean = False
            if _wipe_tree(root):
                clean = False
            try:
                for name in os.listxattr(root):
                    os.removexattr(root, name)
            except OSError as e:
                if e.errno not in (_ENOTSUP, 61):  # ENOTSUP / ENODATA: nothing there
                    clean = False
            try:
                os.chmod(root, mode)
                clean = clean and not os.listdir(root)
            except OSError:
                clean = False
        if self.inode_cap and self._inodes() != self.inode_base:
            clean = False
        self.exited.clear()
        self.stopped.clear()
        self.last_inodes = self._inodes()
        self._spawn(0)
        return {"ok": True, "clean": clean}

    def op_put(self, req):
        """Write base64 ``data`` to ``path`` under the work dir (no symlinks followed)."""
        import base64

        fd = _open_beneath(self.cfg["workdir"], req["path"], os.O_WRONLY | os.O_CREAT)
        try:
            os.ftruncate(fd, 0)
            _write_all(fd, base64.b64decode(req["data"]))
        finally:
            os.close(fd)
        return {"ok": True}

    def op_get(self, req):
        """Read ``path`` under the work dir as base64, refusing files over ``limit`` bytes."""
        import base64

        fd = _open_beneath(self.cfg["workdir"], req["path"], os.O_RDONLY)
        try:
            limit = int(req.get("limit") or 16 * 1024 * 1024)
            data = bytearray()
            while len(data) <= limit:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) > limit:
            return {"error": "file larger than %d bytes" % limit}
        return {"ok": True, "data": base64.b64encode(bytes(data)).decode("ascii")}

    def op_ping(self, req):
        """Liveness check: this process's pid and the open session ids."""
        return {"ok": True, "pid": self.my_pid, "sessions": sorted(self.sessions)}

    def serve(self, fd_in, fd_out):
        """Main loop: one request frame in, one reply frame out, until the host goes away."""
        while True:
            try:
                (n,) = _HDR.unpack(_read_exact(fd_in, 4))
                if n > _MAX_HOST_FRAME:  # skip it (the framing stays in step) and say so
                    while n:
                        n -= len(_read_exact(fd_in, min(n, 1 << 20)))
                    body = b"{}"
                    oversized = True
                else:
                    body, oversized = _read_exact(fd_in, n), False
            except (EOFError, OSError):
                break
            try:
                if oversized:
                    raise ValueError("larger than %d bytes" % _MAX_HOST_FRAME)
                req = _decode(body)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError as e:  # the framing is intact: answer and go on
                req, reply = None, {"error": "bad request frame (%s)" % e}
            if req is not None:
                op = getattr(self, "op_" + str(req.get("op")), None)
                try:
                    reply = op(req) if op else {"error": "unknown op %r" % req.get("op")}
                except Exception as e:  # noqa: BLE001 - never die on one bad request
                    reply = {"error": "%s: %s" % (type(e).__name__, e)}
            self._restop()
            reply["spids"] = [s.pid for s in self.sessions.values()]
            try:
                _write_all(fd_out, _frame(reply))
            except OSError:
                break
        for sid in list(self.sessions):
            self._kill_session(sid)
        self.sweep()


def _drain_into(fd, buf, cap):
    """Append what ``fd`` holds right now (without blocking) to ``buf``, up to ``cap`` bytes."""
    try:
        while len(buf) < cap:
            r, _, _ = select.select([fd], [], [], 0)
            chunk = os.read(fd, 65536) if r else b""
            if not chunk:
                return
            buf += chunk
    except OSError:
        pass


def _status_text(status):
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return "exit %d" % os.WEXITSTATUS(status)
    return "status %d" % status


def main():
    """Entry point inside the box: lock this process down, set up the private channel fds,
    preload, then serve."""
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    hardening = None
    try:
        hardening = _Hardening(cfg)
        _clone_setup(hardening.libc, hardening.ctypes)
        if hardening.prctl(4, 0) != 0:  # PR_SET_DUMPABLE = 0: no ptrace, no /proc/<us>/{fd,mem}
            raise OSError("PR_SET_DUMPABLE failed")
        hardening.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned daemons come to us
        if hardening.error:
            raise OSError(hardening.error)
    except Exception as e:  # noqa: BLE001 - e.g. an image without ctypes
        if cfg.get("seccomp") == "require":
            sys.stderr.write("sandbox worker: cannot harden the box: %s: %s\n" % (type(e).__name__, e))
            sys.exit(2)
        hardening = None
    # protocol on private fds; 0/1 become /dev/null so stray writes cannot corrupt frames
    fd_in, fd_out = os.dup(0), os.dup(1)
    os.set_inheritable(fd_in, False)
    os.set_inheritable(fd_out, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    workdir = cfg.setdefault("workdir", os.getcwd())
    try:
        os.chdir(workdir)
    except OSError:
        pass
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for mod in cfg.get("preload", []):
        try:
            __import__(mod)
        except Exception:  # noqa: BLE001
            pass
    import ast  # noqa: F401 - warm what every run needs
    import io  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401

    server = Server(cfg, hardening)
    _write_all(fd_out, _frame({"ready": True, "pid": os.getpid(), "python": sys.version.split()[0],
                               "seccomp": bool(hardening and hardening.seccomp)}))
    server.serve(fd_in, fd_out)


if __name__ == "__main__":
    main()

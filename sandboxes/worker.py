"""The fork-server that runs *inside* a sandbox (local bwrap box, container or plain process).

It is started as ``python -I -S -c <this source> <config json>`` and speaks length-prefixed
JSON frames on fds 0/1 with the host. It imports a few modules once, then forks one process
per REPL *session*; a session keeps its globals between ``run`` calls. All user code runs in
session processes, never in this one.

Design notes (see reference/sandbox_search.md, traps 3-5):

* this process calls ``prctl(PR_SET_DUMPABLE, 0)`` so snippets cannot ptrace it or read its
  memory, and ``PR_SET_CHILD_SUBREAPER`` so orphans of sessions are reaped here;
* the reply to the host is written only by this process; session processes are untrusted:
  every frame they send is size-capped and read with a deadline;
* after each run, when the box has its own PID namespace, every process except this one and
  the live sessions is SIGKILLed (setsid/double-fork daemons included);
* files are read and written with ``O_NOFOLLOW`` on every path component.

Only the standard library is used, and the file must stay importable on Python 3.8+.
"""

import builtins
import json
import os
import select
import signal
import socket
import struct
import sys
import time

_HDR = struct.Struct(">I")
_MAX_HOST_FRAME = 64 * 1024 * 1024
_MAX_SESSION_FRAME = 64 * 1024
_GRACE = 0.05  # seconds to wait for the output pipes after the session reported done
_INT_GRACE = 0.5  # seconds between SIGINT and SIGKILL on a wall-clock timeout


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


def _read_frame(fd, limit, deadline=None):
    (n,) = _HDR.unpack(_read_exact(fd, 4, deadline))
    if n > limit:
        raise ValueError("frame too large: %d bytes" % n)
    return json.loads(_read_exact(fd, n, deadline).decode("utf-8"))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _frame(obj):
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _HDR.pack(len(body)) + body


# --------------------------------------------------------------------------- files
def _open_beneath(root, rel, flags, mode=0o644):
    """Open ``rel`` under ``root`` refusing symlinks in every component and ``..``."""
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
        fd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise PermissionError("not a plain single-link file: %r" % rel)
    return fd


# --------------------------------------------------------------------------- session side
class _CpuLimit(TimeoutError):
    pass


def _on_xcpu(signum, frame):
    raise _CpuLimit("CPU time limit exceeded")


def _session_main(sock, cfg, globs=None):
    """Loop of one REPL session process: receive code, run it, report back."""
    import resource

    os.setsid()
    my_pid = os.getpid()
    lim = cfg.get("limits", {})

    def setlim(res, val):
        if val:
            try:
                resource.setrlimit(res, (int(val), int(val)))
            except (ValueError, OSError):
                pass

    if globs is None:  # fresh session (not a fork of another): apply limits once
        setlim(resource.RLIMIT_AS, lim.get("memory_bytes"))
        setlim(resource.RLIMIT_NPROC, lim.get("processes"))
        setlim(resource.RLIMIT_FSIZE, lim.get("file_size_bytes"))
        setlim(resource.RLIMIT_NOFILE, lim.get("open_files"))
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ValueError, OSError):
            pass
        globs = {"__name__": "__main__", "__builtins__": builtins}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE -> EFBIG
    signal.signal(signal.SIGXCPU, _on_xcpu)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        os.chdir(cfg["workdir"])
    except OSError:
        pass
    fd = sock.fileno()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1, 4)
        except (OSError, EOFError):
            os._exit(0)
        if not msg:
            os._exit(0)
        try:
            req = _read_frame(fd, _MAX_HOST_FRAME, time.monotonic() + 10)
        except Exception:
            os._exit(3)
        if msg == b"R":
            reply = _session_run(req, fds, globs, my_pid, devnull)
        elif msg == b"F":
            reply = _session_fork(sock, fds, cfg, globs)
        else:
            os._exit(3)
        if os.getpid() != my_pid:  # a child forked by user code must never answer
            os._exit(0)
        try:
            sock.sendall(_frame(reply))
        except OSError:
            os._exit(0)


def _reap_children():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _session_run(req, fds, globs, my_pid, devnull):
    import ast
    import io
    import resource
    import traceback

    _reap_children()
    out_w, err_w = fds[0], fds[1]
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    cpu = req.get("cpu")
    if cpu:
        used = resource.getrusage(resource.RUSAGE_SELF)
        total = int(used.ru_utime + used.ru_stime + float(cpu)) + 1
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (total, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        except (ValueError, OSError):
            pass
    exit_code, kind = 0, None
    try:
        tree = ast.parse(req["code"], "<sandbox>", "exec")
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
            if isinstance(e, SyntaxError):
                text = "".join(traceback.format_exception_only(type(e), e))
            else:
                text = "".join(traceback.format_exception(type(e), e, tb))
            sys.stderr.write(text)
        except BaseException:
            pass
    if os.getpid() != my_pid:
        os._exit(exit_code & 0xFF)
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
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_CPU)[1]))
    except (ValueError, OSError):
        pass
    return {"exit": exit_code, "kind": kind}


def _session_fork(sock, fds, cfg, globs):
    """Fork this session; the grandchild (orphaned to the fork-server) becomes a new session."""
    new_sock_fd = fds[0]
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                sock.close()
                new_sock = socket.socket(fileno=new_sock_fd)
                try:
                    new_sock.sendall(_frame({"pid": os.getpid()}))
                except OSError:
                    os._exit(0)
                _session_main(new_sock, cfg, globs)
        finally:
            os._exit(0)
    os.close(new_sock_fd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return {"ok": True}


# --------------------------------------------------------------------------- fork-server side
def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True  # gone already


class _Session:
    __slots__ = ("pid", "sock")

    def __init__(self, pid, sock):
        self.pid = pid
        self.sock = sock


# --------------------------------------------------------------------------- one run (fork-server side)
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

    def drain(self):
        """Read what the open pipes already hold, without blocking, then close them."""
        for fd in self.open_fds:
            try:
                while len(self.bufs[fd]) < self.cap:
                    r, _, _ = select.select([fd], [], [], 0)
                    if not r:
                        break
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    if _append_capped(self.bufs[fd], data, self.cap):
                        self.truncated = True
            except OSError:
                pass
            os.close(fd)
        self.open_fds = []

    def text(self, fd):
        """What was read from the pipe ``fd``, decoded (undecodable bytes replaced)."""
        return self.bufs[fd].decode("utf-8", "replace")


def _send_run(session, req, output):
    """Hand ``session`` the cell and the write ends of ``output``'s pipes; False if it is gone."""
    try:
        socket.send_fds(session.sock, [b"R"], [output.out_w, output.err_w])
        session.sock.sendall(_frame({"code": req["code"], "cpu": req.get("cpu")}))
        return True
    except OSError:
        return False


def _pump(session, output, deadline):
    """Read ``session``'s output into ``output`` until the session reports the run done.

    After the report, the pipes get ``_GRACE`` seconds to reach EOF. At ``deadline`` the
    session is sent SIGINT; if it has not reported ``_INT_GRACE`` seconds later it is given
    up on. Returns ``(done, timed_out)``: ``done`` is the session's report, or None when the
    session died, sent garbage or must be killed.
    """
    ctrl = session.sock.fileno()
    done = None
    dead = False
    timed_out = False
    interrupted_at = None
    grace_until = None
    while not dead:
        now = time.monotonic()
        if done is not None and (not output.open_fds or now >= grace_until):
            break
        if done is None:
            if interrupted_at is None and now >= deadline:
                timed_out = True
                interrupted_at = now
                try:
                    os.kill(session.pid, signal.SIGINT)
                except OSError:
                    pass
            if interrupted_at is not None and now >= interrupted_at + _INT_GRACE:
                dead = True
                break
        if done is not None:
            limit = grace_until
        elif interrupted_at is not None:
            limit = interrupted_at + _INT_GRACE
        else:
            limit = deadline
        watch = list(output.open_fds) + ([ctrl] if done is None else [])
        try:
            ready, _, _ = select.select(watch, [], [], max(0.0, limit - now))
        except InterruptedError:
            continue
        for fd in ready:
            if fd != ctrl:
                output.read(fd)
                continue
            try:
                done = _read_frame(ctrl, _MAX_SESSION_FRAME, time.monotonic() + 1.0)
                if not isinstance(done, dict):
                    raise ValueError("bad reply")
                grace_until = time.monotonic() + _GRACE
            except Exception:  # EOF, garbage or stall: the session is gone
                dead = True
    return (None if dead else done), timed_out


def _classify(done, status, timed_out, timeout):
    """The outcome of one run as ``(exit code, error kind, notes for stderr)``.

    ``done`` is the session's own report, or None when it died or was killed (``status`` is
    then its wait status, or None if unknown); ``timed_out`` says the wall clock ran out.
    """
    if done is None:
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
    exit_code = int(done.get("exit", 0)) if isinstance(done.get("exit", 0), int) else 1
    kind = done.get("kind")
    if kind not in (None, "exception", "memory", "timeout"):
        kind = "exception"
    if timed_out:
        return exit_code, "timeout", ["[sandbox] wall-clock timeout after %.1fs: interrupted" % timeout]
    return exit_code, kind, []


class Server:
    """The fork-server: owns the host channel, the sessions and the sweep."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.sessions = {}
        self.pidns = bool(cfg.get("pidns"))
        self.out_cap = int(cfg.get("limits", {}).get("output_bytes") or 65536)
        self.my_pid = os.getpid()

    # ----- process helpers
    def _reap(self):
        _reap_children()

    def _wait_status(self, pid, timeout=1.0):
        """Wait (bounded) for a session pid we SIGKILLed or saw die; return its wait status."""
        end = time.monotonic() + timeout
        while True:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if got:
                return status
            if time.monotonic() > end:
                return None
            time.sleep(0.002)

    def _kill_session(self, sid):
        s = self.sessions.pop(sid, None)
        if s is None:
            return None
        for fn in (lambda: os.killpg(s.pid, signal.SIGKILL), lambda: os.kill(s.pid, signal.SIGKILL)):
            try:
                fn()
            except OSError:
                pass
        try:
            s.sock.close()
        except OSError:
            pass
        return self._wait_status(s.pid)

    def sweep(self):
        """Kill every process in this PID namespace except us, PID 1 and live sessions."""
        if not self.pidns:
            return
        keep = {1, self.my_pid, os.getppid()}
        keep.update(s.pid for s in self.sessions.values())
        end = time.monotonic() + 2.0  # a fork bomb keeps forking while we kill: repeat until empty
        while time.monotonic() < end:
            victims = []
            for name in os.listdir("/proc"):
                if name.isdigit():
                    pid = int(name)
                    if pid not in keep and not _is_zombie(pid):
                        victims.append(pid)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)
            self._reap()
        self._reap()

    def _spawn(self, sid):
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                parent_sock.close()
                for s in self.sessions.values():
                    s.sock.close()
                os.close(self.cfg["_in"])
                os.close(self.cfg["_out"])
                _session_main(child_sock, self.cfg)
            finally:
                os._exit(0)
        child_sock.close()
        self.sessions[sid] = _Session(pid, parent_sock)

    # ----- ops
    def op_new(self, req):
        """Start a fresh, empty session ``sid``."""
        sid = int(req["sid"])
        if sid in self.sessions:
            return {"error": "session %d exists" % sid}
        self._spawn(sid)
        return {"ok": True}

    def op_close(self, req):
        """Kill session ``sid`` and whatever it left running."""
        self._kill_session(int(req["sid"]))
        self.sweep()
        return {"ok": True}

    def op_fork(self, req):
        """Fork session ``src`` into a new session ``sid`` with a copy of its globals."""
        src, sid = int(req["src"]), int(req["sid"])
        s = self.sessions.get(src)
        if s is None:
            return {"error": "no session %d" % src}
        if sid in self.sessions:
            return {"error": "session %d exists" % sid}
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        try:
            socket.send_fds(s.sock, [b"F"], [b.fileno()])
            s.sock.sendall(_frame({}))
            b.close()
            reply = _read_frame(s.sock.fileno(), _MAX_SESSION_FRAME, deadline)
            hello = _read_frame(a.fileno(), _MAX_SESSION_FRAME, deadline)
            pid = int(hello["pid"])
        except Exception as e:  # noqa: BLE001
            a.close()
            self._kill_session(src)
            self._spawn(src)
            return {"error": "fork failed (%s); the source session was restarted" % e}
        if not reply.get("ok"):
            a.close()
            return {"error": "fork failed"}
        self.sessions[sid] = _Session(pid, a)
        return {"ok": True}

    def op_run(self, req):
        """Run one cell in session ``sid`` (spawned if missing); reply with its output and outcome.

        A session that dies, or overruns its wall clock and ignores SIGINT, is killed and
        replaced by a fresh one (``restarted``).
        """
        sid = int(req["sid"])
        if sid not in self.sessions:
            self._spawn(sid)
        s = self.sessions[sid]
        timeout = float(req.get("timeout") or 10.0)
        t0 = time.monotonic()
        output = _RunOutput(self.out_cap)
        sent = _send_run(s, req, output)
        output.close_write_ends()
        done, timed_out = _pump(s, output, t0 + timeout) if sent else (None, False)
        output.drain()
        duration = time.monotonic() - t0
        restarted = done is None
        status = self._kill_session(sid) if restarted else None
        exit_code, kind, notes = _classify(done, status, timed_out, timeout)
        self.sweep()
        if restarted:
            self._spawn(sid)
            notes.append("[sandbox] a fresh session was started: variables from earlier calls are gone")
        stderr = output.text(output.err_r)
        if notes:
            stderr = stderr + ("\n" if stderr and not stderr.endswith("\n") else "") + "\n".join(notes) + "\n"
        return {
            "stdout": output.text(output.out_r),
            "stderr": stderr,
            "exit": exit_code,
            "duration": duration,
            "truncated": output.truncated,
            "error_kind": kind,
            "restarted": restarted,
        }

    def op_reset(self, req):
        """Kill every session and empty the work dir."""
        for sid in list(self.sessions):
            self._kill_session(sid)
        self.sweep()
        self._wipe()
        return {"ok": True}

    def _wipe(self):
        import shutil

        root = self.cfg["workdir"]
        try:
            names = os.listdir(root)
        except OSError:
            return
        for name in names:
            path = os.path.join(root, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass

    def op_put(self, req):
        """Write base64 ``data`` to ``path`` under the work dir (no symlinks followed)."""
        import base64

        fd = _open_beneath(self.cfg["workdir"], req["path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
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
                req = _read_frame(fd_in, _MAX_HOST_FRAME)
            except (EOFError, OSError, ValueError):
                break
            op = getattr(self, "op_" + str(req.get("op")), None)
            try:
                reply = op(req) if op else {"error": "unknown op %r" % req.get("op")}
            except Exception as e:  # noqa: BLE001 - never die on one bad request
                reply = {"error": "%s: %s" % (type(e).__name__, e)}
            self._reap()
            reply["spids"] = [s.pid for s in self.sessions.values()]
            try:
                _write_all(fd_out, _frame(reply))
            except OSError:
                break
        for sid in list(self.sessions):
            self._kill_session(sid)
        self.sweep()


def main():
    """Entry point inside the box: set up the private channel fds, preload, then serve."""
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: snippets cannot ptrace us
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned daemons come to us
    except Exception:  # noqa: BLE001 - the docker image may lack ctypes; the pidns still holds
        if cfg.get("require_prctl"):
            raise
    # protocol on private fds; 0/1 become /dev/null so stray writes cannot corrupt frames
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    cfg["_in"], cfg["_out"] = fd_in, fd_out
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

    server = Server(cfg)
    _write_all(fd_out, _frame({"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]}))
    server.serve(fd_in, fd_out)


if __name__ == "__main__":
    main()

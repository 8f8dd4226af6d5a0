"""Escape and abuse suite (issue 4 part 5), parametrised over the isolated backends.

Every case asserts two things: the host is unharmed (files, processes, listener, the test
process itself) and the sandbox answers with a clear error instead of hanging. Network
cases only ever target 127.0.0.1 (a listener owned by this test) or TEST-NET-1 192.0.2.1,
and the latter only when the sandbox's route table is empty, so no packet can leave.

The ``process`` backend is not isolated by design (it warns loudly), so the isolation cases
skip it; the resource cases (timeouts, output, memory, crash recovery) run on it too.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from conftest import BACKENDS, ISOLATED, REPO, build, host_pids_of_uid
from rao_envs.sandboxes import SandboxError, SandboxPool


@pytest.fixture(params=ISOLATED)
def isolated(request):
    sb = build(request.param)
    with sb:
        yield sb


@pytest.fixture(params=BACKENDS)
def any_sb(request):
    sb = build(request.param)
    with sb:
        yield sb


def _alive(sb):
    r = sb.run("6 * 7")
    assert r.stdout == "42\n", r


# ----------------------------------------------------------------------------- secrets
@pytest.fixture
def planted_secret():
    """A world-readable secret file on the host, outside the project and /root."""
    d = f"/tmp/rao_escape_{uuid.uuid4().hex}"
    os.mkdir(d, 0o755)
    path = os.path.join(d, "planted.txt")
    with open(path, "w") as f:
        f.write("TOP-SECRET-PLANTED")
    os.chmod(path, 0o644)
    yield path
    os.unlink(path)
    os.rmdir(d)


def test_cannot_read_host_secrets(isolated, planted_secret):
    targets = ["/etc/shadow", "/etc/passwd", "/root/.bashrc", os.path.expanduser("~"),
               str(REPO / "pyproject.toml"), str(REPO), planted_secret, "/proc/1/environ"]
    code = (
        "import os\n"
        f"for p in {targets!r}:\n"
        "    try:\n"
        "        if os.path.isdir(p):\n"
        "            print(p, 'LISTED', os.listdir(p))\n"
        "        else:\n"
        "            print(p, 'READ', open(p, 'rb').read()[:200])\n"
        "    except OSError as e:\n"
        "        print(p, 'DENIED', type(e).__name__)\n"
    )
    r = isolated.run(code)
    assert r.ok, r
    for line in r.stdout.splitlines():
        path, verdict = line.split(" ", 2)[:2]
        if path == "/proc/1/environ" and verdict == "READ":
            assert "SECRET" not in line and "HOME=/root" not in line  # the box's own init
            continue
        if path == "/etc/passwd" and verdict == "READ":  # the container image's own file
            assert "daemon:" not in line and "/bin/bash" not in line, line
            continue
        assert verdict == "DENIED", line
    assert "TOP-SECRET" not in r.stdout
    try:
        shadow_head = open("/etc/shadow").read()[:24]
    except OSError:
        shadow_head = "root:"
    assert shadow_head not in r.stdout


def test_cannot_write_outside_the_work_dir(isolated):
    marker = f"rao_escape_{uuid.uuid4().hex}"
    targets = ["/usr/" + marker, "/etc/" + marker, str(REPO / marker), "/" + marker, "/root/" + marker]
    code = (
        f"for p in {targets!r}:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); print(p, 'WROTE')\n"
        "    except OSError as e:\n"
        "        print(p, 'DENIED', type(e).__name__)\n"
        f"open('/tmp/{marker}', 'w').write('private tmp')\n"
        f"open('{marker}', 'w').write('work dir')\n"
    )
    r = isolated.run(code)
    assert r.ok, r
    assert "WROTE" not in r.stdout, r.stdout
    for p in targets + [f"/tmp/{marker}"]:
        assert not os.path.exists(p), p  # nothing appeared on the host


def test_nested_namespaces_and_privilege(isolated):
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('uid', os.getuid())\n"
        "print('cap', [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno() != 0)\n"  # CLONE_NEWUSER
    )
    r = isolated.run(code)
    assert r.ok, r
    assert "uid 0" not in r.stdout
    assert "cap 0000000000000000" in r.stdout  # no capability in the box's own namespace
    if isolated.backend == "local":  # bwrap --disable-userns; for docker the engine's seccomp decides
        assert "unshare -1 True" in r.stdout


# ----------------------------------------------------------------------------- network
@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 counting connections (the only host target we ever use)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                hits.append(1)
                c.close()
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join(2)
    srv.close()


def test_no_network(isolated, listener):
    port, hits = listener
    code = (
        "import socket, errno\n"
        "def attempt(addr):\n"
        "    s = socket.socket(); s.settimeout(1)\n"
        "    try:\n"
        "        s.connect(addr); return 'CONNECTED'\n"
        "    except OSError as e:\n"
        "        return 'FAILED %s' % errno.errorcode.get(e.errno, e)\n"
        "    finally:\n"
        "        s.close()\n"
        f"print('loopback', attempt(('127.0.0.1', {port})))\n"
        "routes = [l for l in open('/proc/net/route').read().splitlines()[1:] if l.strip()]\n"
        "ifaces = sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:])\n"
        "print('routes', len(routes), 'ifaces', ifaces)\n"
        "if not routes and set(ifaces) <= {'lo'}:\n"  # guard: only try when nothing can leave
        "    print('outside', attempt(('192.0.2.1', 80)))\n"
        "else:\n"
        "    print('outside SKIPPED-HAS-ROUTE')\n"
        "try:\n"
        "    socket.getaddrinfo('example.invalid', 80); print('dns RESOLVED')\n"
        "except OSError as e:\n"
        "    print('dns FAILED')\n"
    )
    r = isolated.run(code, timeout=10)
    assert r.ok, r
    assert "loopback FAILED" in r.stdout
    assert "routes 0" in r.stdout, r.stdout  # a network namespace with no route at all
    assert "outside FAILED" in r.stdout
    assert "dns FAILED" in r.stdout
    time.sleep(0.3)
    assert hits == []  # the host listener saw nothing


# ----------------------------------------------------------------------------- resources
def test_fork_bomb_is_contained(isolated):
    r = isolated.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                     timeout=3)
    assert r.error_kind in ("timeout", "crashed", "exception"), r
    _alive(isolated)
    # nothing of the bomb is left: only init, the fork-server and the session remain
    n = isolated.run("import os; len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert int(n.stdout) <= 4, n


def test_a_killed_child_is_not_waited_for_and_nothing_of_a_run_survives_it(isolated):
    code = (
        "import os, signal, time\n"
        "pids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "for pid in pids[:2]:\n"
        "    os.kill(pid, signal.SIGKILL)  # killed, not waited for: the sandbox leaves it to the kernel\n"
    )
    r = isolated.run(code)
    assert r.ok, r
    # the third (alive, not killed) is the sweep's; the killed ones may still be exiting
    live = ("import os\nmine = os.getpid()\nout = []\nfor p in os.listdir('/proc'):\n"
            "    if p.isdigit() and int(p) != mine:\n"
            "        try:\n            st = open('/proc/%s/stat' % p).read()\n        except OSError:\n"
            "            continue\n        if st[st.rindex(')') + 2] not in 'ZX':\n            out.append(st[st.rindex(')') + 2])\n"
            "print(len(out))")
    assert all(int(isolated.run(live).stdout) <= 2 for _ in range(3))  # fork-server (+ init) only
    assert isolated.run("len(pids)").stdout == "3\n"  # the session itself lives on


_OTHERS = ("import os\nkeep = {1, os.getpid(), os.getppid(), %d}\nout = []\nfor p in os.listdir('/proc'):\n"
           "    if p.isdigit() and int(p) not in keep:\n"
           "        try:\n            st = open('/proc/%%s/stat' %% p).read()\n        except OSError:\n"
           "            continue\n        if st[st.rindex(')') + 2] not in 'ZX':\n            out.append(p)\n"
           "print(len(out))")


def test_a_process_a_signal_handler_forks_between_calls_is_swept_by_the_next_call(isolated):
    """A daemon forked by a sibling's own signal handler, which another session's cell woke
    up, is found by the next call of any kind, even a close (and a quick run's live child that
    let go of its output pipes at once, by the sweep after that run)."""
    quiet = ("import os, time\npid = os.fork()\nif pid == 0:\n    null = os.open('/dev/null', os.O_RDWR)\n"
             "    os.dup2(null, 1)\n    os.dup2(null, 2)\n    time.sleep(60)\n    os._exit(0)\n")
    for _ in range(3):  # a quick run whose live child let go of its output at once
        r = isolated.run(quiet)
        assert r.ok, r
        assert isolated.run(_OTHERS % 0).stdout == "0\n"
    spare = isolated.fork()
    other = isolated.session()
    pid = int(other.run("import os, signal, time\ndef h(*a):\n    if os.fork() == 0:\n        os.setsid()\n"
                        "        time.sleep(600)\nsignal.signal(signal.SIGUSR1, h)\nos.getpid()").stdout)
    r = isolated.run(f"import os, signal\nos.kill({pid}, signal.SIGUSR1)\nos.kill({pid}, signal.SIGCONT)")
    assert r.ok, r
    spare.close()  # a call that runs no user code still sweeps what was forked since the last one
    assert isolated.run(_OTHERS % pid).stdout == "0\n"
    for _ in range(3):  # and when the handler only runs at the sibling's own next call
        isolated.run(f"import os, signal\nos.kill({pid}, signal.SIGUSR1)")
        assert other.run("import time\ntime.sleep(0.05)").ok
        assert isolated.run(_OTHERS % pid).stdout == "0\n"


def test_memory_bomb(any_sb):
    r = any_sb.run("x = bytearray(8 * 1024**3)")
    assert r.error_kind == "memory" and "MemoryError" in r.stderr, r
    r = any_sb.run("chunks = []\nwhile True: chunks.append(bytearray(50 * 1024**2))", timeout=10)
    assert r.error_kind in ("memory", "crashed"), r
    any_sb.run("chunks = None")
    _alive(any_sb)


def test_cpu_spin_past_timeout(any_sb):
    r = any_sb.run("while True: pass", timeout=1)
    assert r.error_kind == "timeout", r
    _alive(any_sb)


def test_disk_fill_is_bounded(isolated):
    code = (
        "n = 0\n"
        "try:\n"
        "    for i in range(100):\n"
        "        with open('f%d' % i, 'wb') as f:\n"
        "            f.write(b'x' * (4 * 1024**2))\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('STOPPED', n, type(e).__name__, e.errno)\n"
    )
    r = isolated.run(code, timeout=20)
    assert "STOPPED" in r.stdout, r  # ENOSPC (tmpfs size) or EFBIG (file size limit)
    assert int(r.stdout.split()[1]) < 100
    r = isolated.run("open('big', 'wb').write(b'x' * (64 * 1024**2))", timeout=20)
    assert r.error_kind == "exception" and ("EFBIG" in r.stderr or "too large" in r.stderr
                                            or "No space" in r.stderr), r
    _alive(isolated)


def test_output_flood(any_sb):
    r = any_sb.run("while True: print('flood' * 100)", timeout=5)
    assert r.truncated and len(r.stdout) <= 8192
    assert r.error_kind in ("exception", "timeout"), r
    r = any_sb.run("import os\nwhile True: os.write(2, b'e' * 65536)", timeout=5)
    assert r.truncated and len(r.stderr) <= 8192 + 500
    _alive(any_sb)


# ----------------------------------------------------------------------------- processes
def test_ptrace_and_host_proc_access(isolated):
    host_pid = os.getpid()
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "ppid = os.getppid()\n"
        "rc = libc.ptrace(16, ppid, 0, 0)\n"  # PTRACE_ATTACH to the fork-server
        "print('attach', rc, ctypes.get_errno())\n"
        "try:\n"
        "    open('/proc/%d/mem' % ppid, 'rb').read(1); print('mem READ')\n"
        "except OSError as e:\n"
        "    print('mem DENIED')\n"
        f"for p in ('/proc/{host_pid}/environ', '/proc/{host_pid}/cmdline'):\n"
        "    try:\n"
        "        print(p, 'READ', open(p, 'rb').read()[:50])\n"
        "    except OSError:\n"
        "        print(p, 'DENIED')\n"
        "try:\n"
        f"    os.kill({host_pid}, 0); print('kill REACHED')\n"
        "except OSError:\n"
        "    print('kill DENIED')\n"
    )
    r = isolated.run(code)
    assert r.ok, r
    assert "attach -1 1" in r.stdout  # EPERM: the worker is not dumpable
    assert "mem DENIED" in r.stdout
    if host_pid > 64:  # host pids are far beyond the box's own pid namespace
        assert "READ" not in r.stdout.replace("mem DENIED", ""), r.stdout
        assert "kill DENIED" in r.stdout
    _alive(isolated)


def test_symlink_and_hardlink_tricks_against_host_reads(isolated, planted_secret):
    code = (
        "import os\n"
        "os.symlink('/etc/shadow', 'shadow')\n"
        f"os.symlink({planted_secret!r}, 'planted')\n"
        "os.makedirs('d', exist_ok=True); os.symlink('/etc', 'd/etc')\n"
        "open('real.txt', 'w').write('mine')\n"
        "try:\n"
        "    os.link('real.txt', 'hard.txt'); print('HARDLINK made')\n"
        "except OSError as e:\n"
        "    print('HARDLINK denied')\n"
        "for src in ('/etc/passwd', '/usr/bin/python3'):\n"
        "    try:\n"
        "        os.link(src, 'hl'); print('HOSTLINK', src)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    r = isolated.run(code)
    assert r.ok, r
    assert "HOSTLINK" not in r.stdout  # cannot hard-link host files into the work dir
    for path in ("shadow", "planted", "d/etc/passwd", "d/etc"):
        with pytest.raises(SandboxError):
            isolated.get_file(path)
    if "HARDLINK made" in r.stdout:
        with pytest.raises(SandboxError, match="single-link"):
            isolated.get_file("hard.txt")
        isolated.run("import os; os.unlink('hard.txt')")
    assert isolated.get_file("real.txt") == b"mine"
    # put_file must not follow a planted symlink either
    with pytest.raises(SandboxError):
        isolated.put_file("shadow", b"overwrite")
    assert open(planted_secret).read() == "TOP-SECRET-PLANTED"


def test_kill_signals_cannot_reach_the_host(isolated):
    me = os.getpid()
    r = isolated.run("import os, signal\nos.kill(-1, signal.SIGKILL)", timeout=5)
    # kill(-1) reaches every process of the box except the fork-server (PID 1 of the box): the
    # code's own failure (ESRCH when it is alone), never an infra error (issue 10 part 5)
    assert r.error_kind in ("crashed", "exception") and not r.is_infra, r
    assert os.getpid() == me  # we are alive
    _alive(isolated)  # the same box goes on
    isolated.stop()
    isolated.start()
    _alive(isolated)


def test_sleeping_children_are_killed_after_timeout(isolated):
    marker = uuid.uuid4().hex[:12]
    code = (
        "import os, time\n"
        "for i in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        f"            import sys; sys.argv = ['{marker}']\n"
        "            time.sleep(600)\n"
        "        os._exit(0)\n"
        "time.sleep(600)\n"
    )
    r = isolated.run(code, timeout=1)
    assert r.error_kind == "timeout", r
    n = isolated.run("import os; len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert int(n.stdout) <= 4, n  # init, fork-server, session (+ the listing itself)
    # and daemons left behind by a run that *finished* are swept too
    r = isolated.run("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n'left one'")
    assert r.ok
    n = isolated.run("import os; len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert int(n.stdout) <= 4, n


def test_stop_leaves_no_process_behind():
    sb = build("local")
    with sb:
        sb.run("import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(600)")
        uid = sb.uid
        s2 = sb.session()
        s2.run("z = 1")
    if uid is None:
        pytest.skip("not root: the box runs under the caller's uid")
    deadline = time.monotonic() + 5
    while host_pids_of_uid(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_pids_of_uid(uid) == []


# ----------------------------------------------------------------------------- crash recovery
@pytest.mark.parametrize("backend_name", [p for p in BACKENDS])
def test_worker_killed_mid_run_is_infra_and_pool_replaces_it(backend_name):
    from conftest import SMALL, docker_env

    kw = dict(SMALL)
    if backend_name == "docker":
        kw["image"] = docker_env().get("RAO_SANDBOX_IMAGE", "localhost/rao-envs-sandbox:latest")
    if backend_name == "process":
        kw["warn"] = False
    build(backend_name)  # skip/fail early if the backend is unavailable
    with SandboxPool(backend_name, size=1, max_size=2, **kw) as pool:
        sb = pool.acquire()
        box_id = id(sb)
        results = []
        t = threading.Thread(target=lambda: results.append(sb.run("import time; time.sleep(30)", timeout=60)))
        t.start()
        time.sleep(0.5)
        sb.kill_worker()
        t.join(30)
        assert not t.is_alive(), "run() hung after the worker was killed"
        r = results[0]
        assert r.error_kind == "infra" and r.is_infra, r
        assert not sb.alive
        pool.release(sb)
        assert pool.stats["replaced"] == 1
        with pool.sandbox() as sb2:
            assert id(sb2) != box_id
            _alive(sb2)
        # a snippet cannot kill its own fork-server (PID 1 of the box, or refused by the
        # session's seccomp filter): its own failure at most, and the box goes on (issue 10)
        with pool.sandbox() as sb3:
            r = sb3.run(f"import os, signal; os.kill({sb3.worker_pid}, signal.SIGKILL); import time; time.sleep(5)",
                        timeout=10)
            assert not r.is_infra, r
            _alive(sb3)
        with pool.sandbox() as sb4:
            _alive(sb4)


@pytest.mark.slow
def test_docker_orphans_are_reaped_and_nothing_leaks():
    from conftest import docker_env
    from rao_envs.sandboxes.docker_backend import LABEL, OWNER_LABEL, connect, reap_orphans

    env = docker_env()
    client = connect()
    dead_pid = 4_000_000  # above pid_max: never a live process
    orphan = client.containers.create(env["RAO_SANDBOX_IMAGE"], ["/usr/bin/python3", "-c", "pass"],
                                      labels={LABEL: "1", OWNER_LABEL: f"{socket.gethostname()}:{dead_pid}"})
    assert reap_orphans(client) >= 1
    ids = [c.id for c in client.containers.list(all=True, filters={"label": LABEL})]
    assert orphan.id not in ids
    sb = build("docker")
    with sb:
        _alive(sb)
        cid = sb.container.id
    ids = [c.id for c in client.containers.list(all=True, filters={"label": LABEL})]
    assert cid not in ids  # removed on stop
    client.close()


# ============================================================================= issue 10: trust boundary
# Attack tests for the box's own trust boundary (the host channel, the fork-server, other
# episodes), not only the host's. Each was written against the tree before the fix and failed.

_PROBE = r'''
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
me = os.getpid()
mine = {me}
reached = []
for name in sorted(os.listdir('/proc')):
    if not name.isdigit() or int(name) in mine:
        continue
    pid = int(name)
    for n in range(8):
        for mode in (os.O_RDONLY, os.O_WRONLY):
            try:
                fd = os.open('/proc/%d/fd/%d' % (pid, n), mode | os.O_NONBLOCK)
            except OSError:
                continue
            reached.append('procfd %d/%d' % (pid, n)); os.close(fd)
    for what in ('mem', 'environ', 'root/.', 'cwd/.'):
        try:
            fd = os.open('/proc/%d/%s' % (pid, what), os.O_RDONLY)
        except OSError:
            continue
        reached.append('%s %d' % (what, pid)); os.close(fd)
    pfd = libc.syscall(434, pid, 0)                      # pidfd_open
    if pfd >= 0:
        reached.append('pidfd_open %d' % pid)
        for n in range(8):
            fd = libc.syscall(438, pfd, n, 0)            # pidfd_getfd
            if fd >= 0:
                reached.append('pidfd_getfd %d/%d' % (pid, n)); os.close(fd)
        os.close(pfd)
    if libc.ptrace(16, pid, 0, 0) == 0:                  # PTRACE_ATTACH
        reached.append('ptrace %d' % pid)
        libc.ptrace(17, pid, 0, 0)                       # PTRACE_DETACH
    buf = ctypes.create_string_buffer(8)
    class iovec(ctypes.Structure):
        _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
    local = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = iovec(0x400000, 8)
    if libc.syscall(310, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0 or \
            ctypes.get_errno() not in (errno.EPERM, errno.ESRCH, errno.ENOSYS):
        reached.append('process_vm_readv %d errno %d' % (pid, ctypes.get_errno()))
    if libc.syscall(312, me, pid, 0, 1, 1) >= 0:         # kcmp(KCMP_FILE)
        reached.append('kcmp %d' % pid)
print('REACHED', reached)
'''


def test_nothing_but_the_own_session_is_reachable(isolated):
    """PID 1 (bwrap's init / the container init) and the fork-server: no fd, memory, ptrace,
    pidfd or kcmp handle on them from user code."""
    r = isolated.run(_PROBE, timeout=20)
    assert r.ok, r
    assert r.stdout.strip() == "REACHED []", r.stdout
    _alive(isolated)


_FORGE = r'''
import ctypes, json, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack('>I', len(b)) + b
forged = frame({"stdout": "FORGED\n", "stderr": "", "exit": 0, "duration": 0.0})
bad = frame({"stdout": "FORGED-BAD\n", "exit": "not-a-number", "error_kind": 7})
hits = []
me = os.getpid()
for name in os.listdir('/proc'):
    if not name.isdigit() or int(name) == me:
        continue
    pid = int(name)
    pfd = libc.syscall(434, pid, 0)
    for n in range(8):
        fds = []
        if pfd >= 0:
            fd = libc.syscall(438, pfd, n, 0)
            if fd >= 0:
                fds.append(fd)
        try:
            fds.append(os.open('/proc/%d/fd/%d' % (pid, n), os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        for fd in fds:
            try:
                os.write(fd, forged + bad)
                hits.append('%d/%d' % (pid, n))
            except OSError:
                pass
            os.close(fd)
    if pfd >= 0:
        os.close(pfd)
print('HITS', len(hits))
'''


def test_forged_reply_frames_never_reach_the_host(isolated):
    """Writing reply frames (one valid, one malformed) into whatever host channel user code can
    get hold of: the host sees neither, run() never raises, replies stay in step."""
    r = isolated.run(_FORGE, timeout=20)
    assert "FORGED" not in r.stdout, r
    assert r.stdout.startswith("HITS 0"), r
    for i in range(3):  # no reply is off by one, and a malformed frame never raises
        r = isolated.run(f"{i} * 7")
        assert r.stdout == f"{i * 7}\n", r
    assert not r.is_infra


def test_no_host_file_behind_any_box_fd():
    """No process of the box (nor its launcher) holds a host file: bwrap's stderr is a pipe."""
    import stat

    sb = build("local")
    with sb:
        _alive(sb)
        if sb.uid is None:
            pytest.skip("not root: the box runs under the caller's uid, its processes cannot be told apart")
        host_devs = {os.stat(p).st_dev for p in ("/", "/tmp", "/var", str(REPO)) if os.path.exists(p)}
        held = []
        for pid in host_pids_of_uid(sb.uid):
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for n in names:
                try:
                    st = os.stat(f"/proc/{pid}/fd/{n}")
                    target = os.readlink(f"/proc/{pid}/fd/{n}")
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_dev in host_devs:
                    held.append((pid, n, target))
        assert held == [], held


def test_forged_done_frame_does_not_end_a_run_early(isolated):
    """The session's own channels accept no forged 'done': the run lasts until the code stops,
    and nothing of it executes after run() returns."""
    code = (
        "import json, os, stat, struct, time\n"
        "body = json.dumps({'exit': 0, 'kind': None, 'ok': True}).encode()\n"
        "frame = struct.pack('>I', len(body)) + body\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        mode = os.fstat(fd).st_mode\n"
        "    except OSError:\n"
        "        continue\n"
        "    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):\n"
        "        try:\n"
        "            os.write(fd, frame)\n"
        "        except OSError:\n"
        "            pass\n"
        "time.sleep(2)\n"
        "open('after', 'w').write('ran on')\n"
    )
    t0 = time.monotonic()
    r = isolated.run(code, timeout=1)
    assert r.error_kind == "timeout", r
    assert time.monotonic() - t0 >= 0.9
    time.sleep(2.5)
    assert isolated.run("import os; os.path.exists('after')").stdout == "False\n"
    _alive(isolated)


# ----------------------------------------------------------------------------- code outliving its run
def test_threads_do_not_outlive_their_run(any_sb):
    """A daemon thread started by one run neither runs between runs nor prints into the next."""
    r = any_sb.run(
        "import threading, time\n"
        "def tick():\n"
        "    while True:\n"
        "        print('TICK', flush=True)\n"
        "        with open('ticks', 'a') as f:\n"
        "            f.write('x')\n"
        "        time.sleep(0.01)\n"
        "threading.Thread(target=tick, daemon=True).start()\n"
        "time.sleep(0.05)\n"
    )
    assert not r.is_infra, r
    size = len(any_sb.get_file("ticks"))
    time.sleep(0.3)
    assert len(any_sb.get_file("ticks")) == size  # nothing ran between the runs
    r = any_sb.run("import time; time.sleep(0.3); print('second')")
    assert r.stdout == "second\n", r  # nothing of the first run printed into the second
    assert len(any_sb.get_file("ticks")) == size
    _alive(any_sb)


def test_cpu_limit_is_not_lifted_between_runs():
    """After a run the session still carries a finite CPU limit (it used to be lifted to
    unlimited until the next run)."""
    sb = build("local")
    with sb:
        assert sb.run("x = 1").ok
        if sb.uid is None:
            pytest.skip("not root: the box's processes cannot be told apart on the host")
        limits = []
        for pid in host_pids_of_uid(sb.uid):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                status = open(f"/proc/{pid}/status").read()
                text = open(f"/proc/{pid}/limits").read()
            except OSError:
                continue
            nspids = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[1:]
            in_box = len(nspids) > 1  # not the launcher, which lives in the host's namespace
            if in_box and b"python" in cmd and int(nspids[-1]) != sb.worker_pid:  # a session
                line = next(line for line in text.splitlines() if line.startswith("Max cpu time"))
                limits.append(line.split()[3])
        assert limits and "unlimited" not in limits, limits


# ----------------------------------------------------------------------------- reset
_FINGERPRINT = r'''
import ctypes, json, os, resource, stat
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def walk(root):
    items, stack = [], [root]
    while stack and len(items) < 2000:
        d = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            items.append([d, 'ERR', e.errno]); continue
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            items.append([p, stat.filemode(st.st_mode), st.st_size if not stat.S_ISDIR(st.st_mode) else 0])
            if stat.S_ISDIR(st.st_mode) and not (root == '/dev' and n in ('pts',)):
                stack.append(p)
    return items
for root in ('/work', '/tmp', '/dev/shm', '/dev'):
    st = os.lstat(root)
    sv = os.statvfs(root)
    entry = [stat.filemode(st.st_mode), sv.f_blocks - sv.f_bfree, sv.f_files - sv.f_ffree, walk(root)]
    try:
        entry.append(sorted(os.listxattr(root)))
    except OSError as e:
        entry.append(e.errno)
    out[root] = entry
out['sysvipc'] = {k: open('/proc/sysvipc/' + k).read() for k in ('shm', 'msg', 'sem')}
fd = libc.syscall(240, b'rao_fp', os.O_RDONLY, 0, None)             # mq_open
out['mqueue'] = 'exists' if fd >= 0 else ctypes.get_errno()
key = libc.syscall(250, 10, ctypes.c_long(-4), b'user', b'rao_fp', 0)  # KEYCTL_SEARCH @u
out['keyring'] = 'exists' if key >= 0 else ctypes.get_errno()
out['procs'] = len([p for p in os.listdir('/proc') if p.isdigit()])
out['cwd'] = os.getcwd()
out['limits'] = [resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC,
                 resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE)]
print(json.dumps(out, sort_keys=True))
'''

_POLLUTE = r'''
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for root in ('/work', '/tmp', '/dev/shm', '/dev'):
    try:
        open(os.path.join(root, 'left-behind'), 'w').write('secret of episode 1')
    except OSError:
        pass
for root in ('/work', '/tmp'):                   # 3,000 levels, deeper than PATH_MAX and recursion
    os.chdir(root)
    for _ in range(3000):
        os.mkdir('d')
        os.chdir('d')
    open('bottom', 'w').write('deep secret')
os.chdir('/work')
os.makedirs('locked/inner')
open('locked/inner/f', 'w').write('x')
os.chmod('locked', 0)
for root in ('/work', '/tmp'):
    try:
        os.setxattr(root, 'user.rao', b'episode 1')
    except OSError:
        pass
libc.syscall(29, 0, 1 << 20, 0o1600)                                  # SysV shmget(IPC_PRIVATE)
libc.syscall(240, b'rao_fp', os.O_CREAT | os.O_RDWR, 0o600, None)     # mq_open
libc.syscall(248, b'user', b'rao_fp', b'secret', 6, ctypes.c_long(-4))  # add_key to @u
if os.fork() == 0:
    os.setsid()
    import time; time.sleep(600)
'''


def test_reset_box_is_indistinguishable_from_a_fresh_one(isolated):
    """Files in /work, /tmp, /dev/shm (and /dev), a 3,000-deep tree, a locked dir, xattrs,
    SysV shm, a POSIX message queue, a keyring key and a daemon: none survives reset()."""
    fresh = isolated.run(_FINGERPRINT, timeout=20)
    assert fresh.ok, fresh
    r = isolated.run(_POLLUTE, timeout=30)
    assert not r.is_infra, r
    isolated.reset()
    again = isolated.run(_FINGERPRINT, timeout=20)
    assert again.ok, again
    assert again.stdout == fresh.stdout
    _alive(isolated)


# ----------------------------------------------------------------------------- limits without holes
@pytest.fixture(params=ISOLATED + [pytest.param("local-nocg", id="local-nocgroups")])
def limited(request):
    """An isolated box; ``local-nocgroups`` is the local box without cgroups (as non-root)."""
    name = request.param
    kw = dict(memory_mb=64, disk_mb=16, timeout=20)
    sb = build("local", cgroups=False, **kw) if name == "local-nocg" else build(name, **kw)
    with sb:
        yield sb


def test_dev_shm_and_dev_count_against_the_disk_limit(limited):
    code = (
        "import os\n"
        "def fill(path, cap=64):\n"
        "    n = 0\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            while n < cap:\n"
        "                f.write(b'x' * 1024**2); f.flush(); n += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        os.unlink(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "    return n\n"
        "print(fill('/dev/shm/fill'), fill('/dev/fill'), fill('/tmp/fill'))\n"
    )
    r = limited.run(code)
    assert not r.is_infra, r
    shm, dev, tmp = (int(x) for x in r.stdout.split())
    assert shm <= 16 and tmp <= 16, r.stdout  # disk_mb=16
    assert dev == 0, r.stdout  # /dev itself is read-only
    _alive(limited)


def test_memfd_and_sysv_memory_count_against_the_memory_limit(limited):
    code = (
        "import ctypes, os, mmap\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "held = 0\n"
        "try:\n"
        "    fd = os.memfd_create('hoard')\n"
        "    while held < 96:\n"
        "        os.write(fd, b'x' * 1024**2); held += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print('memfd', held)\n"
        "held = 0\n"
        "libc.shmat.restype = ctypes.c_void_p\n"
        "for i in range(6):\n"
        "    sid = libc.syscall(29, 0, 16 * 1024**2, 0o1600)\n"
        "    if sid < 0:\n"
        "        break\n"
        "    addr = libc.shmat(int(sid), None, 0)\n"
        "    if addr in (None, ctypes.c_void_p(-1).value):\n"
        "        break\n"
        "    ctypes.memset(addr, 1, 16 * 1024**2); held += 16\n"
        "    libc.shmdt(ctypes.c_void_p(addr))\n"
        "print('sysv', held)\n"
    )
    r = limited.run(code)
    assert not r.is_infra, r
    got = dict(line.split() for line in r.stdout.splitlines())
    assert int(got["memfd"]) <= 64 and int(got["sysv"]) <= 64, r.stdout  # memory_mb=64
    _alive(limited)


def test_file_count_is_bounded(limited):
    """Empty files and directories cost kernel memory but no tmpfs blocks: they are capped too."""
    code = (
        "import os\n"
        "n = 0\n"
        "os.mkdir('many')\n"
        "try:\n"
        "    while n < 300000:\n"
        "        os.close(os.open('many/%d' % n, os.O_CREAT | os.O_WRONLY)); n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n)\n"
    )
    r = limited.run(code, timeout=30)
    assert not r.is_infra, r
    count = limited.run("import os; len(os.listdir('many'))", timeout=30)
    assert int(count.stdout) <= 16 * 1024 + 20000, (r, count)  # disk_mb=16: 16k inodes + one poll of slack
    limited.reset()
    _alive(limited)


# ----------------------------------------------------------------------------- agent-caused failures
_WORKER_ATTACKS = {
    "kill-parent": "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
    "stop-parent": "import os, signal; os.kill(os.getppid(), signal.SIGSTOP)",
    "term-parent": "import os, signal; os.kill(os.getppid(), signal.SIGTERM)",
    "kill-worker-pid": "import os, signal; os.kill(WORKER, signal.SIGKILL)",
    "stop-worker-pid": "import os, signal; os.kill(WORKER, signal.SIGSTOP)",
    "kill-init": "import os, signal; os.kill(1, signal.SIGKILL)",
    "term-init": "import os, signal; os.kill(1, signal.SIGTERM)",
    "kill-all": "import os, signal; os.kill(-1, signal.SIGKILL)",
    "prlimit-nofile": "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))",
    "prlimit-nproc": "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_NPROC, (0, 0))",
    "prlimit-as": "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_AS, (1 << 20, 1 << 20))",
    "prlimit-cpu": "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_CPU, (0, 0))",
    "nice-parent": "import os; os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
    "idle-parent": "import os; os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))",
    "nice-user": "import os; os.setpriority(os.PRIO_USER, 0, 19)",
}


@pytest.mark.parametrize("attack", sorted(_WORKER_ATTACKS))
def test_signals_and_limits_on_the_fork_server_are_contained(isolated, attack):
    """The fork-server cannot be killed, stopped, limited or starved from user code; whatever
    happens comes back as the agent's own failure, and the same box keeps working."""
    transport = isolated._transport
    code = _WORKER_ATTACKS[attack].replace("WORKER", str(isolated.worker_pid))
    r = isolated.run(code + "\nimport time; time.sleep(0.2)", timeout=3)
    assert not r.is_infra, r
    for _ in range(2):
        _alive(isolated)
        s = isolated.session()  # the fork-server still forks sessions with working limits
        assert s.run("import os; os.getpid() > 1").stdout == "True\n"
        s.close()
    assert isolated._transport is transport  # the very same box: nothing was restarted


def test_timers_do_not_fire_into_the_next_run(any_sb):
    r = any_sb.run("import signal\nsignal.signal(signal.SIGALRM, lambda *a: print('ALARM', flush=True))\n"
                   "signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)\nstate = 1")
    assert r.ok, r
    time.sleep(0.2)
    r = any_sb.run("import time; time.sleep(0.2); print(state)")
    assert r.stdout == "1\n", r  # no ALARM, and the session's state is kept


def test_a_joined_thread_keeps_the_session(any_sb):
    r = any_sb.run("import threading\nt = threading.Thread(target=print, args=('in thread',))\n"
                   "t.start(); t.join()\nkept = 1")
    assert r.ok and r.stdout == "in thread\n" and not r.restarted, r
    assert any_sb.run("kept").stdout == "1\n"


def test_sibling_sessions_cannot_run_each_other_between_calls(isolated):
    """A session may kill or continue another one of the same box: the victim's next call
    still runs its code (in a fresh session if it was killed), and a continued session is
    stopped again before any other call."""
    other = isolated.session()
    assert other.run("v = 1\nimport os; os.getpid()").ok
    r = isolated.run("import os, signal\n"
                     "for p in os.listdir('/proc'):\n"
                     "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
                     "        os.kill(int(p), signal.SIGCONT)\n")
    assert r.ok, r
    states = isolated.run("import os\nsorted(open('/proc/%s/stat' % p).read().split()[2] for p in os.listdir('/proc')"
                          " if p.isdigit() and int(p) not in (1, os.getpid()))")
    assert states.stdout == "['T']\n", states  # the continued sibling was stopped again
    r = isolated.run("import os, signal\n"
                     "for p in os.listdir('/proc'):\n"
                     "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
                     "        os.kill(int(p), signal.SIGKILL)\n")
    assert not r.is_infra, r
    r = other.run("print('ran'); 'v' in globals()")
    assert r.stdout == "ran\nFalse\n" and r.restarted and not r.is_infra, r
    _alive(isolated)


def test_files_cannot_starve_the_fork_server():
    """tmpfs pages are charged to the box's memory cgroup (as root): a work dir filled to
    ``disk_mb`` must leave room for the interpreters, so new sessions still start."""
    sb = build("local", memory_mb=64, disk_mb=256, file_size_mb=300, timeout=30)
    with sb:
        r = sb.run("with open('big', 'wb') as f:\n    for _ in range(250):\n        f.write(b'x' * 1024**2)")
        assert r.ok, r
        for _ in range(3):
            s = sb.session()
            assert s.run("x = bytearray(20 * 1024**2); len(x)").stdout == str(20 * 1024**2) + "\n"
            s.close()
        assert not sb.run("print(1)").is_infra
        _alive(sb)


@pytest.mark.parametrize("backend_name", [p for p in BACKENDS])
def test_cpu_limit_holds_on_every_call(backend_name):
    """``cpu_seconds`` is set by the fork-server before each call (not by the session, not
    lifted after): a spin is stopped by it on the first call and on later ones, even after
    the code raised its own soft limit."""
    sb = build(backend_name, cpu_seconds=1, timeout=20)
    with sb:
        for code in ("while True: pass",
                     "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY,"
                     " resource.getrlimit(resource.RLIMIT_CPU)[1]))\nx = 1",
                     "while True: pass"):
            t0 = time.monotonic()
            r = sb.run(code)
            if code.startswith("while"):
                assert r.error_kind == "timeout" and time.monotonic() - t0 < 8, r
            else:
                assert r.ok, r
        _alive(sb)

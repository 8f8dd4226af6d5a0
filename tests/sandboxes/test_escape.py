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
    # kill(-1) takes down everything in the box, the fork-server included: an infra error
    assert r.error_kind in ("infra", "crashed"), r
    assert os.getpid() == me  # we are alive
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
        # a snippet that kills its own fork-server is an infra failure too
        with pool.sandbox() as sb3:
            r = sb3.run(f"import os, signal; os.kill({sb3.worker_pid}, signal.SIGKILL); import time; time.sleep(5)",
                        timeout=10)
            assert r.error_kind in ("infra", "crashed"), r
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

"""The Sandbox protocol on every backend: REPL sessions, fork, errors, files, bad input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import build
from rao_envs.sandboxes import (
    ExecResult,
    ResourceLimits,
    SandboxConfigError,
    SandboxError,
    SandboxInfraError,
    SandboxUnavailable,
    make_sandbox,
)
from rao_envs.sandboxes.base import worker_source


def test_repl_state_persists_and_last_expression_is_echoed(sandbox):
    assert sandbox.run("x = 20").ok
    r = sandbox.run("x += 1\nx * 2")
    assert r.ok and r.stdout == "42\n" and r.exit == 0 and r.error_kind is None
    assert sandbox.run("None").stdout == ""
    r = sandbox.run("def f(a):\n    return a + x\nprint(f(1), end='')")
    assert r.stdout == "22"


def test_stdout_and_stderr_are_separate(sandbox):
    r = sandbox.run("import sys, os\nprint('out')\nprint('err', file=sys.stderr)\nos.write(1, b'raw\\n')")
    assert r.ok
    assert "out" in r.stdout and "raw" in r.stdout and "err" not in r.stdout
    assert r.stderr == "err\n"


def test_exception_is_reported_and_session_survives(sandbox):
    sandbox.run("y = 5")
    r = sandbox.run("1/0")
    assert r.error_kind == "exception" and r.exit == 1
    assert "ZeroDivisionError" in r.stderr and "<sandbox>" in r.stderr
    assert "worker.py" not in r.stderr  # the traceback starts in the snippet
    assert sandbox.run("y").stdout == "5\n"


def test_syntax_error(sandbox):
    r = sandbox.run("def (")
    assert r.error_kind == "exception" and "SyntaxError" in r.stderr


def test_system_exit(sandbox):
    assert sandbox.run("raise SystemExit(0)").ok
    r = sandbox.run("import sys; sys.exit(3)")
    assert r.exit == 3 and r.error_kind == "exception"
    assert sandbox.run("1+1").stdout == "2\n"  # the session is still there


def test_timeout_interrupts_and_keeps_state(sandbox):
    sandbox.run("keep = 'yes'")
    r = sandbox.run("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
    assert r.error_kind == "timeout" and "timeout" in r.stderr
    assert sandbox.run("keep").stdout == "'yes'\n"


def test_timeout_kills_code_that_ignores_interrupts(sandbox):
    sandbox.run("keep = 1")
    r = sandbox.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", timeout=0.5)
    assert r.error_kind == "timeout" and r.restarted
    assert "fresh session" in r.stderr
    r = sandbox.run("'keep' in globals()")
    assert r.stdout == "False\n"  # restarted: state is gone, but the sandbox works


def test_sessions_are_independent_and_fork_copies_state(sandbox):
    sandbox.run("a = [1, 2]")
    other = sandbox.session()
    assert other.run("'a' in globals()").stdout == "False\n"
    child = sandbox.fork()
    assert child.run("a.append(3); a").stdout == "[1, 2, 3]\n"
    assert sandbox.run("a").stdout == "[1, 2]\n"
    grandchild = child.fork()
    assert grandchild.run("a").stdout == "[1, 2, 3]\n"
    grandchild.close()
    assert grandchild.run("a").error_kind == "exception"  # closed session: clear error
    assert child.run("len(a)").stdout == "3\n"
    other.close()


def test_a_fork_is_a_child_of_the_fork_server_with_its_own_random_seed(sandbox):
    sandbox.run("import os, random")
    a, b = sandbox.fork(), sandbox.fork()
    server = sandbox.run("os.getppid()").stdout
    draws = [s.run("print(os.getppid(), random.random())").stdout.split() for s in (a, b)]
    assert draws[0][0] == draws[1][0] == server.strip()  # one fork, straight under the fork-server
    assert draws[0][1] != draws[1][1]  # reseeded in each fork, as os.fork's hooks do
    assert a.run("os.getpid()").stdout != b.run("os.getpid()").stdout
    a.close()
    b.close()


def test_work_sent_ahead_is_done_in_order_and_its_failures_reach_the_first_run(sandbox):
    sandbox.run("a = [1]")
    # fork, warm up and close without waiting: the box does it while the host goes on
    ahead = sandbox.fork(wait=False)
    assert ahead.run("a.append(2); b = 7", wait=False) is None
    assert ahead.run("a, b").stdout == "([1, 2], 7)\n"  # the warm-up ran first, in the fork
    assert sandbox.run("a").stdout == "[1]\n"
    ahead.close(wait=False)
    assert ahead.run("a").error_kind == "exception"  # closed: a clear error
    warmed = sandbox.fork(wait=False, warm="w = len(a) + 4\nprint('nowhere')")
    assert warmed.run("w").stdout == "5\n"  # the warm-up ran in the fork before its first call
    broken = sandbox.fork(warm="raise ValueError('ignored')")
    assert broken.run("a").stdout == "[1]\n"  # a failing warm-up costs nothing but itself
    warmed.close(wait=False)
    broken.close(wait=False)
    before = sorted(sandbox._request({"op": "ping"}, 5.0)["sessions"])
    for _ in range(10):  # more than the requests allowed in flight: the oldest replies are read first
        sandbox.fork(wait=False).close(wait=False)
    assert sorted(sandbox._request({"op": "ping"}, 5.0)["sessions"]) == before
    # a fork whose source is gone: the fork's error is the first run's, and no session is left
    gone = sandbox.session()
    gone.close()
    orphan = gone.fork(wait=False)
    orphan.run("x = 1", wait=False)  # may open an empty session under the fork's id: closed again
    res = orphan.run("x")
    assert res.error_kind == "exception" and "fork failed" in res.stderr and orphan.closed
    assert sorted(sandbox._request({"op": "ping"}, 5.0)["sessions"]) == before
    # a box that dies with work in flight: the run that waits for it is an infrastructure error
    pending = sandbox.fork(wait=False)
    sandbox.kill_worker()
    assert pending.run("1").is_infra
    assert sandbox.run("1").is_infra  # a broken box stays broken until started again (the pool does that)
    sandbox.start()
    assert sandbox.run("1 + 1").stdout == "2\n"


def test_requests_sent_ahead_must_be_small(sandbox):
    s = sandbox.fork()
    assert s.run("x = 1", wait=False) is None
    assert s.run("x = '%s'" % ("y" * 20000), wait=False) is None  # over 16 KiB: not sent
    assert s.run("x").stdout == "1\n"
    s.close()


def test_a_host_call_pauses_the_run_and_the_answer_resumes_it(sandbox):
    r = sandbox.run("import _rao_host\nprint('before')\nv = _rao_host.call({'ask': 1})\nprint('after', v)")
    assert r.ok and r.hostcall == '{"ask": 1}' and r.stdout == "before\n" and not r.restarted, r
    r = sandbox.run('{"got": 2}')  # the next run of a paused session is the answer (JSON)
    assert r.ok and r.hostcall is None and r.stdout == "after {'got': 2}\n", r
    assert sandbox.run("v").stdout == "{'got': 2}\n"
    r = sandbox.run("t = 0\nfor i in range(40):\n    t += _rao_host.call(i)\nprint(t)")
    for i in range(40):
        assert r.hostcall == str(i) and r.stdout == "", r
        r = sandbox.run(str(2 * i))
    assert r.ok and r.stdout == f"{sum(2 * i for i in range(40))}\n", r
    assert sandbox.run("_rao_host.call('x')").hostcall == '"x"'
    r = sandbox.run("not json")  # a bad answer is the cell's error, the session lives on
    assert r.error_kind == "exception" and "JSONDecodeError" in r.stderr and not r.restarted, r
    r = sandbox.run("print(_rao_host.call.__doc__ is not None, t)")
    assert r.ok and r.stdout == "True 1560\n", r


def test_a_paused_session_that_dies_or_is_closed_leaves_nothing_behind(sandbox):
    victim = sandbox.fork()
    r = victim.run("import _rao_host, os\nprint(os.getpid(), flush=True)\n_rao_host.call(1)")
    assert r.hostcall == "1", r
    sandbox.run(f"import os, signal\nos.kill({int(r.stdout)}, signal.SIGKILL)")  # a sibling kills it while paused
    r = victim.run("5")
    assert r.restarted and r.hostcall is None and "had died" in r.stderr, r
    for _ in range(30):  # paused and closed: the fork-server drops the run's pipes with it
        s = sandbox.fork()
        assert s.run("import _rao_host\n_rao_host.call(2)").hostcall == "2"
        s.close()
    s = sandbox.fork()
    assert s.run("print('still', 1 + 1)").stdout == "still 2\n"
    s.close()


def test_paused_runs_keep_no_file_descriptors_of_the_fork_server():
    box = make_sandbox("process")
    with box:
        fds = lambda: len(os.listdir(f"/proc/{box.worker_pid}/fd"))  # noqa: E731
        s = box.fork()
        s.run("import _rao_host")
        s.close()
        before = fds()
        for _ in range(20):
            s = box.fork()
            assert s.run("import _rao_host\n_rao_host.call(2)").hostcall == "2"
            s.close()
            s = box.fork()
            assert s.run("import _rao_host\n_rao_host.call(3)").hostcall == "3"
            assert s.run("4").ok
            s.close()
        assert fds() == before


def test_is_dying_reads_the_kernels_view():
    import signal
    import subprocess

    ns: dict = {"__name__": "rao_sandbox_worker_under_test"}
    exec(compile(worker_source(), "worker.py", "exec"), ns)
    is_dying = ns["_is_dying"]
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not is_dying(proc.pid)
        proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not is_dying(proc.pid):  # exiting or a zombie within moments of the kill
            assert time.monotonic() < deadline
        proc.wait()
        assert is_dying(proc.pid)  # gone
    finally:
        proc.kill()
        proc.wait()


def test_files_round_trip_and_reset(sandbox):
    sandbox.put_file("data/in.txt", b"hello")
    r = sandbox.run("open('data/in.txt').read().upper()")
    assert r.stdout == "'HELLO'\n"
    sandbox.run("open('out.bin', 'wb').write(bytes(range(256)))")
    assert sandbox.get_file("out.bin") == bytes(range(256))
    sandbox.run("z = 1")
    sandbox.reset()
    assert sandbox.run("'z' in globals()").stdout == "False\n"
    with pytest.raises(SandboxError):
        sandbox.get_file("out.bin")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../x", "", "."])
def test_get_file_rejects_paths_outside_workdir(sandbox, path):
    with pytest.raises(SandboxError):
        sandbox.get_file(path)


def test_bad_input_never_crashes_the_host(sandbox):
    assert sandbox.run(123).error_kind == "exception"  # type: ignore[arg-type]
    assert sandbox.run("x = 1", timeout="soon").error_kind == "exception"  # type: ignore[arg-type]
    r = sandbox.run("print('\\udcff \\x00 \\u2603')")  # lone surrogate, NUL, non-ASCII
    assert r.ok and "\u2603" in r.stdout
    r = sandbox.run("import os; os.write(1, b'\\xff\\xfe bad utf8')")
    assert r.ok and "bad utf8" in r.stdout
    r = sandbox.run("s = '" + "a" * 2_000_000 + "'; len(s)")  # a 2 MB program
    assert r.stdout == "2000000\n"
    r = sandbox.run("\x00")
    assert r.error_kind == "exception"
    assert sandbox.run("1").stdout == "1\n"


def test_output_is_capped(sandbox):
    r = sandbox.run("print('x' * 100_000)")
    assert r.truncated and len(r.stdout) <= 8192
    assert sandbox.run("print('ok')").stdout == "ok\n"  # next run's output is clean


def test_concurrent_callers_are_serialised(sandbox):
    sandbox.run("n = 0")
    errors = []

    def worker():
        for _ in range(20):
            r = sandbox.run("n += 1")
            if not r.ok:
                errors.append(r)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sandbox.run("n").stdout == "80\n"


def test_arun(sandbox):
    async def go():
        return await asyncio.gather(sandbox.arun("1+1"), sandbox.default.arun("2+2"))

    a, b = asyncio.run(go())
    assert a.stdout == "2\n" and b.stdout == "4\n"


def test_stop_is_idempotent_and_run_restarts(backend):
    sb = build(backend)
    sb.stop()  # never started
    assert sb.run("1").stdout == "1\n"  # lazy start
    sb.stop()
    sb.stop()
    assert not sb.alive


def test_exec_result_helpers():
    r = ExecResult.infra("boom")
    assert r.is_infra and not r.ok and "boom" in r.stderr
    with pytest.raises(SandboxInfraError) as e:
        r.raise_for_infra()
    from rao_envs.errors import InfraError

    assert isinstance(e.value, InfraError)
    ok = ExecResult(stdout="1\n")
    assert ok.raise_for_infra() is ok and ok.observation() == "1"
    assert "[output truncated]" in ExecResult(stdout="a", truncated=True).observation()


def test_make_sandbox_rejects_bad_arguments():
    with pytest.raises(SandboxConfigError, match="unknown sandbox backend"):
        make_sandbox("vm")
    with pytest.raises(SandboxConfigError, match="memory_mb"):
        make_sandbox("process", memory_mb=-1, warn=False)
    with pytest.raises(SandboxConfigError, match="unknown option"):
        make_sandbox("process", colour="blue", warn=False)
    with pytest.raises(SandboxConfigError):
        ResourceLimits.from_kwargs({"timeout": 0})


def test_missing_bwrap_names_the_package_and_the_fallback(monkeypatch):
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real(name, *a, **k))
    with pytest.raises(SandboxUnavailable) as e:
        make_sandbox("local")
    msg = str(e.value)
    assert "apt-get install bubblewrap" in msg and "'process'" in msg
    from rao_envs.sandboxes import available_backends

    assert "bubblewrap" in available_backends()["local"]


def test_process_backend_warns_loudly_once(capfd):
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from rao_envs.sandboxes import make_sandbox\n"
        "for _ in range(3):\n"
        "    sb = make_sandbox('process')\n"
        "    with sb: assert sb.run('1').ok\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("*** WARNING") == 1 and "NOT ISOLATED" in out.stderr


def test_import_is_cheap_and_does_not_need_docker():
    code = "import sys; import rao_envs.sandboxes as s; print('docker' in sys.modules, 'asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "False"


def test_worker_ships_in_the_package():
    from rao_envs.sandboxes.base import worker_source

    src = worker_source()
    assert "def main()" in src
    compile(src, "worker.py", "exec")
    assert os.path.exists(os.path.join(os.path.dirname(__import__("rao_envs.sandboxes").sandboxes.__file__), "worker.py"))


def test_image_rootfs_is_offline_and_work_dir_belongs_to_the_sandbox_user():
    import io
    import tarfile

    from rao_envs.sandboxes.image import SANDBOX_UID, rootfs_tar
    from rao_envs.sandboxes.local import default_python

    data = rootfs_tar(default_python())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
        work = tar.getmember("work")
        assert work.isdir() and work.uid == SANDBOX_UID
        assert "usr/bin/python3" in names and "etc/passwd" in names
        assert any(n.endswith("/json/__init__.py") for n in names)
        assert not any("site-packages/" in n or "dist-packages/" in n for n in names)


def test_cli_has_the_build_image_command():
    from rao_envs.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sandbox-build-image", "--help"])
    assert e.value.code == 0


# ----------------------------------------------------------------------------- issue 10: agent-caused failures
def test_lone_surrogate_in_the_code_is_the_codes_error(sandbox):
    transport = sandbox._transport
    r = sandbox.run("x = '\ud800'")
    assert r.error_kind == "exception" and not r.is_infra, r
    assert "surrogate" in r.stderr, r.stderr
    r = sandbox.run("print('\ud800', end='')")  # printing one is fine (escaped), as before
    assert not r.is_infra and sandbox.run("1").stdout == "1\n"
    assert sandbox._transport is transport  # the worker survived


def test_fifo_in_the_work_dir_does_not_hang_file_io(sandbox):
    import time

    transport = sandbox._transport
    assert sandbox.run("import os; os.mkfifo('out.txt'); os.mkdir('d'); os.mkfifo('d/in.txt')").ok
    for call in (lambda: sandbox.get_file("out.txt"), lambda: sandbox.put_file("out.txt", b"x"),
                 lambda: sandbox.get_file("d/in.txt"), lambda: sandbox.put_file("d/in.txt", b"x")):
        t0 = time.monotonic()
        with pytest.raises(SandboxError) as e:
            call()
        assert not isinstance(e.value, SandboxInfraError), e.value
        assert time.monotonic() - t0 < 3
    assert sandbox.run("import os, stat; stat.S_ISFIFO(os.lstat('out.txt').st_mode)").stdout == "True\n"
    assert sandbox._transport is transport


@pytest.mark.parametrize("attack", [
    "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal; os.kill(os.getppid(), signal.SIGSTOP)",
    "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))",
    "import os, resource; resource.prlimit(os.getppid(), resource.RLIMIT_NPROC, (0, 0))",
])
def test_the_fork_server_survives_its_sessions(backend, attack):
    """On every backend (the unisolated one too): a session cannot kill, stop or limit the
    fork-server that forked it (the isolated backends get the full list in test_escape)."""
    sb = build(backend)
    with sb:
        sb.start()
        transport = sb._transport
        r = sb.run(attack + "\nimport time; time.sleep(0.2)", timeout=3)
        assert not r.is_infra, r
        assert sb.run("6 * 7").stdout == "42\n"
        s = sb.session()
        assert s.run("1 + 1").stdout == "2\n"
        assert sb._transport is transport


def test_a_reset_that_cannot_clean_replaces_the_box(backend, monkeypatch):
    sb = build(backend)
    with sb:
        sb.run("x = 1")
        old = sb._transport
        real = sb._request

        def unclean(req, timeout):
            reply = real(req, timeout)
            if req.get("op") == "reset":
                reply["clean"] = False
            return reply

        monkeypatch.setattr(sb, "_request", unclean)
        sb.reset()
        monkeypatch.undo()
        assert sb._transport is not old and sb.alive  # a brand-new box
        assert sb.run("'x' in globals()").stdout == "False\n"


def test_an_agent_caused_box_death_is_typed_and_the_box_replaced(backend, monkeypatch):
    """If user code still takes the whole box down (e.g. the kernel's OOM killer picked the
    fork-server), the run is the agent's failure, and the next call gets a fresh box."""
    import threading

    sb = build(backend)
    with sb:
        sb.start()
        old = sb._transport
        monkeypatch.setattr(type(sb), "_agent_cause", lambda self: "memory")
        killer = threading.Timer(0.5, sb.kill_worker)
        killer.start()
        r = sb.run("import time; time.sleep(10)", timeout=15)
        killer.join()
        assert r.error_kind == "memory" and not r.is_infra and r.restarted, r
        monkeypatch.undo()
        assert sb.run("6 * 7").stdout == "42\n"  # transparently replaced
        assert sb._transport is not old

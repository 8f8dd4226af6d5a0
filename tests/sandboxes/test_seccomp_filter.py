"""The session seccomp filter (issue 10) is classic BPF built by hand in the worker: check it
by running it through a small BPF interpreter for every syscall number and the argument rules,
on both architectures it knows, and check that live sessions really run under it."""

from __future__ import annotations

import struct

import pytest

from conftest import BACKENDS, build
from rao_envs.sandboxes.base import worker_source

ALLOW = 0x7FFF0000
EPERM, ENOSYS, ENOTSUP = (0x50000 | e for e in (1, 38, 95))
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


@pytest.fixture(scope="module")
def worker():
    ns: dict = {"__name__": "rao_sandbox_worker_under_test"}
    exec(compile(worker_source(), "worker.py", "exec"), ns)
    return ns


def interpreter(prog: bytes):
    ins = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]

    def run(nr, *args, arch):
        args = tuple(args) + (0,) * (6 - len(args))
        data = struct.pack("=iIQ6Q", nr, arch, 0, *[a & (2**64 - 1) for a in args])
        acc, pc = 0, 0
        for _ in range(len(ins) + 1):  # no loops in classic BPF: a program ends in len(ins) steps
            code, jt, jf, k = ins[pc]
            pc += 1
            if code == 0x20:  # LD W ABS
                acc = struct.unpack_from("=I", data, k)[0]
            elif code == 0x05:  # JA
                pc += k
            elif code == 0x15:  # JEQ K
                pc += jt if acc == k else jf
            elif code == 0x35:  # JGE K
                pc += jt if acc >= k else jf
            elif code == 0x06:  # RET K
                return k
            else:
                raise AssertionError(f"unexpected BPF opcode {code:#x}")
        raise AssertionError("ran off the end of the program")

    return run


@pytest.mark.parametrize("machine", sorted(ARCH))
def test_filter_implements_the_policy(worker, machine):
    prog, why = worker["_seccomp_program"](1, 1, True, machine)
    assert why is None and len(prog) % 8 == 0 and len(prog) // 8 < 4096  # the kernel's BPF_MAXINSNS
    run = interpreter(prog)
    arch = ARCH[machine]
    nr = worker["_NR"][machine]
    plain = {nr[n]: EPERM for n in worker["_DENY_EPERM"]}
    plain.update({nr[n]: ENOSYS for n in worker["_DENY_ENOSYS"]})
    plain.update({nr[n]: ENOTSUP for n in worker["_DENY_ENOTSUP"]})
    self_only = {nr[n] for n in ("prlimit64", "sched_setscheduler", "sched_setparam", "sched_setattr",
                                 "migrate_pages", "move_pages", "setpriority", "ioprio_set")}
    signals = {nr[n] for n in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")}
    for number in range(0, 1024):
        got = run(number, 4242, 0, 0, arch=arch)  # arguments aimed at some other process
        if number in plain:
            assert got == plain[number], number
        elif number in self_only:
            assert got == EPERM, number
        else:
            assert got == ALLOW, number
    for number in signals:  # only the fork-server (pid 1 here) is out of reach
        assert run(number, 1, 9, arch=arch) == EPERM
        assert run(number, 1 + (7 << 32), 9, arch=arch) == EPERM  # the kernel reads the low 32 bits
        assert run(number, 7, 9, arch=arch) == ALLOW
        assert run(number, -1, 9, arch=arch) == ALLOW  # kill(-1) in a pid namespace spares its init
    for number in self_only - {nr["setpriority"], nr["ioprio_set"]}:
        assert run(number, 0, 5, arch=arch) == ALLOW
    assert run(nr["setpriority"], 0, 0, 5, arch=arch) == ALLOW  # PRIO_PROCESS, itself
    assert run(nr["setpriority"], 0, 1, 5, arch=arch) == EPERM
    assert run(nr["setpriority"], 2, 0, 5, arch=arch) == EPERM  # PRIO_USER: every process of the uid
    assert run(nr["ioprio_set"], 1, 0, 5, arch=arch) == ALLOW
    assert run(nr["ioprio_set"], 1, 3, 5, arch=arch) == EPERM
    assert run(nr["ioprio_set"], 3, 0, 5, arch=arch) == EPERM
    assert run(0, arch=0x40000003) == ENOSYS  # another ABI (i386 through int 0x80): refused
    if machine == "x86_64":
        assert run(0x40000000 | 1, arch=arch) == ENOSYS  # x32


def test_unisolated_filter_also_spares_the_process_group_and_everyone(worker):
    prog, _ = worker["_seccomp_program"](4242, 4242, False, "x86_64")
    run = interpreter(prog)
    kill = worker["_NR"]["x86_64"]["kill"]
    for pid in (4242, -4242, -1):
        assert run(kill, pid, 9, arch=ARCH["x86_64"]) == EPERM, pid
    assert run(kill, 0, 9, arch=ARCH["x86_64"]) == ALLOW  # its own group
    assert run(kill, 5000, 9, arch=ARCH["x86_64"]) == ALLOW


@pytest.mark.parametrize("backend_name", [p for p in BACKENDS])
def test_sessions_run_under_the_filter(backend_name):
    sb = build(backend_name)
    with sb:
        r = sb.run("print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('Seccomp:', 'NoNewPrivs:'))])")
        assert r.stdout == "['1', '2']\n", r  # no new privileges; seccomp mode 2 (filter)
        assert sb.seccomp is True
        r = sb.run("import os\ntry:\n    os.memfd_create('x')\nexcept OSError as e:\n    print(e.errno)")
        assert r.stdout == "38\n", r  # ENOSYS

"""The test harness that runs *inside* the sandbox (standard library only, Python 3.8+).

The host never imports this module for running: :mod:`rao_envs.envs.code_synth.runner`
sends its source text into the box once, into the box's clean default session, where model
code never runs. A batch of test calls runs one of two ways, both in a process made for that
batch alone, so nothing of one batch's model code reaches the next:

* :func:`_cs_fast`, the usual way: in a session forked from the clean one ahead of time (while
  the host was busy elsewhere) and closed after the batch. The module and the calls run in the
  session itself, with stdout and stderr sent to ``/dev/null`` and a timer per call. When a
  call overruns its time, or the session does not end the batch normally (it crashed, was
  killed, left threads, printed no report or more than one), the host runs the whole batch
  again with :func:`_cs_main`; so the results of a batch are always what the robust way gives.
* :func:`_cs_main`, the robust way: the harness (the *parent*, in the clean session) forks a
  *child* per batch; only the child executes model-written code (the parent only compiles it,
  once per source). The child writes one JSON line per call to a pipe: the call's output in a
  canonical encoding (:func:`_cs_enc`) or its error. The parent enforces a per-call deadline (a
  call that hangs, crashes or exhausts memory fails alone; the parent forks a new child for the
  calls after it) and prints one line, ``nonce + JSON``, for the host.

The harness never deletes anything: files model code leaves in the box are wiped by the
sandbox's own ``reset`` (the runner resets its box when a new episode starts). The expected
outputs never enter the box: the host compares the reported outputs with them, so model code
that tampers with the harness, the pipe or the printed line can at most report outputs of its
own choosing, which score only if they are the right ones, i.e. only by really passing the
tests. (In the fast way model code shares the reporting process, so the host reads nothing
but the outputs from that report: an ``infra`` claim there is ignored.)
"""

import json
import os
import select
import time

_CS_LINE_LIMIT = 2048
_CS_CODE = {}  # (name, source) -> code object or compile error, for this session
_CS_CODE_LIMIT = 512


def _cs_enc(v, depth=0):
    """Canonical JSON-able form of a value: ints, strs and lists of them; anything else is tagged."""
    t = type(v)
    if t is int or t is str:
        return v
    if t is list and depth < 8:
        return [_cs_enc(x, depth + 1) for x in v[:512]] + ([{"more": len(v) - 512}] if len(v) > 512 else [])
    return {"type": t.__name__ if isinstance(getattr(t, "__name__", None), str) else "?"}


def _cs_copy(v):
    """A fresh copy of a JSON value (a call's arguments), so no call sees what another changed."""
    t = type(v)
    if t is list:
        return [_cs_copy(x) for x in v]
    if t is dict:
        return {k: _cs_copy(x) for k, x in v.items()}
    return v  # int, str, float, bool, None: immutable


def _cs_compiled(module):
    """``[(name, code object or compile error text)]``: each source compiled once per session.

    Compiling runs none of the source (the host has parsed it already, on writing it), so it
    happens here, in the parent, and the code objects reach each forked child for free; the
    module mostly stays the same from one batch to the next."""
    out = []
    for name, source in module:
        key = (name, source)
        code = _CS_CODE.get(key)
        if code is None:
            try:
                code = compile(source, "<" + name + ">", "exec", dont_inherit=True)
            except Exception as e:  # noqa: BLE001 - a syntax error (or a source too deep to compile)
                code = type(e).__name__ + ": " + str(e)[:200]
            if len(_CS_CODE) >= _CS_CODE_LIMIT:
                _CS_CODE.clear()
            _CS_CODE[key] = code
        out.append((name, code))
    return out


class _CsTimeout(BaseException):
    """Raised in a call that overran its time (a BaseException, so a bare ``except Exception`` lets it through)."""


_CS_ALARMS = []


def _cs_alarm(signum, frame):
    """SIGALRM handler of :func:`_cs_fast`: the running call is out of time. If the call swallows
    that and is still running 50 ms later, the session ends itself (the host then runs the
    batch the robust way, at once, instead of after the session's wall clock)."""
    import signal

    if _CS_ALARMS:
        os._exit(3)
    _CS_ALARMS.append(1)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    raise _CsTimeout()


def _cs_text(e, limit):
    """``Type: message`` of an exception (the message cut at ``limit``; a hostile ``__str__`` gives "exception")."""
    try:
        return type(e).__name__ + ": " + str(e)[:limit]
    except BaseException:  # noqa: BLE001
        return "exception"


def _cs_define(module):
    """A fresh namespace with the module's functions defined (``_cs_compiled``'s list), and the
    error of each one that did not compile or whose definition raised, by name. A
    :class:`_CsTimeout` goes through."""
    ns = {"__name__": "solution", "__builtins__": __builtins__}
    errors = {}
    for name, code in module:
        if isinstance(code, str):  # it did not compile
            errors[name] = code
            continue
        try:
            exec(code, ns)
        except _CsTimeout:
            raise
        except BaseException as e:  # noqa: BLE001 - the model's code: report, go on
            errors[name] = _cs_text(e, 200)
    return ns, errors


def _cs_call(ns, errors, name, args):
    """One test call on a fresh copy of its arguments: ``{"out": encoded output}`` or ``{"err":
    text}``. A :class:`_CsTimeout` goes through."""
    try:
        fn = ns.get(name)
        if not callable(fn):
            why = errors.get(name)
            raise NameError("function %s is not defined%s" % (name, " (%s)" % why if why else ""))
        out = _cs_enc(fn(*_cs_copy(args)))
    except _CsTimeout:
        raise
    except BaseException as e:  # noqa: BLE001 - the model's code
        return {"err": _cs_text(e, 300)}
    if len(json.dumps(out)) > _CS_LINE_LIMIT:
        return {"err": "output too large"}
    return {"out": out}


def _cs_child(module, calls, start, wfd):
    """Child process: define the module (``_cs_compiled``'s list), run ``calls[start:]``, one JSON
    line each to ``wfd``; never returns."""
    try:
        import sys

        try:
            os.setpgid(0, 0)  # its own process group: the parent kills everything it starts
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        sys.setrecursionlimit(2000)
        ns, errors = _cs_define(module)
        for i in range(start, len(calls)):
            rec = _cs_call(ns, errors, *calls[i])
            rec["i"] = i
            os.write(wfd, (json.dumps(rec) + "\n").encode("utf-8", "backslashreplace"))
    except BaseException:  # noqa: BLE001
        pass
    os._exit(0)


def _cs_fork():
    """``os.fork()``, tried again for a moment while the box is at its process limit (processes
    a test killed may still be on their way out)."""
    for attempt in range(40):
        try:
            return os.fork()
        except BlockingIOError:  # EAGAIN
            if attempt == 39:
                raise
            time.sleep(0.005)


def _cs_main(payload):
    """Run one batch (``payload`` is JSON: module, calls, per-call and total timeouts, nonce) and print the report."""
    job = json.loads(payload)
    module, calls = _cs_compiled(job["module"]), job["calls"]
    per_call, deadline = float(job["per_call"]), time.monotonic() + float(job["total"])
    results = [None] * len(calls)
    i, forks, infra = 0, 0, None
    while i < len(calls):
        if time.monotonic() >= deadline:
            for k in range(i, len(calls)):
                results[k] = {"err": "not run: the time for all tests was used up"}
            break
        r, w = os.pipe()
        try:
            pid = _cs_fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            if forks == 0:
                infra = "fork failed: %s" % e
            for k in range(i, len(calls)):
                results[k] = {"err": "not run: could not start the test process (%s)" % e}
            break
        forks += 1
        if pid == 0:
            os.close(r)
            _cs_child(module, calls, i, w)
        os.close(w)
        buf, t_call = b"", time.monotonic()
        while i < len(calls):
            left = min(t_call + per_call, deadline) - time.monotonic()
            ready = select.select([r], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                results[i] = {"err": "timeout: the call took longer than %gs" % per_call}
                i += 1
                break
            chunk = os.read(r, 65536)
            if not chunk:
                results[i] = {"err": "crashed: the test process died (memory, recursion or exit)"}
                i += 1
                break
            buf += chunk
            while b"\n" in buf and i < len(calls):
                line, buf = buf.split(b"\n", 1)
                try:
                    rec = json.loads(line.decode("utf-8", "replace"))
                except ValueError:
                    rec = None
                if not isinstance(rec, dict) or rec.get("i") != i:
                    rec = {"err": "garbled test report"}
                rec.pop("i", None)
                results[i] = rec
                i += 1
                t_call = time.monotonic()
            if len(buf) > 4 * _CS_LINE_LIMIT:
                results[i] = {"err": "garbled test report"}
                i += 1
                break
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, 9)
            except OSError:
                pass
        try:  # not waiting for its exit: a SIGKILLed process runs nothing more, the sandbox reaps it
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass
        os.close(r)
    print(job["nonce"] + json.dumps({"results": results, "infra": infra}))


def _cs_fast(payload):
    """Run one batch *in this process* (a session forked for this batch alone, killed after it) and
    print the report; ``incomplete`` in it when a call overran its time (then the host runs the
    batch again the robust way, with :func:`_cs_main`)."""
    import signal
    import sys

    job = json.loads(payload)
    module, calls = _cs_compiled(job["module"]), job["calls"]
    per_call, deadline = float(job["per_call"]), time.monotonic() + float(job["total"])
    keep = (os.dup(1), os.dup(2))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    results, incomplete = [], False
    write, setitimer, real = os.write, signal.setitimer, signal.ITIMER_REAL
    signal.signal(signal.SIGALRM, _cs_alarm)
    try:
        sys.setrecursionlimit(2000)
        setitimer(real, per_call)  # the module's top level gets one call's time
        ns, errors = _cs_define(module)
        setitimer(real, 0)
        for name, args in calls:
            if time.monotonic() >= deadline:
                incomplete = True
                break
            setitimer(real, per_call)
            rec = _cs_call(ns, errors, name, args)
            setitimer(real, 0)
            results.append(rec)
    except _CsTimeout:
        incomplete = True
    setitimer(real, 0)
    for fd, saved in zip((1, 2), keep):
        os.dup2(saved, fd)
        os.close(saved)
    write(1, (job["nonce"] + json.dumps({"results": results, "infra": None, "incomplete": incomplete}) + "\n").encode())

"""Running model-written modules against tests in the sandbox (host side).

:class:`CodeRunner` holds one warm box taken from a :class:`~rao_envs.sandboxes.SandboxPool`
(``local`` by default) and runs a batch of calls with the in-box harness
(:mod:`~rao_envs.envs.code_synth.harness`): each batch in a freshly forked process, a deadline
per call and for the batch. When a new episode starts (:meth:`CodeRunner.new_episode`) a box
that ran model code is reset by the sandbox (sessions killed, work dir, ``/tmp`` and
``/dev/shm`` wiped inside the box), so files one episode's code left cannot reach the next
(episodes running at the same time share the box). Only the *outputs* come back; the
comparison with the expected outputs happens here (:func:`compare`), so no code in the box
can change a verdict except by returning the right values.

Speed: a batch normally runs in a session the box forked from its clean one *ahead of time*
and warmed up (:func:`~rao_envs.envs.code_synth.harness._cs_fast`): after each batch the
runner sends, without waiting, "close that session, fork the next one, warm it up", so the
box does that work while the host goes on, and the next batch costs one round trip. Any batch
that does not end cleanly there (a call over its time, a crash, a tampered report) runs again
the robust way, in the clean session with a forked child per batch and a deadline per call,
and its results are the robust way's.

Failures: a call that raises, hangs, crashes its process or runs out of memory is a failed
test (the agent's doing); when the harness's own session dies because of model code (killed,
out of memory) every call of the batch fails. Only a failure of the sandbox itself (no reply,
the box cannot start or fork) raises :class:`~rao_envs.errors.InfraError` (the node becomes
``infra_error``); the next call gets a fresh box.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from rao_envs.errors import InfraError

HARNESS = (Path(__file__).with_name("harness.py")).read_text()
_REPORT_LIMIT = 1 << 20
_NO_HARNESS = "@@cs-no-harness@@"
# a batch the spare session runs while it waits, so that the pages a batch touches are its own
# before the real one comes (a fresh fork copies each page on first write: ~1 ms of faults)
_WARM = "_cs_fast(%r)" % json.dumps({
    "module": [["f_warm", "def f_warm(a, b):\n    return [len(b), a, sorted(str(a) + b)]\n"]],
    "calls": [["f_warm", [1, "ab"]], ["f_warm", [-20, ""]]], "per_call": 1.0, "total": 2.0, "nonce": "@@cs-warm@@",
})


def enc(value: Any) -> Any:
    """The harness's canonical encoding of an expected value (ints, strs, lists)."""
    if type(value) in (int, str):
        return value
    if type(value) is list:
        return [enc(v) for v in value]
    return {"type": type(value).__name__}


def compare(result: dict[str, Any], expected: Any) -> bool:
    """True when one harness result is a successful call whose output equals ``expected`` exactly (types too)."""
    if not isinstance(result, dict) or "out" not in result or "err" in result:
        return False
    try:  # canonical JSON: 1.0 or true is not 1
        return json.dumps(result["out"], sort_keys=True) == json.dumps(enc(expected), sort_keys=True)
    except (TypeError, ValueError):
        return False


def decode(out: Any) -> str:
    """A short Python-like rendering of a reported output (for feedback)."""
    if isinstance(out, dict):
        return f"<a {str(out.get('type', 'value'))[:40]}, not an int, str or list of ints>"
    text = repr(out)
    return text if len(text) <= 200 else text[:200] + "…"


class CodeRunner:
    """Runs batches of test calls against a module (``[(name, source), ...]``) in one pooled sandbox box.

    ``per_call`` and ``total`` are the deadlines (seconds) of one call and of one batch;
    ``memory_mb`` caps each process in the box; ``ahead``: fork and warm up the next batch's
    session ahead of time (the module docstring's "Speed"), else every batch runs the robust
    way. Thread-safe (one batch at a time per runner).
    """

    def __init__(self, backend: str | None = None, memory_mb: int = 256, per_call: float = 1.0, total: float = 6.0,
                 ahead: bool = True) -> None:
        from rao_envs.sandboxes import SandboxPool

        self.per_call, self.total, self.ahead = float(per_call), float(total), bool(ahead)
        # size=0: the one box in use is started on demand and kept; no idle spare doubles the cost
        self.pool = SandboxPool(
            backend, size=0, timeout=self.total + 4.0, memory_mb=memory_mb, processes=64,
            output_bytes=_REPORT_LIMIT, disk_mb=16,
        )
        self._box = None
        self._spare = None  # the session forked (ahead) from the box's clean one for the next batch
        self._dirty = False  # the box ran model code since its last reset
        self._lock = threading.Lock()
        self.stats = {"batches": 0, "calls": 0, "boxes": 0, "resets": 0, "fast": 0, "fallbacks": 0}

    def _sandbox(self) -> Any:
        if self._box is None:
            try:
                self._box = self.pool.acquire(timeout=60)
            except Exception as exc:  # noqa: BLE001 - any failure to get a box is infrastructure
                raise InfraError(f"no sandbox for the tests: {exc}") from None
            self.stats["boxes"] += 1
        return self._box

    def new_episode(self) -> None:
        """Reset the box if model code ran in it since the last reset (cheap otherwise; never raises:
        a box that cannot be reset is replaced on the next call)."""
        with self._lock:
            if self._box is None or not self._dirty:
                return
            self._spare = None  # the reset kills it
            try:
                self._box.reset()
                self._dirty = False
                self.stats["resets"] += 1
            except Exception:  # noqa: BLE001 - a failed reset: take a fresh box next time
                self._drop()

    def _drop(self) -> None:
        box, self._box, self._dirty, self._spare = self._box, None, False, None
        if box is not None:
            self.pool.release(box)  # the pool replaces a failed box

    def run(self, module: list[tuple[str, str]], calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """One result per call: ``{"out": value}`` or ``{"err": message}``. Raises ``InfraError`` only
        when the sandbox itself failed."""
        if not calls:
            return []
        nonce = "@@cs-report-" + secrets.token_hex(8) + "@@"
        payload = json.dumps({
            "module": [[n, s] for n, s in module], "calls": [[n, a] for n, a in calls],
            "per_call": self.per_call, "total": self.total, "nonce": nonce,
        })
        with self._lock:
            self.stats["batches"] += 1
            self.stats["calls"] += len(calls)
            box = self._sandbox()
            self._dirty = True
            results = self._fast(nonce, payload, len(calls))
            if results is None:
                results, clean = self._robust(box, nonce, payload, len(calls))
                if not clean:
                    return results
            else:
                self.stats["fast"] += 1
            if self.ahead:
                self._spare = box.fork(wait=False, warm=_WARM)  # the box forks and warms it up while we go on
        return results

    def _fast(self, nonce: str, payload: str, n: int) -> list[dict[str, Any]] | None:
        """The batch in the spare session (then closed), or None when there is none or the batch
        did not end cleanly there (the caller runs it the robust way)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        # a clean batch takes at most a call's time per call (and one for the module): a run
        # over that fails the fast way anyway
        res = spare.run(f"_cs_fast({payload!r})", timeout=min(self.total, (n + 1) * self.per_call) + 0.25)
        spare.close(wait=False)
        if res.is_infra or res.error_kind is not None or res.restarted:
            self.stats["fallbacks"] += 1
            return None
        reports = _reports(res.stdout, nonce)
        try:
            report = json.loads(reports[0]) if len(reports) == 1 else None
            results = report["results"]
            incomplete = report["incomplete"]
        except (ValueError, KeyError, TypeError):
            results, incomplete = None, True
        if incomplete is not False or not isinstance(results, list) or len(results) != n:
            self.stats["fallbacks"] += 1
            return None
        return _checked(results)

    def _robust(self, box: Any, nonce: str, payload: str, n: int) -> tuple[list[dict[str, Any]], bool]:
        """The batch the robust way (in the box's clean session, a forked child per batch): its
        results, and whether the clean session came through it (and so has the harness)."""
        # The harness is defined once per session (the box's clean default one, where no model
        # code runs): later batches send only the payload, and a session without it (new, or one
        # that model code killed) says so and gets the harness with the same batch.
        code = f"if '_cs_main' in globals():\n    _cs_main({payload!r})\nelse:\n    print({_NO_HARNESS!r})\n"
        res = box.run(code, timeout=self.total + 3.0)
        if not res.is_infra and res.error_kind is None and res.stdout.strip() == _NO_HARNESS:
            res = box.run(f"exec({HARNESS!r})\n_cs_main({payload!r})\n", timeout=self.total + 3.0)
        if res.is_infra:
            self._drop()
            raise InfraError(f"the sandbox failed while running tests: {res.stderr.strip()[:300]}")
        reports = _reports(res.stdout, nonce)
        if res.error_kind is not None or len(reports) != 1:
            why = res.error_kind or ("no test report" if not reports else "more than one test report (tampered with)")
            return [{"err": f"the test run was stopped ({why}): code in the module killed or broke the test process"}] * n, False
        try:
            report = json.loads(reports[0])
            results = report["results"]
        except (ValueError, KeyError, TypeError):
            return [{"err": "the test report was garbled"}] * n, False
        if isinstance(report.get("infra"), str):
            self._drop()
            raise InfraError(f"the sandbox could not run the tests: {report['infra'][:300]}")
        if not isinstance(results, list) or len(results) != n:
            return [{"err": "the test report was garbled"}] * n, False
        return _checked(results), True

    def settle(self) -> None:
        """Wait until the box has done the work sent ahead (the next batch's session is ready);
        for measurements that must not overlap it."""
        with self._lock:
            if self._box is not None:
                self._box.ping(timeout=30.0)

    def close(self) -> None:
        """Give the box back and stop the pool."""
        with self._lock:
            self._drop()
            self.pool.close()


def _reports(stdout: str, nonce: str) -> list[str]:
    """The JSON texts of the report lines (those that start with ``nonce``) in a run's stdout."""
    return [line[len(nonce):] for line in stdout.splitlines() if line.startswith(nonce)]


def _checked(results: list[Any]) -> list[dict[str, Any]]:
    """A report's results with anything that is not a dict made a failed call."""
    return [r if isinstance(r, dict) else {"err": "garbled result"} for r in results]


_RUNNERS: dict[tuple[Any, ...], CodeRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def get_runner(backend: str | None = None, memory_mb: int = 256, per_call: float = 1.0, total: float = 6.0,
               ahead: bool = True) -> CodeRunner:
    """The process's runner for these settings (one warm box, shared by every episode; a forked process gets its own)."""
    key = (os.getpid(), backend, memory_mb, per_call, total, ahead)
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            runner = _RUNNERS[key] = CodeRunner(backend, memory_mb, per_call, total, ahead)
        return runner

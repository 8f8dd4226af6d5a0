"""Runs code-mode cells (``protocol="code"``): one sandboxed REPL session per node.

The engine (:class:`~rao_envs.tree.TreeEngine`) hands each ``code`` turn to a
:class:`CodeRunner`. The runner keeps one sandbox box per episode (from a warm, process-wide
:class:`~rao_envs.sandboxes.SandboxPool`; ``sandbox="local" | "docker" | "process"`` or a
``dict`` with ``backend`` and :class:`~rao_envs.sandboxes.ResourceLimits` fields, or a
``Sandbox`` / ``SandboxPool`` of your own), installs the REPL kernel
(:mod:`rao_envs.code_kernel`) in the box's template session once, and forks one session per
node at its first cell (its ``context`` and task arguments become variables there); the
session is closed when the node ends. Model code never runs in the host process.

A cell runs until it ends or makes a *host call* (``ExecResult.hostcall``, untrusted JSON):

* ``tool``: the host runs the task's tool on the node's own world and answers with its JSON
  value (a :class:`~rao_envs.errors.ToolError` becomes a ``ToolError`` in the cell);
* ``finish``: the node ends with the result (the session is closed where it stopped);
* ``spawn``: the batch of ``launch_subagent`` calls becomes children through the engine's
  delegation rules; a refusal is answered at once (as strings), otherwise the node is
  ``waiting`` and the cell stays suspended in its session until every child has ended, when
  :meth:`CodeRunner.child_ended` resumes it with their results (no policy call).

Whatever the cell does is the agent's: a timeout, a crash of its session (``os._exit``, a
signal, running out of memory) or a box the code brought down becomes feedback and costs the
step; only a sandbox that fails by itself (or cannot be started) is ``infra_error``.
"""

from __future__ import annotations

import atexit
import inspect
import json
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rao_envs.errors import ConfigError, InfraError, ToolError
from rao_envs.payload import clean_text, normalize
from rao_envs.protocols.base import Call
from rao_envs.protocols.code import LAUNCH, cell_for_calls, unawaited_launches
from rao_envs.types import Node, NodeStatus

DEFAULT_CELL_TIMEOUT = 10.0
MAX_OUTPUT = 100_000  # characters of one cell's output kept before the observation cap
SESSIONS_PER_BOX = 16  # live node REPLs per box before the episode takes another box
MAX_ANSWER = 32 * 1024 * 1024  # characters of one host-call answer (the channel's frames hold 64 MiB)
MAX_LAUNCHES = 100_000  # launch_subagent calls one batch may name (each is refused or spawned)
TRUNCATED_CHILD = "Subagent did not finish before its step budget was exhausted."
FAILED_CHILD = "Subagent failed before finishing."
CANCELLED_CHILD = "Subagent was cancelled before finishing."
RESTARTED = "The REPL was restarted: variables from earlier cells are lost."
_NO_KERNEL_EXIT = 97
# the first line of every cell's run: a session without the kernel (restarted by the worker) exits at once
_GUARD = f"__import__('sys').modules.get('_rao_repl') or __import__('sys').exit({_NO_KERNEL_EXIT})"
_NO_KERNEL = object()
_SUSPENDED = object()
_ENDED = object()
_POOLS: dict[str, Any] = {}
_POOLS_LOCK = threading.Lock()


def kernel_source() -> str:
    """The source of :mod:`rao_envs.code_kernel` (what runs inside the box)."""
    return (Path(__file__).parent / "code_kernel.py").read_text()


def tool_signatures(task: Any) -> list[tuple[str, str]]:
    """``(signature, docstring)`` of each task tool as a Python function (from its ``@tool`` method)."""
    out = []
    for spec in task.tools.values():
        doc = inspect.cleandoc(spec.fn.__doc__ or "").strip() or spec.doc
        out.append((spec.signature, doc.replace('"' * 3, "'" * 3)))
    return out


def _kernel_spec(task: Any) -> str:
    tools = []
    for spec in task.tools.values():
        params = list(inspect.signature(spec.fn).parameters.values())[2:]
        tools.append([spec.name, [[p.name, p.default is inspect.Parameter.empty] for p in params], spec.doc])
    return json.dumps({"tools": tools})


def _shared_pool(backend: str, options: dict[str, Any]) -> Any:
    """The process-wide warm pool for ``backend`` with these sandbox options."""
    from rao_envs.sandboxes import SandboxPool

    key = json.dumps([backend, options], sort_keys=True, default=str)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = SandboxPool(backend, size=1, max_size=64, **options)
        return pool


def _give_back(pool: Any, box: Any) -> None:
    try:
        pool.release(box) if pool is not None else box.stop()
    except Exception:  # noqa: BLE001 - called by the garbage collector: never raise
        pass


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS.values()):
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _POOLS.clear()


@dataclass(eq=False)
class _Box:
    """One box of the episode: where it came from and which kernel install it holds."""

    box: Any
    pool: Any  # the pool to give it back to (None: given by the user, or our own to stop)
    epoch: int = -1  # the box's epoch when the kernel was installed in its template session
    finalizer: Any = None


@dataclass
class _Cell:
    """One running or suspended cell of a node."""

    k: int
    parts: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    awaiting: list[str] = field(default_factory=list)
    truncated: bool = False


class CodeRunner:
    """The sandboxed REPLs of one engine's nodes (module docstring). Not thread-safe: one step at a time."""

    def __init__(self, engine: Any, sandbox: Any = None) -> None:
        self.engine = engine
        self.cell_timeout = DEFAULT_CELL_TIMEOUT
        self.repls_per_box = SESSIONS_PER_BOX
        self.backend, self.options = "local", {}
        self._given_box = self._given_pool = None
        from rao_envs.sandboxes import Sandbox, SandboxPool

        if sandbox is None or isinstance(sandbox, str):
            self.backend = sandbox or "local"
        elif isinstance(sandbox, dict):
            opts = dict(sandbox)
            self.backend = opts.pop("backend", "local")
            self.cell_timeout = float(opts.pop("cell_timeout", opts.get("timeout", DEFAULT_CELL_TIMEOUT)))
            self.repls_per_box = int(opts.pop("repls_per_box", SESSIONS_PER_BOX))
            if self.repls_per_box < 1:
                raise ConfigError("sandbox repls_per_box must be >= 1 (1: every node in a box of its own)")
            self.options = opts
        elif isinstance(sandbox, Sandbox):
            self._given_box = sandbox
        elif isinstance(sandbox, SandboxPool):
            self._given_pool = sandbox
        else:
            raise ConfigError(
                f"sandbox= must be 'local', 'docker', 'process', a dict of sandbox options, a Sandbox or a "
                f"SandboxPool; got {type(sandbox).__name__}"
            )
        from rao_envs.sandboxes import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown sandbox backend {self.backend!r}; choose one of {list(BACKENDS)}")
        self._spec = _kernel_spec(engine.task)
        self._boxes: list[_Box] = []
        self._dirty = False  # reset() happened: wipe the boxes before the next cell
        self.sessions: dict[str, Any] = {}
        self.fresh: set[str] = set()  # nodes whose session lost the kernel (restarted)
        self.lost: set[str] = set()  # nodes whose REPL was lost with a replaced box (told at their next cell)
        self.cells: dict[str, _Cell] = {}
        self.counts: dict[str, int] = {}
        self.stats = {"cells": 0, "host_calls": 0, "suspensions": 0, "restarts": 0}

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the last episode (no sandbox I/O here: the box is wiped at the next episode's first cell)."""
        self.sessions.clear()  # the wipe kills them all at once
        self.cells.clear()
        self.counts.clear()
        self.fresh.clear()
        self.lost.clear()
        self._dirty = bool(self._boxes)

    def _wipe(self) -> None:
        """Before the first cell of an episode: wipe one box of the last one, give the rest back."""
        self._dirty = False
        for b in self._boxes[1:]:
            self._drop(b)
        for b in self._boxes:
            try:
                b.box.reset()
            except Exception:  # noqa: BLE001 - a box that cannot be wiped is given back, another comes next
                self._drop(b)

    def close(self) -> None:
        """Close every session and give the boxes back (to their pool); never raises."""
        if not self._dirty:  # after a reset the pool's own wipe kills the sessions
            self._close_sessions()
        self.sessions.clear()
        self._dirty = False
        self.cells.clear()
        for b in list(self._boxes):
            self._drop(b)

    @property
    def box(self) -> Any:
        """The episode's first box (None before the first cell)."""
        return self._boxes[0].box if self._boxes else None

    def _drop(self, b: _Box) -> None:
        if b in self._boxes:
            self._boxes.remove(b)
        if b.finalizer is not None:
            b.finalizer.detach()
        if b.box is self._given_box:
            return
        try:
            b.pool.release(b.box) if b.pool is not None else b.box.stop()
        except Exception:  # noqa: BLE001
            pass

    def _close_sessions(self) -> None:
        for s in self.sessions.values():
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        self.sessions.clear()

    def _acquire(self) -> _Box:
        """One more started box: the given one, one from the pool, or (pool full) one of our own."""
        if self._given_box is not None:
            b = _Box(self._given_box.start(), None)
        else:
            pool = self._given_pool or _shared_pool(self.backend, self.options)
            if pool.idle or pool.total < pool.max_size or self._given_pool is not None:
                b = _Box(pool.acquire(timeout=120), pool)
            else:  # never wait for a box other episodes hold (their steps may need this thread)
                from rao_envs.sandboxes import make_sandbox

                b = _Box(make_sandbox(self.backend, **self.options).start(), None)
            # an engine dropped without close() still gives its box back (when collected)
            b.finalizer = weakref.finalize(self, _give_back, b.pool, b.box)
        self._boxes.append(b)
        return b

    def _box(self) -> Any:
        """A started box with room for one more session and the kernel in its template session.

        A box holds at most ``repls_per_box`` (default :data:`SESSIONS_PER_BOX`) live sessions
        (its process and memory limits are per box); a wide fan-out gets more boxes. The REPLs
        of one box can signal each other's processes; ``repls_per_box=1`` isolates every node.
        """
        if self._dirty:
            self._wipe()
        b = None
        for cand in self._boxes:
            live = sum(1 for s in self.sessions.values() if s.sandbox is cand.box)
            if live < self.repls_per_box or cand.box is self._given_box:
                b = cand
                break
        if b is None:
            b = self._acquire()
        box = b.box
        if not box.alive:  # it failed earlier (that node was told): a fresh box for the next cell
            box.reset()
        if b.epoch != box._epoch:
            self._install(b)
        return box

    def _install(self, b: _Box) -> None:
        res = b.box.run(self._install_code(), timeout=30)
        if not res.ok:
            raise InfraError(f"could not install the REPL kernel in the sandbox: {res.stderr.strip()[-500:]}")
        b.epoch = b.box._epoch

    def _fork(self, box: Any) -> Any:
        """A new node session forked from ``box``'s template (reinstalled once if a cell killed it)."""
        from rao_envs.sandboxes import SandboxRefused

        try:
            return box.fork()
        except SandboxRefused:  # the template died (a cell signalled every process of the box)
            b = next(x for x in self._boxes if x.box is box)
            self._install(b)  # the worker restarts the default session on this run
            return box.fork()

    def _install_code(self) -> str:
        return (
            "import sys as _s, types as _t\n"
            "_m = _t.ModuleType('_rao_repl')\n"
            f"exec(compile({kernel_source()!r}, '<rao>', 'exec'), _m.__dict__)\n"
            "_s.modules['_rao_repl'] = _m\n"
            f"_m.setup({self._spec!r}, globals())\n"
            "del _s, _t, _m\n"
        )

    def _session(self, node: Node) -> tuple[Any, str | None]:
        """The node's session and the variables to set before its cell (JSON), opening one if needed."""
        s = self.sessions.get(node.id)
        fresh = s is None or s.stale or s.closed or node.id in self.fresh
        if not fresh:
            return s, None
        if s is not None and (s.stale or s.closed):  # its box was replaced: say the variables are gone
            self.lost.add(node.id)
        box = self._box()
        if s is not None and not (s.stale or s.closed) and node.id in self.fresh:
            s.close()  # restarted without the kernel: fork a clean one from the template
        s = self.sessions[node.id] = self._fork(box)
        self.fresh.discard(node.id)
        names = set(self.engine.task.tools) | {"finish", "launch_subagent", "asyncio", "ToolError"}
        init = {k: v for k, v in (node.args or {}).items() if isinstance(k, str) and k.isidentifier() and k not in names}
        init["context"] = node.context
        return s, json.dumps(init)

    def node_ended(self, node: Node) -> None:
        """The node ended: stop its REPL session (sent ahead: the box closes it while the engine
        goes on, before it serves anything else; the session is stopped until then)."""
        self.cells.pop(node.id, None)
        s = self.sessions.pop(node.id, None)
        if s is not None:
            try:
                s.close(wait=False)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ turns
    def turn(self, node: Node, calls: list[Call]) -> str | None:
        """Run one turn's cell for ``node``; the feedback text, or None (suspended or ended)."""
        eng = self.engine
        k = self.counts[node.id] = self.counts.get(node.id, 0) + 1
        code = calls[0].args.get("code") if calls and calls[0].name == "python" else cell_for_calls(calls)
        if not isinstance(code, str):
            return f"[Cell {k} Output]\nError: the cell must be text."
        bad = []
        # only a cell whose text names it (or, not ASCII, may NFKC-fold an identifier to it) is parsed here
        if LAUNCH in code or not code.isascii():
            try:
                import ast

                bad = unawaited_launches(ast.parse(code))
            except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
                pass  # the kernel reports the error the way Python does
        if bad:
            return (
                f"[Cell {k} Output]\nError: the cell was not run: launch_subagent(...) on line {bad[0]} is not "
                "awaited, so the sub-agent would never start. Write `result = await launch_subagent(...)`, or "
                "`results = await asyncio.gather(launch_subagent(...), ...)` for several in parallel."
            )
        try:
            session, init = self._session(node)
        except Exception as exc:  # the box cannot be had: not the agent's doing
            eng._end(node, NodeStatus.INFRA_ERROR, error=f"sandbox unavailable: {type(exc).__name__}: {exc}"[:2000])
            return None
        cell = self.cells[node.id] = _Cell(k)
        if node.id in self.lost:
            self.lost.discard(node.id)
            cell.parts.append("[the sandbox was replaced before this cell: a fresh REPL, variables from earlier cells are lost]\n")
        self.stats["cells"] += 1
        run = f"{_GUARD}\n__import__('_rao_repl').run_cell({code!r}, globals(), {init!r})"
        res = self._drive(node, cell, session, run)
        if res is not _NO_KERNEL:
            return res
        # the session had died since the last cell (e.g. another cell in the box killed it): the
        # worker started a bare one, so run the cell once more in a fresh REPL with the kernel
        self.lost.discard(node.id)
        self.fresh.add(node.id)
        cell.parts.append("[your REPL was lost since your last cell (its process was killed): a fresh REPL, variables "
                          "from earlier cells are lost]\n")
        try:
            session, init = self._session(node)
        except Exception as exc:  # noqa: BLE001 - the box cannot be had: not the agent's doing
            eng._end(node, NodeStatus.INFRA_ERROR, error=f"sandbox unavailable: {type(exc).__name__}: {exc}"[:2000])
            return None
        run = f"{_GUARD}\n__import__('_rao_repl').run_cell({code!r}, globals(), {init!r})"
        res = self._drive(node, cell, session, run)
        return self._render(cell, ["The REPL could not be set up; try again."]) if res is _NO_KERNEL else res

    def _drive(self, node: Node, cell: _Cell, session: Any, code: str) -> str | None:
        """Run or resume ``cell`` until it ends (feedback), suspends or ends the node (None)."""
        eng = self.engine
        while True:
            left = self.cell_timeout - cell.elapsed
            if left <= 0.01:
                return self._timed_out(node, cell)
            res = session.run(code, timeout=left)
            cell.elapsed += res.duration
            if res.error_kind == "infra":
                self.cells.pop(node.id, None)
                eng._end(node, NodeStatus.INFRA_ERROR, error=f"sandbox failure: {res.stderr.strip()[-1000:]}")
                return None
            if res.restarted and res.exit == _NO_KERNEL_EXIT and res.hostcall is None and code.startswith(_GUARD):
                return _NO_KERNEL  # a bare session: nothing of the cell ran
            self._keep(cell, res.stdout)
            self._keep(cell, _agent_stderr(res.stderr))
            if res.hostcall is None:
                return self._done(node, cell, res)
            self.stats["host_calls"] += 1
            reply = self._host_call(node, cell, res.hostcall)
            if reply is _SUSPENDED or reply is _ENDED or node.status.ended:
                return None
            code = _answer(reply)

    def _keep(self, cell: _Cell, text: str) -> None:
        if not text:
            return
        room = MAX_OUTPUT - sum(map(len, cell.parts))
        if len(text) > room:
            text, cell.truncated = text[: max(room, 0)], True
        if text:
            cell.parts.append(text)

    def _done(self, node: Node, cell: _Cell, res: Any) -> str:
        self.cells.pop(node.id, None)
        notes = []
        if res.error_kind == "timeout":
            notes.append(f"Error: the cell ran past its time limit ({self.cell_timeout:g} s) and was stopped.")
        elif res.error_kind == "memory":
            notes.append("Error: the cell ran out of memory.")
        elif res.error_kind == "crashed":
            notes.append("Error: the cell's code killed its own Python process.")
        elif res.exit and res.error_kind == "exception":
            notes.append(f"The cell exited (exit code {res.exit}).")
        if res.restarted:
            self.stats["restarts"] += 1
            self.fresh.add(node.id)
            notes.append(RESTARTED)
        if res.truncated or cell.truncated:
            notes.append("[output truncated]")
        return self._render(cell, notes)

    def _render(self, cell: _Cell, notes: list[str]) -> str:
        body = "".join(cell.parts).rstrip("\n")
        text = f"[Cell {cell.k} Output]\n" + (body or "(no output)")
        if notes:
            text += "\n" + "\n".join(notes)
        return clean_text(text)

    def _timed_out(self, node: Node, cell: _Cell) -> str:
        """The cell's time ran out while it was stopped at a host call: kill its session."""
        self.cells.pop(node.id, None)
        s = self.sessions.pop(node.id, None)
        if s is not None:
            s.close()
        self.stats["restarts"] += 1
        return self._render(cell, [f"Error: the cell ran past its time limit ({self.cell_timeout:g} s) and was stopped.", RESTARTED])

    # ------------------------------------------------------------------ host calls
    def _host_call(self, node: Node, cell: _Cell, raw: str) -> Any:
        eng = self.engine
        try:
            call = json.loads(raw)
        except (ValueError, RecursionError):
            return {"error": "malformed host call"}
        if not isinstance(call, dict):
            return {"error": "malformed host call"}
        kind = call.get("t")
        if kind == "tool":
            name, args = call.get("name"), call.get("args")
            spec = eng.task.tools.get(name) if isinstance(name, str) else None
            if spec is None:
                return {"error": f"unknown tool {str(name)[:60]!r}; available: {', '.join(eng.task.tools)}"}
            if not isinstance(args, dict):
                return {"error": "tool arguments must be a dict"}
            try:
                return {"value": normalize(spec.call(eng.task, eng.context(node.id), args))}
            except ToolError as exc:
                return {"error": str(exc)}
            except Exception as exc:  # InfraError or a bug in task code: the node is masked
                kind_ = "" if isinstance(exc, InfraError) else f"{type(exc).__name__}: "
                self.cells.pop(node.id, None)
                eng._end(node, NodeStatus.INFRA_ERROR, error=f"{kind_}{exc}"[:2000])
                return _ENDED
        if kind == "finish":
            node.result = normalize(call.get("result"))
            self.cells.pop(node.id, None)
            eng._end(node, NodeStatus.FINISHED)
            return _ENDED
        if kind == "spawn":
            return self._spawn(node, cell, call)
        return {"error": "unknown host call"}

    def _spawn(self, node: Node, cell: _Cell, call: dict[str, Any]) -> Any:
        eng = self.engine
        count, requests = call.get("count"), call.get("requests")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_LAUNCHES:
            return {"error": "malformed launch request"}
        if requests is None:
            eng._refused.add(node.id)
            return {"results": [f"Refused: {count} launch_subagent calls at once are too large to send; launch fewer at a time."] * count}
        if not isinstance(requests, list) or len(requests) != count or not all(isinstance(r, dict) for r in requests):
            return {"results": ["Refused: malformed launch request."] * max(count, 0)}
        if any("wait" in r for r in requests):
            return {"results": ["Refused: launch_subagent takes no wait argument; await it instead."] * count}
        if "delegate" in eng._hidden_verbs:  # a single-agent control (delegate=False, max_depth=0)
            eng._refused.add(node.id)
            return {"results": ["Refused: this task offers no sub-agents; do the work yourself."] * count}
        before = len(node.children)
        text = eng._delegate(node, requests)
        ids = node.children[before:]
        if not ids:  # refused as a whole: every launch gets the refusal (paper semantics)
            eng._refused.add(node.id)
            return {"results": [text] * count}
        cell.awaiting = list(ids)
        self.stats["suspensions"] += 1
        cell.parts.append(f"[cell suspended: waiting for sub-agents {', '.join(ids)}]\n")
        return _SUSPENDED

    def child_ended(self, parent: Node, child: Node) -> None:
        """A child of ``parent`` ended: when all its awaited children have, resume the parent's cell."""
        eng = self.engine
        cell = self.cells.get(parent.id)
        if cell is None or child.id not in cell.awaiting or parent.status.ended:
            return
        nodes = eng.tree.nodes
        if not all(nodes[c].status.ended for c in cell.awaiting):
            return
        eng._waiting.pop(parent.id, None)
        results = []
        for c in cell.awaiting:
            ch = nodes[c]
            ch.delivered += 1
            if ch.status is NodeStatus.FINISHED:
                results.append(ch.result)
            elif ch.status is NodeStatus.TRUNCATED:
                results.append(TRUNCATED_CHILD)
            elif ch.status is NodeStatus.CANCELLED:
                results.append(CANCELLED_CHILD)
            else:
                results.append(FAILED_CHILD)
        cell.parts.append(f"[cell resumed with the results of {', '.join(cell.awaiting)}]\n")
        cell.awaiting = []
        parent.status = NodeStatus.RUNNING
        session = self.sessions.get(parent.id)
        if session is None:
            eng._end(parent, NodeStatus.INFRA_ERROR, error="the REPL session of a suspended cell was lost")
            return
        feedback = self._drive(parent, cell, session, _answer({"results": results}))
        if parent.status is not NodeStatus.RUNNING:
            return  # suspended again, or ended
        if feedback is not None:
            eng._inbox.setdefault(parent.id, []).append((feedback, None))
        if parent.steps_left <= 0:
            eng._end(parent, NodeStatus.TRUNCATED)
        else:
            eng._enqueue(parent.id)


def _answer(reply: dict[str, Any]) -> str:
    """The JSON answer to a host call; one too large for the channel becomes an error the cell sees."""
    text = json.dumps(reply)
    if len(text) > MAX_ANSWER:
        n = len(reply.get("results") or ())
        if n:
            msg = f"Subagent result too large to deliver ({len(text)} characters for {n} results)."
            return json.dumps({"results": [msg] * n})
        return json.dumps({"error": f"the tool's answer is too large to deliver ({len(text)} characters)"})
    return text


def _agent_stderr(text: str) -> str:
    """The cell's own stderr, without the sandbox's internal notes (they are rephrased by the runner)."""
    if "[sandbox]" not in text:
        return text
    return "".join(line for line in text.splitlines(True) if not line.startswith("[sandbox]"))

"""The REPL kernel of code mode, as it runs *inside* a sandbox session (standard library only).

This file is not imported by the host: :mod:`rao_envs.code_runner` ships its source into
each box once and executes it there as the module ``_rao_repl``. It defines, in the
session's globals, one plain Python function per task tool (the signatures of the task's
``@tool`` methods), ``finish(result)`` and ``async launch_subagent(goal, ...)``; every one
reaches the host engine through ``_rao_host.call`` (the worker's host channel), so the
node's world stays on the host and only JSON values cross. :func:`run_cell` runs one cell:
top-level ``await`` allowed, the repr of a final expression printed, tracebacks shortened to
the cell's own frames. ``launch_subagent`` calls made before the cell's event loop goes idle
are sent to the host as one batch (``asyncio.gather`` over N calls opens N children in one
turn); the session then stops inside that host call until the children have ended, and the
host's answer resumes the cell where it stopped.
"""

import ast
import asyncio
import json
import linecache
import sys
import traceback

import _rao_host  # noqa: F401 - provided by the sandbox worker

CELL = "<cell>"
MAX_FRAMES = 6  # traceback frames of the cell shown (the innermost ones)
_MISSING = object()
_pending = []  # launch_subagent calls not sent yet: [(request, future)]


class ToolError(Exception):
    """A tool refused the call (bad arguments, an illegal move): the message says why."""


class CellDeadlock(Exception):
    """The cell awaits something that can never complete."""


def _call(payload):
    reply = _rao_host.call(payload)
    if not isinstance(reply, dict):
        raise RuntimeError("the host sent a malformed answer")
    if "error" in reply:
        raise ToolError(str(reply["error"]))
    return reply.get("value")


def _tool(name, args):
    args = {k: v for k, v in args.items() if v is not _MISSING}
    try:
        json.dumps(args)
    except (TypeError, ValueError) as e:
        raise TypeError("arguments of %s must be JSON values (str, int, float, bool, None, list, dict): %s"
                        % (name, e)) from None
    return _call({"t": "tool", "name": name, "args": args})


def finish(result=None):
    """End your task; ``result`` (any JSON value) goes back to whoever gave you the task."""
    try:
        json.dumps(result)
    except (TypeError, ValueError) as e:
        raise TypeError("finish(result): result must be a JSON value: %s" % e) from None
    _call({"t": "finish", "result": result})
    raise SystemExit(0)  # the host ended the node; nothing of the cell runs after this


async def launch_subagent(goal="", context=None, budget=None, **task_args):
    """Start a sub-agent on a sub-task and return its ``finish`` result (await it)."""
    request = dict(task_args, goal=goal)
    if context is not None:
        request["context"] = context
    if budget is not None:
        request["budget"] = budget
    try:
        json.dumps(request)
    except (TypeError, ValueError) as e:
        raise TypeError("launch_subagent arguments must be JSON values: %s" % e) from None
    future = asyncio.get_running_loop().create_future()
    _pending.append((request, future))
    return await future


def _flush():
    """Send the pending launches to the host as one batch; resolve them with its answers."""
    batch = [(r, f) for r, f in _pending if not f.done()]
    del _pending[:]
    if not batch:
        return
    requests = [r for r, _ in batch]
    payload = {"t": "spawn", "count": len(requests), "requests": requests}
    if len(json.dumps(payload)) > 50000:
        payload["requests"] = None  # too large to send: the host refuses by count
    try:
        reply = _rao_host.call(payload)
    except ValueError as e:
        reply = {"results": ["Refused: %s" % e] * len(batch)}
    results = reply.get("results") if isinstance(reply, dict) else None
    if not isinstance(results, list) or len(results) != len(batch):
        results = ["Subagent failed before finishing."] * len(batch)
    for (_, future), value in zip(batch, results):
        if not future.done():
            future.set_result(value)


class _Loop(asyncio.SelectorEventLoop):
    """An event loop that sends pending launches when it goes idle and stops a dead cell."""

    def _run_once(self):
        if not self._ready:
            if _pending:
                _flush()
            elif not self._scheduled and len(self._selector.get_map()) <= 1:
                raise CellDeadlock(
                    "the cell awaits something that can never complete (no sub-agent, timer or I/O "
                    "is pending), so it was stopped")
        super()._run_once()


class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _Loop()


_LOOP = []  # the REPL's event loop: made by its first cell that awaits, kept for the next ones


def _loop():
    """The kept event loop (a new one when there is none, or a cell closed or broke it)."""
    loop = _LOOP[0] if _LOOP else None
    if loop is None or loop.is_closed() or loop.is_running():
        loop = _Loop()
        _LOOP[:] = [loop]
    asyncio.set_event_loop(loop)
    return loop


def _tidy(loop):
    """Leave the kept loop as a new one would be: no task, callback, timer or watched fd of the
    cell that ran in it. A task that survives its cancellation closes the loop instead (so
    nothing of this cell runs in a later one)."""
    try:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        if asyncio.all_tasks(loop):
            raise RuntimeError("a task ignored its cancellation")
        for handle in loop._scheduled:
            handle.cancel()
        loop._scheduled.clear()
        loop._timer_cancelled_count = 0
        loop._ready.clear()
        own = loop._ssock.fileno()
        for key in list(loop._selector.get_map().values()):
            if key.fd != own:
                loop._remove_reader(key.fd)
                loop._remove_writer(key.fd)
    except BaseException:
        try:
            loop.close()
        except BaseException:
            pass
        del _LOOP[:]


def _run(coro):
    loop = _loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        del _pending[:]
        _tidy(loop)
        asyncio.set_event_loop(None)


def _text(fn, fallback):
    try:
        return fn()
    except BaseException:
        return fallback


def _show_error(e):
    """A short traceback: the cell's own frames only (no kernel, worker or host paths)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == CELL]
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        if len(frames) > MAX_FRAMES:
            lines.append("  [... %d earlier frames]\n" % (len(frames) - MAX_FRAMES))
        lines.extend(traceback.format_list(frames[-MAX_FRAMES:]))
    name = _text(lambda: type(e).__name__, "Exception")
    msg = _text(lambda: str(e), "<exception str() failed>")
    if isinstance(e, SyntaxError):
        where = "line %s" % e.lineno if e.lineno else ""
        lines.append("SyntaxError: %s (%s)\n" % (e.msg, where))
    else:
        lines.append("%s: %s\n" % (name, msg[:2000]) if msg else "%s\n" % name)
    sys.stderr.write("".join(lines))


def _flags():
    return ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def run_cell(src, globs, init=None):
    """Run one cell ``src`` in the REPL globals ``globs`` (``init``: variables to set first)."""
    if init:
        globs.update(json.loads(init))
    linecache.cache[CELL] = (len(src), None, src.splitlines(True), CELL)
    try:
        tree = ast.parse(src, CELL, "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return _show_error(e)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    try:
        code = compile(tree, CELL, "exec", flags=_flags())
        value = eval(code, globs)
        if asyncio.iscoroutine(value):
            _run(value)
        if last is not None:
            value = eval(compile(last, CELL, "eval", flags=_flags()), globs)
            if asyncio.iscoroutine(value):
                value = _run(value)
            if value is not None:
                print(_text(lambda: repr(value), "<repr() failed>")[:100000])
    except SystemExit:
        raise
    except BaseException as e:  # the cell's own error (a timeout's interrupt too): shown, the REPL lives on
        _show_error(e)


def _make_tool(name, params, doc):
    args = ", ".join(p if required else "%s=_MISSING" % p for p, required in params)
    body = ", ".join("%r: %s" % (p, p) for p, _ in params)
    scope = {"_MISSING": _MISSING, "_tool": _tool}
    exec("def %s(%s):\n    return _tool(%r, {%s})\n" % (name, args, name, body), scope)
    fn = scope[name]
    fn.__doc__ = doc
    return fn


def setup(spec, globs):
    """Define the task's tools, ``finish``, ``launch_subagent`` and ``asyncio`` in ``globs``."""
    spec = json.loads(spec)
    asyncio.set_event_loop_policy(_Policy())
    for name, params, doc in spec["tools"]:
        globs[name] = _make_tool(name, params, doc)
    globs["finish"] = finish
    globs["launch_subagent"] = launch_subagent
    globs["ToolError"] = ToolError
    globs["asyncio"] = asyncio
    import threading

    threading.excepthook = lambda args: _show_error(args.exc_value)  # short tracebacks from threads too

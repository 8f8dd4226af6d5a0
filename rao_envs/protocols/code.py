"""The RAO ``code`` protocol: each turn is ``<thought>…</thought><python>…</python>``.

The cell runs in the node's own sandboxed Python REPL (:mod:`rao_envs.code_runner`), where
the task's tools, ``finish(result)`` and ``async launch_subagent(goal, ...)`` are plain
functions generated from the task's ``@tool`` methods (one source of truth for both
protocols). Child results land in Python variables, never in the parent's context::

    <thought>Two independent parts: run them in parallel.</thought>
    <python>
    a, b = await asyncio.gather(launch_subagent(expr="(3 + 4)"), launch_subagent(expr="(5 - 2)"))
    print(calc(a=a, op="*", b=b))
    </python>

:meth:`CodeProtocol.parse` returns one ``Call("python", {"code": ...})``; the engine hands it
to the protocol's runner (:meth:`CodeProtocol.runner`) instead of dispatching tool calls.
:func:`cell_for_calls` writes tool-protocol calls as a cell, and :class:`CodeOracle` turns any
task's tool-protocol oracle into its code form.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from rao_envs.protocols.base import ActionProtocol, Call, ParseError

_PYTHON = re.compile(r"<python>(.*?)(?:</python>|\Z)", re.S)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
EXPECTED = "expected <thought>one to three sentences</thought> then <python>your code</python>"
LAUNCH = "launch_subagent"


def _lit(value: Any) -> str:
    """A Python literal for a JSON value (``repr`` of str, int, float, bool, None, list, dict)."""
    return repr(value)


def _kwargs(args: dict[str, Any]) -> str:
    plain = all(isinstance(k, str) and k.isidentifier() for k in args)
    if plain:
        return ", ".join(f"{k}={_lit(v)}" for k, v in args.items())
    return f"**{_lit(args)}"


def _launch(args: dict[str, Any]) -> str:
    args = {k: v for k, v in args.items() if k != "wait"}
    return f"{LAUNCH}({_kwargs(args)})"


def cell_for_calls(calls: list[Call]) -> str:
    """The cell that does what tool-protocol ``calls`` do (delegates: awaited, in parallel)."""
    if calls and all(c.name == "delegate" for c in calls):
        if len(calls) == 1:
            return f"result = await {_launch(calls[0].args)}\nprint(result)"
        inner = ",\n    ".join(_launch(c.args) for c in calls)
        return f"results = await asyncio.gather(\n    {inner},\n)\nprint(results)"
    lines = []
    for c in calls:
        if c.name == "finish":
            args = c.args
            result = args["result"] if "result" in args else (next(iter(args.values())) if len(args) == 1 else args or None)
            lines.append(f"finish({_lit(result)})")
        elif c.name in ("wait", "cancel"):
            lines.append(f"print({c.name!r} + ' is not needed in code mode: await launch_subagent(...) instead')")
        else:
            lines.append(f"print({c.name}({_kwargs(c.args)}))")
    return "\n".join(lines)


def turn_text(code: str, thought: str = "Next step.") -> str:
    """A complete code-mode turn: ``<thought>THOUGHT</thought>`` and the cell in ``<python>``."""
    return f"<thought>{thought}</thought>\n<python>\n{code}\n</python>"


def unawaited_launches(tree: ast.AST) -> list[int]:
    """Line numbers of ``launch_subagent(...)`` calls whose coroutine is certainly dropped.

    A call that is a statement of its own, or the whole right-hand side of an assignment,
    never runs (nothing awaits it). Calls inside ``await``, ``asyncio.gather(...)``, lists
    and other expressions are left to the cell (Python warns about a coroutine never awaited).
    """
    bad = []
    for node in ast.walk(tree):
        value = None
        if isinstance(node, ast.Expr):
            value = node.value
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = node.value
        if isinstance(value, ast.Call):
            f = value.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name == LAUNCH:
                bad.append(value.lineno)
    return bad


class CodeProtocol(ActionProtocol):
    """Reads ``<thought>…</thought><python>…</python>`` turns; cells run in the node's REPL."""

    name = "code"
    #: the engine runs turns of this protocol through :meth:`runner` (not tool dispatch)
    runs_cells = True

    def describe(self) -> str:
        """The action-format paragraph of the system prompt."""
        return (
            "You have a Python notebook (a persistent REPL: variables survive between your turns). Every "
            "turn, write exactly one <thought>…</thought> (one to three sentences) followed by one "
            "<python>…</python> cell. The cell runs at once; you see its output as [Cell k Output] "
            "(printed text, the value of a final expression, or a short traceback). The functions below "
            "are plain Python functions in the notebook; print what you want to see.\n"
            "Example turn:\n"
            "<thought>Check the first tool's answer before going on.</thought>\n"
            "<python>\nx = 2 + 3\nprint(x)\n</python>"
        )

    def format(self, name: str, args: dict[str, Any]) -> str:
        """The code-mode turn that makes the call ``name(**args)``."""
        return turn_text(cell_for_calls([Call(name, dict(args))]))

    def examples(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """One line of Python per function (``delegate`` is ``launch_subagent``; no wait/cancel in code mode)."""
        lines = [cell_for_calls([Call(name, dict(args))]) for name, args in calls if name not in ("wait", "cancel")]
        return "Examples (one call of each function, inside a <python> cell; use your own values):\n" + "\n".join(lines)

    def parse(self, text: Any) -> list[Call]:
        """``[Call("python", {"code": CELL})]`` from a turn, or raise :class:`ParseError`.

        Tolerant: the ``<thought>`` is optional, an unclosed final ``</python>`` is accepted,
        and a ```python fenced block stands in for a missing tag. An ``Action`` (anything
        with ``name`` and ``args``) becomes the cell that makes that call.
        """
        if type(text) is not str and hasattr(text, "args") and hasattr(text, "name"):
            return [Call("python", {"code": cell_for_calls([Call(text.name, dict(text.args))])})]
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise ParseError(f"expected a text turn, got {type(text).__name__}; {EXPECTED}")
        if len(text) > self.max_chars:
            raise ParseError(f"your turn is {len(text)} characters long, the limit is {self.max_chars}; {EXPECTED}")
        blocks = _PYTHON.findall(text)
        if not blocks:
            blocks = _FENCE.findall(text)
        if not blocks:
            raise ParseError(f"your turn has no <python> cell; {EXPECTED}")
        if len(blocks) > 1:
            raise ParseError(f"write exactly one <python> cell per turn, you wrote {len(blocks)}; {EXPECTED}")
        code = blocks[0].strip("\n")
        if not code.strip():
            raise ParseError(f"your <python> cell is empty; {EXPECTED}")
        return [Call("python", {"code": code})]

    def node_note(self, node: Any) -> str:
        """The first message's line naming the variables a node's notebook starts with."""
        names = [k for k in (node.args or {}) if isinstance(k, str) and k.isidentifier()]
        held = ", ".join(f"`{k}`" for k in names + ["context"])
        return f"Your notebook starts with the variables {held} (your task arguments; context is None unless given)."

    def runner(self, engine: Any, sandbox: Any = None) -> Any:
        """The :class:`~rao_envs.code_runner.CodeRunner` that runs ``engine``'s cells."""
        from rao_envs.code_runner import CodeRunner

        return CodeRunner(engine, sandbox)

    def action_space(self, task: Any, verbs: tuple[str, ...] = ("delegate", "finish")) -> str:
        """The tools, ``launch_subagent`` (when ``delegate`` is among ``verbs``) and ``finish`` as Python signatures."""
        from rao_envs.code_runner import tool_signatures

        extra = task.delegate_args_doc
        lines = [f"def {sig}:\n    \"\"\"{doc}\"\"\"" for sig, doc in tool_signatures(task)]
        if "delegate" not in verbs:  # a single-agent control: no word of sub-agents
            lines.append(
                "def finish(result: Any) -> None:\n"
                '    """End your task; result (any JSON value) goes back to whoever gave you the task."""'
            )
            return "```python\n" + "\n\n".join(lines) + "\n```\nA tool error raises ToolError (catch it or read the traceback)."
        lines.append(
            f"async def launch_subagent(goal: str = '', *{extra}, context: str | None = None, budget: int | None = None) -> Any:\n"
            '    """Start a sub-agent (a fresh copy of you, without your history or variables) on a sub-task and\n'
            "    return its finish result. Always await it: r = await launch_subagent(...); run independent\n"
            "    sub-tasks in parallel with await asyncio.gather(launch_subagent(...), launch_subagent(...)).\n"
            "    context (text) becomes the variable `context` in the sub-agent's notebook. A refusal (depth,\n"
            '    budget or node limits) comes back as a string: then do the work yourself."""'
        )
        lines.append(
            "def finish(result: Any) -> None:\n"
            '    """End your task; result (any JSON value) goes back to whoever gave you the task."""'
        )
        guide = (
            "Delegation: split the task into independent sub-tasks, run independent ones in parallel with "
            "asyncio.gather, keep some budget for assembling the results, and tell each sub-agent the exact "
            "format its finish result must have. A tool error raises ToolError (catch it or read the traceback). "
            "Where the task's instructions say delegate(...), call `await launch_subagent(...)` with the same "
            "arguments; wait and cancel are not needed (await does both)."
        )
        return "```python\n" + "\n\n".join(lines) + "\n```\n" + guide


class CodeOracle:
    """The code form of a task's tool-protocol oracle: each of its actions written as a cell.

    ``CodeOracle(task.oracle())`` is an agent policy ``(observation, info) -> text`` for
    ``protocol="code"``; parallel delegates become one ``asyncio.gather`` over
    ``launch_subagent`` calls. Attribute access falls through to the wrapped oracle.
    """

    def __init__(self, oracle: Any) -> None:
        from rao_envs.protocols.tool import ToolProtocol

        self.oracle, self._tool = oracle, ToolProtocol(1 << 30)

    def __call__(self, obs: Any, info: Any) -> str:
        """The wrapped oracle's next action, as a code-mode turn."""
        action = self.oracle(obs, info)
        calls = self._tool.parse(action)
        return turn_text(cell_for_calls(calls), "Following the plan.")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.oracle, name)

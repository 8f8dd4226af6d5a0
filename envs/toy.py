"""Toy-v0: evaluate an arithmetic expression tree, delegating sub-expressions.

## Description
The smallest complete task, for docs and fast tests. A node's job is one expression such
as ``((3 + 4) * (5 - 2))`` (``args={"expr": "..."}``): integers 1-9 with ``+ - *``. The
oracle (:class:`ToyOracle`) delegates every compound operand (in parallel), combines the
two results with ``calc`` and finishes.

## Tools
``calc(a: int, op: "+" | "-" | "*", b: int)``: applies one operator to two integers
(operands above 10**12 are an error).

## Delegation
``delegate(expr="(3 + 4)")``: exactly one task argument, a valid expression string; the
child's goal defaults to "Compute the value of EXPR. Finish with the number.".

## State scope
``isolated``: children share nothing with their parent.

## Rewards
The verifier checks the node's own finish value exactly: score 1.0 when the result equals
the value of the node's expression, else 0.0. Each node's reward is the engine's local
reward ``score + lam * mean(children's scores)``.

## Termination
A node ends when it calls ``finish`` or runs out of its 6 steps (truncated, score 0); the
episode ends when the root does. Limits: ``max_depth`` 4, ``max_steps_per_node`` 6,
``max_nodes`` 64.

## Difficulties
The depth of the expression tree: ``easy`` 1-2, ``medium`` 2-3 (default), ``hard`` 3-4.

## Registered ids
``rao_envs/Toy-v0`` (the text view; also ``rao_envs.parallel_env("Toy-v0")``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from rao_envs.errors import ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.policies.base import NodeInfo
from rao_envs.types import Action, StateScope

Expr = int | tuple[Any, str, Any]
_TOKEN = re.compile(r"\s*(\d+|[()+\-*])")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_DEPTHS = {"easy": (1, 2), "medium": (2, 3), "hard": (3, 4)}


def parse(text: str) -> Expr:
    """Parse ``+ - *`` expressions over integers with parentheses (usual precedence)."""
    pos, tokens = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unexpected character {text[pos]!r} at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if len(tokens) > 400:
        raise ValueError("expression too long")
    expr, i = _sum(tokens, 0)
    if i != len(tokens):
        raise ValueError(f"unexpected {tokens[i]!r}")
    return expr


def _sum(t: list[str], i: int) -> tuple[Expr, int]:
    left, i = _prod(t, i)
    while i < len(t) and t[i] in "+-":
        op = t[i]
        right, i = _prod(t, i + 1)
        left = (left, op, right)
    return left, i


def _prod(t: list[str], i: int) -> tuple[Expr, int]:
    left, i = _atom(t, i)
    while i < len(t) and t[i] == "*":
        right, i = _atom(t, i + 1)
        left = (left, "*", right)
    return left, i


def _atom(t: list[str], i: int) -> tuple[Expr, int]:
    if i >= len(t):
        raise ValueError("expression ended early")
    if t[i] == "(":
        inner, i = _sum(t, i + 1)
        if i >= len(t) or t[i] != ")":
            raise ValueError("missing ')'")
        return inner, i + 1
    if t[i].isdigit():
        return int(t[i]), i + 1
    raise ValueError(f"unexpected {t[i]!r}")


def evaluate(expr: Expr) -> int:
    """The value of a parsed expression."""
    if isinstance(expr, int):
        return expr
    a, op, b = expr
    return _OPS[op](evaluate(a), evaluate(b))


def show(expr: Expr) -> str:
    """Render a parsed expression fully parenthesised."""
    if isinstance(expr, int):
        return str(expr)
    a, op, b = expr
    return f"({show(a)} {op} {show(b)})"


def _random_expr(rng: np.random.Generator, depth: int) -> Expr:
    if depth == 0:
        return int(rng.integers(1, 10))
    sub = [depth - 1, int(rng.integers(0, depth))]
    rng.shuffle(sub)
    return (_random_expr(rng, sub[0]), str(rng.choice(list(_OPS))), _random_expr(rng, sub[1]))


class ToyArithmetic(Task):
    """Evaluate an arithmetic expression; delegate operands to sub-agents."""

    name = "Toy"
    version = 0
    state_scope = StateScope.ISOLATED
    difficulties = ("easy", "medium", "hard")
    default_difficulty = "medium"
    default_limits = {"max_depth": 4, "max_steps_per_node": 6, "max_nodes": 64}
    delegate_args_doc = ", expr: str"
    examples = {
        "calc": {"a": 3, "op": "+", "b": 4},
        "delegate": {"goal": "Compute the value of (1 + 2)", "expr": "(1 + 2)"},
        "finish": {"result": 7},
    }
    system_prompt = (
        "You evaluate arithmetic expressions. The calc tool applies ONE operator to two integers. "
        "Delegate compound operands to sub-agents with delegate(expr=...), then combine their results."
    )

    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """A random expression whose tree depth depends on the difficulty."""
        lo, hi = _DEPTHS[self.difficulty]
        expr = _random_expr(rng, int(rng.integers(lo, hi + 1)))
        text = show(expr)
        return TaskInstance(goal=f"Compute the value of {text}. Finish with the number.", args={"expr": text})

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``expr``: a valid expression string."""
        expr = args.get("expr")
        if not isinstance(expr, str) or set(args) != {"expr"}:
            raise ToolError('delegate needs exactly one task argument: expr (a string such as "(3 + 4)")')
        try:
            parse(expr)
        except ValueError as exc:
            raise ToolError(f"expr {expr[:80]!r} is not a valid expression: {exc}") from None
        return goal or f"Compute the value of {expr}. Finish with the number.", {"expr": expr}

    def score(self, ctx: NodeContext) -> float:
        """1.0 when the finish result equals the value of the node's own expression."""
        want = evaluate(parse(ctx.node.args["expr"]))
        got = ctx.node.result
        try:
            return float(int(str(got).strip()) == want)
        except ValueError:
            return 0.0

    @tool
    def calc(self, ctx: NodeContext, a: int, op: Literal["+", "-", "*"], b: int) -> str:
        """Apply one operator to two integers and return the result."""
        if max(abs(a), abs(b)) > 10**12:
            raise ToolError("numbers larger than 10**12 are not supported")
        return str(_OPS[op](a, b))

    def oracle(self, **kwargs: Any) -> ToyOracle:
        """A policy that delegates every compound operand and combines the results."""
        return ToyOracle()


class ToyOracle:
    """Scripted policy for Toy-v0: ``policy(observation, info) -> action text``.

    It reads only the structured ``info`` (:class:`~rao_envs.policies.base.NodeInfo`): the
    node's ``expr`` from ``node_args`` and its children's results from ``child_results``.
    A compound node delegates each compound operand, then applies its operator with ``calc``
    to the children's results (an operand whose child did not finish with an integer, e.g.
    a refused delegation, it evaluates itself) and finishes with the value it computed.
    """

    def __init__(self) -> None:
        self.memory: dict[str, dict[str, Any]] = {}

    def __call__(self, obs: Any, info: NodeInfo) -> str:
        """The next tool call of the node ``info`` describes (``obs`` is not read)."""
        node = info["node"]
        mem = self.memory.setdefault(node, {})
        expr = parse(info["node_args"]["expr"])
        if isinstance(expr, int):
            return Action.finish(expr).to_text()
        if "value" in mem:
            return Action.finish(mem["value"]).to_text()
        a, op, b = expr
        if "children" not in mem:
            mem["children"], calls = [], []
            for k, side in enumerate((a, b)):
                if not isinstance(side, int):
                    mem["children"].append((k, f"{node}.{len(calls)}"))
                    calls.append(Action(name="delegate", args={"expr": show(side)}).to_text())  # no goal: child_args writes it
            if calls:
                return "\n".join(calls)
        values = [a, b]
        for k, cid in mem["children"]:
            child = info["child_results"].get(cid)
            ok = child is not None and child["status"] == "finished"
            result = child["result"] if ok else None
            if isinstance(result, int) and not isinstance(result, bool):
                values[k] = result
            else:  # no integer back (a refused delegation never reports): compute that operand directly
                values[k] = evaluate((a, b)[k])
        mem["value"] = _OPS[op](values[0], values[1])
        return Action.tool("calc", a=values[0], op=op, b=values[1]).to_text()

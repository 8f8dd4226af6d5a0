"""Template-v0: copy me to write a new task (``rao-envs new-task NAME`` does the copying).

A task author writes only four things (MiniGrid-style); the engine does the rest:
  1. the generator  -> ``generate(rng)``: one seeded problem instance;
  2. the prompt     -> ``system_prompt`` (+ ``node_prompt`` if the default is not enough);
  3. the tools      -> methods decorated with ``@tool`` (typed args, first docstring line shown);
  4. the verifier   -> ``score(ctx)``: s in [0, 1] for a node that called finish.
Plus: the declared ``state_scope``, the ``difficulties``, what a parent may delegate
(``child_args``) and an ``oracle`` that solves every instance (the conformance suite checks
it reaches the maximum score). Register the task at the bottom and check it with
``rao-envs check Template-v0 --load path/to/this_file.py``. Describe your task in the
sections below, keeping their order (every built-in task's docstring has them).

## Description
Sum a list of integers (``args={"numbers": [...]}``, each 0-99). The oracle
(:class:`TemplateOracle`) splits a list longer than two in halves, delegates both, and
adds the two results.

## Tools
``add(a: int, b: int)``: adds two integers.

## Delegation
``delegate(numbers=[...])``: exactly one task argument, a non-empty list of integers; the
child's goal defaults to "Compute the sum of [...]. Finish with the number.".

## State scope
``isolated``: children share nothing with their parent.

## Rewards
Score 1.0 when the node's finish result equals the sum of its own numbers, else 0.0. Each
node's reward is the engine's local reward ``score + lam * mean(children's scores)``.

## Termination
A node ends when it calls ``finish`` or runs out of its 8 steps (truncated, score 0); the
episode ends when the root does. Limits: ``max_depth`` 4, ``max_steps_per_node`` 8,
``max_nodes`` 64.

## Difficulties
The list's length: ``easy`` 2 (default), ``medium`` 4, ``hard`` 8.

## Registered ids
``rao_envs/Template-v0``, once this file is imported (or loaded with ``--load``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rao_envs import Action, NodeContext, StateScope, Task, TaskInstance, ToolError, register_task, tool


class TemplateTask(Task):
    """Sum a list of integers, delegating halves of long lists."""

    name = "Template"  # the task id is f"{name}-v{version}"
    version = 0
    state_scope = StateScope.ISOLATED  # children share nothing with their parent
    difficulties = ("easy", "medium", "hard")
    default_difficulty = "easy"
    default_limits = {"max_depth": 4, "max_steps_per_node": 8, "max_nodes": 64}
    delegate_args_doc = ", numbers: list[int]"  # task args a parent passes to delegate
    # one example call per action for the system prompt (actions left out get placeholders)
    examples = {"add": {"a": 2, "b": 3}, "delegate": {"goal": "Sum 3 and 4", "numbers": [3, 4]}, "finish": {"result": 7}}
    system_prompt = (
        "You add up lists of integers. The add tool adds two integers. Split long lists in two "
        "halves, delegate each half with delegate(numbers=[...]), then add the two results."
    )

    # 1. generator -----------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """A list whose length grows with the difficulty."""
        length = {"easy": 2, "medium": 4, "hard": 8}[self.difficulty]
        numbers = [int(x) for x in rng.integers(0, 100, size=length)]
        return TaskInstance(goal=f"Compute the sum of {numbers}. Finish with the number.", args={"numbers": numbers})

    # what a parent may delegate: validate, and build the child's goal -------------------
    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``numbers``: a non-empty list of integers."""
        numbers = args.get("numbers")
        if set(args) != {"numbers"} or not isinstance(numbers, list) or not numbers:
            raise ToolError("delegate needs exactly one task argument: numbers (a non-empty list of integers)")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise ToolError("numbers must all be integers")
        return goal or f"Compute the sum of {numbers}. Finish with the number.", {"numbers": numbers}

    # 4. verifier ------------------------------------------------------------------------
    def score(self, ctx: NodeContext) -> float:
        """1.0 when the finish result equals the sum of the node's own numbers."""
        try:
            return float(int(str(ctx.node.result).strip()) == sum(ctx.node.args["numbers"]))
        except ValueError:
            return 0.0

    # 3. tools ---------------------------------------------------------------------------
    @tool
    def add(self, ctx: NodeContext, a: int, b: int) -> str:
        """Add two integers and return the sum."""
        return str(a + b)

    # oracle -----------------------------------------------------------------------------
    def oracle(self, **kwargs: Any) -> TemplateOracle:
        """Delegates both halves of any list longer than two, then adds the results."""
        return TemplateOracle()


class TemplateOracle:
    """Scripted policy: ``policy(observation, info) -> action text``.

    It reads only ``info`` (a ``NodeInfo``): the node's ``numbers`` from ``node_args`` and
    its children's results from ``child_results`` (a half whose child did not finish with
    an integer, e.g. a refused delegation, it adds up itself).
    """

    def __init__(self) -> None:
        self.memory: dict[str, dict[str, Any]] = {}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        """The next tool call of the node ``info`` describes."""
        node, numbers = info["node"], info["node_args"]["numbers"]
        mem = self.memory.setdefault(node, {})
        if len(numbers) == 1:
            return Action.finish(numbers[0]).to_text()
        if "sum" in mem:  # the add call went out last turn
            return Action.finish(mem["sum"]).to_text()
        half = len(numbers) // 2
        halves = (numbers[:half], numbers[half:])
        if len(numbers) == 2:
            a, b = numbers
        elif not mem.get("delegated"):
            mem["delegated"] = True
            return "\n".join(Action(name="delegate", args={"numbers": part}).to_text() for part in halves)
        else:
            results = [info["child_results"].get(f"{node}.{i}", {}).get("result") for i in range(2)]
            a, b = (r if isinstance(r, int) else sum(part) for r, part in zip(results, halves))
        mem["sum"] = a + b
        return Action.tool("add", a=a, b=b).to_text()


# 5. register: importing this file makes gymnasium.make("rao_envs/Template-v0") work ----
register_task("Template-v0", f"{__name__}:TemplateTask", source=__name__)

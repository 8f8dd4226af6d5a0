"""Template-v0: copy me to write a new task (``rao-envs new-task NAME`` does the copying).

A task author writes only four things (MiniGrid-style); the engine does the rest:
  1. the generator  -> ``generate(rng)``: one seeded problem instance;
  2. the prompt     -> ``system_prompt`` (+ ``node_prompt`` if the default is not enough);
  3. the tools      -> methods decorated with ``@tool`` (typed args, first docstring line shown);
  4. the verifier   -> ``score(ctx)``: s in [0, 1] for a node that called finish.
Plus: the declared ``state_scope``, the ``difficulties``, what a parent may delegate
(``child_args``) and an ``oracle`` that solves every instance (the conformance suite checks
it reaches the maximum score). Register the task at the bottom and check it with
``rao-envs check Template-v0 --load path/to/this_file.py``.

This example: sum a list of integers. The ``add`` tool adds two numbers; long lists are
split in halves and delegated to sub-agents.
"""

from __future__ import annotations

import re
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
    """Scripted policy: ``policy(observation, info) -> action text``."""

    _RESULT = re.compile(r"\[sub-agent (\S+) finished\] (-?\d+)")

    def __init__(self) -> None:
        self.memory: dict[str, dict[str, Any]] = {}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        text, node = obs["text"], info["node"]
        numbers = info["node_args"]["numbers"]
        mem = self.memory.setdefault(node, {"results": {}})
        mem["results"].update(self._RESULT.findall(text))
        if len(numbers) == 1:
            return Action.finish(numbers[0]).to_text()
        if mem.get("added"):
            return Action.finish(int(text.split()[0])).to_text()
        if len(numbers) == 2:
            mem["added"] = True
            return Action.tool("add", a=numbers[0], b=numbers[1]).to_text()
        if not mem.get("delegated"):
            mem["delegated"] = True
            half = len(numbers) // 2
            return "\n".join(Action(name="delegate", args={"numbers": part}).to_text() for part in (numbers[:half], numbers[half:]))
        mem["added"] = True
        a, b = (int(mem["results"][f"{node}.{i}"]) for i in range(2))
        return Action.tool("add", a=a, b=b).to_text()


# 5. register: importing this file makes gymnasium.make("rao_envs/Template-v0") work ----
register_task(f"{TemplateTask.name}-v{TemplateTask.version}", TemplateTask, source=__name__)

"""Shared fixtures: a small instrumented task for engine tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rao_envs
from rao_envs import Action, InfraError, NodeContext, StateScope, Task, TaskInstance, ToolError, tool


class ProbeTask(Task):
    """Finish with the word you were given. Tools exercise every failure path."""

    name = "Probe"
    state_scope = StateScope.SHARED
    default_limits = {"max_depth": 3, "max_steps_per_node": 5, "max_nodes": 32}
    delegate_args_doc = ", word: str"

    def generate(self, rng: np.random.Generator) -> TaskInstance:
        word = f"w{int(rng.integers(1000))}"
        return TaskInstance(goal=f"Say {word}", args={"word": word}, data={"log": []})

    def initial_state(self, instance: TaskInstance) -> Any:
        return {"log": []}

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]):
        if not isinstance(args.get("word"), str):
            raise ToolError("delegate needs word: str")
        return goal or f"Say {args['word']}", {"word": args["word"]}

    def snapshot(self, state: Any) -> Any:
        return {"log_len": len(state["log"])}

    def score(self, ctx: NodeContext) -> float:
        return float(ctx.node.result == ctx.node.args["word"])

    @tool
    def echo(self, ctx: NodeContext, text: str, times: int = 1) -> str:
        """Echo text."""
        ctx.state["log"].append(text)
        return text * times

    @tool
    def roll(self, ctx: NodeContext) -> str:
        """A random number from the node's own RNG."""
        return str(int(ctx.rng.integers(10**9)))

    @tool
    def oops(self, ctx: NodeContext) -> str:
        """Agent mistake."""
        raise ToolError("you did it wrong")

    @tool
    def boom(self, ctx: NodeContext) -> str:
        """Infrastructure failure."""
        raise InfraError("sandbox died")

    @tool
    def bug(self, ctx: NodeContext) -> str:
        """A bug in task code."""
        return str(1 // 0)

    def oracle(self, **kwargs: Any):
        """The root delegates one child first; every node then finishes with its word."""
        started: set[str] = set()

        def policy(obs: Any, info: dict[str, Any]) -> str:
            node, word = info["node"], info["node_args"]["word"]
            if node == "0" and node not in started:
                started.add(node)
                return call("delegate", word=word + "x")
            return call("finish", result=word)

        return policy


class ForkProbe(ProbeTask):
    name = "ForkProbe"
    state_scope = StateScope.FORK


class IsolatedProbe(ProbeTask):
    name = "IsolatedProbe"
    state_scope = StateScope.ISOLATED


def call(name: str, **args: Any) -> str:
    """An action in the tool protocol (the one formatter: :meth:`Action.to_text`)."""
    return Action(name=name, args=args).to_text()


rao_envs.register_task("Probe-v0", ProbeTask)
rao_envs.register_task("ForkProbe-v0", ForkProbe)
rao_envs.register_task("IsolatedProbe-v0", IsolatedProbe)


@pytest.fixture
def engine():
    """A reset engine on Probe-v0 (seed 0)."""
    eng = rao_envs.make_engine("Probe-v0")
    eng.reset(0)
    return eng

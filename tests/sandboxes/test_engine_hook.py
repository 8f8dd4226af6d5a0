"""Engine hook (issue 4 part 7, DESIGN §1.8): a sandbox failure during a node's tool call marks
that node ``infra_error``, the parent is told, and the episode goes on."""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Optional

import numpy as np
import pytest

import rao_envs
from conftest import SMALL, build
from rao_envs import Action, NodeContext, NodeStatus, StateScope, Task, TaskInstance, ToolError, tool
from rao_envs.sandboxes import Sandbox, SandboxPool


def call(name: str, **args: Any) -> str:
    """A tool-protocol action (the one formatter: :meth:`Action.to_text`)."""
    return Action(name=name, args=args).to_text()


class SandboxProbe(Task):
    """Finish with your word; a ``python`` tool runs code in a pooled sandbox."""

    name = "SandboxProbe"
    state_scope = StateScope.ISOLATED
    default_limits = {"max_depth": 2, "max_steps_per_node": 6, "max_nodes": 8}
    delegate_args_doc = ", word: str"
    pool: ClassVar[Optional[SandboxPool]] = None

    def generate(self, rng: np.random.Generator) -> TaskInstance:
        return TaskInstance(goal="Say hi", args={"word": "hi"})

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]):
        if not isinstance(args.get("word"), str):
            raise ToolError("delegate needs word: str")
        return goal or f"Say {args['word']}", {"word": args["word"]}

    def score(self, ctx: NodeContext) -> float:
        return float(ctx.node.result == ctx.node.args["word"])

    def box(self) -> Sandbox:
        """This episode's sandbox; a failed one goes back to the pool, which replaces it."""
        sb = getattr(self, "_sb", None)
        if sb is None or not sb.alive:
            if sb is not None:
                self.pool.release(sb)
            sb = self._sb = self.pool.acquire()
        return sb

    @tool
    def python(self, ctx: NodeContext, code: str) -> str:
        """Run Python code; variables persist between calls."""
        return self.box().run(code, timeout=20).raise_for_infra().observation()

    @tool
    def read(self, ctx: NodeContext, path: str) -> str:
        """Read a file the code wrote."""
        return self.box().get_file(path).decode(errors="replace")


@pytest.fixture
def registered():
    """Register the probe only for this test (the conformance suite iterates the registry)."""
    import gymnasium

    from rao_envs import registration

    rao_envs.register_task("SandboxProbe-v0", SandboxProbe)
    yield
    registration._REGISTRY.pop("SandboxProbe-v0", None)
    gymnasium.registry.pop(f"{registration.GYM_NAMESPACE}/SandboxProbe-v0", None)


@pytest.mark.parametrize("backend", ["local", "process"])
def test_sandbox_crash_marks_node_infra_error_and_episode_continues(backend, registered):
    build(backend)  # skip/fail with the reason if the backend is unavailable
    kw = dict(SMALL, warn=False) if backend == "process" else dict(SMALL)
    with SandboxPool(backend, size=1, max_size=2, **kw) as pool:
        SandboxProbe.pool = pool
        eng = rao_envs.make_engine("SandboxProbe-v0")
        eng.reset(0)
        eng.step("0", call("delegate", word="a") + call("delegate", word="b"))
        eng.step("0.0", call("python", code="x = 40\nx + 2"))
        assert "42" in eng.observe("0.0")

        task = eng.task
        killer = threading.Timer(0.5, lambda: task._sb.kill_worker())  # crash mid-run
        killer.start()
        eng.step("0.0", call("python", code="import time; time.sleep(30)"))
        killer.join()
        bad = eng.tree.nodes["0.0"]
        assert bad.status is NodeStatus.INFRA_ERROR, bad
        assert "sandbox" in (bad.error or "").lower()

        # the episode goes on: the sibling gets a fresh warm sandbox from the pool
        eng.step("0.1", call("python", code="print(6 * 7)"))
        assert "42" in eng.observe("0.1")
        eng.step("0.1", call("finish", result="b"))
        assert "0.0] failed because of an infrastructure error" in eng.observe("0")
        eng.step("0", call("finish", result="hi"))
        assert eng.tree.root.score == 1.0
        assert eng.tree.nodes["0.1"].status is NodeStatus.FINISHED
        assert pool.stats["replaced"] == 1
        task._sb and pool.release(task._sb)
        SandboxProbe.pool = None


@pytest.mark.parametrize("backend", ["local", "process"])
def test_agent_made_file_trouble_is_feedback_not_infra_error(backend, registered):
    """The agent turns the file the task reads into a FIFO (it used to stall get_file for 30 s
    and come back as an infrastructure error, masking the node): now it is the agent's error."""
    build(backend)
    kw = dict(SMALL, warn=False) if backend == "process" else dict(SMALL)
    with SandboxPool(backend, size=1, max_size=2, **kw) as pool:
        SandboxProbe.pool = pool
        eng = rao_envs.make_engine("SandboxProbe-v0")
        eng.reset(0)
        eng.step("0", call("python", code="import os; os.mkfifo('answer.txt')"))
        eng.step("0", call("read", path="answer.txt"))
        node = eng.tree.nodes["0"]
        assert node.status is not NodeStatus.INFRA_ERROR, node
        assert "refused" in eng.observe("0")
        eng.step("0", call("python", code="import os; os.unlink('answer.txt'); open('answer.txt', 'w').write('hi')"))
        eng.step("0", call("read", path="answer.txt"))
        assert "hi" in eng.observe("0")
        eng.step("0", call("finish", result="hi"))
        assert eng.tree.root.score == 1.0
        eng.task._sb and pool.release(eng.task._sb)
        SandboxProbe.pool = None

"""The ``code`` protocol on the ``docker`` backend (Podman's Docker-compatible socket; slow lane).

The same guarantees as in the local sandbox: the oracles reach max reward with every cell in
the container, a cell that kills its own REPL is the agent's mistake (feedback, a fresh REPL),
and a container that dies from outside is an ``infra_error`` of the node it served only.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

from rao_envs.policies.scripted import run_episode
from rao_envs.protocols import CodeOracle
from rao_envs.protocols.code import turn_text
from rao_envs.registration import make_engine
from rao_envs.types import NodeStatus

from conftest import build, docker_env

pytestmark = pytest.mark.slow


def _options() -> dict:
    env = docker_env()
    return {"backend": "docker", "image": env.get("RAO_SANDBOX_IMAGE", "localhost/rao-envs-sandbox:latest"),
            "cell_timeout": 5.0}


def cell(code: str) -> str:
    return turn_text(code, "test")


@pytest.mark.parametrize("env_id, difficulty", [("Toy-v0", "medium"), ("TextCraft-v0", "easy")])
def test_oracle_reaches_max_score_with_cells_in_a_container(env_id, difficulty):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(f"rao_envs/{env_id}", protocol="code", sandbox=_options(), difficulty=difficulty)
        try:
            for seed in (0, 1):
                tree, _, _ = run_episode(env, CodeOracle(env.unwrapped.task.oracle()), seed=seed)
                assert tree.root.score == 1.0, (env_id, seed)
        finally:
            env.close()


def test_cells_run_in_the_container_and_a_self_inflicted_crash_is_feedback():
    eng = make_engine("Toy-v0", protocol="code", sandbox=_options(), difficulty="easy")
    try:
        eng.reset(seed=0)
        eng.act(cell("x = 41\nimport socket\nprint(socket.gethostname())"))
        assert "sandbox" in eng.observe("0")  # the container's hostname, not the host's
        eng.act(cell("import os\nos._exit(3)"))
        text = eng.observe("0")
        assert "REPL was restarted" in text and eng.tree.root.status is NodeStatus.RUNNING
        eng.act(cell("print(x)"))
        assert "NameError" in eng.observe("0")  # a fresh REPL: the agent's variables are gone
        assert eng.tree.root.status is NodeStatus.RUNNING
    finally:
        eng.close()


def test_a_container_killed_from_outside_is_infra_error_of_that_node_only():
    box = build("docker", timeout=5).start()
    eng = make_engine("Toy-v0", protocol="code", sandbox=box, difficulty="easy")
    try:
        eng.reset(seed=0)
        eng.act(cell("rs = await asyncio.gather(launch_subagent(expr='(1 + 2)'), launch_subagent(expr='(3 * 4)'))"))
        eng.step("0.0", cell("x = 1"))
        box.container.kill()  # the host's container engine loses the box: not the agent's doing
        eng.step("0.0", cell("print(x)"))
        assert eng.tree.nodes["0.0"].status is NodeStatus.INFRA_ERROR
        assert eng.tree.root.status is NodeStatus.WAITING  # the episode goes on
        eng.step("0.1", cell("finish(12)"))  # a fresh box serves the sibling
        assert eng.tree.nodes["0.1"].status is NodeStatus.FINISHED
    finally:
        eng.close()
        box.stop()

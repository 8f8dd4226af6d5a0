"""User misuse of every public entry point raises a typed rao_envs error that names the fix."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

import rao_envs
import rao_envs.credit
import rao_envs.limiter
import rao_envs.policies
import rao_envs.rollout
import rao_envs.rows
import rao_envs.types
from rao_envs import EpisodeTree
from rao_envs.errors import RaoEnvsError


def _gym(**kw):
    return rao_envs.make("Toy-v0", **kw)


def _reset_gym():
    env = _gym()
    env.reset(seed=0)
    return env


def _par():
    env = rao_envs.parallel_env("Toy-v0")
    env.reset(seed=0)
    return env



CASES = {
    "make(None)": lambda: rao_envs.make(None),
    "make(42)": lambda: rao_envs.make(42),
    "make('')": lambda: rao_envs.make(""),
    "make unknown id": lambda: rao_envs.make("Nope-v0"),
    "make(lam='high')": lambda: rao_envs.make("Toy-v0", lam="high"),
    "make(lam=nan)": lambda: rao_envs.make("Toy-v0", lam=math.nan),
    "make(lam=inf)": lambda: rao_envs.make("Toy-v0", lam=math.inf),
    "make(max_depth=True)": lambda: rao_envs.make("Toy-v0", max_depth=True),
    "make(max_depth=-1)": lambda: rao_envs.make("Toy-v0", max_depth=-1),
    "make(max_depth='3')": lambda: rao_envs.make("Toy-v0", max_depth="3"),
    "make(max_depth=2.5)": lambda: rao_envs.make("Toy-v0", max_depth=2.5),
    "make(difficulty='nope')": lambda: rao_envs.make("Toy-v0", difficulty="nope"),
    "make(split='test')": lambda: rao_envs.make("Toy-v0", split="test"),
    "make(unknown kw)": lambda: rao_envs.make("Toy-v0", max_dpth=2),
    "make(reward_mode)": lambda: rao_envs.make("Toy-v0", reward_mode="best"),
    "make(render_mode)": lambda: rao_envs.make("Toy-v0", render_mode="rgb"),
    "make(protocol)": lambda: rao_envs.make("Toy-v0", protocol="json5"),
    "make_engine(None)": lambda: rao_envs.make_engine(None),
    "parallel_env(None)": lambda: rao_envs.parallel_env(None),
    "parallel_env(bad kw)": lambda: rao_envs.parallel_env("Toy-v0", nope=1),
    "task_spec(None)": lambda: rao_envs.task_spec(None),
    "register_task(bad id)": lambda: rao_envs.register_task("Bad", rao_envs.Task),
    "register_task(not a task)": lambda: rao_envs.register_task("NotATask-v0", 42),
    "reset(seed=1.5)": lambda: _gym().reset(seed=1.5),
    "reset(seed='1')": lambda: _gym().reset(seed="1"),
    "reset(seed=-1)": lambda: _gym().reset(seed=-1),
    "engine.reset(seed=1.5)": lambda: rao_envs.make_engine("Toy-v0").reset(1.5),
    "step before reset": lambda: _gym().step("x"),
    "engine.step before reset": lambda: rao_envs.make_engine("Toy-v0").step("0", "x"),
    "engine.step unknown node": lambda: _eng().step("9.9", "x"),
    "engine.observe unknown node": lambda: _eng().observe("9.9"),
    "engine.node_info unknown node": lambda: _eng().node_info("9.9"),
    "engine.commit unknown node": lambda: _eng().commit("9.9"),
    "parallel.step(str)": lambda: _par().step("node_0 <tool>{}</tool>"),
    "parallel.step(list)": lambda: _par().step(["x"]),
    "discrete.step(1.7)": lambda: _disc_env().step(1.7),
    "discrete.step('3')": lambda: _disc_env().step("3"),
    "discrete.step(None)": lambda: _disc_env().step(None),
    "discrete.step(nan)": lambda: _disc_env().step(math.nan),
    "discrete.step([1])": lambda: _disc_env().step([1]),
    "discrete.step(-0.5)": lambda: _disc_env().step(-0.5),
    "discrete.step(np.float32)": lambda: _disc_env().step(np.float32(2)),
    "discrete on a task without adapter": lambda: _discrete("Toy-v0"),
    "from_json(garbage)": lambda: EpisodeTree.from_json("garbage"),
    "from_json({})": lambda: EpisodeTree.from_json("{}"),
    "from_json(None)": lambda: EpisodeTree.from_json(None),
    "load_trees(missing)": lambda: rao_envs.types.load_trees("/nonexistent/trees.jsonl"),
    "load_trees(bad line)": lambda: rao_envs.types.load_trees(_bad_jsonl()),
    "save_trees(not trees)": lambda: rao_envs.types.save_trees([1, 2], "/tmp/rao_misuse.jsonl"),
    "assign_credit('abc')": lambda: rao_envs.credit.assign_credit("abc"),
    "assign_credit([1])": lambda: rao_envs.credit.assign_credit([1]),
    "assign_credit(method)": lambda: rao_envs.credit.assign_credit([_tree()], "best"),
    "assign_credit(lam=nan)": lambda: rao_envs.credit.assign_credit([_tree()], lam=math.nan),
    "rows_from_trees('abc')": lambda: rao_envs.rows.rows_from_trees("abc"),
    "to_rows(mode)": lambda: _tree().to_rows(mode="token"),
    "rollout(max_dpth=2)": lambda: asyncio.run(rao_envs.rollout.rollout("Toy-v0", lambda m: "x", 0, max_dpth=2)),
    "rollout(seeds='ab')": lambda: asyncio.run(rao_envs.rollout.rollout("Toy-v0", lambda m: "x", "ab")),
    "rollout(group_size=0)": lambda: asyncio.run(rao_envs.rollout.rollout("Toy-v0", lambda m: "x", 0, group_size=0)),
    "rollout(concurrency=0)": lambda: asyncio.run(rao_envs.rollout.rollout("Toy-v0", lambda m: "x", 0, concurrency=0)),
    "rollout(policy=None)": lambda: asyncio.run(rao_envs.rollout.rollout("Toy-v0", None, 0)),
    "OpenAIPolicy(no scheme)": lambda: rao_envs.policies.OpenAIPolicy("localhost:8000", "m"),
    "OpenAIPolicy(url None)": lambda: rao_envs.policies.OpenAIPolicy(None, "m"),
    "FairLimiter(0)": lambda: rao_envs.limiter.FairLimiter(0),
    "Action(name=None)": lambda: rao_envs.Action(name=None),
    "Limits(max_nodes=0)": lambda: rao_envs.Limits(max_nodes=0),
}


def _eng():
    eng = rao_envs.make_engine("Toy-v0")
    eng.reset(0)
    return eng


def _tree():
    eng = _eng()
    eng.step("0", rao_envs.Action.finish(1))
    return eng.tree


def _disc_env():
    import gymnasium as gym

    env = gym.make("rao_envs/TextCraftDiscrete-v0").unwrapped
    env.reset(seed=0)
    return env


def _discrete(tid):
    from rao_envs.views.discrete import DiscreteRaoEnv

    return DiscreteRaoEnv(tid)


def _bad_jsonl():
    import tempfile

    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    f.write(_tree().to_json() + "\nnot a tree\n")
    f.close()
    return f.name


@pytest.mark.parametrize("name", list(CASES))
def test_misuse_raises_a_typed_error(name):
    with pytest.raises(RaoEnvsError) as info:
        CASES[name]()
    assert str(info.value), "the message must say what to do"

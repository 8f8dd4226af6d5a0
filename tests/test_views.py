"""Gymnasium and PettingZoo views over the engine."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rao_envs
from rao_envs.errors import ConfigError, ResetNeededError
from rao_envs.types import NodeStatus
from tests.conftest import call


def test_gym_make_registers_namespace_and_reset_observation():
    env = gym.make("rao_envs/Probe-v0")
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["node"] == "0" and obs["depth"] == 0 and obs["budget"][0] == 5
    assert "steps left 5/5" in obs["text"] and info["messages"][0]["role"] == "system"
    assert rao_envs.make("Probe-v0").unwrapped.task_id == "Probe-v0"


def test_gym_active_node_switches_to_children_and_back():
    env = gym.make("rao_envs/Probe-v0").unwrapped
    obs, info = env.reset(seed=0)
    obs, r, term, trunc, info = env.step(call("delegate", word="a") + call("delegate", word="b"))
    assert (obs["node"], obs["depth"], r) == ("0.0", 1, 0.0)
    obs, r, term, trunc, info = env.step(call("finish", result="a"))
    assert obs["node"] == "0.1" and r == 1.0 and info["ended"] == ["0.0"] and info["rewards"] == {"0.0": 1.0}
    obs, r, term, trunc, info = env.step(call("finish", result="wrong"))
    assert obs["node"] == "0" and r == 0.0 and "[sub-agent 0.0 finished] a" in obs["text"]
    obs, r, term, trunc, info = env.step(call("finish", result=env.tree.root.args["word"]))
    assert term and not trunc and r == 1.0
    with pytest.raises(ResetNeededError):
        env.step("x")


def test_gym_root_reward_mode_and_truncation():
    env = gym.make("rao_envs/Probe-v0", reward_mode="root", max_steps_per_node=2).unwrapped
    env.reset(seed=0)
    env.step(call("delegate", word="a"))
    _, r, *_ = env.step(call("finish", result="a"))
    assert r == 0.0  # only the root's score counts in root mode
    _, r, term, trunc, _ = env.step(call("echo", text="x"))
    assert trunc and not term and r == 0.0 and env.tree.root.status is NodeStatus.TRUNCATED


def test_gym_bad_kwargs_are_typed_errors():
    with pytest.raises(ConfigError, match="reward_mode"):
        gym.make("rao_envs/Probe-v0", reward_mode="sum")
    with pytest.raises(ConfigError, match="render_mode"), pytest.warns(UserWarning, match="not in the possible render_modes"):
        gym.make("rao_envs/Probe-v0", render_mode="rgb_ary")  # gymnasium warns first, then we raise


def test_rgb_array_render_is_an_image():
    """SB3's make_vec_env asks for render_mode="rgb_array"; video recorders read it."""
    env = gym.make("rao_envs/Probe-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.min() < 255


def test_gym_observation_sanitised_into_space():
    env = gym.make("rao_envs/Probe-v0").unwrapped
    env.reset(seed=0)
    obs, *_ = env.step(call("echo", text="héllo ✓"))
    assert obs["text"].startswith("h?llo ?") and env.observation_space.contains(obs)
    assert "héllo ✓" in env.tree.root.transcript[-1]["content"]  # the transcript keeps the real text


def test_gym_render_ansi_shows_tree():
    env = gym.make("rao_envs/Probe-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(call("delegate", word="a"))
    text = env.render()
    assert "0.0 running" in text and "0 waiting" in text


def test_async_vector_env_needs_no_shared_memory():
    fns = [lambda: gym.make("rao_envs/Probe-v0") for _ in range(2)]
    venv = gym.vector.AsyncVectorEnv(fns, shared_memory=False)
    try:
        obs, _ = venv.reset(seed=[1, 2])
        assert all("steps left 5/5" in t for t in obs["text"])
        obs, *_ = venv.step([call("echo", text="abc"), call("echo", text="xyz")])
        assert obs["text"][0].startswith("abc") and obs["text"][1].startswith("xyz")
    finally:
        venv.close()


def test_parallel_agents_appear_wait_and_leave():
    env = rao_envs.parallel_env("Probe-v0")
    obs, infos = env.reset(seed=0)
    assert env.agents == ["node_0"] and infos["node_0"]["node_id"] == "0"
    assert env.observation_space("node_3") is env.observation_space("node_3")
    assert env.action_space("node_0") is env.action_space("node_0")
    obs, rew, term, trunc, infos = env.step({"node_0": call("delegate", word="a") + call("delegate", word="b")})
    assert env.agents == ["node_0", "node_1", "node_2"]
    assert infos["node_2"]["node_id"] == "0.1" and "waiting" in obs["node_0"]["text"]
    # the waiting root's action is a no-op
    obs, rew, term, trunc, infos = env.step({"node_0": "ignored", "node_1": call("finish", result="a"), "node_2": call("echo", text="x")})
    assert env.tree.root.steps_used == 1 and term["node_1"] and rew["node_1"] == 1.0
    assert env.agents == ["node_0", "node_2"]
    obs, rew, term, trunc, infos = env.step({"node_2": call("finish", result="b")})
    assert "[sub-agent 0.0 finished] a" in obs["node_0"]["text"] and env.agents == ["node_0"]
    obs, rew, term, trunc, infos = env.step({"node_0": call("finish", result=env.tree.root.args["word"])})
    assert term["node_0"] and env.agents == []


def test_parallel_root_end_cancels_everyone():
    env = rao_envs.parallel_env("Probe-v0")
    env.reset(seed=0)
    env.step({"node_0": call("delegate", word="a", wait=False)})
    obs, rew, term, trunc, infos = env.step({"node_0": call("finish", result="x"), "node_1": call("echo", text="y")})
    assert term["node_0"] and trunc["node_1"] and env.agents == []
    assert env.tree.nodes["0.0"].status is NodeStatus.CANCELLED and env.tree.nodes["0.0"].steps_used == 0
    with pytest.raises(ResetNeededError):
        env.step({})


def test_budget_observation_vector():
    env = gym.make("rao_envs/Probe-v0", tree_step_budget=20).unwrapped
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["budget"], np.array([5, 15], dtype=np.float32))


def test_async_shared_memory_refused_loudly_with_the_fix():
    """Gymnasium's shared memory reads Text once (all-zero text forever): our spaces refuse it and say the fix."""
    with pytest.raises(ValueError, match="shared_memory") as err:
        gym.make_vec("rao_envs/Probe-v0", num_envs=2, vectorization_mode="async")
    assert "vector_kwargs={'shared_memory': False}" in str(err.value.__cause__)


def _vector_oracle_run(mode: str, seeds: list[int]) -> list:
    from rao_envs.views.gym import unbatch_info

    kw = {"vector_kwargs": {"shared_memory": False}} if mode == "async" else {}
    envs = gym.make_vec("rao_envs/TextCraft-v0", num_envs=len(seeds), vectorization_mode=mode, difficulty="easy", **kw)
    probe = gym.make("rao_envs/TextCraft-v0", difficulty="easy").unwrapped
    oracles = [probe.task.oracle() for _ in seeds]
    trace = []
    try:
        obs, info = envs.reset(seed=seeds)
        done, solved = np.zeros(len(seeds), bool), np.zeros(len(seeds), bool)
        for _ in range(200):
            per_env = unbatch_info(info)
            assert len(per_env) == len(seeds)
            actions = [oracles[i]({"text": obs["text"][i], "node": obs["node"][i], "depth": int(obs["depth"][i])}, per_env[i])
                       if not done[i] else "" for i in range(len(seeds))]
            trace.append((tuple(obs["text"]), tuple(obs["node"])))
            obs, reward, term, trunc, info = envs.step(actions)
            trace.append(tuple(float(r) for r in reward))
            solved |= term & ~done
            done |= term | trunc
            if done.all():
                break
        assert solved.all(), "the oracle, fed unbatched infos, finishes every sub-env's root"
    finally:
        envs.close()
    return trace


def test_vector_envs_sync_and_async_identical_and_oracle_solves_via_unbatched_info():
    seeds = [0, 5]
    sync, async_ = _vector_oracle_run("sync", seeds), _vector_oracle_run("async", seeds)
    assert sync == async_
    assert all(t for t in sync[0][0])  # real text, not the empty shared-memory buffer


def test_unbatch_info_matches_each_single_env():
    from rao_envs.views.gym import unbatch_info

    envs = gym.make_vec("rao_envs/TextCraft-v0", num_envs=2, difficulty="medium")
    try:
        _, info = envs.reset(seed=[3, 4])
        per_env = unbatch_info(info)
    finally:
        envs.close()
    for seed, got in zip([3, 4], per_env):
        _, single = gym.make("rao_envs/TextCraft-v0", difficulty="medium").reset(seed=seed)
        for key in ("node", "depth", "goal", "steps_left", "node_args", "children", "refused"):
            assert got[key] == single[key], key
        assert isinstance(got["node_args"]["targets"], dict) and all(isinstance(v, int) for v in got["node_args"]["targets"].values())
    assert unbatch_info({}) == []

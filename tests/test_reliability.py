"""Reliability round 2 (engine and serialisation): agent input never crashes a step, every tree saves, no result is clipped away."""

from __future__ import annotations

import json
import math

import pytest

import rao_envs
from rao_envs import EpisodeTree, NodeStatus
from rao_envs.testing import check_tree_invariants
from rao_envs.types import load_trees, save_trees
from tests.conftest import call


def test_cancel_with_a_repeated_id_cancels_once_and_releases_budget_once():
    eng = rao_envs.make_engine("Probe-v0", tree_step_budget=40, max_steps_per_node=10)
    eng.reset(0)
    eng.step("0", call("delegate", word="a", wait=False))
    pool = eng.tree_budget_left
    eng.step("0", call("cancel", ids=["0.0", "0.0"]))
    assert eng.tree.nodes["0.0"].status is NodeStatus.CANCELLED
    assert eng.tree_budget_left == pool + eng.tree.nodes["0.0"].budget  # released once
    for bad in ([["0.0"]], [None], [1], "0.9"):
        eng.step("0", call("cancel", ids=bad))
        assert eng.observe("0").startswith("Error: cancel takes")
    check_tree_invariants(eng.tree)


NASTY = [float("nan"), float("inf"), -float("inf"), "a\ud800b", {"k\udfff": [1.5, float("nan")]}, (1, (2, 3))]


@pytest.mark.parametrize("result", NASTY, ids=repr)
def test_any_finish_result_saves_and_loads_back_equal(result, tmp_path):
    eng = rao_envs.make_engine("Probe-v0")
    eng.reset(0)
    eng.step("0", rao_envs.Action.finish(result))
    tree = eng.tree
    assert EpisodeTree.from_json(tree.to_json()) == tree
    save_trees([tree, tree], tmp_path / "t.jsonl")
    assert load_trees(tmp_path / "t.jsonl") == [tree, tree]
    json.dumps(tree.root.result, allow_nan=False)  # stored as strict JSON


def test_normalisation_is_documented_values():
    eng = rao_envs.make_engine("Probe-v0")
    eng.reset(0)
    eng.step("0", rao_envs.Action.finish({"x": [math.nan, math.inf, -math.inf, "\ud800"]}))
    assert eng.tree.root.result == {"x": ["NaN", "Infinity", "-Infinity", "\ufffd"]}


def test_deep_nesting_and_surrogate_text_save():
    deep = cur = []
    for _ in range(400):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    eng = rao_envs.make_engine("Probe-v0")
    eng.reset(0)
    eng.step("0", "\ud800 not a tool call \udfff")  # the model's own text, with lone surrogates
    eng.step("0", call("delegate", word="a", goal="g\ud800", context="c\udc00"))
    eng.step("0.0", rao_envs.Action.finish(deep))
    tree = eng.tree
    assert isinstance(tree.nodes["0.0"].result, list)  # kept as structure down to the depth cap
    assert EpisodeTree.from_json(tree.to_json()) == tree
    assert tree.nodes["0.0"].goal == "g\ufffd" and tree.nodes["0.0"].context == "c\ufffd"


def test_a_huge_turn_is_stored_capped_with_a_marker():
    eng = rao_envs.make_engine("Probe-v0")
    eng.reset(0)
    eng.step("0", "x" * 5_000_000)
    stored = eng.tree.root.transcript[-1]["content"]
    assert len(stored) < 40_000 and "truncated" in stored
    assert "characters long" in eng.observe("0")


def test_forty_parallel_results_are_all_delivered_within_the_limit():
    eng = rao_envs.make_engine("Probe-v0", max_nodes=64, max_obs_chars=2048)
    eng.reset(0)
    eng.step("0", "".join(call("delegate", word=f"w{i}", goal="G" * 190 + str(i)) for i in range(40)))
    for i in range(40):
        eng.step(f"0.{i}", call("finish", result=f"result-{i}"))
    text = eng.observe("0")
    assert len(text) <= 2048 and text.rstrip().endswith("]")  # the status line is never cut
    shown = [i for i in range(40) if f"[sub-agent 0.{i} finished] result-{i}" in text]
    later = "arrive with your next observation" in text
    assert shown and (len(shown) == 40 or later)
    eng.commit("0")
    delivered = sum(eng.tree.nodes[f"0.{i}"].delivered for i in range(40))
    assert delivered == len(shown)  # counts only what the parent saw
    seen = set(shown)
    for _ in range(10):  # the rest come with the next observations
        if len(seen) == 40:
            break
        eng.step("0", call("echo", text="next"))
        text = eng.commit("0")[-1]["content"]
        assert len(text) <= 2048
        seen |= {i for i in range(40) if f"[sub-agent 0.{i} finished] result-{i}" in text}
    assert seen == set(range(40))
    assert all(eng.tree.nodes[f"0.{i}"].delivered == 1 for i in range(40))
    check_tree_invariants(eng.tree)


def test_long_parts_are_cut_fairly_with_markers():
    eng = rao_envs.make_engine("Probe-v0", max_obs_chars=1024)
    eng.reset(0)
    eng.step("0", call("delegate", word="a") + call("delegate", word="b"))
    eng.step("0.0", call("finish", result="A" * 3000))
    eng.step("0.1", call("finish", result="short"))
    text = eng.observe("0")
    assert len(text) <= 1024 and "[sub-agent 0.1 finished] short" in text
    assert "[sub-agent 0.0 finished] AAA" in text and "truncated" in text


def test_waiting_note_stays_inside_the_space():
    eng = rao_envs.make_engine("Probe-v0", max_nodes=200, max_obs_chars=256)
    eng.reset(0)
    eng.step("0", "".join(call("delegate", word=f"w{i}") for i in range(120)))
    assert eng.tree.root.status is NodeStatus.WAITING
    assert len(eng.observe("0")) <= 256


def test_deep_node_ids_stay_inside_the_node_space():
    env = rao_envs.make("Probe-v0", max_depth=200, max_nodes=300).unwrapped
    obs, info = env.reset(seed=0)
    for _ in range(150):
        obs, *_ = env.step(call("delegate", word="w"))
    assert obs["depth"] == 150 and len(obs["node"]) > 256
    assert env.observation_space.contains(obs)


def test_discrete_view_accepts_exactly_integers():
    import gymnasium as gym
    import numpy as np

    env = gym.make("rao_envs/TextCraftDiscrete-v0").unwrapped
    env.reset(seed=0)
    for ok in (1, np.int64(2), np.array(1)):  # get_info, view_inventory: the episode goes on
        env.step(ok)
    _, _, _, _, info = env.step(10_000)  # an integer out of range: an agent mistake, one step
    assert info["invalid_action"]
    for bad in (1.7, "3", -0.5, None, [1], True, float("nan"), np.float32(2.0)):
        with pytest.raises(rao_envs.errors.ActionTypeError, match="integer action"):
            env.step(bad)

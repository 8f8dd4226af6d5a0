"""TextCraft-v0: recipe world, instances, tools, shared inventory, verifier and oracles."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

import rao_envs
from rao_envs import Action, NodeStatus, make_engine
from rao_envs.envs.textcraft import (
    CROSS_ITEMS,
    DEPTHS,
    MAX_COUNT,
    TextCraftSynth,
    _build_world,
    get_world,
    parse_targets,
)

ENV = "rao_envs/TextCraft-v0"


def make(**kwargs):
    """The unwrapped Gymnasium env (no checker/order wrappers)."""
    return gymnasium.make(ENV, **kwargs).unwrapped


def run(env, policy, seed):
    """Play one episode of the Gymnasium view; return the finished tree."""
    obs, info = env.reset(seed=seed)
    for _ in range(100_000):
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree
    raise AssertionError("episode did not end")


def run_engine(engine, policy, seed, order="random", rng_seed=0):
    """Drive the engine directly with another scheduling order of the runnable nodes."""
    rng = np.random.default_rng(rng_seed)
    engine.reset(seed)
    while not engine.done:
        runnable = engine.runnable()
        nid = {"random": lambda: runnable[int(rng.integers(len(runnable)))], "oldest": lambda: runnable[0]}[order]()
        engine.step(nid, policy(engine.observe(nid), engine.node_info(nid)))
    return engine.tree


def call(name, **args):
    return Action.tool(name, **args).to_text()


def act(env, action):
    """Step and return (observation text, info); the episode must still be running."""
    obs, _r, term, trunc, info = env.step(action)
    assert not (term or trunc)
    return obs["text"], info


def assert_all_nodes_solved(tree):
    bad = {n.id: (n.status.value, n.score) for n in tree.nodes.values() if n.score != 1.0}
    assert tree.root.status is NodeStatus.FINISHED and tree.root.score == 1.0, bad
    assert not bad, bad


# ---------------------------------------------------------------------------------- world
def test_world_is_deterministic_and_cached():
    w = get_world()
    assert get_world() is w
    again = _build_world(w.seed, 8, 6)
    assert again.recipes == w.recipes and again.val_items == w.val_items
    assert _build_world(w.seed + 1, 8, 6).recipes != w.recipes


def test_world_shape_and_recipe_depth_equals_tier():
    w = get_world()
    assert len(w.base) == 30 and all(w.is_base(b) for b in w.base)
    assert {"m0_ore", "c0_ore", "raw_o0", "raw_a0", "raw_t0"} <= set(w.base)
    assert set(CROSS_ITEMS) <= set(w.recipes)
    for item, recipe in w.recipes.items():
        t = w.tier[item]
        assert w.depth[item] == t, item
        tiers = [w.tier[i] for i, _ in recipe.ingredients]
        assert max(tiers) == t - 1 and min(tiers) >= 0, item
        n = len(recipe.ingredients)
        if item in CROSS_ITEMS:  # one ingredient from each of its domains
            assert n == len(CROSS_ITEMS[item][1]) and {w.domain[i] for i, _ in recipe.ingredients} == set(CROSS_ITEMS[item][1])
        else:  # same-domain ingredients, at most one from another domain (tier >= 4)
            assert (1 <= n <= 2) if t == 1 else (n == 2) if t <= 7 else (2 <= n <= 3) if t <= 11 else (3 <= n <= 4)
            assert sum(w.domain[i] != w.domain[item] for i, _ in recipe.ingredients) <= (1 if t >= 4 else 0)
            assert all(w.tier[i] >= t - 2 for i, _ in recipe.ingredients if w.domain[i] == w.domain[item])
        assert recipe.result_count in {1: (2, 3, 4), 2: (2, 3)}.get(t, (1, 2) if t <= 5 else (1,))
        assert all(q in ((1, 2) if t <= 4 else (1,)) for _, q in recipe.ingredients)
    assert max(w.depth.values()) == 12
    assert w.by_tier[1][0] == "a0_i1" and "m5_i3" in w.recipes


def test_train_val_split_by_item_is_disjoint_and_80_20():
    w = get_world()
    for t in range(1, 13):
        train, val = w.split_items("train", [t]), w.split_items("val", [t])
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(w.by_tier[t])
        assert 0.15 <= len(val) / (len(train) + len(val)) <= 0.25
    for split in ("train", "val"):
        task = TextCraftSynth("hard", split=split)
        targets = {next(iter(task.generate(np.random.default_rng(s)).args["targets"])) for s in range(40)}
        assert all((t in w.val_items) == (split == "val") for t in targets)


# ---------------------------------------------------------------------------------- instances
@pytest.mark.parametrize("difficulty", list(DEPTHS))
def test_instances_deterministic_solvable_and_in_depth_range(difficulty):
    task, w = TextCraftSynth(difficulty), get_world()
    lo, hi = DEPTHS[difficulty]
    depths = set()
    for seed in range(30):
        inst = task.generate(np.random.default_rng(seed))
        assert inst == task.generate(np.random.default_rng(seed))
        json.dumps(inst.model_dump())
        ((target, count),) = inst.args["targets"].items()
        assert inst.goal == f"Craft the following items: {count}x {target}"
        assert lo <= w.depth[target] <= hi and 1 <= count <= MAX_COUNT[difficulty]
        depths.add(w.depth[target])
        inv = inst.data["inventory"]
        assert all(w.is_base(i) and n > 0 for i, n in inv.items())
        need = w.base_needs(target, count)
        assert all(inv.get(b, 0) >= n for b, n in need.items())
        assert all(inv[b] <= n + n // 2 for b, n in need.items())  # buffer at most 50%
        assert 1 <= len(set(inv) - set(need)) <= 3  # distractors
        assert task.solvable(inst.args["targets"], inv)
    assert depths == set(range(lo, hi + 1))
    assert task.generate(np.random.default_rng(1)) != task.generate(np.random.default_rng(2))


def test_base_needs_bound_the_aggregated_plan():
    w, task = get_world(), TextCraftSynth("extreme")
    for item in w.by_tier[11][:10]:
        need = w.base_needs(item, 2)
        assert task.solvable({item: 2}, need)


# ---------------------------------------------------------------------------------- tools
def test_tools_report_and_craft():
    env = make(difficulty="easy")
    env.reset(seed=3)
    ctx = env.engine.context("0")
    w = env.task.world
    ((target, count),) = ctx.node.args["targets"].items()
    text, _ = act(env, call("get_info", items=[target, "m0_ore", "nope_i9"]))
    info = json.loads(text.split("\n\n[node")[0])
    assert info[0]["item"] == target and info[0]["can_craft"] and info[0]["crafting_depth"] == w.depth[target]
    assert info[0]["recipes"][0]["result_count"] == w.recipes[target].result_count
    assert info[1]["is_base"] and not info[1]["can_craft"] and info[1]["recipes"] == []
    assert info[2]["error"] == "unknown item"
    text, _ = act(env, call("view_inventory"))
    assert json.loads(text.split("\n\n[node")[0]) == {k: v for k, v in ctx.state.items() if v}
    item, total = w.plan({target: count})[0]
    recipe = w.recipes[item]
    before = dict(ctx.state)
    text, _ = act(env, call("craft", ingredients=recipe.as_dict(total // recipe.result_count), target=[item, total]))
    assert text.startswith(f"Crafted {total}x {item}")
    assert ctx.state[item] == before.get(item, 0) + total
    assert all(ctx.state[i] == before[i] - q for i, q in recipe.as_dict(total // recipe.result_count).items())


def test_bad_crafts_are_feedback_not_exceptions():
    env = make(difficulty="medium")
    env.reset(seed=0)
    w, ctx = env.task.world, env.engine.context("0")
    item = "m1_i2"
    r = w.recipes[item]
    good = r.as_dict(1)
    wrong_qty = {k: v + 1 for k, v in good.items()}
    cases = {
        "wrong ingredients": (call("craft", ingredients=wrong_qty, target=[item, r.result_count]), "wrong ingredients"),
        "extra ingredient": (call("craft", ingredients={**good, "raw_o0": 1}, target=[item, r.result_count]), "not an ingredient"),
        "not a multiple": (call("craft", ingredients=good, target=[item, r.result_count + 1]), "not a multiple"),
        "unknown item": (call("craft", ingredients=good, target=["m1_i99", 1]), "unknown item"),
        "base item": (call("craft", ingredients={}, target=["m0_ore", 1]), "base item"),
        "zero": (call("craft", ingredients=good, target=[item, 0]), "positive"),
        "negative": (call("craft", ingredients=good, target=[item, -3]), "positive"),
        "huge": (call("craft", ingredients=good, target=[item, 10**30]), "too large"),
        "fraction": (call("craft", ingredients=good, target=[item, 1.5]), "positive integer"),
        "bad target shape": (call("craft", ingredients=good, target=[item]), "[item, total_count]"),
        "bad types": (call("craft", ingredients="m0_ore", target=[item, 1]), "bad arguments"),
        "missing arg": (call("craft", ingredients=good), "bad arguments"),
        "get_info empty": (call("get_info", items=[]), "non-empty"),
        "get_info types": (call("get_info", items=[1e309]), "bad arguments"),
    }
    for name, (action, expect) in cases.items():
        before = dict(ctx.state)
        text, _ = act(env, action)
        assert text.startswith("Error:") and expect in text, (name, text)
        assert ctx.state == before, name
    # not enough ingredients: a legal recipe call the inventory cannot pay for
    far = "m1_i9"
    r9 = w.recipes[far]
    text, _ = act(env, call("craft", ingredients=r9.as_dict(1), target=[far, r9.result_count]))
    assert text.startswith("Error: not enough ingredients") and "need" in text
    # the message says what the recipe needs
    text, _ = act(env, call("craft", ingredients=wrong_qty, target=[item, r.result_count]))
    assert all(f"{k}: {v}" in text for k, v in good.items())
    assert env.tree.root.status is NodeStatus.RUNNING


def test_fuzzed_tool_args_never_raise():
    env = make(difficulty="hard", max_steps_per_node=200)
    env.reset(seed=1)
    junk = [None, -1, 0, 10**40, "x", [], {}, [[1]], {"a": -2}, True, 2.5, ["m1_i2", "2"], ["m1_i2", True]]
    for j in junk:
        for action in (call("craft", ingredients=j, target=j), call("craft", ingredients={"m0_ore": j}, target=["m1_i1", j]),
                       call("get_info", items=j), call("view_inventory", extra=j)):
            obs, _r, term, trunc, _info = env.step(action)
            assert not (term or trunc) and env.observation_space.contains(obs)
    assert env.tree.root.status is NodeStatus.RUNNING and env.tree.root.error is None


# ---------------------------------------------------------------------------------- delegation
def test_goal_text_parsing_and_child_args():
    assert parse_targets("Craft the following items: 2x m3_i4, 1x c2_i2") == {"m3_i4": 2, "c2_i2": 1}
    assert parse_targets("Craft 2x m3_i4") == {"m3_i4": 2}
    assert parse_targets("make something") == {}
    task = TextCraftSynth()
    ctx = None
    assert task.child_args(ctx, "Craft 2x m3_i4", {}) == ("Craft 2x m3_i4", {"targets": {"m3_i4": 2}})
    assert task.child_args(ctx, "", {"targets": {"m3_i4": 2}}) == (
        "Craft the following items: 2x m3_i4", {"targets": {"m3_i4": 2}})
    assert task.child_args(ctx, "go", {"targets": {"m3_i4": 2.0}})[1] == {"targets": {"m3_i4": 2}}
    bad = [
        ("", {}, "give the sub-agent its targets"),
        ("x", {"targets": {"m0_ore": 1}}, "base item"),
        ("x", {"targets": {"zz_i4": 1}}, "not an item"),
        ("x", {"targets": {"m3_i4": 0}}, "integer from 1"),
        ("x", {"targets": {"m3_i4": -1}}, "integer from 1"),
        ("x", {"targets": {"m3_i4": 10**9}}, "integer from 1"),
        ("x", {"targets": {"m3_i4": True}}, "integer from 1"),
        ("x", {"targets": ["m3_i4"]}, "non-empty object"),
        ("x", {"targets": {}}, "non-empty object"),
        ("x", {"targets": {"m3_i4": 1}, "count": 2}, "unknown delegate argument"),
    ]
    for goal, args, msg in bad:
        with pytest.raises(rao_envs.ToolError, match=msg):
            task.child_args(ctx, goal, args)


def test_shared_inventory_and_spawn_snapshot_verifier():
    env = make(difficulty="medium")
    env.reset(seed=0)
    engine, w = env.engine, env.task.world
    root = engine.context("0")
    item = "m1_i1"  # a tier-1 item: base ingredients only
    r = w.recipes[item]
    for base, q in r.ingredients:
        root.state[base] = root.state.get(base, 0) + 10 * q
    root.state[item] = 5  # already held when the child spawns
    text, _ = act(env, Action.delegate("", targets={item: r.result_count}))
    assert "Started sub-agent 0.0" in text or env.tree.nodes["0.0"]
    child = engine.context("0.0")
    assert child.state is root.state  # shared by reference
    assert child.node.spawn_snapshot[item] == 5
    assert child.node.goal == f"Craft the following items: {r.result_count}x {item}"
    assert f"In the inventory now: {item}: 5" in engine.tree.nodes["0.0"].transcript[1]["content"]
    # the child finishing without crafting scores 0 although the item is in the inventory
    text, info = act(env, call("craft", ingredients=r.as_dict(1), target=[item, r.result_count]))
    assert info["node"] == "0.0" or text
    assert root.state[item] == 5 + r.result_count  # the parent sees the child's craft
    env.step(Action.finish("done"))
    assert engine.tree.nodes["0.0"].score == 1.0
    # a second child asked for the same item but crafting nothing fails
    env.step(Action.delegate("", targets={item: 1}))
    env.step(Action.finish("nothing"))
    assert engine.tree.nodes["0.1"].status is NodeStatus.FINISHED and engine.tree.nodes["0.1"].score == 0.0


def test_delegation_refusals_are_feedback():
    env = make(difficulty="medium")
    env.reset(seed=0)
    for args in ({"targets": {"m0_ore": 1}}, {"targets": {"nope": 1}}, {}, {"targets": {"m3_i4": -1}}):
        text, _ = act(env, Action.delegate("", **args))
        assert text.startswith("Refused:"), text
    assert len(env.tree.nodes) == 1


# ---------------------------------------------------------------------------------- oracles
@pytest.mark.parametrize(
    "difficulty,max_depth,seeds",
    [("easy", 6, range(5)), ("medium", 6, range(8)), ("hard", 6, range(8)),
     ("extreme", TextCraftSynth.recommended_max_depth["extreme"], range(3))],
)
def test_delegating_oracle_solves_every_node(difficulty, max_depth, seeds):
    for split in ("train", "val"):
        env = make(difficulty=difficulty, split=split, max_depth=max_depth)
        for seed in seeds:
            tree = run(env, env.task.oracle(), seed)
            assert_all_nodes_solved(tree)
            assert max(n.depth for n in tree.nodes.values()) <= max_depth
            assert all(n.steps_used <= 25 for n in tree.nodes.values())
            if difficulty in ("hard", "extreme"):
                assert len(tree.nodes) > 1


def test_delegating_oracle_is_race_free_under_other_schedules():
    """Parallel subtrees share one inventory; any order of the nodes still scores 1.0 everywhere."""
    for difficulty, max_depth, seeds in (("hard", 6, range(6)), ("extreme", 7, range(2))):
        engine = make_engine("TextCraft-v0", difficulty=difficulty, max_depth=max_depth)
        for seed in seeds:
            for order in ("random", "oldest"):
                assert_all_nodes_solved(run_engine(engine, engine.task.oracle(), seed, order, rng_seed=seed))


def test_extreme_needs_more_depth_than_default():
    env = make(difficulty="extreme")  # default max_depth 6
    results = [run(env, env.task.oracle(), s).root.score for s in range(6)]
    assert 0.0 in results


def test_flat_oracle_solves_easy_but_not_hard():
    env = make(difficulty="easy")
    for seed in range(5):
        tree = run(env, env.task.oracle(delegate=False), seed)
        assert len(tree.nodes) == 1 and tree.root.score == 1.0
    env = make(difficulty="hard")
    for seed in range(5):
        tree = run(env, env.task.oracle(delegate=False), seed)
        assert len(tree.nodes) == 1
        assert tree.root.status is NodeStatus.TRUNCATED and tree.root.score == 0.0


def test_oracle_reads_max_depth_and_respects_it():
    env = make(difficulty="hard", max_depth=1)
    tree = run(env, env.task.oracle(), 0)  # depth 1 is not enough: children run out of steps
    assert max(n.depth for n in tree.nodes.values()) == 1
    assert tree.root.score == 0.0


def test_prompts_are_ascii_and_list_tools():
    env = make()
    obs, info = env.reset(seed=0)
    system = info["messages"][0]["content"]
    assert system.isascii() and obs["text"].isascii()
    for name in ("get_info", "view_inventory", "craft", "targets: dict[str, int]", "parallel"):
        assert name in system
    assert obs["text"].startswith("# Task\nCraft the following items: ")


def test_depth_benchmark_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "textcraft_depth.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Root success rate" in proc.stdout and "extreme: smallest max_depth solving every seed: 7" in proc.stdout

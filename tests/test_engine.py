"""Engine behaviour: delegation, parallel children, wait/cancel, refusals, budgets, failures."""

from __future__ import annotations

import pytest

import rao_envs
from rao_envs import Action, EpisodeTree, NodeStatus
from rao_envs.errors import ConfigError, NodeNotActiveError, ResetNeededError, UnknownTaskError
from rao_envs.testing import check_tree_invariants
from tests.conftest import call


def finish_all(eng):
    """Let every runnable node finish with its own word (deepest first)."""
    while not eng.done:
        nid = sorted(eng.runnable(), key=lambda i: -i.count("."))[0]
        eng.step(nid, call("finish", result=eng.tree.nodes[nid].args["word"]))


def test_finish_scores_and_ends_episode(engine):
    word = engine.tree.root.args["word"]
    out = engine.step("0", call("finish", result=word))
    assert out.ended == ["0"] and engine.done
    root = engine.tree.root
    assert root.status is NodeStatus.FINISHED and root.score == 1.0 and root.reward == 1.0
    check_tree_invariants(engine.tree)


def test_wrong_result_scores_zero(engine):
    engine.step("0", call("finish", result="nope"))
    assert engine.tree.root.score == 0.0


def test_delegate_waits_and_delivers_result_once(engine):
    engine.step("0", call("delegate", goal="say hi", word="hi"))
    root, child = engine.tree.nodes["0"], engine.tree.nodes["0.0"]
    assert root.status is NodeStatus.WAITING and child.depth == 1 and child.parent == "0"
    assert engine.runnable() == ["0.0"]
    assert child.goal == "say hi" and child.args == {"word": "hi"}
    engine.step("0.0", call("finish", result="hi"))
    assert root.status is NodeStatus.RUNNING
    text = engine.observe("0")
    assert "[sub-agent 0.0 finished] hi" in text and "Started sub-agent 0.0" in text
    assert child.delivered == 0  # observing is a pure query
    engine.commit("0")
    engine.commit("0")
    assert child.delivered == 1  # committing twice does not deliver twice
    assert engine.tree.nodes["0"].transcript[-1]["content"] == text  # what was shown is what was written
    finish_all(engine)
    check_tree_invariants(engine.tree)


def test_parallel_children_in_one_turn_and_fair_order(engine):
    engine.step("0", call("delegate", word="a") + call("delegate", word="b") + call("delegate", word="c"))
    assert engine.tree.root.children == ["0.0", "0.1", "0.2"]
    order = []
    for _ in range(6):
        order.append(engine.selection)
        out = engine.act(call("echo", text="x"))
        assert out.node == order[-1] and out.next == engine.selection
    assert order == ["0.0", "0.1", "0.2", "0.0", "0.1", "0.2"]


def test_only_delegate_may_repeat(engine):
    engine.step("0", call("echo", text="a") + call("echo", text="b"))
    assert "one tool call per turn" in engine.observe("0")
    assert engine.tree.root.steps_used == 1


def test_no_wait_then_wait_next_and_cancel(engine):
    engine.step("0", call("delegate", word="a", wait=False) + call("delegate", word="b", wait=False))
    assert engine.tree.root.status is NodeStatus.RUNNING
    assert "use wait" in engine.observe("0")
    engine.step("0", call("wait", ids="next"))
    assert engine.tree.root.status is NodeStatus.WAITING
    engine.step("0.1", call("finish", result="b"))
    assert engine.tree.root.status is NodeStatus.RUNNING
    assert "[sub-agent 0.1 finished] b" in engine.observe("0")
    engine.step("0", call("cancel", id="0.0"))
    assert engine.tree.nodes["0.0"].status is NodeStatus.CANCELLED
    assert "Cancelled" in engine.observe("0")
    engine.step("0", call("cancel", id="0.0"))
    assert "Error: cancel takes" in engine.observe("0")
    engine.step("0", call("finish", result=engine.tree.root.args["word"]))
    check_tree_invariants(engine.tree)


def test_parent_finishing_cancels_open_children(engine):
    engine.step("0", call("delegate", word="a", wait=False))
    engine.step("0.0", call("delegate", word="b", wait=False))
    engine.step("0", call("finish", result="x"))
    statuses = {n.id: n.status for n in engine.tree.nodes.values()}
    assert statuses == {"0": NodeStatus.FINISHED, "0.0": NodeStatus.CANCELLED, "0.0.0": NodeStatus.CANCELLED}
    check_tree_invariants(engine.tree)


def test_depth_refusal_is_an_observation():
    eng = rao_envs.make_engine("Probe-v0", max_depth=1)
    eng.reset(1)
    eng.step("0", call("delegate", word="a"))
    eng.step("0.0", call("delegate", word="b"))
    text = eng.observe("0.0")
    assert text.startswith("Refused: the maximum depth") and "do the task yourself" in text
    assert eng.tree.nodes["0.0"].steps_used == 1 and len(eng.tree.nodes) == 2
    assert "cannot delegate" in eng.tree.nodes["0.0"].transcript[1]["content"]


def test_bad_delegate_args_refused_atomically():
    engine = rao_envs.make_engine("Probe-v0", max_steps_per_node=10)
    engine.reset(0)
    engine.step("0", call("delegate", word="a") + call("delegate", goal="x"))
    assert "Refused: delegate #2: delegate needs word" in engine.observe("0")
    assert len(engine.tree.nodes) == 1
    for bad in ({"word": "a", "budget": 0}, {"word": "a", "budget": "3"}, {"word": "a", "wait": "yes"}, {"word": "a", "goal": 3}):
        engine.step("0", call("delegate", **bad))
        assert engine.observe("0").startswith("Refused:")
    assert len(engine.tree.nodes) == 1


def test_children_per_turn_and_node_limits():
    eng = rao_envs.make_engine("Probe-v0", max_children_per_turn=2, max_nodes=3)
    eng.reset(0)
    eng.step("0", "".join(call("delegate", word=w) for w in "abc"))
    assert "at most 2 sub-agents per turn" in eng.observe("0")
    eng.step("0", call("delegate", word="a", wait=False) + call("delegate", word="b", wait=False))
    eng.step("0", call("delegate", word="c"))
    assert "node limit" in eng.observe("0")


def test_step_budget_truncates_node_and_parent_is_told():
    eng = rao_envs.make_engine("Probe-v0", max_steps_per_node=3)
    eng.reset(0)
    eng.step("0", call("delegate", word="a"))
    for _ in range(3):
        eng.step("0.0", call("echo", text="z"))
    child = eng.tree.nodes["0.0"]
    assert child.status is NodeStatus.TRUNCATED and child.score == 0.0 and child.steps_used == 3
    assert "did not finish before its step budget" in eng.observe("0")
    assert "steps left 2/3" in eng.observe("0")
    eng.step("0", call("echo", text="z"))
    eng.step("0", call("echo", text="z"))
    assert eng.done and eng.tree.root.status is NodeStatus.TRUNCATED
    check_tree_invariants(eng.tree)


def test_requested_child_budget_is_capped():
    eng = rao_envs.make_engine("Probe-v0", max_steps_per_node=4)
    eng.reset(0)
    eng.step("0", call("delegate", word="a", budget=2) + call("delegate", word="b", budget=99))
    assert eng.tree.nodes["0.0"].budget == 2 and eng.tree.nodes["0.1"].budget == 4


def test_tree_budget_reserve_and_release():
    eng = rao_envs.make_engine("Probe-v0", tree_step_budget=12, max_steps_per_node=5)
    eng.reset(0)
    assert eng.tree_budget_left == 7  # the root reserved its 5
    eng.step("0", call("delegate", word="a", budget=4))
    assert eng.tree_budget_left == 3 and "tree budget left 3" in eng.observe("0.0")
    eng.step("0.0", call("delegate", word="b", budget=4))
    assert "not enough tree budget" in eng.observe("0.0")
    eng.step("0.0", call("finish", result="a"))  # used 2 of 4: 2 come back
    assert eng.tree_budget_left == 5
    check_tree_invariants(eng.tree)


def test_tool_error_is_feedback_and_costs_a_step():
    engine = rao_envs.make_engine("Probe-v0", max_steps_per_node=10)
    engine.reset(0)
    engine.step("0", call("oops"))
    assert engine.observe("0").startswith("Error: you did it wrong")
    engine.step("0", call("echo", text=5))
    assert "bad arguments for echo(text: str, times: int = 1)" in engine.observe("0")
    engine.step("0", call("nope"))
    assert "unknown tool 'nope'" in engine.observe("0")
    engine.step("0", "I think I will craft now")
    assert "could not find a JSON tool call" in engine.observe("0")
    assert engine.tree.root.steps_used == 4


@pytest.mark.parametrize("tool_name, marker", [("boom", "sandbox died"), ("bug", "ZeroDivisionError")])
def test_infra_failure_marks_node_and_episode_goes_on(engine, tool_name, marker):
    engine.step("0", call("delegate", word="a") + call("delegate", word="b"))
    engine.step("0.0", call(tool_name))
    bad = engine.tree.nodes["0.0"]
    assert bad.status is NodeStatus.INFRA_ERROR and marker in bad.error
    assert bad.score is None and bad.reward is None and bad.masked
    engine.step("0.1", call("finish", result="b"))
    assert "0.0] failed because of an infrastructure error" in engine.observe("0")
    engine.step("0", call("finish", result=engine.tree.root.args["word"]))
    assert engine.tree.root.score == 1.0
    check_tree_invariants(engine.tree)


def test_local_reward_uses_children_scores_with_lambda():
    eng = rao_envs.make_engine("Probe-v0", lam=0.4)
    eng.reset(0)
    eng.step("0", call("delegate", word="a") + call("delegate", word="b"))
    eng.step("0.0", call("finish", result="a"))
    eng.step("0.1", call("finish", result="wrong"))
    eng.step("0", call("finish", result=eng.tree.root.args["word"]))
    assert eng.tree.root.reward == pytest.approx(1 + 0.4 * 0.5 * (1 + 0))
    check_tree_invariants(eng.tree)


def test_shared_fork_isolated_state():
    for env_id, same in (("Probe-v0", True), ("ForkProbe-v0", False), ("IsolatedProbe-v0", False)):
        eng = rao_envs.make_engine(env_id)
        eng.reset(0)
        eng.step("0", call("echo", text="root"))
        eng.step("0", call("delegate", word="a"))
        parent, child = eng.context("0").state, eng.context("0.0").state
        assert (parent is child) is same
        if env_id == "ForkProbe-v0":
            assert child == parent
        if env_id == "IsolatedProbe-v0":
            assert child == {"log": []}
        assert eng.tree.nodes["0.0"].spawn_snapshot == {"log_len": len(child["log"])}


def test_node_rng_depends_on_seed_and_node_id_not_on_order():
    def rolls(order):
        eng = rao_envs.make_engine("Probe-v0")
        eng.reset(7)
        eng.step("0", call("delegate", word="a") + call("delegate", word="b"))
        for nid in order:
            eng.step(nid, call("roll"))
        return {nid: eng.observe(nid).split("\n")[0] for nid in order}

    a, b = rolls(["0.0", "0.1"]), rolls(["0.1", "0.0"])
    assert a == b and a["0.0"] != a["0.1"]


def test_typed_action_objects(engine):
    engine.step("0", Action.delegate("sub", word="q"))
    engine.step("0.0", Action.tool("echo", text="hey", times=2))
    assert engine.observe("0.0").startswith("heyhey")
    engine.step("0.0", Action.finish("q"))
    assert engine.tree.nodes["0.0"].score == 1.0


def test_user_errors_are_typed_and_name_the_fix(engine):
    engine.step("0", call("delegate", word="a"))
    with pytest.raises(NodeNotActiveError, match="engine.runnable"):
        engine.step("0", call("echo", text="x"))  # waiting on its child
    with pytest.raises(NodeNotActiveError):
        engine.step("9.9", "x")
    finish_all(engine)
    with pytest.raises(ResetNeededError, match="reset"):
        engine.step("0", "x")
    with pytest.raises(UnknownTaskError, match="Did you mean"):
        rao_envs.make_engine("TextKraft-v0")
    with pytest.raises(ConfigError, match="unknown argument 'max_dept'"):
        rao_envs.make_engine("Probe-v0", max_dept=3)
    with pytest.raises(ConfigError, match="invalid limits"):
        rao_envs.make_engine("Probe-v0", max_depth=-1)
    with pytest.raises(ResetNeededError):
        rao_envs.make_engine("Probe-v0").step("0", "x")


def test_observation_truncated_with_visible_marker():
    eng = rao_envs.make_engine("Probe-v0", max_obs_chars=300)
    eng.reset(0)
    eng.step("0", call("echo", text="y", times=5000))
    text = eng.observe("0")
    assert len(text) == 300 and "[truncated" in text


def test_tree_json_round_trip_is_equal(engine):
    engine.step("0", call("delegate", word="a") + call("delegate", word="b"))
    engine.step("0.0", call("boom"))
    finish_all(engine)
    tree = engine.tree
    again = EpisodeTree.from_json(tree.to_json())
    assert again == tree and again.to_json() == tree.to_json()
    assert [n.id for n in again.walk()] == ["0", "0.0", "0.1"]


def test_same_seed_same_actions_same_tree():
    def run():
        eng = rao_envs.make_engine("Probe-v0")
        eng.reset(11)
        eng.step("0", call("delegate", word="a") + call("delegate", word="b", wait=False))
        eng.step("0.1", call("roll"))
        eng.step("0.0", call("finish", result="a"))
        finish_all(eng)
        return eng.tree.to_json()

    assert run() == run()


def test_fail_from_outside_marks_infra_error_and_tells_parent(engine):
    engine.step("0", call("delegate", word="a") + call("delegate", word="b"))
    engine.step("0.0", call("delegate", word="c", wait=False))
    out = engine.fail("0.0", "endpoint returned 500 five times")
    assert out.ended == ["0.0.0", "0.0"]
    assert engine.tree.nodes["0.0"].status is NodeStatus.INFRA_ERROR
    assert engine.tree.nodes["0.0.0"].status is NodeStatus.CANCELLED
    assert engine.fail("0.0", "again").ended == []  # already ended: no-op
    engine.step("0.1", call("finish", result="b"))
    assert "0.0] failed because of an infrastructure error" in engine.observe("0")
    finish_all(engine)
    check_tree_invariants(engine.tree)


def test_toy_oracle_survives_refused_delegation():
    from rao_envs.testing import check_oracle

    trees = check_oracle("Toy-v0", seeds=range(3), difficulty="hard", max_depth=0)
    assert all(len(t.nodes) == 1 and t.root.score == 1.0 for t in trees)

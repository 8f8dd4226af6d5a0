"""The engine owns turn-taking: selection, act, complete outcomes, pure observe, commit, node_info, tokens."""

from __future__ import annotations

import pytest

import rao_envs
from rao_envs.errors import ConfigError, ResetNeededError
from rao_envs.policies import Completion
from rao_envs.protocols import ActionProtocol, Call, ParseError
from rao_envs.testing import check_tree_invariants
from tests.conftest import call


def test_act_returns_a_complete_outcome_and_passes_the_turn(engine):
    assert engine.selection == "0"
    out = engine.act(call("delegate", word="a") + call("delegate", word="b"))
    assert out.node == "0" and out.spawned == ["0.0", "0.1"] and out.ended == [] and not out.done
    assert out.next == engine.selection == "0.0"  # the root waits; the first child acts next
    out = engine.act(call("finish", result="a"))
    assert out.ended == ["0.0"] and out.rewards == {"0.0": 1.0} and out.next == "0.1"
    out = engine.act(call("finish", result="b"))
    assert out.next == "0"  # the root wakes up with both results
    word = engine.tree.root.args["word"]
    out = engine.act(call("finish", result=word))
    assert out.done and out.next is None and out.rewards == {"0": 1.0}
    with pytest.raises(ResetNeededError):
        engine.act(call("finish", result=word))
    check_tree_invariants(engine.tree)


def test_observe_is_a_pure_query_and_commit_writes_what_was_shown(engine):
    engine.step("0", call("echo", text="hi"))
    root = engine.tree.root
    before = [dict(m) for m in root.transcript]
    shown = engine.observe("0")
    assert shown.startswith("hi") and "steps left 4/5" in shown
    assert engine.observe("0") == shown and root.transcript == before  # reading twice changes nothing
    assert engine.commit("0")[-1]["content"] == shown
    assert len(root.transcript) == len(before) + 1
    engine.commit("0")
    assert len(root.transcript) == len(before) + 1  # nothing pending: commit is idempotent


def test_step_commits_pending_messages_before_the_turn(engine):
    engine.step("0", call("echo", text="one"))
    engine.step("0", call("echo", text="two"))  # never observed: committed by this step
    roles = [m["role"] for m in engine.tree.root.transcript]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert engine.tree.root.transcript[3]["content"].startswith("one")


def test_node_info_is_structured_and_reports_children_and_refusals():
    eng = rao_envs.make_engine("Probe-v0", max_depth=1)
    eng.reset(0)
    info = eng.node_info()
    assert info["node"] == "0" and info["parent"] is None and info["depth"] == 0 and info["max_depth"] == 1
    assert info["turn"] == 0 and info["steps_left"] == 5 and info["children"] == [] and not info["refused"]
    eng.step("0", call("delegate", word="a"))
    eng.step("0.0", call("delegate", word="deeper"))  # depth 1 is the limit: refused
    child = eng.node_info("0.0")
    assert child["refused"] and child["turn"] == 1 and child["parent"] == "0"
    eng.step("0.0", call("finish", result="a"))
    assert not eng.node_info("0.0")["refused"]  # a new turn clears it
    root = eng.node_info("0")
    assert root["children"] == ["0.0"] and root["child_results"] == {"0.0": {"status": "finished", "result": "a"}}


def test_completion_tokens_are_recorded_by_the_engine(engine):
    engine.step("0", Completion(call("echo", text="x"), token_ids=[5, 6], logprobs=[-0.1, -0.2], prompt_token_ids=[1, 2, 3]))
    tr = engine.tree.root.transcript
    assert tr[1]["token_ids"] == [1, 2, 3] and tr[2]["token_ids"] == [5, 6] and tr[2]["logprobs"] == [-0.1, -0.2]
    engine.commit("0")
    engine.step("0", Completion(call("echo", text="y"), token_ids=[9], prompt_token_ids=[1, 2, 3, 5, 6, 7, 8]))
    assert tr[3]["token_ids"] == [7, 8] and tr[4]["token_ids"] == [9]  # only what the turn added


class UpperProtocol(ActionProtocol):
    """A second protocol for the test: ``NAME ARG`` in capitals calls echo."""

    name = "upper"

    def describe(self) -> str:
        return "Write ECHO WORD or FINISH WORD."

    def parse(self, text):
        verb, _, arg = str(text).partition(" ")
        if verb == "ECHO":
            return [Call("echo", {"text": arg})]
        if verb == "FINISH":
            return [Call("finish", {"result": arg})]
        raise ParseError("write ECHO WORD or FINISH WORD")

    def format(self, name, args):
        return f"{name.upper()} {next(iter(args.values()), '')}"


def test_protocol_is_pluggable():
    eng = rao_envs.make_engine("Probe-v0", protocol=UpperProtocol())
    eng.reset(0)
    assert "Write ECHO WORD" in eng.system_prompt
    eng.act("ECHO hello")
    assert eng.observe("0").startswith("hello")
    eng.act("nonsense")
    assert "Error: write ECHO WORD" in eng.observe("0")
    eng.act(rao_envs.Action.finish(eng.tree.root.args["word"]))
    assert eng.done and eng.tree.root.score == 1.0
    assert eng.tree.root.transcript[-1]["content"] == f"FINISH {eng.tree.root.args['word']}"  # written in its syntax


def test_unknown_protocol_is_a_typed_error():
    with pytest.raises(ConfigError, match="unknown protocol 'json5'.*tool"):
        rao_envs.make_engine("Probe-v0", protocol="json5")

"""The tolerant `tool` protocol parser."""

from __future__ import annotations

import json

import pytest

from rao_envs import Action
from rao_envs.protocols import ParseError, ToolProtocol

P = ToolProtocol()
CRAFT = {"name": "craft", "args": {"ingredients": {"m0_ore": 2}, "target": ["m1_i1", 2]}}


@pytest.mark.parametrize(
    "text",
    [
        "<tool>" + json.dumps(CRAFT) + "</tool>",
        "I will craft now.\n<tool>\n  " + json.dumps(CRAFT) + "\n</tool>\nthat should work",
        "```json\n" + json.dumps(CRAFT) + "\n```",
        "<tool>```json\n" + json.dumps(CRAFT) + "\n```</tool>",
        "<tool_call>" + json.dumps({"name": "craft", "arguments": CRAFT["args"]}) + "</tool_call>",
        json.dumps({"name": "craft", "arguments": json.dumps(CRAFT["args"])}),
        json.dumps({"type": "function", "function": {"name": "craft", "arguments": json.dumps(CRAFT["args"])}}),
        json.dumps({"tool_calls": [{"function": {"name": "craft", "arguments": json.dumps(CRAFT["args"])}}]}),
        "Sure! " + json.dumps(CRAFT) + " trailing words {not json",
        "<tool>" + json.dumps(CRAFT),  # generation stopped before the closing tag
    ],
)
def test_accepts_common_llm_formats(text):
    assert P.parse(text) == [("craft", CRAFT["args"])]


def test_several_calls_in_order():
    text = "<tool>" + json.dumps({"name": "delegate", "args": {"goal": "a"}}) + "</tool>\n"
    text += "<tool>" + json.dumps({"name": "delegate", "args": {"goal": "b"}}) + "</tool>"
    assert [a.args["goal"] for a in P.parse(text)] == ["a", "b"]
    listed = "<tool>" + json.dumps([{"name": "delegate", "args": {"goal": g}} for g in "xyz"]) + "</tool>"
    assert [a.args["goal"] for a in P.parse(listed)] == ["x", "y", "z"]


def test_missing_args_means_empty_and_action_object_passthrough():
    assert P.parse('<tool>{"name": "view_inventory"}</tool>') == [("view_inventory", {})]
    act = Action.finish(3)
    assert P.parse(act) == [(act.name, act.args)]
    assert Action.finish(3).to_text() == '<tool>{"name": "finish", "args": {"result": 3}}</tool>'


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("just thinking", "could not find a JSON tool call"),
        ("<tool>{bad json}</tool>", "could not parse"),
        ('<tool>{"args": {}}</tool>', 'no "name"'),
        ('<tool>{"name": "x", "args": [1]}</tool>', "must be a JSON object"),
        ('<tool>{"name": "x", "arguments": "{oops"}</tool>', "not valid JSON"),
        ("<tool>" + "[" * 20_000 + "</tool>", "nested too deeply"),
        ("x" * 40_000, "limit is"),
        (None, "expected a text action"),
        ("<tool>[]</tool>", "empty"),
    ],
)
def test_unreadable_text_raises_parse_error_with_expected_syntax(text, fragment):
    with pytest.raises(ParseError) as info:
        P.parse(text)
    assert fragment in str(info.value)
    assert "<tool>" in str(info.value) or "limit" in str(info.value)


def test_bytes_are_decoded():
    assert P.parse(b'<tool>{"name": "a"}</tool>') == [("a", {})]

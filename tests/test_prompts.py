"""Prompts teach every verb: each registered task's system prompt, in both protocols and every
variant, holds one example call of each tool and engine verb the agent may use, and each
example parses (and, for a task's own tools, passes its argument check)."""

from __future__ import annotations

import ast
import re

import pytest

import rao_envs
from rao_envs.protocols import ParseError, get_protocol

VARIANTS = {"TextCraft-v0": [{"variant": "paper"}, {"variant": "guided"}, {"delegate": False}, {"max_depth": 0}]}


def _cases():
    for tid in rao_envs.task_ids():
        for kw in VARIANTS.get(tid, [{}]):
            for protocol in ("tool", "code"):
                yield pytest.param(tid, protocol, kw, id=f"{tid}-{protocol}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}")


def _examples_block(prompt: str) -> str:
    m = re.search(r"Examples \(one call of each [^\n]*\n(.*?)(?:\n\n|\Z)", prompt, re.S)
    assert m, "the system prompt has no examples block"
    return m.group(1)


@pytest.mark.parametrize("tid,protocol,kw", list(_cases()))
def test_every_action_has_an_example_that_parses(tid, protocol, kw):
    engine = rao_envs.make_engine(tid, protocol=protocol, **kw)
    try:
        offered = [*engine.task.tools, *engine._verbs]
        block = _examples_block(engine.system_prompt)
        if protocol == "tool":
            calls = [c for line in re.findall(r"<tool>.*?</tool>", block) for c in get_protocol("tool").parse(line)]
            names = [c.name for c in calls]
            assert names == offered, (names, offered)
            for c in calls:  # a task tool's example passes its own argument check
                if c.name in engine.task.tools:
                    engine.task.tools[c.name].model.model_validate(c.args)
        else:
            tree = ast.parse(block, mode="exec", type_comments=False) if "await" not in block else ast.parse(
                "async def _cell():\n" + "\n".join("    " + line for line in block.splitlines()))
            called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            want = {("launch_subagent" if v == "delegate" else v) for v in offered if v not in ("wait", "cancel")}
            assert want <= called, (want - called)
        if "delegate" not in engine._verbs:  # the single-agent control: no sub-agents anywhere in the prompt
            assert "delegate" not in block and "launch_subagent" not in engine.system_prompt
    finally:
        engine.close()


def test_delegate_signature_reads_as_valid_python():
    for tid in rao_envs.task_ids():
        prompt = rao_envs.make_engine(tid, variant="guided").system_prompt if tid == "TextCraft-v0" else rao_envs.make_engine(tid).system_prompt
        sig = re.search(r"- (delegate\(.*?\)): ", prompt)
        assert sig, tid
        ast.parse(f"def {sig.group(1).replace('any', 'object')}: pass")  # required task args before the optional ones


def test_python_in_the_tool_protocol_says_so():
    tool = get_protocol("tool")
    for turn in ("```python\ncraft(target=['a', 1])\n```", "<python>\nprint(1)\n</python>"):
        with pytest.raises(ParseError, match="tool protocol") as err:
            tool.parse(turn)
        assert "<tool>" in str(err.value)
    with pytest.raises(ParseError, match=r'exactly <tool>\{"name"'):
        tool.parse("I will now craft the item.")


def test_code_mode_single_agent_control_refuses_launches():
    engine = rao_envs.make_engine("TextCraft-v0", protocol="code", delegate=False)
    try:
        engine.reset(seed=0)
        engine.act("<python>\nr = await launch_subagent(goal='x', targets={'a': 1})\nprint(r)\n</python>")
        assert "offers no sub-agents" in engine.observe() and len(engine.tree.nodes) == 1
    finally:
        engine.close()


@pytest.mark.parametrize("protocol", ["tool", "code"])
def test_compact_prompt_style_names_every_action_briefly(protocol):
    """prompt_style="compact": every node's system prompt keeps the task's prompt, the format and each action's name."""
    from rao_envs.errors import ConfigError

    for tid in rao_envs.task_ids():
        full = rao_envs.make_engine(tid, protocol=protocol)
        engine = rao_envs.make_engine(tid, protocol=protocol, prompt_style="compact")
        try:
            prompt = engine.system_prompt
            assert prompt.startswith(engine.task.system_prompt) and len(prompt) < len(full.system_prompt)
            actions = prompt.rsplit("Actions: ", 1)[1]
            verbs = [v for v in engine._verbs if v in ("delegate", "finish")] if protocol == "code" else engine._verbs
            for name in (*engine.task.tools, *verbs):
                name = "await launch_subagent" if protocol == "code" and name == "delegate" else name
                assert f"{name}(" in actions, (tid, name)
            engine.reset(seed=0)
            assert engine.tree.root.transcript[0]["content"] == prompt
        finally:
            engine.close()
            full.close()
    assert "delegate(" not in rao_envs.make_engine("TextCraft-v0", delegate=False, prompt_style="compact").system_prompt
    with pytest.raises(ConfigError, match="prompt_style must be one of"):
        rao_envs.make_engine("Toy-v0", prompt_style="short")

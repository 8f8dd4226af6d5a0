"""The default ``tool`` protocol: one JSON tool call per turn inside a ``<tool>`` tag.

Canonical syntax (documented to the model in its system prompt)::

    <tool>{"name": "TOOL_NAME", "args": {"ARG": VALUE, "OTHER": [1, 2]}}</tool>

The parser is tolerant of what LLMs actually write: surrounding prose, code fences,
whitespace, trailing text, an unclosed final tag, Hermes ``<tool_call>`` tags, OpenAI
function-call JSON (``{"name", "arguments": "<json string>"}``, ``{"function": {...}}``,
``{"tool_calls": [...]}``) and a bare JSON object. Several calls in one turn are returned in
order (the engine allows that only for ``delegate``: parallel children). Anything it cannot
read raises :class:`ParseError` whose message is feedback for the model; no other exception
escapes :meth:`ToolProtocol.parse`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rao_envs.protocols.base import ActionProtocol, Call, ParseError

_TAGGED = re.compile(r"<(tool|tool_call|function_call)>(.*?)(?:</\1>|\Z)", re.S)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.S)
_ARG_KEYS = ("args", "arguments", "parameters", "input")
_decoder = json.JSONDecoder()

EXPECTED = 'expected exactly <tool>{"name": "TOOL_NAME", "args": {"ARG": VALUE}}</tool> (see the examples in your instructions)'
NOT_PYTHON = (
    "this is the tool protocol: code is not run here. Write the call as JSON inside a <tool> tag, "
    'e.g. <tool>{"name": "TOOL_NAME", "args": {"ARG": VALUE}}</tool>'
)
_PYTHON_TURN = re.compile(r"```(?:python|py)\b|<python>")


def tool_call_text(name: str, args: dict[str, Any]) -> str:
    """``<tool>{"name": NAME, "args": ARGS}</tool>``: the canonical syntax (the parser's fast path)."""
    return "<tool>" + json.dumps({"name": name, "args": args}) + "</tool>"


class ToolProtocol(ActionProtocol):
    """Parses text turns into :class:`Call` lists and documents the syntax for prompts."""

    name = "tool"

    def describe(self) -> str:
        """The action-syntax paragraph placed in every node's system prompt."""
        return (
            "Act by writing exactly one tool call per turn, as JSON inside a <tool> tag:\n"
            '<tool>{"name": "TOOL_NAME", "args": {"ARG": VALUE}}</tool>\n'
            "To run several sub-agents in parallel, write several delegate calls in the same "
            "turn (delegate is the only tool that may be repeated in one turn)."
        )

    def format(self, name: str, args: dict[str, Any]) -> str:
        """The canonical ``<tool>`` text of one call."""
        return tool_call_text(name, args)

    def parse(self, text: Any) -> list[Call]:
        """Return the tool calls in ``text`` (at least one) or raise :class:`ParseError`.

        ``text`` may also be an :class:`~rao_envs.types.Action` (anything with ``name`` and
        ``args``): it is taken as is.
        """
        if type(text) is not str and hasattr(text, "args") and hasattr(text, "name"):
            return [Call(text.name, dict(text.args))]
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise ParseError(f"expected a text action, got {type(text).__name__}; {EXPECTED}")
        if len(text) > self.max_chars:
            raise ParseError(
                f"your turn is {len(text)} characters long, the limit is {self.max_chars}; "
                f"write one short tool call: {EXPECTED}"
            )
        if text.startswith("<tool>{") and text.endswith("}</tool>") and text.find("<", 1) == len(text) - 7:
            call = _canonical(text[6:-7])  # exactly the documented syntax: skip the general scan
            if call is not None:
                return [call]
        if not text.strip():
            raise ParseError(f"your turn was empty; {EXPECTED}")
        blocks = [m.group(2) for m in _TAGGED.finditer(text)] if "<" in text else []
        if not blocks:
            blocks = _FENCE.findall(text) if "```" in text else []
        if not blocks:
            blocks = [text]
        actions: list[Call] = []
        try:
            for block in blocks:
                actions.extend(_calls_from(_load_json(block)))
        except ParseError:
            if _PYTHON_TURN.search(text):  # the model wrote Python, as in the code protocol
                raise ParseError(f"your turn is Python code; {NOT_PYTHON}") from None
            raise
        return actions


def _canonical(body: str) -> Call | None:
    """``{"name": str, "args": {...}}`` and nothing else, else None (the general path decides)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if type(payload) is not dict or len(payload) != 2:
        return None
    name, args = payload.get("name"), payload.get("args")
    if type(name) is not str or type(args) is not dict or not name or name.strip() != name:
        return None
    return Call(name, args)


def _load_json(block: str) -> Any:
    block = block.strip()
    if block.startswith("```"):
        inner = _FENCE.search(block + ("" if block.endswith("```") else "```"))
        block = inner.group(1).strip() if inner else block.strip("`")
    start = _first_json_start(block)
    if start < 0:
        raise ParseError(f"could not find a JSON tool call in your turn; {EXPECTED}")
    try:
        value, _ = _decoder.raw_decode(block, start)
    except RecursionError:
        raise ParseError(f"your JSON is nested too deeply; {EXPECTED}") from None
    except ValueError as exc:
        raise ParseError(f"could not parse your action as JSON ({exc}); {EXPECTED}") from None
    return value


def _first_json_start(block: str) -> int:
    brace, bracket = block.find("{"), block.find("[")
    if brace < 0:
        return bracket
    if bracket < 0:
        return brace
    return min(brace, bracket)


def _calls_from(payload: Any, depth: int = 0) -> list[Call]:
    if depth > 3:
        raise ParseError(f"tool calls nested too deeply; {EXPECTED}")
    if isinstance(payload, list):
        if not payload:
            raise ParseError(f"the list of tool calls was empty; {EXPECTED}")
        return [a for item in payload for a in _calls_from(item, depth + 1)]
    if not isinstance(payload, dict):
        raise ParseError(f"a tool call must be a JSON object, not {type(payload).__name__}; {EXPECTED}")
    if "tool_calls" in payload:
        return _calls_from(payload["tool_calls"], depth + 1)
    if "function" in payload and isinstance(payload["function"], dict):
        return _calls_from(payload["function"], depth + 1)
    name = payload.get("name", payload.get("tool"))
    if not isinstance(name, str) or not name.strip():
        raise ParseError(f'the tool call has no "name" string; {EXPECTED}')
    args: Any = {}
    for key in _ARG_KEYS:
        if key in payload:
            args = payload[key]
            break
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            raise ParseError(f'the "arguments" string of {name!r} is not valid JSON; {EXPECTED}') from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ParseError(f'"args" of {name!r} must be a JSON object, not {type(args).__name__}; {EXPECTED}')
    return [Call(name.strip(), args)]

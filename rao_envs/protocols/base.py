"""The protocol interface: how a node's text turn becomes tool calls, and how calls are written.

The engine holds one :class:`ActionProtocol` (``TreeEngine(..., protocol="tool")``); it never
parses text itself. A protocol describes its syntax for the system prompt, parses a turn into
:class:`Call` s (raising :class:`ParseError`, whose message is the model's feedback), and
writes an :class:`~rao_envs.types.Action` back as text in its own syntax.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple


class Call(NamedTuple):
    """A parsed tool call (the engine's cheap internal form of :class:`~rao_envs.types.Action`)."""

    name: str
    args: dict[str, Any]


class ParseError(ValueError):
    """The text could not be read as a tool call; the message is shown to the model."""


class ActionProtocol:
    """Base class of action protocols; subclasses set :attr:`name` and implement the three methods."""

    name: ClassVar[str] = ""

    def __init__(self, max_chars: int = 32768) -> None:
        self.max_chars = max_chars

    def describe(self) -> str:
        """The action-syntax paragraph placed in every node's system prompt."""
        raise NotImplementedError

    def parse(self, text: Any) -> list[Call]:
        """The calls in one turn (at least one), or raise :class:`ParseError`; never another exception."""
        raise NotImplementedError

    def format(self, name: str, args: dict[str, Any]) -> str:
        """The text a model would write for the call ``name(**args)`` in this protocol."""
        raise NotImplementedError

    def examples(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """The system prompt's examples: one call of each action, as this protocol writes it."""
        return "Examples (one call of each action; use your own values):\n" + "\n".join(
            self.format(name, args) for name, args in calls
        )

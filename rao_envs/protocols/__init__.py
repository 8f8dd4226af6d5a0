"""Action protocols: how an LLM's text turn becomes tool calls (pluggable: ``TreeEngine(protocol=...)``)."""

from __future__ import annotations

from rao_envs.errors import ConfigError
from rao_envs.protocols.base import ActionProtocol, Call, ParseError
from rao_envs.protocols.code import CodeOracle, CodeProtocol
from rao_envs.protocols.tool import ToolProtocol, tool_call_text

#: protocol name -> class; ``make(..., protocol=NAME)`` picks one
PROTOCOLS: dict[str, type[ActionProtocol]] = {"tool": ToolProtocol, "code": CodeProtocol}


def get_protocol(protocol: str | ActionProtocol, max_chars: int = 32768) -> ActionProtocol:
    """An :class:`ActionProtocol` instance from a name in :data:`PROTOCOLS` (or an instance, returned as is)."""
    if isinstance(protocol, ActionProtocol):
        return protocol
    cls = PROTOCOLS.get(protocol) if isinstance(protocol, str) else None
    if cls is None:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)} or pass an ActionProtocol")
    return cls(max_chars)


__all__ = ["PROTOCOLS", "ActionProtocol", "Call", "CodeOracle", "CodeProtocol", "ParseError", "ToolProtocol", "get_protocol", "tool_call_text"]

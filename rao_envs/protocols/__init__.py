"""Action protocols: how an LLM's text turn becomes :class:`~rao_envs.types.Action` calls."""

from rao_envs.protocols.tool import Call, ParseError, ToolProtocol

PROTOCOLS = {"tool": ToolProtocol}

__all__ = ["PROTOCOLS", "Call", "ParseError", "ToolProtocol"]

"""Policies: the node-info and completion types, scripted policies, and the OpenAI-compatible client.

``from rao_envs.policies import OpenAIPolicy, OraclePolicy, RandomPolicy, Completion, NodeInfo``.
The client imports ``httpx`` only when it sends its first request.
"""

from rao_envs.policies.base import (
    AgentPolicy,
    ChatPolicy,
    ChildResult,
    Completion,
    ContextLengthError,
    NodeInfo,
    PolicyError,
    as_chat_policy,
)
from rao_envs.policies.openai import OpenAIPolicy
from rao_envs.policies.scripted import OraclePolicy, RandomPolicy, run_episode

__all__ = [
    "AgentPolicy", "ChatPolicy", "ChildResult", "Completion", "ContextLengthError", "NodeInfo", "OpenAIPolicy", "OraclePolicy",
    "PolicyError", "RandomPolicy", "as_chat_policy", "run_episode",
]

"""What a policy receives and returns: :class:`NodeInfo`, :class:`Completion`, and the two kinds of policy.

rao_envs speaks of two kinds of policy, and names them apart:

* an **agent policy** ``(observation, info) -> action``: what a Gymnasium user writes (the
  scripted oracles, :class:`~rao_envs.policies.scripted.RandomPolicy`, a small PPO net);
* a **chat policy** ``(messages[, info]) -> text | Completion``, sync or async: what the rollout
  driver calls (an LLM endpoint such as :class:`~rao_envs.policies.openai.OpenAIPolicy`, or
  any callable). :func:`as_chat_policy` normalises one to ``async (messages, info) -> Completion``.

Both read the same structured :class:`NodeInfo` (built by
:meth:`~rao_envs.tree.TreeEngine.node_info`), so no policy has to parse engine text.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from typing_extensions import NotRequired, TypedDict

from rao_envs.errors import ConfigError, PolicyOutputError


class ChildResult(TypedDict):
    """An ended child as its parent learns of it: its status and its ``finish`` result."""

    status: str
    result: Any


class NodeInfo(TypedDict):
    """Structured facts about the node a policy acts for (the engine's, plus the driver's).

    The engine fills ``node`` … ``refused`` (:meth:`~rao_envs.tree.TreeEngine.node_info`);
    the rollout driver adds ``env_id``, ``seed``, ``tree_id`` and ``group``.
    """

    node: str
    """The node's tree path id (``"0"`` is the root, ``"0.1"`` its second child)."""
    parent: str | None
    depth: int
    max_depth: int
    """The deepest depth the tree allows: a node at ``max_depth`` cannot delegate."""
    goal: str
    node_args: dict[str, Any]
    """The task's structured arguments of this node (what its parent passed to ``delegate``)."""
    steps_left: int
    turn: int
    """Turns the node has taken so far (0 on its first turn)."""
    children: list[str]
    child_results: dict[str, ChildResult]
    """Every child that ended and reported back (not cancelled), by id."""
    refused: bool
    """True when the node's last turn asked for sub-agents and the engine refused."""
    env_id: NotRequired[str]
    seed: NotRequired[int]
    tree_id: NotRequired[str]
    group: NotRequired[int]


@dataclass
class Completion:
    """A chat policy's answer: the text, plus token ids/logprobs when the endpoint reported them.

    Pass one to :meth:`~rao_envs.tree.TreeEngine.step` and the engine records the ids on the
    node's transcript (see :mod:`rao_envs.rows`). ``prompt_token_ids`` are the ids of the whole
    rendered prompt (vLLM with ``return_token_ids``); the engine stores only what each turn adds.
    """

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_token_ids: list[int] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    """The endpoint's ``usage.prompt_tokens`` (what the rollout driver's context limit counts)."""
    completion_tokens: int | None = None
    """The endpoint's ``usage.completion_tokens``."""


class PolicyError(RuntimeError):
    """The policy endpoint failed (after retries): the node becomes ``infra_error``."""


class ContextLengthError(PolicyError):
    """The endpoint refused the prompt as longer than its context: the node is *truncated* (a normal outcome), not an infra error."""


ChatPolicy = Callable[[list[dict[str, str]], NodeInfo], Awaitable[Completion]]
"""The normal form of a chat policy: ``async (messages, info) -> Completion``."""

AgentPolicy = Callable[[Any, dict[str, Any]], Any]
"""An agent policy: ``(observation, info) -> action`` (text, an ``Action`` or an int)."""


def as_chat_policy(policy: Any) -> ChatPolicy:
    """Normalise ``policy`` to ``async (messages, info) -> Completion``.

    Accepts async or plain callables taking ``(messages)`` or ``(messages, info)`` and
    returning text or a :class:`Completion`.
    """
    if not callable(policy):
        raise ConfigError(f"policy must be callable (messages[, info]) -> text, or an OpenAIPolicy; got {type(policy).__name__}")
    try:
        params = [
            p for p in inspect.signature(policy).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        two = len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        two = True

    async def call(messages: list[dict[str, str]], info: NodeInfo) -> Completion:
        out = policy(messages, info) if two else policy(messages)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Completion):
            return out
        if isinstance(out, str):
            return Completion(out)
        raise PolicyOutputError(f"policy returned {type(out).__name__}; return a str or a rao_envs.policies.Completion")

    return call

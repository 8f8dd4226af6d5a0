"""Gymnasium spaces shared by the views, and the sanitiser that keeps text inside them."""

from __future__ import annotations

import re
import string

import numpy as np
from gymnasium import spaces
from gymnasium.error import CustomSpaceError
from gymnasium.vector.utils import create_shared_memory

#: Printable ASCII plus whitespace: what our ``Text`` spaces accept.
CHARSET = string.printable
NODE_ID_CHARSET = "0123456789."
_OUTSIDE = re.compile(r"[^\x20-\x7e\t\n\r\x0b\x0c]")
_INSIDE_BYTES = CHARSET.encode("ascii")


def sanitize(text: str) -> str:
    """Replace characters outside :data:`CHARSET` with ``?`` (visible, never silent)."""
    # bytes.translate(None, delete) runs at memcpy speed: ~10x faster than a regex scan
    if text.isascii() and not text.encode("ascii").translate(None, _INSIDE_BYTES):
        return text
    return _OUTSIDE.sub("?", text)


class RaoText(spaces.Text):
    """A Gymnasium ``Text`` space that refuses shared memory, loudly.

    ``AsyncVectorEnv(shared_memory=True)`` (the default of ``gym.make_vec(...,
    vectorization_mode="async")``) reads a ``Text`` space's shared buffer once, when it is
    built, so every later text observation comes back as the initial all-zero string with no
    warning. Our text spaces are this subclass, whose shared-memory hook raises Gymnasium's
    ``CustomSpaceError``; Gymnasium turns it into a ``ValueError`` that names the fix:
    ``gym.make_vec(id, vectorization_mode="async", vector_kwargs={"shared_memory": False})``.
    Everything else behaves exactly as ``spaces.Text``.
    """


@create_shared_memory.register(RaoText)
def _refuse_shared_memory(space: RaoText, n: int = 1, ctx=None):  # noqa: ANN001 (Gymnasium's hook signature)
    raise CustomSpaceError(
        "rao_envs text observations cannot go through AsyncVectorEnv's shared memory (Gymnasium reads a Text "
        "buffer only once, so every observation would silently be the empty-buffer string). Pass "
        "vector_kwargs={'shared_memory': False} to gym.make_vec, or shared_memory=False to AsyncVectorEnv."
    )


def text_space(max_length: int, charset: str = CHARSET) -> RaoText:
    """A :class:`RaoText` space over ``charset`` (default :data:`CHARSET`) that allows the empty string."""
    return RaoText(max_length=max_length, min_length=0, charset=charset)


def node_id_length(max_depth: int, max_nodes: int) -> int:
    """The longest node id a tree can have: ``"0"`` plus ``".k"`` per level (k < max_nodes)."""
    return 1 + max_depth * (1 + len(str(max(max_nodes - 1, 0))))


def observation_space(
    max_obs_chars: int, max_depth: int, max_steps: int, tree_budget: int | None, max_nodes: int = 256
) -> spaces.Dict:
    """``Dict(text, node, depth, budget)``; budget is ``[steps left, tree budget left]``.

    The ``node`` space holds the longest id the limits allow (at least 256 characters).
    """
    high = float(max(max_steps, tree_budget or 0))
    return spaces.Dict(
        {
            "text": text_space(max_obs_chars),
            "node": text_space(max(256, node_id_length(max_depth, max_nodes)), NODE_ID_CHARSET),
            "depth": spaces.Discrete(max_depth + 1),
            "budget": spaces.Box(low=0.0, high=high, shape=(2,), dtype=np.float32),
        }
    )


def text_observation(engine, node_id: str, text: str | None = None) -> dict:
    """The ``Dict(text, node, depth, budget)`` observation of one node of a running engine.

    ``text`` is the node's observation text when the caller already has it (else
    ``engine.observe(node_id)`` is read); it is sanitised to :data:`CHARSET` here.
    """
    node = engine.tree.nodes[node_id]
    pool = engine.tree_budget_left
    return {
        "text": sanitize(engine.observe(node_id) if text is None else text),
        "node": node_id,
        "depth": node.depth,
        "budget": np.array([max(node.steps_left, 0), pool if pool is not None else 0], dtype=np.float32),
    }

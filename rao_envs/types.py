"""Typed data that crosses a boundary: actions, limits, nodes and episode trees.

Everything here is a pydantic model (or a ``TypedDict`` validated by pydantic), so a whole
:class:`EpisodeTree` serialises to JSON and loads back equal::

    import rao_envs
    from rao_envs.rollout import run_sync
    from rao_envs.types import EpisodeTree

    engine = rao_envs.make_engine("Toy-v0")
    tree = run_sync(engine, engine.task.oracle(), seed=0)
    tree2 = EpisodeTree.model_validate_json(tree.model_dump_json())
    assert tree2 == tree
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from enum import Enum
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import NotRequired, TypedDict

from rao_envs.errors import ConfigError, TreeFileError, TreeFormatError


def _problems(exc: ValidationError) -> str:
    """pydantic's errors in one short line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:4])


class NodeStatus(str, Enum):
    """Lifecycle of a node. The last five are terminal."""

    RUNNING = "running"  # awaiting an action from the policy
    WAITING = "waiting"  # waiting on one or more of its children
    FINISHED = "finished"  # called finish(result)
    TRUNCATED = "truncated"  # ran out of steps (or the tree ran out of budget)
    REFUSED = "refused"  # reserved for drivers that reject a node before it acts
    INFRA_ERROR = "infra_error"  # infrastructure failure: masked out of training
    CANCELLED = "cancelled"  # cancelled by its parent, or its parent ended first

    @property
    def ended(self) -> bool:
        """True for every terminal status."""
        return self not in (NodeStatus.RUNNING, NodeStatus.WAITING)


class StateScope(str, Enum):
    """How a child's world relates to its parent's (DESIGN §1.5)."""

    SHARED = "shared"  # same state object, by reference (e.g. one inventory for the whole tree)
    FORK = "fork"  # deep copy taken at spawn
    ISOLATED = "isolated"  # fresh state built from the child's own args


class Message(TypedDict):
    """One chat message of a node's transcript (OpenAI chat format).

    ``token_ids``/``logprobs`` are filled by drivers whose endpoint reports them: on an
    assistant message, the sampled tokens; on the last message before an assistant turn,
    the prompt tokens the chat template added since the previous turn (see ``rao_envs.rows``).
    """

    role: Literal["system", "user", "assistant"]
    content: str
    token_ids: NotRequired[list[int]]
    logprobs: NotRequired[list[float]]


class Action(BaseModel):
    """A parsed tool call: ``name`` is a task tool or a tree verb, ``args`` its arguments.

    Programmatic users may pass an ``Action`` to ``step`` instead of text::

        import gymnasium as gym
        from rao_envs import Action

        env = gym.make("rao_envs/Toy-v0")
        env.reset(seed=0)
        env.step(Action.delegate("Compute (1 + 2)", expr="(1 + 2)"))
    """

    model_config = ConfigDict(frozen=True)

    name: str
    args: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid Action: {_problems(exc)}; e.g. Action(name='finish', args={{'result': 1}})") from None

    @classmethod
    def delegate(cls, goal: str, **args: Any) -> Action:
        """Open a child node working on ``goal`` (the task's delegate arguments as kwargs)."""
        return cls(name="delegate", args={"goal": goal, **args})

    @classmethod
    def finish(cls, result: Any = None) -> Action:
        """End the node; ``result`` goes back to the parent verbatim."""
        return cls(name="finish", args={"result": result})

    @classmethod
    def tool(cls, name: str, /, **args: Any) -> Action:
        """Call one of the task's tools (``name`` is positional, so a tool may take an argument called ``name``)."""
        return cls(name=name, args=args)

    def to_text(self, protocol: Any = None) -> str:
        """Render as a model would write it: the ``tool`` syntax, or ``protocol``'s (an ``ActionProtocol``)."""
        if protocol is not None:
            return protocol.format(self.name, self.args)
        from rao_envs.protocols.tool import tool_call_text

        return tool_call_text(self.name, self.args)


class Limits(BaseModel):
    """Limits of one episode tree (DESIGN §1.6); every field is overridable in ``make``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_depth: int = Field(6, ge=0, description="deepest node depth (root = 0)")
    max_steps_per_node: int = Field(25, ge=1, description="turns each node may take")
    max_children_per_turn: int | None = Field(None, ge=1, description="delegates in one turn")
    max_nodes: int = Field(256, ge=1, description="nodes in the whole tree, root included")
    tree_step_budget: int | None = Field(
        None, ge=1, description="optional step pool shared by the whole tree (reserve/release)"
    )
    max_obs_chars: int = Field(8192, ge=256, description="longest observation text")
    max_action_chars: int = Field(32768, ge=64, description="longest action text parsed")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid limits: {_problems(exc)}; see rao_envs.Limits for each field") from None

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any) -> Any:
        """Limits are integers: ``True``, ``"3"`` or ``2.5`` are mistakes, not 1, 3 or 2."""
        if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))):
            return None if value is None else int(value)
        raise ValueError(f"must be an integer, got {type(value).__name__} {value!r:.30}")


class Node(BaseModel):
    """One agent instance working on one goal with a fresh context (DESIGN §1.1)."""

    id: str
    parent: str | None = None
    depth: int = 0
    slot: int = 0  # spawn index in the tree: the PettingZoo agent is f"node_{slot}"
    goal: str
    args: dict[str, Any] = Field(default_factory=dict)
    context: str | None = None
    status: NodeStatus = NodeStatus.RUNNING
    result: Any = None
    error: str | None = None
    transcript: list[Message] = Field(default_factory=list)
    steps_used: int = 0
    budget: int
    score: float | None = None
    reward: float | None = None
    policy_version: int | None = None
    spawned_at: int | None = None  # the parent's step index when it delegated
    children: list[str] = Field(default_factory=list)
    delivered: int = 0  # times this node's result reached its parent (invariant: <= 1)
    ended_at: int | None = None  # tree clock when the node ended
    last_acted: int | None = None  # tree clock of the node's last action
    spawn_snapshot: Any = None  # task snapshot taken at spawn, judged by the verifier

    @property
    def steps_left(self) -> int:
        """Turns the node may still take."""
        return self.budget - self.steps_used

    @property
    def masked(self) -> bool:
        """True when the node is excluded from training (infrastructure failure)."""
        return self.status is NodeStatus.INFRA_ERROR


class EpisodeTree(BaseModel):
    """A whole recursive episode: the nodes keyed by id, in spawn order, plus its settings."""

    env_id: str
    seed: int | None = None
    limits: Limits
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    instance: dict[str, Any] = Field(default_factory=dict)
    nodes: dict[str, Node] = Field(default_factory=dict)
    clock: int = 0  # node-steps taken in the whole tree
    lam: float = 0.0  # λ of the local reward R = s + λ·mean(children s)
    tree_id: str | None = None  # set by the rollout driver, e.g. "Name-v0:3#g2"

    @field_validator("nodes")
    @classmethod
    def _root_first(cls, nodes: dict[str, Node]) -> dict[str, Node]:
        if nodes and next(iter(nodes)) != "0":
            raise ValueError("the root node '0' must come first in `nodes`")
        return nodes

    @model_validator(mode="after")
    def _links(self) -> EpisodeTree:
        for node in self.nodes.values():
            if node.parent is not None and node.parent not in self.nodes:
                raise ValueError(f"node {node.id} names unknown parent {node.parent}")
        return self

    @property
    def root(self) -> Node:
        """The root node (id ``"0"``)."""
        return self.nodes["0"]

    @property
    def done(self) -> bool:
        """True once the root has ended."""
        return bool(self.nodes) and self.root.status.ended

    def children(self, node_id: str) -> list[Node]:
        """The children of ``node_id`` in spawn order."""
        return [self.nodes[c] for c in self.nodes[node_id].children]

    def walk(self) -> Iterator[Node]:
        """Every node, depth first, children in spawn order."""
        stack = ["0"] if self.nodes else []
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(node.children))

    def stats(self) -> dict[str, Any]:
        """Summary numbers: node count, max depth, steps, statuses, root score."""
        statuses: dict[str, int] = {}
        for n in self.nodes.values():
            statuses[n.status.value] = statuses.get(n.status.value, 0) + 1
        return {
            "nodes": len(self.nodes),
            "max_depth": max((n.depth for n in self.nodes.values()), default=0),
            "steps": self.clock,
            "statuses": statuses,
            "root_score": self.root.score if self.nodes else None,
        }

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to JSON (``EpisodeTree.from_json`` loads it back equal)."""
        return self.model_dump_json(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> EpisodeTree:
        """Load a tree written by :meth:`to_json` (:class:`~rao_envs.errors.TreeFormatError` otherwise)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TreeFormatError(f"from_json takes the JSON text of a tree, got {type(text).__name__}")
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise TreeFormatError(
                f"not a saved EpisodeTree ({_problems(exc)}); write trees with tree.to_json() or save_trees()"
            ) from None

    def to_rows(self, tokenizer: Any = None, *, mode: str = "node", **kwargs: Any) -> list[dict[str, Any]]:
        """Training rows: one per node (``mode="node"``) or per assistant turn (``"turn"``).

        Token ids come from the driver's recorded ``token_ids`` or from ``tokenizer`` (a HF
        tokenizer with a chat template). See :mod:`rao_envs.rows` (credit, Parquet, datasets).
        """
        from rao_envs.rows import tree_rows

        return tree_rows(self, tokenizer, mode=mode, **kwargs)


def save_trees(trees: Iterable[EpisodeTree], path: str | Path) -> None:
    """Write trees as JSONL (one :meth:`EpisodeTree.to_json` per line).

    Every tree is serialised before the file is touched, and the file is replaced at once,
    so a bad tree never leaves half a batch on disk.
    """
    lines = []
    for i, t in enumerate(trees):
        if not isinstance(t, EpisodeTree):
            raise TreeFormatError(f"save_trees takes EpisodeTree objects; item {i} is {type(t).__name__}")
        lines.append(t.to_json())
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise TreeFileError(f"could not write {path}: {exc}") from None


def load_trees(path: str | Path) -> list[EpisodeTree]:
    """Trees from a JSONL file written by :func:`save_trees`."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise TreeFileError(f"could not read trees from {path}: {exc}") from None
    trees = []
    for k, line in enumerate(lines, 1):
        if line.strip():
            try:
                trees.append(EpisodeTree.from_json(line))
            except TreeFormatError as exc:
                raise TreeFormatError(f"{path}, line {k}: {exc}") from None
    return trees


def strip_tokens(tree: EpisodeTree) -> EpisodeTree:
    """A copy of ``tree`` without recorded token ids/logprobs, tree id and policy versions (for comparisons)."""
    t = tree.model_copy(deep=True)
    t.tree_id = None
    for node in t.nodes.values():
        node.policy_version = None
        for m in node.transcript:
            m.pop("token_ids", None)
            m.pop("logprobs", None)
    return t

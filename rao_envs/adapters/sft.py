"""Warm start from oracle demonstrations: chat SFT rows of oracle trees, and how often a model acts at all.

A small model cannot act before training (SmolLM2-135M-Instruct served by llama.cpp wrote 0
parseable actions in 52 turns on TextCraft-v0 and Toy-v0), so RL from scratch gets no signal.
:func:`demo_rows` runs the task's scripted oracle and writes **one row per node**: the node's
chat (system prompt, its own goal, its tool calls, the tool output it saw) up to its last
assistant turn, as ``{"messages": [...], "env_id", "seed", "node_id", "depth", "protocol",
"score"}``. TRL's ``SFTTrainer`` reads the rows as they are; with
``SFTConfig(assistant_only_loss=True)`` only the node's own assistant turns are targets (the
chat template needs ``{% generation %}`` markers: TRL adds them for the templates it knows,
:data:`CHATML_TRAINING_TEMPLATE` is ChatML with them)::

    rao-envs demos Toy-v0 -n 64 --out demos.parquet --kw difficulty=easy
    ds = datasets.Dataset.from_parquet("demos.parquet")
    SFTTrainer(model, args=SFTConfig(assistant_only_loss=True), train_dataset=ds, processing_class=tok).train()

**Protocols.** Oracles write ``tool``-protocol text. Each oracle turn is parsed into calls and
written again by the engine's protocol (``protocol=`` any name in
:data:`rao_envs.protocols.PROTOCOLS`), so a demonstration is in the protocol the model is
trained to speak. A protocol that writes several calls of one turn its own way defines
``format_calls(calls) -> str``; otherwise the calls' ``format`` texts are joined by newlines
(the ``tool`` protocol's syntax for parallel delegates).

:func:`episode_stats` measures trees a model produced: the share of assistant turns that
parse as an action (the valid-action rate), root success, nodes per tree.

Needs ``pyarrow`` only to write Parquet (the ``data`` extra); no trainer library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rao_envs.credit import masked_ids
from rao_envs.protocols import ActionProtocol, Call, ParseError, ToolProtocol, get_protocol
from rao_envs.registration import engine_factory, task_spec
from rao_envs.rollout import run_sync
from rao_envs.types import EpisodeTree, NodeStatus

#: the columns of a demonstration row, in order
DEMO_COLUMNS = ("messages", "env_id", "seed", "node_id", "depth", "protocol", "score")

#: ChatML with ``{% generation %}`` markers around each assistant turn and its ``<|im_end|>``
#: (what ``assistant_only_loss`` needs); renders exactly as plain ChatML (SmolLM2, Qwen2.5 without tools)
CHATML_TRAINING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def format_turn(protocol: ActionProtocol, calls: Sequence[Call]) -> str:
    """The text of one turn holding ``calls`` in ``protocol`` (its ``format_calls`` when it has one)."""
    many = getattr(protocol, "format_calls", None)
    if callable(many):
        return many(list(calls))
    return "\n".join(protocol.format(c.name, c.args) for c in calls)


class _Rewritten:
    """An oracle whose tool-protocol text is re-written in another protocol (an agent policy)."""

    def __init__(self, oracle: Any, protocol: ActionProtocol) -> None:
        self.oracle, self.protocol, self.reader = oracle, protocol, ToolProtocol()

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        text = self.oracle(obs, info)
        if isinstance(self.protocol, ToolProtocol):
            return text
        return format_turn(self.protocol, self.reader.parse(text))


def demo_trees(
    env_id: str,
    seeds: Iterable[int],
    *,
    protocol: str = "tool",
    env_kwargs: dict[str, Any] | None = None,
    oracle_kwargs: dict[str, Any] | None = None,
) -> list[EpisodeTree]:
    """One oracle tree per seed of ``env_id``, its turns written in ``protocol``."""
    factory = engine_factory(env_id, protocol=protocol, **dict(env_kwargs or {}))
    trees = []
    for seed in seeds:
        engine = factory()
        policy = _Rewritten(engine.task.oracle(**dict(oracle_kwargs or {})), engine.protocol)
        tree = run_sync(engine, policy, seed=seed)
        tree.tree_id = f"{tree.env_id}:{seed}#oracle"
        trees.append(tree)
    return trees


def node_messages(tree: EpisodeTree, node_id: str) -> list[dict[str, str]]:
    """A node's chat up to (and with) its last assistant turn, as plain ``{role, content}`` messages."""
    tr = tree.nodes[node_id].transcript
    last = max((i for i, m in enumerate(tr) if m["role"] == "assistant"), default=-1)
    return [{"role": m["role"], "content": m["content"]} for m in tr[: last + 1]]


def demo_rows(trees: Sequence[EpisodeTree], *, protocol: str = "tool") -> list[dict[str, Any]]:
    """Chat SFT rows, one per node that acted (masked nodes skipped), depth first (module docstring)."""
    rows = []
    for tree in trees:
        skip = masked_ids(tree)
        for node in tree.walk():
            if node.id in skip:
                continue
            messages = node_messages(tree, node.id)
            if not any(m["role"] == "assistant" for m in messages):
                continue
            rows.append({
                "messages": messages, "env_id": tree.env_id, "seed": tree.seed, "node_id": node.id,
                "depth": node.depth, "protocol": protocol, "score": node.score,
            })
    return rows


def write_demos(
    env_id: str,
    n: int,
    out: str | Path,
    *,
    seed_start: int = 0,
    protocol: str = "tool",
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[Path, int]:
    """Run the oracle on seeds ``seed_start … seed_start + n - 1`` and write its rows to Parquet; return (path, rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    env_id = task_spec(env_id).id
    rows = demo_rows(demo_trees(env_id, range(seed_start, seed_start + n), protocol=protocol, env_kwargs=env_kwargs),
                     protocol=protocol)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("env_id", pa.string()), ("seed", pa.int64()), ("node_id", pa.string()), ("depth", pa.int64()),
        ("protocol", pa.string()), ("score", pa.float64()),
    ])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out, len(rows)


def is_valid_action(text: str, protocol: str | ActionProtocol = "tool") -> bool:
    """True when ``text`` parses as at least one tool call in ``protocol``."""
    try:
        get_protocol(protocol).parse(text)
    except ParseError:
        return False
    return True


def episode_stats(trees: Sequence[EpisodeTree], protocol: str | ActionProtocol = "tool") -> dict[str, float]:
    """``valid_action_rate`` (assistant turns that parse as an action), ``turns``, ``root_success``, ``nodes_per_tree``."""
    proto = get_protocol(protocol)
    turns = valid = 0
    for tree in trees:
        for node in tree.nodes.values():
            for m in node.transcript:
                if m["role"] == "assistant":
                    turns += 1
                    valid += is_valid_action(m["content"], proto)
    n = max(len(trees), 1)
    return {
        "valid_action_rate": valid / turns if turns else 0.0,
        "turns": float(turns),
        "root_success": sum(1 for t in trees if t.root.status is NodeStatus.FINISHED and t.root.score == 1.0) / n,
        "nodes_per_tree": sum(len(t.nodes) for t in trees) / n,
    }

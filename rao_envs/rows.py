"""Training rows from episode trees (DESIGN §3, "Export"): one row per node, or per turn.

A node's transcript is a chat: system prompt, first user message, then alternating assistant
turns and user messages (tool output, child results, feedback). ``mode="node"`` makes one row
per node: ``prompt_ids`` = everything up to the first assistant turn (with the assistant
header), ``completion_ids`` = the rest of the conversation up to the end of its last
assistant turn, ``loss_mask`` = 1 on the node's own assistant tokens only (tool output and
other user text in between is 0). ``mode="turn"`` makes one row per assistant turn:
``prompt_ids`` = the whole conversation before the turn, ``completion_ids`` = the turn,
mask all ones. Both modes hold the same tokens (prefix property of chat templates).

Token ids, in order of preference:

* **recorded** by the rollout driver (:mod:`rao_envs.rollout`): an assistant message's
  ``token_ids``/``logprobs`` are the sampled tokens exactly as the endpoint returned them,
  and the ``token_ids`` of the last non-assistant message before an assistant turn are the
  prompt tokens the chat template added since the previous assistant turn (when the
  endpoint reports prompt ids). Recorded ids are never re-tokenised.
* else rendered with ``tokenizer`` — any object with HF's
  ``apply_chat_template(messages, tokenize=True, add_generation_prompt=...)``. A turn's
  span is the difference between successive renderings, so an assistant span includes the
  template's end-of-turn tokens (trained, as in TRL's assistant masks).

Every row also carries advantage, depth weight, depth, tree id, task id, node id, status,
score, reward and policy version. Masked nodes (``infra_error`` and their subtrees) and
nodes that never acted have no rows. ``to_dataset`` / ``write_parquet`` / ``read_parquet``
round-trip rows through a Hugging Face ``datasets.Dataset`` and Parquet (imported lazily).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from rao_envs.credit import Credit, assign_credit, masked_ids, task_id
from rao_envs.errors import ConfigError
from rao_envs.types import EpisodeTree, Node

Mode = Literal["node", "turn"]
#: the columns of a training row and their Arrow types, in order: the one source of both
#: :data:`ROW_COLUMNS` and :func:`arrow_schema` ("ints"/"floats"/"mask" are lists)
ROW_SCHEMA: tuple[tuple[str, str], ...] = (
    ("tree_id", "string"), ("task_id", "string"), ("env_id", "string"), ("seed", "int64"),
    ("node_id", "string"), ("parent_id", "string"), ("depth", "int64"), ("status", "string"),
    ("turn", "int64"), ("num_turns", "int64"), ("prompt_ids", "ints"), ("completion_ids", "ints"),
    ("loss_mask", "mask"), ("logprobs", "floats"), ("score", "float64"), ("reward", "float64"),
    ("advantage", "float64"), ("weight", "float64"), ("policy_version", "int64"), ("token_source", "string"),
)
ROW_COLUMNS = tuple(name for name, _ in ROW_SCHEMA)


class ChatTokenizer(Protocol):
    """What rows need from a tokenizer: Hugging Face's ``apply_chat_template``."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any:
        """Render and tokenise a chat (``tokenize=True``); returns token ids."""
        ...


def _ids(out: Any) -> list[int]:
    """Token ids from ``apply_chat_template`` output (a list, or a BatchEncoding/dict)."""
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # batched
        out = out[0]
    return [int(t) for t in out]


class _Renderer:
    """Incremental chat-template renderings of one transcript, memoised."""

    def __init__(self, tokenizer: ChatTokenizer | None, messages: list[dict[str, str]], node: Node) -> None:
        self.tok, self.msgs, self.node = tokenizer, messages, node
        self._cache: dict[tuple[int, bool], list[int]] = {}

    def render(self, upto: int, gen: bool) -> list[int]:
        key = (upto, gen)
        if key not in self._cache:
            if self.tok is None:
                raise ConfigError(
                    f"node {self.node.id}: its transcript has no recorded token ids; pass tokenizer= "
                    "(a Hugging Face tokenizer with a chat template) to to_rows"
                )
            out = self.tok.apply_chat_template(self.msgs[:upto], tokenize=True, add_generation_prompt=gen)
            self._cache[key] = _ids(out)
        return self._cache[key]

    def diff(self, longer: list[int], shorter: list[int], what: str) -> list[int]:
        if longer[: len(shorter)] != shorter:
            raise ConfigError(
                f"node {self.node.id}: the chat template does not render the conversation as a prefix of "
                f"itself ({what}); use mode='turn' with this tokenizer"
            )
        return longer[len(shorter):]


def _segments(node: Node, tokenizer: ChatTokenizer | None) -> tuple[list[tuple[list[int], list[int], list[float | None]]], str]:
    """Per assistant turn k: (prompt tokens added before it, its tokens, its logprobs); token source."""
    tr = node.transcript
    plain = [{"role": m["role"], "content": m["content"]} for m in tr]
    ren = _Renderer(tokenizer, plain, node)
    turns = [i for i, m in enumerate(tr) if m["role"] == "assistant"]
    out, sources = [], set()
    prev_end = 0  # message index just after the previous assistant turn
    for k, a in enumerate(turns):
        before = tr[a - 1] if a > 0 else None
        if before is not None and before["role"] != "assistant" and "token_ids" in before:
            p = list(before["token_ids"])
            sources.add("recorded")
        else:
            start = ren.render(prev_end, False) if k else []
            p = ren.diff(ren.render(a, True), start, f"prompt of turn {k}")
            sources.add("tokenizer")
        msg = tr[a]
        if "token_ids" in msg:
            c = list(msg["token_ids"])
            lp = list(msg.get("logprobs") or [])
            lp = [float(x) for x in lp] if len(lp) == len(c) else [None] * len(c)
            sources.add("recorded")
        else:
            c = ren.diff(ren.render(a + 1, False), ren.render(a, True), f"assistant turn {k}")
            lp = [None] * len(c)
            sources.add("tokenizer")
        out.append((p, c, lp))
        prev_end = a + 1
    source = "mixed" if len(sources) > 1 else (sources.pop() if sources else "none")
    return out, source


def node_rows(
    tree: EpisodeTree,
    node: Node,
    tokenizer: ChatTokenizer | None = None,
    *,
    mode: Mode = "node",
    advantage: float | None = None,
    weight: float | None = 1.0,
    tree_id: str | None = None,
    reward: float | None = None,
) -> list[dict[str, Any]]:
    """The rows of one node (empty when it never acted)."""
    if mode not in ("node", "turn"):
        raise ConfigError(f"mode must be 'node' or 'turn', got {mode!r}")
    segs, source = _segments(node, tokenizer)
    if not segs:
        return []
    base = {
        "tree_id": tree_id or tree.tree_id or task_id(tree),
        "task_id": task_id(tree),
        "env_id": tree.env_id,
        "seed": tree.seed,
        "node_id": node.id,
        "parent_id": node.parent,
        "depth": node.depth,
        "status": node.status.value,
        "num_turns": len(segs),
        "score": node.score,
        "reward": node.reward if reward is None else reward,
        "advantage": advantage,
        "weight": weight,
        "policy_version": node.policy_version,
        "token_source": source,
    }
    if mode == "node":
        prompt = segs[0][0]
        comp: list[int] = []
        mask: list[int] = []
        lps: list[float | None] = []
        for k, (p, c, lp) in enumerate(segs):
            if k:
                comp += p
                mask += [0] * len(p)
                lps += [None] * len(p)
            comp += c
            mask += [1] * len(c)
            lps += lp
        return [{**base, "turn": -1, "prompt_ids": prompt, "completion_ids": comp, "loss_mask": mask, "logprobs": lps}]
    rows, context = [], []
    for k, (p, c, lp) in enumerate(segs):
        context = context + p
        rows.append({**base, "turn": k, "prompt_ids": list(context), "completion_ids": c,
                     "loss_mask": [1] * len(c), "logprobs": lp})
        context = context + c
    return rows


def tree_rows(
    tree: EpisodeTree,
    tokenizer: ChatTokenizer | None = None,
    *,
    mode: Mode = "node",
    credit: Credit | None = None,
    tree_index: int = 0,
    advantages: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
    tree_id: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of every unmasked node of ``tree``, depth first (see :meth:`EpisodeTree.to_rows`).

    Advantages/weights come from ``credit`` (an :func:`~rao_envs.credit.assign_credit`
    result, with ``tree_index`` this tree's position in it; nodes it dropped get no rows),
    or from the ``advantages``/``weights`` maps, else advantage None and weight 1.
    """
    skip = masked_ids(tree)
    rows = []
    for node in tree.walk():
        if node.id in skip:
            continue
        reward = None
        if credit is not None:
            c = credit.nodes[tree_index].get(node.id)
            if c is None:
                continue
            adv, w, reward = c.advantage, c.weight, c.reward
        else:
            adv = None if advantages is None else advantages.get(node.id)
            w = 1.0 if weights is None else weights.get(node.id, 1.0)
        rows += node_rows(tree, node, tokenizer, mode=mode, advantage=adv, weight=w, tree_id=tree_id, reward=reward)
    return rows


def rows_from_trees(
    trees: Sequence[EpisodeTree],
    tokenizer: ChatTokenizer | None = None,
    *,
    mode: Mode = "node",
    credit: Credit | None = None,
    method: str = "rao",
    lam: float | None = None,
    **credit_kwargs: Any,
) -> list[dict[str, Any]]:
    """Training rows of a batch: credit is assigned over the batch (``method``, ``lam``) unless given."""
    if credit is None:
        credit = assign_credit(trees, method, lam=lam, **credit_kwargs)
    rows = []
    for i, tree in enumerate(trees):
        tid = tree.tree_id or f"{task_id(tree)}#{i}"
        rows += tree_rows(tree, tokenizer, mode=mode, credit=credit, tree_index=i, tree_id=tid)
    if not rows and trees and credit.dropped_groups:
        warnings.warn(
            f"rows_from_trees: 0 rows from {len(trees)} trees: credit dropped all {len(credit.dropped_groups)} task "
            "groups. A group needs at least 2 trees of the same task (group_size >= 2) for its leave-one-out baseline, "
            "and a group whose rewards are all equal carries no signal and is dropped unless you pass "
            "drop_no_signal=False (its advantages are then 0).",
            stacklevel=2,
        )
    return rows


def arrow_schema():
    """The pyarrow schema of training rows, from :data:`ROW_SCHEMA` (explicit, so empty/None columns keep their types)."""
    import pyarrow as pa

    types = {
        "string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
        "ints": pa.list_(pa.int64()), "floats": pa.list_(pa.float64()), "mask": pa.list_(pa.int8()),
    }
    return pa.schema([(name, types[kind]) for name, kind in ROW_SCHEMA])


def to_arrow(rows: Sequence[Mapping[str, Any]]):
    """Rows as a ``pyarrow.Table`` with :func:`arrow_schema`."""
    import pyarrow as pa

    return pa.Table.from_pylist([{k: r.get(k) for k in ROW_COLUMNS} for r in rows], schema=arrow_schema())


def to_dataset(rows: Sequence[Mapping[str, Any]]):
    """Rows as a Hugging Face ``datasets.Dataset`` (needs the ``data`` extra)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError('to_dataset needs Hugging Face datasets: pip install "rao_envs[data]"') from None
    return datasets.Dataset(to_arrow(rows))


def write_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows to a Parquet file; :func:`read_parquet` reads them back equal."""
    import pyarrow.parquet as pq

    path = Path(path)
    pq.write_table(to_arrow(rows), path)
    return path


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a Parquet file written by :func:`write_parquet`."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(path)).to_pylist()

"""Credit assignment for recursive episode trees (DESIGN §3, RAO paper §3).

RAO, exactly (``method="rao"``, the default):

* local reward (Eq. 1): ``R(X) = s̃(X) + λ · mean_{c ∈ children(X)} s̃(c)`` — the mean of the
  children's *scores* s̃, not their rewards; the bonus is 0 without (unmasked) children;
* advantage (Eq. 3): sample G trees of the same task; every node of tree g gets
  ``A = R(node) − b_{−g}`` with ``b_{−g} = mean_{g' ≠ g} R(root of g')`` (leave-one-out
  over the *other* trees' roots); no std normalisation;
* groups where every reward is equal carry no signal and are dropped (as are groups with
  fewer than two usable trees: there is no leave-one-out baseline);
* depth weights (Eq. 4-5): ``w_d = α / N_d`` with ``N_d`` the node trajectories at depth d
  in the (kept) batch and ``α = N_total / #depths present``, so the weights sum to N_total.

Alternatives, selectable by name (same rewards, masking, dropping and depth weights):

* ``"root"`` — root broadcast: every node of tree g gets its root's advantage
  ``R_root(g) − b_{−g}`` (outcome-only GRPO with a leave-one-out baseline);
* ``"depth_grpo"`` — per-depth GRPO groups: the nodes at depth d of the G trees of one task
  form a group; ``A = R − mean(group)`` (``std_normalize=True`` divides by the group std);
* ``"sibling"`` — sibling baselines: ``A = R − mean R of the node's siblings`` (leave one
  out); roots, and nodes without siblings, fall back to the RAO tree baseline ``b_{−g}``.

Masking: a node with status ``infra_error`` and its whole subtree are excluded from rewards
(also from its parent's child mean), baselines and training rows. A tree whose root is
masked is dropped from its group. Trees are grouped by task: ``(env_id, seed, task_kwargs)``
unless ``groups`` gives explicit keys.

    credit = assign_credit(trees, lam=0.4)
    credit.advantage(0, "0.1"), credit.weight(0, "0.1")
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rao_envs.errors import ConfigError
from rao_envs.types import EpisodeTree, Node, NodeStatus

METHODS = ("rao", "root", "depth_grpo", "sibling")


@dataclass
class NodeCredit:
    """Credit of one node: its score, local reward, advantage and depth weight."""

    tree: int
    node: str
    depth: int
    score: float
    reward: float
    advantage: float
    weight: float


@dataclass
class Credit:
    """The result of :func:`assign_credit` over a batch of trees.

    ``nodes[i]`` maps node id → :class:`NodeCredit` for tree ``i`` (kept nodes only: masked
    subtrees and dropped groups are absent). ``baselines[i]`` is tree i's leave-one-out root
    baseline (None when its group was dropped or its root is masked).
    """

    method: str
    lam: float
    nodes: list[dict[str, NodeCredit]]
    baselines: list[float | None]
    group_keys: list[Hashable]
    dropped_groups: list[Hashable] = field(default_factory=list)
    depth_counts: dict[int, int] = field(default_factory=dict)
    depth_weights: dict[int, float] = field(default_factory=dict)

    def advantage(self, tree: int, node: str) -> float | None:
        """Advantage of ``node`` in tree ``tree`` (None when masked or dropped)."""
        c = self.nodes[tree].get(node)
        return None if c is None else c.advantage

    def weight(self, tree: int, node: str) -> float | None:
        """Depth weight of ``node`` in tree ``tree`` (None when masked or dropped)."""
        c = self.nodes[tree].get(node)
        return None if c is None else c.weight

    def kept(self, tree: int) -> bool:
        """True when tree ``tree`` contributes rows (its group kept, its root not masked)."""
        return bool(self.nodes[tree])

    def __len__(self) -> int:
        return sum(len(n) for n in self.nodes)


def task_id(tree: EpisodeTree) -> str:
    """The identity of a tree's task, ``env_id:seed`` (plus its task kwargs, if any).

    Trees with the same task id form one credit group (:func:`assign_credit`), and rows carry
    it as ``task_id`` (:mod:`rao_envs.rows`).
    """
    tid = f"{tree.env_id}:{tree.seed}"
    if tree.task_kwargs:
        tid += ":" + json.dumps(tree.task_kwargs, sort_keys=True, separators=(",", ":"), default=str)
    return tid


def local_reward(score: float, child_scores: Sequence[float], lam: float) -> float:
    """RAO Eq. 1 for one node: ``s̃ + λ · mean(children's s̃)`` (no bonus without children).

    The engine calls this when a node ends (``node.reward``); :func:`local_rewards` recomputes
    it over a finished tree with another λ.
    """
    return score + (lam * sum(child_scores) / len(child_scores) if child_scores else 0.0)


def masked_ids(tree: EpisodeTree) -> set[str]:
    """Ids of every node excluded from training: ``infra_error`` nodes and their subtrees."""
    out: set[str] = set()
    for node in tree.walk():  # depth first: parents before children
        if node.status is NodeStatus.INFRA_ERROR or (node.parent is not None and node.parent in out):
            out.add(node.id)
    return out


def node_score(node: Node) -> float:
    """s̃ of an unmasked node: its verifier score, 0 when it never finished."""
    if node.score is None:
        if not node.status.ended:
            raise ConfigError(
                f"node {node.id} is still {node.status.value}: assign credit to finished trees only "
                "(run the episode until tree.done)"
            )
        return 0.0
    return float(node.score)


def local_rewards(tree: EpisodeTree, lam: float | None = None) -> dict[str, float]:
    """RAO Eq. 1 for every unmasked node: ``s̃(X) + λ·mean of its unmasked children's s̃``.

    ``lam`` defaults to the tree's own λ (``tree.lam``), which reproduces ``node.reward``.
    """
    lam = tree.lam if lam is None else float(lam)
    skip = masked_ids(tree)
    scores = {nid: node_score(n) for nid, n in tree.nodes.items() if nid not in skip}
    out = {}
    for nid, s in scores.items():
        out[nid] = local_reward(s, [scores[c] for c in tree.nodes[nid].children if c in scores], lam)
    return out


def depth_weights(counts: dict[int, int]) -> dict[int, float]:
    """RAO Eq. 4-5: ``w_d = α / N_d`` with ``α = N_total / #depths`` (weights sum to N_total)."""
    counts = {d: n for d, n in counts.items() if n > 0}
    if not counts:
        return {}
    alpha = sum(counts.values()) / len(counts)
    return {d: alpha / n for d, n in sorted(counts.items())}


def assign_credit(
    trees: Sequence[EpisodeTree],
    method: str = "rao",
    *,
    lam: float | None = None,
    groups: Sequence[Hashable] | None = None,
    drop_no_signal: bool = True,
    depth_weighting: bool = True,
    std_normalize: bool = False,
    eps: float = 1e-6,
) -> Credit:
    """Rewards, advantages and depth weights for every kept node of ``trees`` (module docstring).

    ``lam`` overrides each tree's λ; ``groups`` gives one group key per tree (default: the
    task, :func:`task_id`). ``std_normalize`` divides advantages by the std of the rewards
    that formed the baseline (off by default: RAO uses none). ``depth_weighting=False``
    gives every node weight 1.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown credit method {method!r}; choose one of {list(METHODS)}")
    if isinstance(trees, (str, bytes, EpisodeTree)) or not isinstance(trees, Iterable):
        raise ConfigError(f"assign_credit takes a list of EpisodeTree objects, got {type(trees).__name__}")
    trees = list(trees)
    bad = next((i for i, t in enumerate(trees) if not isinstance(t, EpisodeTree)), None)
    if bad is not None:
        raise ConfigError(f"assign_credit takes EpisodeTree objects; item {bad} is {type(trees[bad]).__name__}")
    if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam)):
        raise ConfigError(f"lam must be a finite number such as 0.4 (or None for each tree's own), got {lam!r}")
    if groups is not None and len(groups) != len(trees):
        raise ConfigError(f"groups has {len(groups)} keys for {len(trees)} trees: give one key per tree")
    keys = list(groups) if groups is not None else [task_id(t) for t in trees]
    rewards = [local_rewards(t, lam) for t in trees]
    members: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        if "0" in rewards[i]:  # a masked root drops the whole tree
            members.setdefault(k, []).append(i)

    nodes: list[dict[str, NodeCredit]] = [{} for _ in trees]
    baselines: list[float | None] = [None] * len(trees)
    dropped: list[Hashable] = []
    for key in dict.fromkeys(keys):
        idx = members.get(key, [])
        all_r = [r for i in idx for r in rewards[i].values()]
        if len(idx) < 2 or (drop_no_signal and max(all_r) - min(all_r) <= 1e-12):
            dropped.append(key)  # no leave-one-out baseline, or no signal
            continue
        roots = {i: rewards[i]["0"] for i in idx}
        total = sum(roots.values())
        for i in idx:
            others = [roots[j] for j in idx if j != i]
            b = (total - roots[i]) / len(others)
            baselines[i] = b
            scale = _std(others, eps) if std_normalize else 1.0
            tree = trees[i]
            for nid, r in rewards[i].items():
                node = tree.nodes[nid]
                if method == "rao":
                    adv = (r - b) / scale
                elif method == "root":
                    adv = (roots[i] - b) / scale
                elif method == "sibling":
                    sib = [rewards[i][s] for s in _siblings(tree, node) if s in rewards[i]]
                    if sib:
                        adv = (r - sum(sib) / len(sib)) / (_std(sib, eps) if std_normalize else 1.0)
                    else:
                        adv = (r - b) / scale
                else:  # depth_grpo: filled below
                    adv = 0.0
                nodes[i][nid] = NodeCredit(i, nid, node.depth, node_score(node), r, adv, 1.0)
        if method == "depth_grpo":
            by_depth: dict[int, list[NodeCredit]] = {}
            for i in idx:
                for c in nodes[i].values():
                    by_depth.setdefault(c.depth, []).append(c)
            for group in by_depth.values():
                rs = [c.reward for c in group]
                mean = sum(rs) / len(rs)
                scale = _std(rs, eps) if std_normalize else 1.0
                for c in group:
                    c.advantage = (c.reward - mean) / scale

    counts: dict[int, int] = {}
    for per_tree in nodes:
        for c in per_tree.values():
            counts[c.depth] = counts.get(c.depth, 0) + 1
    weights = depth_weights(counts) if depth_weighting else {d: 1.0 for d in counts}
    for per_tree in nodes:
        for c in per_tree.values():
            c.weight = weights[c.depth]
    return Credit(
        method=method,
        lam=float(lam) if lam is not None else (trees[0].lam if trees else 0.0),
        nodes=nodes,
        baselines=baselines,
        group_keys=keys,
        dropped_groups=dropped,
        depth_counts=dict(sorted(counts.items())),
        depth_weights=weights,
    )


def _siblings(tree: EpisodeTree, node: Node) -> list[str]:
    if node.parent is None:
        return []
    return [c for c in tree.nodes[node.parent].children if c != node.id]


def _std(values: Sequence[float], eps: float) -> float:
    if len(values) < 2:
        return 1.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) + eps


def credit_summary(credit: Credit) -> dict[str, Any]:
    """Numbers for logs: nodes kept, groups dropped, depth counts and weights, mean advantage."""
    advs = [c.advantage for per in credit.nodes for c in per.values()]
    return {
        "method": credit.method,
        "nodes": len(advs),
        "trees_kept": sum(1 for per in credit.nodes if per),
        "groups_dropped": len(credit.dropped_groups),
        "depth_counts": credit.depth_counts,
        "depth_weights": credit.depth_weights,
        "mean_advantage": sum(advs) / len(advs) if advs else 0.0,
    }

"""Credit assignment (rao_envs.credit) against hand-computed cases."""

from __future__ import annotations

import pytest

from rao_envs.credit import assign_credit, depth_weights, local_rewards, masked_ids
from rao_envs.errors import ConfigError
from rao_envs.types import EpisodeTree, Limits, Node, NodeStatus

F, T, I, C = NodeStatus.FINISHED, NodeStatus.TRUNCATED, NodeStatus.INFRA_ERROR, NodeStatus.CANCELLED


def make_tree(spec: dict[str, tuple[NodeStatus, float | None]], seed: int = 0, lam: float = 0.0, env: str = "Toy-v0") -> EpisodeTree:
    """A tree from ``{node id: (status, score)}``; parents derive from the dotted ids."""
    nodes = {}
    for nid in sorted(spec, key=lambda s: [int(p) for p in s.split(".")]):
        status, score = spec[nid]
        parent = nid.rsplit(".", 1)[0] if "." in nid else None
        nodes[nid] = Node(id=nid, parent=parent, depth=nid.count("."), goal="g", budget=5, status=status, score=score)
        if parent is not None:
            nodes[parent].children.append(nid)
    ordered = {"0": nodes.pop("0"), **nodes}
    return EpisodeTree(env_id=env, seed=seed, limits=Limits(), nodes=ordered, lam=lam)


def test_worked_example_local_reward():
    # AVB's figure: R = 1 + 0.4 * 1/2 * (0 + 1) = 1.2 (children's scores, not their rewards)
    tree = make_tree({"0": (F, 1.0), "0.0": (T, 0.0), "0.1": (F, 1.0), "0.1.0": (F, 1.0)})
    r = local_rewards(tree, lam=0.4)
    assert r["0"] == pytest.approx(1.2)
    assert r["0.1"] == pytest.approx(1.4)  # its own child's score
    assert r["0.0"] == 0.0 and r["0.1.0"] == 1.0


def test_local_reward_matches_engine():
    import rao_envs

    eng = rao_envs.make_engine("Toy-v0", lam=0.4, difficulty="hard")
    from rao_envs.rollout import run_sync

    tree = run_sync(eng, eng.task.oracle(), seed=3)
    rewards = local_rewards(tree)
    assert len(tree.nodes) > 3
    for nid, node in tree.nodes.items():
        assert rewards[nid] == pytest.approx(node.reward)


def test_leave_one_out_root_baseline():
    # four trees of one task with root rewards 1, 0, 0, 1 (λ = 0)
    trees = [
        make_tree({"0": (F, 1.0), "0.0": (F, 1.0), "0.1": (T, 0.0)}),
        make_tree({"0": (T, 0.0), "0.0": (F, 1.0)}),
        make_tree({"0": (T, 0.0)}),
        make_tree({"0": (F, 1.0)}),
    ]
    cr = assign_credit(trees, depth_weighting=False)
    assert cr.baselines == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1 / 3])
    # every node of tree 0 uses tree 0's baseline: A = R(node) - b_{-0}
    assert cr.advantage(0, "0") == pytest.approx(1 - 1 / 3)
    assert cr.advantage(0, "0.0") == pytest.approx(1 - 1 / 3)
    assert cr.advantage(0, "0.1") == pytest.approx(0 - 1 / 3)  # weak child under a good root: negative
    assert cr.advantage(1, "0.0") == pytest.approx(1 - 2 / 3)
    assert cr.advantage(2, "0") == pytest.approx(-2 / 3)
    assert cr.weight(0, "0.1") == 1.0
    # no std normalisation: the advantages are raw differences
    assert cr.advantage(3, "0") == pytest.approx(2 / 3)


def test_groups_by_task_and_drop_no_signal():
    a = [make_tree({"0": (F, 1.0)}, seed=1), make_tree({"0": (T, 0.0)}, seed=1)]
    same = [make_tree({"0": (F, 1.0), "0.0": (F, 1.0)}, seed=2), make_tree({"0": (F, 1.0)}, seed=2)]
    alone = [make_tree({"0": (F, 1.0)}, seed=3)]
    cr = assign_credit(a + same + alone)
    assert cr.kept(0) and cr.kept(1)
    assert not cr.kept(2) and not cr.kept(3)  # every reward equal: no signal, dropped
    assert not cr.kept(4)  # one tree: no leave-one-out baseline
    assert len(cr.dropped_groups) == 2
    keep = assign_credit(a + same, drop_no_signal=False)
    assert keep.kept(2) and keep.advantage(2, "0.0") == 0.0
    with pytest.raises(ConfigError, match="one key per tree"):
        assign_credit(a, groups=["x"])


def test_depth_weights_1_4_16():
    spec = {"0": (F, 1.0)}
    for i in range(4):
        spec[f"0.{i}"] = (F, 1.0)
        for j in range(4):
            spec[f"0.{i}.{j}"] = (F, float(j % 2))
    w = depth_weights({0: 1, 1: 4, 2: 16})
    assert w == pytest.approx({0: 7.0, 1: 7 / 4, 2: 7 / 16})  # α = 21 / 3 = 7
    assert sum(n * w[d] for d, n in {0: 1, 1: 4, 2: 16}.items()) == pytest.approx(21)
    # the same through assign_credit: a batch of 1 root, 4 children, 16 grandchildren (plus a 1-node
    # partner tree so the group has a baseline: N = {0: 2, 1: 4, 2: 16}, α = 22 / 3)
    cr = assign_credit([make_tree(spec), make_tree({"0": (T, 0.0)})])
    alpha = 22 / 3
    assert cr.depth_counts == {0: 2, 1: 4, 2: 16}
    assert cr.weight(0, "0") == pytest.approx(alpha / 2)
    assert cr.weight(0, "0.3") == pytest.approx(alpha / 4)
    assert cr.weight(0, "0.3.1") == pytest.approx(alpha / 16)


def test_masked_subtrees_excluded_everywhere():
    # node 0.1 hit an infrastructure error; its child was cancelled with it
    t0 = make_tree({"0": (F, 1.0), "0.0": (F, 1.0), "0.1": (I, None), "0.1.0": (C, 0.0)}, lam=0.5)
    t1 = make_tree({"0": (I, None), "0.0": (F, 1.0)})  # masked root: whole tree out
    t2 = make_tree({"0": (T, 0.0)})
    t3 = make_tree({"0": (F, 1.0)})
    assert masked_ids(t0) == {"0.1", "0.1.0"}
    r = local_rewards(t0)
    assert set(r) == {"0", "0.0"}
    assert r["0"] == pytest.approx(1.5)  # mean over the unmasked child only
    cr = assign_credit([t0, t1, t2, t3])
    assert set(cr.nodes[0]) == {"0", "0.0"} and cr.nodes[1] == {}
    assert cr.baselines[1] is None
    assert cr.baselines[0] == pytest.approx((0.0 + 1.0) / 2)  # t1's masked root is not in it
    assert cr.depth_counts == {0: 3, 1: 1}


def test_alternative_methods():
    t0 = make_tree({"0": (F, 1.0), "0.0": (F, 1.0), "0.1": (T, 0.0)})
    t1 = make_tree({"0": (T, 0.0), "0.0": (T, 0.0)})
    root = assign_credit([t0, t1], "root", depth_weighting=False)
    assert root.advantage(0, "0.1") == pytest.approx(1.0) and root.advantage(1, "0.0") == pytest.approx(-1.0)
    dg = assign_credit([t0, t1], "depth_grpo", depth_weighting=False)
    assert dg.advantage(0, "0") == pytest.approx(0.5) and dg.advantage(1, "0") == pytest.approx(-0.5)
    # depth 1 group: rewards 1, 0, 0 -> mean 1/3
    assert dg.advantage(0, "0.0") == pytest.approx(2 / 3) and dg.advantage(1, "0.0") == pytest.approx(-1 / 3)
    sib = assign_credit([t0, t1], "sibling", depth_weighting=False)
    assert sib.advantage(0, "0.0") == pytest.approx(1.0) and sib.advantage(0, "0.1") == pytest.approx(-1.0)
    assert sib.advantage(1, "0.0") == pytest.approx(0.0 - 1.0)  # only child: RAO tree baseline
    assert sib.advantage(0, "0") == pytest.approx(1.0)
    std = assign_credit([t0, t1], "depth_grpo", std_normalize=True)
    assert std.advantage(0, "0") == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ConfigError, match="unknown credit method"):
        assign_credit([t0, t1], "ppo")


def test_unfinished_tree_is_an_error():
    t = make_tree({"0": (NodeStatus.RUNNING, None)})
    with pytest.raises(ConfigError, match="finished trees"):
        local_rewards(t)

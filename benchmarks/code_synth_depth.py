"""How the two Code-Synth oracles fare by difficulty and ``max_depth`` (issue 13, part 4).

For each difficulty, over the same seeds of both splits (half ``train``, half ``val``), runs the
flat oracle (writes every function itself) and the delegating oracle (one child per function,
dependencies first, parallel waves) at ``max_depth`` 0, 1 and the default 4, through the
Gymnasium view with 25 steps per node, and prints the root success rate (root finished with
score 1.0), the mean root score, the share of nodes scoring 1.0 and nodes per tree.

    python benchmarks/code_synth_depth.py [--seeds 20] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.types import NodeStatus

DIFFICULTIES = ("easy", "medium", "hard", "extreme")


def run(env, policy, seed: int):
    """One episode of the Gymnasium view; returns the finished tree."""
    obs, info = env.reset(seed=seed)
    while True:
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree


def measure(difficulty: str, seeds: list[int], max_depth: int | None, delegate: bool) -> dict:
    """Success and tree-size numbers of one policy on one difficulty (both splits)."""
    trees = []
    for split in ("train", "val"):
        kwargs = {"difficulty": difficulty, "split": split}
        if max_depth is not None:
            kwargs["max_depth"] = max_depth
        env = gymnasium.make("rao_envs/CodeSynth-v0", **kwargs).unwrapped
        for seed in seeds[::2] if split == "train" else seeds[1::2]:
            trees.append(run(env, env.task.oracle(delegate=delegate), seed))
    ok = [t.root.status is NodeStatus.FINISHED and t.root.score == 1.0 for t in trees]
    all_nodes = [n for t in trees for n in t.nodes.values()]
    return {
        "success": sum(ok) / len(ok),
        "score": statistics.mean(t.root.score or 0.0 for t in trees),
        "nodes_ok": sum(n.score == 1.0 for n in all_nodes) / len(all_nodes),
        "nodes_mean": statistics.mean(len(t.nodes) for t in trees),
        "functions": statistics.mean(len(t.root.args["targets"]) for t in trees),
        "infra": sum(n.status is NodeStatus.INFRA_ERROR for n in all_nodes),
    }


def main() -> None:
    """Run the measurement and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="episodes per difficulty and setting (half train, half val)")
    ap.add_argument("--quick", action="store_true", help="4 seeds, easy and hard only (smoke test)")
    args = ap.parse_args()
    seeds = list(range(4 if args.quick else args.seeds))
    difficulties = ("easy", "hard") if args.quick else DIFFICULTIES
    settings = [("flat", None, False), ("d=0", 0, True), ("d=1", 1, True), ("d=4 (default)", None, True)]
    print(f"Code-Synth oracles: {len(seeds)} seeds per cell (half train, half val), 25 steps per node\n")
    print("| difficulty | functions (mean) | " + " | ".join(s[0] for s in settings) + " | nodes per tree (delegating) |")
    print("|---|---:|" + "---|" * len(settings) + "---:|")
    t0 = time.perf_counter()
    infra = 0
    for difficulty in difficulties:
        cells, extra = [], None
        for _label, depth, delegate in settings:
            m = measure(difficulty, seeds, depth, delegate)
            infra += m["infra"]
            cells.append(f"{m['success']:.0%} (score {m['score']:.2f})")
            extra = m
        print(f"| {difficulty} | {extra['functions']:.1f} | " + " | ".join(cells) + f" | {extra['nodes_mean']:.1f} |")
    print(f"\ncells: root success rate (mean root score); infra errors: {infra}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

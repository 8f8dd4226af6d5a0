"""Oracle success on DeepSearchSynth-v0 by difficulty: delegating vs flat (issue 14, part 5).

For each difficulty, over the same seeds of both splits (even seeds ``train``, odd seeds
``val``: two worlds per difficulty), runs through the Gymnasium view at the paper's DeepDive
limits (25 steps per node):

* the flat oracle (never delegates), and the same with 200 steps per node ("enough budget");
* the delegating oracle at ``max_depth`` 1..4 (4 is the default);

and prints the root success rate (root finished with score 1.0), the share of trees in which
every node scored 1.0, and nodes per tree / deepest node / root steps. Corpus sizes are the
difficulties' defaults (1k, 10k, 30k, 100k documents); the first run builds and caches the
indexes (about a minute), later runs open them.

    python benchmarks/deep_search_depth.py [--seeds 50] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.envs.deep_search import LEVELS
from rao_envs.types import NodeStatus

DIFFICULTIES = tuple(LEVELS)


def run(env, policy, seed: int):
    """One episode of the Gymnasium view; returns the finished tree."""
    obs, info = env.reset(seed=seed)
    while True:
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree


def measure(difficulty: str, seeds: list[int], delegate: bool, corpus_size: int | None, **limits) -> dict:
    """Success and tree-size numbers of one oracle on one difficulty (both splits)."""
    trees, misses = [], 0
    for split in ("train", "val"):
        kwargs = {"difficulty": difficulty, "split": split, **limits}
        if corpus_size is not None:
            kwargs["corpus_size"] = corpus_size
        env = gymnasium.make("rao_envs/DeepSearchSynth-v0", **kwargs).unwrapped
        for seed in seeds[::2] if split == "train" else seeds[1::2]:
            oracle = env.task.oracle(delegate=delegate)
            trees.append(run(env, oracle, seed))
            misses += oracle.stats["not_listed"] + oracle.stats["not_read"]
    ok = [t.root.status is NodeStatus.FINISHED and t.root.score == 1.0 for t in trees]
    nodes = [len(t.nodes) for t in trees]
    return {
        "success": sum(ok) / len(ok),
        "all_nodes_ok": sum(all(n.score == 1.0 for n in t.nodes.values()) for t in trees) / len(trees),
        "nodes_mean": statistics.mean(nodes),
        "nodes_max": max(nodes),
        "depth_max": max(n.depth for t in trees for n in t.nodes.values()),
        "root_steps": statistics.mean(t.root.steps_used for t in trees),
        "steps": statistics.mean(sum(n.steps_used for n in t.nodes.values()) for t in trees),
        "misses": misses,
        "n": len(trees),
    }


def main() -> None:
    """Run the measurement and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=50, help="episodes per difficulty and setting (half train, half val)")
    ap.add_argument("--corpus-size", type=int, default=None, help="override every difficulty's corpus size")
    ap.add_argument("--quick", action="store_true", help="6 seeds on 1,000-document corpora (smoke test)")
    args = ap.parse_args()
    n_seeds, size = (6, 1000) if args.quick else (args.seeds, args.corpus_size)
    seeds = list(range(n_seeds))
    depths = [1, 2, 3, 4]

    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for difficulty in DIFFICULTIES:
        row = {
            "flat": measure(difficulty, seeds, False, size),
            "flat200": measure(difficulty, seeds, False, size, max_steps_per_node=200),
        }
        for d in depths:
            row[d] = measure(difficulty, seeds, True, size, max_depth=d)
        results[difficulty] = row
    elapsed = time.perf_counter() - t0

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    def shape(m: dict) -> str:
        return f"{m['nodes_mean']:.1f} / {m['nodes_max']} ({m['depth_max']})"

    head = ["difficulty", "flat", "flat, 200 steps"] + [f"delegating d={d}" for d in depths]
    keys = ["flat", "flat200", *depths]
    tables = [
        ("Root success rate (25 steps per node unless noted; d = max_depth, 4 is the default)", head,
         [[k] + [pct(r[c]["success"]) for c in keys] for k, r in results.items()]),
        ("Trees where every node scored 1.0", head,
         [[k] + [pct(r[c]["all_nodes_ok"]) for c in keys] for k, r in results.items()]),
        ("Nodes per tree, mean / max (deepest node)", head,
         [[k] + [shape(r[c]) for c in keys] for k, r in results.items()]),
        ("Steps per tree, mean (all nodes)", head,
         [[k] + [f"{r[c]['steps']:.1f}" for c in keys] for k, r in results.items()]),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=200)
        for title, cols, rows in tables:
            table = Table(title=title)
            for c in cols:
                table.add_column(c, justify="left" if c == "difficulty" else "right")
            for r in rows:
                table.add_row(*r)
            console.print(table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        for title, cols, rows in tables:
            print(title)
            print(" | ".join(cols))
            for r in rows:
                print(" | ".join(r))
    misses = sum(m["misses"] for r in results.values() for m in r.values())
    n = results[DIFFICULTIES[0]]["flat"]["n"]
    sizes = ", ".join(f"{k} {size or LEVELS[k].size:,}" for k in DIFFICULTIES)
    print(f"{n} episodes per cell (seeds 0..{n_seeds - 1}, even train, odd val); corpus sizes: {sizes}; {elapsed:.1f} s")
    print(f"hops whose page was not in the top 5 or whose fact was not read: {misses}")


if __name__ == "__main__":
    main()

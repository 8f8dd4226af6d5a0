"""How deep a delegation tree TextCraft-v0 needs, per difficulty (issues 3 and 11).

For each difficulty, over the paper's fixed ``val`` task set (``--tasks`` first tasks per
difficulty, default all: 147 / 213 / 136 / 136; ``reset(seed=i)`` plays task ``i``), runs
the delegating oracle (``--strategy lean``, the default, or ``per_ingredient``) at
``max_depth`` 4..10 and the flat oracle (never delegates) through the Gymnasium view
(25 steps per node), and prints:

* the root success rate (root finished with score 1.0) per policy and depth, and the
  smallest ``max_depth`` that solves every seed;
* the share of *all* nodes scoring 1.0 (shared-inventory races would show up here);
* nodes per tree (mean / max) and the deepest node used.

    python benchmarks/textcraft_depth.py [--tasks N] [--depths 4-10] [--strategy lean] [--quick]
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


def measure(difficulty: str, seeds: list[int], max_depth: int | None, delegate: bool, strategy: str = "lean") -> dict:
    """Success and tree-size numbers of one policy on the first ``len(seeds)`` val tasks of one difficulty."""
    trees = []
    kwargs = {"difficulty": difficulty, "split": "val"}
    if max_depth is not None:
        kwargs["max_depth"] = max_depth
    env = gymnasium.make("rao_envs/TextCraft-v0", **kwargs).unwrapped
    for seed in seeds:
        trees.append(run(env, env.task.oracle(delegate=delegate, strategy=strategy), seed))
    ok = [t.root.status is NodeStatus.FINISHED and t.root.score == 1.0 for t in trees]
    nodes = [len(t.nodes) for t in trees]
    all_nodes = [n for t in trees for n in t.nodes.values()]
    return {
        "success": sum(ok) / len(ok),
        "nodes_ok": sum(n.score == 1.0 for n in all_nodes) / len(all_nodes),
        "all_nodes_ok": sum(all(n.score == 1.0 for n in t.nodes.values()) for t in trees) / len(trees),
        "nodes_mean": statistics.mean(nodes),
        "nodes_max": max(nodes),
        "depth_max": max(n.depth for n in all_nodes),
        "n": len(trees),
    }


def _min_text(m: int | None, depths: list[int]) -> str:
    if m is None:
        return f"> {depths[-1]} (none tried)"
    return f"{m} (smallest tried)" if m == depths[0] else str(m)


def main() -> None:
    """Run the measurement and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=0, help="first val tasks per difficulty (0: all of them)")
    ap.add_argument("--strategy", default="lean", choices=("lean", "per_ingredient"), help="the delegating oracle")
    ap.add_argument("--depths", default="4-10", help="max_depth range for the delegating oracle, e.g. 4-10")
    ap.add_argument("--quick", action="store_true", help="6 seeds, depths 6-7 (smoke test)")
    args = ap.parse_args()
    lo, _, hi = args.depths.partition("-")
    depths = list(range(int(lo), int(hi or lo) + 1))
    from rao_envs.envs.textcraft import TextCraftSynth

    n_tasks = args.tasks
    if args.quick:
        n_tasks, depths = 4, [6, 7]

    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for difficulty in DIFFICULTIES:
        total = len(TextCraftSynth.tasks("val", difficulty))
        seeds = list(range(min(n_tasks, total) if n_tasks else total))
        row = {"flat": measure(difficulty, seeds, None, delegate=False)}
        for d in depths:
            row[d] = measure(difficulty, seeds, d, delegate=True, strategy=args.strategy)
        results[difficulty] = row
    elapsed = time.perf_counter() - t0

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    minimal = {}
    for difficulty, row in results.items():
        minimal[difficulty] = next((d for d in depths if row[d]["success"] == 1.0), None)

    head = ["difficulty", "flat"] + [f"d={d}" for d in depths] + ["min max_depth for 100%"]
    lines = [
        ("Root success rate (delegating oracle at max_depth d, flat oracle; 25 steps per node)", head,
         [[k, pct(r["flat"]["success"])] + [pct(r[d]["success"]) for d in depths]
          + [_min_text(minimal[k], depths)] for k, r in results.items()]),
        ("Trees where every node scored 1.0", head[:-1],
         [[k, pct(r["flat"]["all_nodes_ok"])] + [pct(r[d]["all_nodes_ok"]) for d in depths] for k, r in results.items()]),
        ("Nodes per tree, mean / max (deepest node)", head[:-1],
         [[k, f"{r['flat']['nodes_mean']:.0f} / {r['flat']['nodes_max']}"]
          + [f"{r[d]['nodes_mean']:.1f} / {r[d]['nodes_max']} ({r[d]['depth_max']})" for d in depths]
          for k, r in results.items()]),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=200)
        for title, cols, rows in lines:
            table = Table(title=title)
            for c in cols:
                table.add_column(c, justify="right" if c != "difficulty" else "left")
            for r in rows:
                table.add_row(*r)
            console.print(table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        for title, cols, rows in lines:
            print(title)
            print(" | ".join(cols))
            for r in rows:
                print(" | ".join(r))
    sizes = ", ".join(f"{k} {r['flat']['n']}" for k, r in results.items())
    print(f"val tasks per cell: {sizes} (the first of the paper's fixed val set); strategy {args.strategy}; {elapsed:.1f} s")
    for difficulty in DIFFICULTIES:
        m = minimal[difficulty]
        print(f"{difficulty}: smallest max_depth solving every seed: {_min_text(m, depths)}")


if __name__ == "__main__":
    main()

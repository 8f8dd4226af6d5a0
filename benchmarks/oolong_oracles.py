"""How the OolongSynth-v0 oracles do by difficulty: delegating (chunk, delegate, combine) vs flat (read alone).

For each difficulty, over the same seeds of both splits (half ``train``, half ``val``), runs
both oracles through the Gymnasium view at the task's default limits (reading budget 4,096
characters, ``max_depth`` 2, 8 children per turn, 25 steps per node) and prints:

* the root success rate (score 1.0) and mean root score of each oracle;
* for the delegating oracle, the share of trees where every node scored 1.0, nodes per tree
  (mean / max) and the deepest node;
* the flat oracle's mean score per question kind.

    python benchmarks/oolong_oracles.py [--seeds 50] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import gymnasium

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.envs.oolong_synth import ROOT_KINDS, OolongSynth

DIFFICULTIES = OolongSynth.difficulties


def run(env, policy, seed: int):
    """One episode of the Gymnasium view; returns the finished tree."""
    obs, info = env.reset(seed=seed)
    while True:
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree


def measure(difficulty: str, seeds: list[int], delegate: bool) -> dict:
    """Success, score and tree-size numbers of one oracle on one difficulty (both splits)."""
    trees = []
    for split in ("train", "val"):
        env = gymnasium.make("rao_envs/OolongSynth-v0", difficulty=difficulty, split=split).unwrapped
        for seed in seeds[::2] if split == "train" else seeds[1::2]:
            trees.append(run(env, env.task.oracle(delegate=delegate), seed))
    scores = [t.root.score or 0.0 for t in trees]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for t, s in zip(trees, scores):
        by_kind[t.instance["args"]["question"]["kind"]].append(s)
    nodes = [len(t.nodes) for t in trees]
    return {
        "success": sum(s == 1.0 for s in scores) / len(scores),
        "mean": statistics.mean(scores),
        "all_nodes_ok": sum(all(n.score == 1.0 for n in t.nodes.values()) for t in trees) / len(trees),
        "nodes_mean": statistics.mean(nodes),
        "nodes_max": max(nodes),
        "depth_max": max(n.depth for t in trees for n in t.nodes.values()),
        "by_kind": {k: statistics.mean(v) for k, v in by_kind.items()},
        "n": len(trees),
    }


def main() -> None:
    """Run the measurement and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=50, help="episodes per difficulty and oracle (half train, half val)")
    ap.add_argument("--quick", action="store_true", help="6 seeds (smoke test)")
    args = ap.parse_args()
    seeds = list(range(6 if args.quick else args.seeds))
    t0 = time.perf_counter()
    results = {d: {"delegating": measure(d, seeds, True), "flat": measure(d, seeds, False)} for d in DIFFICULTIES}
    elapsed = time.perf_counter() - t0

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    tables = [
        ("Root success (score 1.0) and mean root score, by difficulty",
         ["difficulty", "delegating: success", "mean score", "flat: success", "mean score"],
         [[d, pct(r["delegating"]["success"]), f"{r['delegating']['mean']:.2f}", pct(r["flat"]["success"]), f"{r['flat']['mean']:.2f}"]
          for d, r in results.items()]),
        ("Delegating oracle trees",
         ["difficulty", "every node 1.0", "nodes mean / max", "deepest node"],
         [[d, pct(r["delegating"]["all_nodes_ok"]), f"{r['delegating']['nodes_mean']:.1f} / {r['delegating']['nodes_max']}",
           str(r["delegating"]["depth_max"])] for d, r in results.items()]),
        ("Flat oracle: mean root score per question kind",
         ["difficulty", *ROOT_KINDS],
         [[d] + [f"{r['flat']['by_kind'][k]:.2f}" if k in r["flat"]["by_kind"] else "-" for k in ROOT_KINDS]
          for d, r in results.items()]),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=160)
        for title, cols, rows in tables:
            table = Table(title=title)
            for c in cols:
                table.add_column(c, justify="left" if c == "difficulty" else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        for title, cols, rows in tables:
            print(title)
            print(" | ".join(cols))
            for row in rows:
                print(" | ".join(row))
    n = results[DIFFICULTIES[0]]["flat"]["n"]
    print(f"{n} episodes per cell (seeds 0..{len(seeds) - 1}, even seeds train split, odd seeds val split); {elapsed:.1f} s")


if __name__ == "__main__":
    main()

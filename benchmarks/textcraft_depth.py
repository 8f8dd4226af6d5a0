"""How deep a delegation tree TextCraft-v0 needs, per difficulty (issues 3 and 11).

For each difficulty, over the paper's fixed ``val`` task set (all of it by default: 147 /
213 / 136 / 136 tasks; ``--tasks N`` keeps the first N per difficulty; ``reset(seed=i)``
plays task ``i``), runs the delegating oracle (``--strategy lean``, the default, or
``per_ingredient``) at ``max_depth`` 4..10 and the flat oracle (never delegates) through the
Gymnasium view (25 steps per node, the task's default ``max_nodes``), and prints:

* the root success rate (root finished with score 1.0) per policy and depth, and the
  smallest ``max_depth`` that solves every task;
* the share of trees where *every* node scored 1.0 (shared-inventory races would show here);
* nodes per tree (mean / max) and the deepest node used, and how many trees reached
  ``max_nodes`` (a refused delegation: raise the limit if any did).

Trees run in ``--workers`` processes (default 2), one chunk of tasks of one (difficulty,
policy) cell at a time, largest cells first, with a progress bar. ::

    python benchmarks/textcraft_depth.py [--tasks N] [--depths 4-10] [--strategy lean] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

DIFFICULTIES = ("easy", "medium", "hard", "extreme")
_ENVS: dict[tuple, object] = {}  # per worker process: one env per (difficulty, max_depth)


def _env(difficulty: str, max_depth: int | None):
    """The worker's env of one cell (built once: the task sets take a second to load)."""
    import gymnasium

    import rao_envs  # noqa: F401  (registers the tasks)

    key = (difficulty, max_depth)
    if key not in _ENVS:
        kwargs = {"difficulty": difficulty, "split": "val"}
        if max_depth is not None:
            kwargs["max_depth"] = max_depth
        _ENVS[key] = gymnasium.make("rao_envs/TextCraft-v0", **kwargs).unwrapped
    return _ENVS[key]


def run(env, policy, seed: int):
    """One episode of the Gymnasium view; returns the finished tree."""
    obs, info = env.reset(seed=seed)
    step = env.step
    while True:
        obs, _r, term, trunc, info = step(policy(obs, info))
        if term or trunc:
            return env.tree


def _tree_stats(tree, max_nodes: int) -> dict:
    from rao_envs.types import NodeStatus

    nodes = tree.nodes.values()
    return {
        "ok": tree.root.status is NodeStatus.FINISHED and tree.root.score == 1.0,
        "all_ok": all(n.score == 1.0 for n in nodes),
        "nodes": len(tree.nodes),
        "depth": max(n.depth for n in nodes),
        "full": len(tree.nodes) >= max_nodes,
    }


def run_chunk(job: tuple) -> tuple:
    """Worker: the trees of ``seeds`` for one cell; returns ``(difficulty, policy, [stats per tree])``."""
    difficulty, max_depth, delegate, strategy, seeds = job
    env = _env(difficulty, max_depth)
    max_nodes = env.engine.limits.max_nodes
    out = [_tree_stats(run(env, env.task.oracle(delegate=delegate, strategy=strategy), s), max_nodes) for s in seeds]
    return difficulty, max_depth if delegate else "flat", out


def summarize(trees: list[dict]) -> dict:
    """One table cell from per-tree stats."""
    nodes = [t["nodes"] for t in trees]
    return {
        "success": sum(t["ok"] for t in trees) / len(trees),
        "all_nodes_ok": sum(t["all_ok"] for t in trees) / len(trees),
        "nodes_mean": statistics.mean(nodes),
        "nodes_max": max(nodes),
        "depth_max": max(t["depth"] for t in trees),
        "full": sum(t["full"] for t in trees),
        "n": len(trees),
    }


def _min_text(m: int | None, depths: list[int]) -> str:
    if m is None:
        return f"> {depths[-1]} (none tried)"
    return f"{m} (smallest tried)" if m == depths[0] else str(m)


def _jobs(sizes: dict[str, int], depths: list[int], strategy: str) -> list[tuple]:
    """Chunks of tasks per cell, the expensive ones (deep extreme trees) first."""
    chunk = {"easy": 50, "medium": 50, "hard": 12, "extreme": 3}
    jobs = []
    for difficulty in reversed(DIFFICULTIES):
        n, c = sizes[difficulty], chunk[difficulty]
        for d in sorted(depths, reverse=True):
            jobs += [(difficulty, d, True, strategy, list(range(i, min(i + c, n)))) for i in range(0, n, c)]
        jobs += [(difficulty, None, False, strategy, list(range(i, min(i + 50, n)))) for i in range(0, n, 50)]
    return jobs


def main() -> None:
    """Run the measurement and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=0, help="first val tasks per difficulty (0: all of them)")
    ap.add_argument("--strategy", default="lean", choices=("lean", "per_ingredient"), help="the delegating oracle")
    ap.add_argument("--depths", default="4-10", help="max_depth range for the delegating oracle, e.g. 4-10")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (1: in this one)")
    ap.add_argument("--quick", action="store_true", help="4 tasks per difficulty, depths 6-7 (smoke test)")
    args = ap.parse_args()
    lo, _, hi = args.depths.partition("-")
    depths = list(range(int(lo), int(hi or lo) + 1))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from rao_envs.envs.textcraft import TextCraftSynth

    n_tasks = args.tasks
    if args.quick:
        n_tasks, depths = 4, [6, 7]
    sizes = {}
    for difficulty in DIFFICULTIES:
        total = len(TextCraftSynth.tasks("val", difficulty))
        sizes[difficulty] = min(n_tasks, total) if n_tasks else total
    max_nodes = TextCraftSynth.limits().max_nodes
    jobs = _jobs(sizes, depths, args.strategy)

    t0 = time.perf_counter()
    per_cell: dict[tuple, list[dict]] = {}
    console = Console(width=200)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    total = sum(len(j[4]) for j in jobs)
    done, shown = 0, 0

    def record(difficulty, policy, trees, progress, bar) -> None:
        nonlocal done, shown
        per_cell.setdefault((difficulty, policy), []).extend(trees)
        done += len(trees)
        progress.update(bar, advance=len(trees), description=f"trees (last: {difficulty} {policy})")
        if not console.is_terminal and done * 10 // total > shown:  # no live bar in a log file: a line per 10%
            shown = done * 10 // total
            print(f"{done}/{total} trees, {time.perf_counter() - t0:.0f} s", flush=True)

    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("trees", total=total)
        if args.workers > 1:
            ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
            with ctx.Pool(args.workers) as pool:
                for cell in pool.imap_unordered(run_chunk, jobs):
                    record(*cell, progress, bar)
        else:
            for job in jobs:
                record(*run_chunk(job), progress, bar)
    elapsed = time.perf_counter() - t0
    results = {k: {p: summarize(per_cell[(k, p)]) for p in ["flat", *depths]} for k in DIFFICULTIES}

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    minimal = {k: next((d for d in depths if row[d]["success"] == 1.0), None) for k, row in results.items()}
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
    for title, cols, rows in lines:
        table = Table(title=title)
        for c in cols:
            table.add_column(c, justify="right" if c != "difficulty" else "left")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    counts = ", ".join(f"{k} {sizes[k]}" for k in DIFFICULTIES)
    full = sum(r[p]["full"] for r in results.values() for p in r)
    print(f"val tasks per cell: {counts} ({'all' if not n_tasks else 'the first'} of the paper's fixed val set); "
          f"strategy {args.strategy}; {args.workers} worker(s); {elapsed:.1f} s")
    print(f"trees that reached max_nodes={max_nodes}: {full}")
    for difficulty in DIFFICULTIES:
        print(f"{difficulty}: smallest max_depth solving every task: {_min_text(minimal[difficulty], depths)}")


if __name__ == "__main__":
    main()

"""`make demo`: episode trees solved and rendered on the embedded defaults (CPU, no server).

Runs the delegating oracle, the flat oracle (never delegates) and a random policy on a
few TextCraft-Synth instances of every difficulty, prints a success table, renders one
solved hard tree, and writes the trees (JSONL) and a bar chart (PNG) under ``--out``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import rao_envs
from rao_envs.policies import RandomPolicy, run_episode
from rao_envs.render import print_tree

POLICIES = ("delegating oracle", "flat oracle", "random")


@dataclass
class Args:
    """Options of the demo."""

    env_id: str = "TextCraft-v0"
    episodes: int = 6
    """Episodes per difficulty and policy."""
    split: str = "val"
    out: Path = Path("runs/demo")
    seed: int = 0


def depth_for(task_cls, difficulty: str) -> int:
    """The max_depth the delegating oracle needs for a difficulty (task's recommendation)."""
    return getattr(task_cls, "recommended_max_depth", {}).get(difficulty, task_cls.limits().max_depth)


def main(args: Args) -> dict:
    """Run the demo; returns the success table as a dict."""
    console = Console()
    task_cls = rao_envs.task_spec(args.env_id).load()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list]] = {p: {} for p in POLICIES}
    showcase = None
    t0 = time.perf_counter()
    with open(args.out / "trees.jsonl", "w") as sink, Progress(console=console, transient=True) as progress:
        job = progress.add_task("solving episode trees", total=len(task_cls.difficulties) * len(POLICIES) * args.episodes)
        for difficulty in task_cls.difficulties:
            env = rao_envs.make(args.env_id, difficulty=difficulty, split=args.split, max_depth=depth_for(task_cls, difficulty))
            for name in POLICIES:
                rows = results[name].setdefault(difficulty, [])
                for ep in range(args.episodes):
                    seed = args.seed + ep
                    task = env.unwrapped.task
                    policy = (
                        task.oracle() if name == "delegating oracle"
                        else task.oracle(delegate=False) if name == "flat oracle"
                        else RandomPolicy(task, seed=seed)
                    )
                    tree, _, _ = run_episode(env, policy, seed=seed)
                    rows.append((tree.root.score or 0.0, len(tree.nodes), tree.clock))
                    sink.write(tree.to_json() + "\n")
                    if showcase is None and name == "delegating oracle" and difficulty == "hard" and tree.root.score == 1.0:
                        showcase = tree
                    progress.advance(job)
    table = Table(title=f"{args.env_id} ({args.split} targets, {args.episodes} episodes each): success rate | mean nodes | mean node-steps")
    table.add_column("policy")
    for d in task_cls.difficulties:
        table.add_column(f"{d} (max_depth {depth_for(task_cls, d)})", justify="right")
    summary: dict[str, dict[str, float]] = {}
    for name in POLICIES:
        cells = []
        for d in task_cls.difficulties:
            rows = results[name][d]
            rate = sum(r[0] == 1.0 for r in rows) / len(rows)
            summary.setdefault(name, {})[d] = rate
            cells.append(f"{rate:4.0%} | {sum(r[1] for r in rows) / len(rows):5.1f} | {sum(r[2] for r in rows) / len(rows):6.1f}")
        table.add_row(name, *cells)
    if showcase is not None:
        console.rule("one solved hard tree (delegating oracle)")
        print_tree(showcase, console)
        (args.out / "hard_tree.json").write_text(showcase.to_json())
    console.print(table)
    _plot(summary, task_cls.difficulties, args.out / "success.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"trees: {args.out / 'trees.jsonl'}  chart: {args.out / 'success.png'}  ({time.perf_counter() - t0:.1f}s)")
    return summary


def _plot(summary: dict[str, dict[str, float]], difficulties, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the chart is a bonus; the table above is the result
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(summary)
    for i, (name, rates) in enumerate(summary.items()):
        xs = [j + i * width for j in range(len(difficulties))]
        ax.bar(xs, [rates[d] * 100 for d in difficulties], width, label=name)
    ax.set_xticks([j + width * (len(summary) - 1) / 2 for j in range(len(difficulties))], list(difficulties))
    ax.set_ylabel("root success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("TextCraft-Synth: delegation vs. flat vs. random")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(tyro.cli(Args))

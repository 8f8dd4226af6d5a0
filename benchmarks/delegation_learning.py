"""Does PPO learn to delegate? Delegate vs. flat PPO on TextCraft-Synth, 3 seeds each (issue 6).

Trains ``examples/cleanrl_ppo_delegation.py`` on **medium** recipes (train targets) with and
without the delegate actions, evaluates the greedy policy on easy/medium/hard/extreme **val**
targets during training, and writes ``learning.png`` (success vs. env steps per difficulty,
mean over seeds with a min-max band), ``table.md`` and ``results.json`` under ``--out``.
Runs ``--workers`` trainings in parallel (one CPU core each), with a live progress bar per run.

    python benchmarks/delegation_learning.py                 # 2 variants x 3 seeds
    python benchmarks/delegation_learning.py --quick         # 1 seed, tiny budget (smoke test)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The demo is a script in examples/, not part of the package: import it from there (as it imports its
# sibling, the PPO example); spawned training workers inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import tyro  # noqa: E402
from rich.console import Console  # noqa: E402

from demo import Job, learning_table, markdown_table, plot_learning, run_learning  # noqa: E402


@dataclass
class Args:
    """Options of the benchmark."""

    seeds: tuple[int, ...] = (1, 2, 3)
    total_timesteps: int = 250_000
    """PPO env steps per run."""
    eval_every: int = 20
    """PPO iterations (1,024 env steps) between evaluations."""
    eval_episodes: int = 16
    """Val episodes per difficulty per evaluation."""
    workers: int = 2
    out: Path = Path("runs/delegation_learning")
    quick: bool = False
    """Smoke test: one seed, 2,048 steps, 2 eval episodes."""


def main(args: Args) -> dict:
    """Run the benchmark; returns the summary table as a dict."""
    if args.quick:
        args.seeds, args.total_timesteps, args.eval_every, args.eval_episodes = (1,), 2048, 1, 2
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    ppo = dict(total_timesteps=args.total_timesteps, eval_every=args.eval_every, eval_episodes=args.eval_episodes)
    jobs = [Job(v, s, ppo) for v in ("delegate", "flat") for s in args.seeds]
    t0 = time.perf_counter()
    results = run_learning(jobs, args.out, args.workers, console)
    wall = time.perf_counter() - t0
    title = f"PPO on TextCraft-Synth, trained on medium: root success on val targets ({len(args.seeds)} seeds, {wall:.0f}s wall)"
    _, summary = learning_table(results, console, title)
    plot_learning(results, args.out / "learning.png", "PPO on TextCraft-Synth medium: delegate vs. flat")
    md = markdown_table(summary, results)
    (args.out / "table.md").write_text(md + f"\n\n{len(jobs)} runs, {results[0]['train_steps']:,} env steps each, {wall:.0f}s wall on {args.workers} workers\n")
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "wall_s": wall, "runs": results}, indent=2))
    console.print(md)
    console.print(f"wall time {wall:.0f}s; wrote {args.out}/learning.png, table.md, results.json")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))

"""`make demo`: a policy learns to delegate on TextCraft-Synth, on a CPU, in a few minutes.

1. Scripted baselines: the delegating oracle, the flat oracle (never delegates) and a random
   policy on a few val instances of every difficulty (a table, and the trees as JSONL).
2. Learning: CleanRL PPO (``examples/cleanrl_ppo_delegation.py``) on the discrete view, trained
   on **medium** recipes only, twice in parallel: with the delegate actions and without them
   (the flat baseline, same 25 steps per node). A live progress bar, then the success table on
   easy/medium/hard/extreme **val** targets, a plot of success vs. env steps, and one hard tree
   solved by the learned policy, rendered.

Everything lands under ``--out`` (default ``runs/demo``). ``benchmarks/delegation_learning.py``
runs the same learning part with 3 seeds per variant (:func:`run_learning`).

    python examples/demo.py [--no-learn] [--episodes 6] [--out runs/demo]
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import rao_envs
from rao_envs.policies import RandomPolicy, run_episode
from rao_envs.render import print_tree

# The demo is a script of a source checkout, not part of the package: put its folder (examples/) on
# sys.path so that it imports its sibling, the CleanRL PPO example (cleanrl_ppo_delegation.py).
EXAMPLES = Path(__file__).resolve().parent
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

POLICIES = ("delegating oracle", "flat oracle", "random")
DIFFICULTIES = ("easy", "medium", "hard", "extreme")


@dataclass
class Args:
    """Options of the demo."""

    env_id: str = "TextCraft-v0"
    episodes: int = 6
    """Episodes per difficulty and policy in the scripted-baseline table."""
    split: str = "val"
    out: Path = Path("runs/demo")
    seed: int = 0
    learn: bool = True
    """Train the PPO policies (``--no-learn``: the scripted table only)."""
    total_timesteps: int = 250_000
    """PPO env steps per run (each run takes one CPU core)."""
    eval_every: int = 20
    """PPO iterations (1,024 env steps each) between evaluations on the val targets."""
    eval_episodes: int = 16
    """Val episodes per difficulty at each evaluation."""
    workers: int = 2
    """Training runs in parallel (one core each)."""


# ------------------------------------------------------------------------------ scripted baselines
def scripted_table(args: Args, console: Console) -> dict[str, dict[str, float]]:
    """Oracle / flat oracle / random on every difficulty; prints a table, writes trees.jsonl."""
    task_cls = rao_envs.task_spec(args.env_id).load()
    results: dict[str, dict[str, list]] = {p: {} for p in POLICIES}
    with open(args.out / "trees.jsonl", "w") as sink, Progress(console=console, transient=True) as progress:
        job = progress.add_task("scripted policies", total=len(task_cls.difficulties) * len(POLICIES) * args.episodes)
        for difficulty in task_cls.difficulties:
            env = rao_envs.make(args.env_id, difficulty=difficulty, split=args.split, max_depth=task_cls.max_depth_for(difficulty))
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
                    progress.advance(job)
    table = Table(title=f"Scripted policies, {args.env_id} ({args.split} targets, {args.episodes} episodes each): success | mean nodes | mean node-steps")
    table.add_column("policy")
    for d in task_cls.difficulties:
        table.add_column(f"{d} (max_depth {task_cls.max_depth_for(d)})", justify="right")
    summary: dict[str, dict[str, float]] = {}
    for name in POLICIES:
        cells = []
        for d in task_cls.difficulties:
            rows = results[name][d]
            rate = sum(r[0] == 1.0 for r in rows) / len(rows)
            summary.setdefault(name, {})[d] = rate
            cells.append(f"{rate:4.0%} | {sum(r[1] for r in rows) / len(rows):5.1f} | {sum(r[2] for r in rows) / len(rows):6.1f}")
        table.add_row(name, *cells)
    console.print(table)
    return summary


# ------------------------------------------------------------------------------ learning
def load_ppo():
    """The CleanRL PPO example (``examples/cleanrl_ppo_delegation.py``) as a module, imported on first use (it needs torch)."""
    import cleanrl_ppo_delegation

    return cleanrl_ppo_delegation


@dataclass
class Job:
    """One PPO training run: a variant (delegate or flat) and a seed, plus its PPO arguments."""

    variant: str
    seed: int
    ppo: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``delegate/s1``."""
        return f"{self.variant}/s{self.seed}"


def _train_job(job: Job, queue, out_dir: str) -> dict:
    """Worker: train one run, report progress on ``queue``, return its results (and save its policy)."""
    import torch

    ppo = load_ppo()
    args = ppo.Args(seed=job.seed, delegate=job.variant == "delegate", log_dir=str(Path(out_dir) / "tb"), **job.ppo)
    args.run_name = f"{args.env_id}__ppo__{job.variant}__{job.seed}"
    result = ppo.train(args, progress=lambda step, total: queue.put((job.name, step, total)))
    agent = result.pop("agent")
    path = Path(out_dir) / f"policy_{job.variant}_s{job.seed}.pt"
    torch.save(agent.state_dict(), path)
    result["policy"] = str(path)
    queue.put((job.name, None, None))
    return result


def run_learning(jobs: list[Job], out: Path, workers: int, console: Console) -> list[dict]:
    """Train ``jobs`` in ``workers`` processes with one live progress bar per run; return their results."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    queue = manager.Queue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, dict] = {}
    columns = (TextColumn("{task.description:>14}"), BarColumn(), TextColumn("{task.completed:>7,.0f}/{task.total:,.0f} env steps"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        bars = {j.name: progress.add_task(j.name, total=j.ppo.get("total_timesteps", 1)) for j in jobs}
        futures = {pool.submit(_train_job, j, queue, str(out)): j for j in jobs}
        pending = set(futures)
        while pending:
            while not queue.empty():
                name, step, total = queue.get()
                if step is None:
                    progress.update(bars[name], completed=progress.tasks[bars[name]].total, description=f"{name} eval done")
                else:
                    progress.update(bars[name], completed=step, total=total)
            for fut in [f for f in pending if f.done()]:
                pending.discard(fut)
                results[futures[fut].name] = fut.result()
            time.sleep(0.2)
    manager.shutdown()
    return [results[j.name] for j in jobs]


def learning_table(results: list[dict], console: Console, title: str) -> tuple[Table, dict]:
    """Final val success per variant and difficulty (mean over seeds, and the per-seed values)."""
    table = Table(title=title)
    table.add_column("policy (trained on medium)")
    diffs = [d for d in DIFFICULTIES if d in results[0]["final"]]
    for d in diffs:
        table.add_column(f"{d} (max_depth {results[0]['max_depth'][d]})", justify="right")
    table.add_column("train env steps", justify="right")
    summary: dict[str, dict[str, Any]] = {}
    for variant in ("delegate", "flat"):
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        cells, row = [], {}
        for d in diffs:
            vals = [r["final"][d] for r in runs]
            mean = sum(vals) / len(vals)
            row[d] = {"mean": mean, "seeds": vals}
            cells.append(f"{mean:4.0%}" + (f"  ({', '.join(f'{v:.0%}' for v in vals)})" if len(vals) > 1 else ""))
        summary[variant] = row
        label = "PPO, delegate actions" if variant == "delegate" else "PPO, flat (--no-delegate)"
        table.add_row(f"{label} [{len(runs)} seed{'s' * (len(runs) > 1)}]", *cells, f"{runs[0]['train_steps']:,}")
    console.print(table)
    return table, summary


def markdown_table(summary: dict, results: list[dict]) -> str:
    """The learning table as GitHub markdown (for the README)."""
    diffs = [d for d in DIFFICULTIES if d in results[0]["final"]]
    head = "| policy (trained on medium) | " + " | ".join(f"{d} (max_depth {results[0]['max_depth'][d]})" for d in diffs) + " |"
    lines = [head, "|---" * (len(diffs) + 1) + "|"]
    for variant, row in summary.items():
        label = "PPO, delegate actions" if variant == "delegate" else "PPO, flat (`--no-delegate`)"
        cells = [f"{row[d]['mean']:.0%} ({', '.join(f'{v:.0%}' for v in row[d]['seeds'])})" for d in diffs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_learning(results: list[dict], path: Path, title: str) -> None:
    """Success vs. env steps, one panel per difficulty, delegate vs. flat (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    diffs = [d for d in DIFFICULTIES if d in results[0]["final"]]
    fig, axes = plt.subplots(1, len(diffs), figsize=(3.2 * len(diffs), 3.2), sharey=True)
    colors = {"delegate": "tab:blue", "flat": "tab:orange"}
    for ax, d in zip(np.atleast_1d(axes), diffs):
        for variant in ("delegate", "flat"):
            runs = [r for r in results if r["variant"] == variant]
            if not runs:
                continue
            steps = sorted({p["step"] for r in runs for p in r["curve"] if d in p})
            ys = np.array([[next((p[d] for p in r["curve"] if p["step"] == s and d in p), np.nan) for s in steps] for r in runs]) * 100
            mean = np.nanmean(ys, axis=0)
            label = f"{variant} ({len(runs)} seed{'s' * (len(runs) > 1)})"
            if len(steps) < 3:  # a line through two evaluations would suggest a trend nobody measured: points only
                spread = np.vstack([mean - np.nanmin(ys, axis=0), np.nanmax(ys, axis=0) - mean]) if len(runs) > 1 else None
                ax.errorbar(steps, mean, yerr=spread, fmt="o", ms=5, capsize=3, color=colors[variant], label=label)
                continue
            ax.plot(steps, mean, marker="o", ms=3, color=colors[variant], label=label)
            if len(runs) > 1:
                ax.fill_between(steps, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=colors[variant], alpha=0.2)
        ax.set_title(f"{d} val (max_depth {results[0]['max_depth'][d]})", fontsize=9)
        ax.set_xlabel("training env steps (medium)", fontsize=8)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("root success (%)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="center right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def solved_hard_tree(ppo_args: dict, policy_path: str, seeds: range = range(10_000, 10_040)):
    """Run the learned delegating policy greedily on hard val instances; return the first solved tree."""
    import torch

    ppo = load_ppo()
    args = ppo.Args(delegate=True, **ppo_args)
    from rao_envs.views.discrete import DiscreteRaoEnv

    env = DiscreteRaoEnv(**ppo.env_kwargs(args, "hard", "val"))
    agent = ppo.Agent(env.observation_space.shape[0], env.action_space.n)
    agent.load_state_dict(torch.load(policy_path))
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        while True:
            with torch.no_grad():
                logits = agent.actor(torch.tensor(obs)[None])[0]
            logits[torch.tensor(info["action_mask"]) == 0] = -1e8
            obs, _, term, trunc, info = env.step(int(logits.argmax()))
            if term or trunc:
                break
        if info["root_score"] == 1.0:
            return env.tree
    return None


def main(args: Args) -> dict:
    """Run the demo; returns the scripted and learned success tables as a dict."""
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    console.rule("1. scripted policies")
    summary: dict[str, Any] = {"scripted": scripted_table(args, console)}
    if args.learn:
        console.rule("2. PPO learns when to delegate (trained on medium, evaluated on val targets)")
        ppo_args = dict(total_timesteps=args.total_timesteps, eval_every=args.eval_every, eval_episodes=args.eval_episodes)
        jobs = [Job("delegate", 1, ppo_args), Job("flat", 1, ppo_args)]
        results = run_learning(jobs, args.out, args.workers, console)
        _, learned = learning_table(results, console, f"PPO on {args.env_id}: root success on val targets after {results[0]['train_steps']:,} env steps")
        plot_learning(results, args.out / "learning.png", "PPO on TextCraft-Synth medium: delegate vs. flat")
        summary["learned"] = learned
        summary["curves"] = [{k: r[k] for k in ("variant", "seed", "curve", "final", "train_steps", "wall_s")} for r in results]
        tree = solved_hard_tree({}, results[0]["policy"])
        if tree is not None:
            console.rule("one hard val tree solved by the learned delegating policy")
            print_tree(tree, console)
            (args.out / "hard_tree.json").write_text(tree.to_json())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    files = "trees.jsonl, summary.json" + (", learning.png, hard_tree.json, tb/ (tensorboard --logdir)" if args.learn else "")
    console.print(f"[bold]done in {time.perf_counter() - t0:.0f}s[/bold]; files in {args.out}: {files}")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))

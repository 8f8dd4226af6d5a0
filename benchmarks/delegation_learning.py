"""Does PPO learn to delegate? Our CleanRL PPO (delegate vs. flat) and stock SB3 MaskablePPO on TextCraft-Synth.

Rows, 3 seeds each, all trained on **medium** train tasks and evaluated greedily on **val** tasks:

- ``ppo``: ``examples/cleanrl_ppo_delegation.py`` with and without the delegate actions
  (issue 11's targets: delegating >= 90% hard and >= 70% extreme, flat <= 10% hard, each run
  within 10 minutes), evaluated during training on easy/medium/hard/extreme; writes
  ``learning.png`` (success vs. env steps, mean over seeds with a min-max band);
- ``sb3``: ``examples/sb3_maskable_ppo.py``, stock ``MaskablePPO("MlpPolicy", make_vec_env(...))``
  on the view's defaults (issue 19's target: >= 90% hard within 10 minutes per run, mean tree
  size within 3x the oracle's), evaluated on the first ``--sb3-eval-tasks`` val tasks of hard and
  extreme.

The baseline, measured in the same run on the same val tasks: the delegating oracle's rule
(``rule_policy``) and the flat oracle, both as discrete policies. Rows can be measured in
pieces: ``--only sb3`` (or ``ppo``) runs that row and keeps the other rows' last results from
``--out`` (``rows/<row>.json``); every table printed says when each row was measured.

    python benchmarks/delegation_learning.py                 # every row, 3 seeds each
    python benchmarks/delegation_learning.py --only sb3      # one row
    python benchmarks/delegation_learning.py --quick         # 1 seed, tiny budgets (smoke test)
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The demo and the examples are scripts in examples/, not part of the package: import them from there;
# spawned training workers inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import numpy as np  # noqa: E402
import tyro  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from demo import Job, learning_table, markdown_table, plot_learning, run_learning  # noqa: E402

from rao_envs.envs.textcraft import TextCraftSynth  # noqa: E402

ROWS = ("ppo", "sb3")


@dataclass
class Args:
    """Options of the benchmark."""

    seeds: tuple[int, ...] = (1, 2, 3)
    only: tuple[str, ...] = ROWS
    """rows to measure now (`ppo`, `sb3`); the others are read back from `--out` if measured before."""
    total_timesteps: int = 250_000
    """CleanRL PPO env steps per run."""
    eval_every: int = 20
    """CleanRL PPO iterations (1,024 env steps) between evaluations."""
    eval_episodes: int = 16
    """CleanRL PPO val episodes per difficulty per evaluation."""
    sb3_timesteps: int = 100_000
    """SB3 MaskablePPO env steps per run."""
    sb3_eval_tasks: int = 20
    """SB3: the first this-many val tasks of hard."""
    sb3_extreme_tasks: int = 10
    """SB3: the first this-many val tasks of extreme (~15k steps each)."""
    workers: int = 1
    """training runs in parallel (one core each); 1 gives each run's wall time on an otherwise idle core."""
    out: Path = Path("runs/delegation_learning")
    quick: bool = False
    """Smoke test: one seed, 2,048 PPO steps, 2 eval episodes; 2,048 SB3 steps, 2 eval tasks, hard only."""


# ------------------------------------------------------------------------------ the oracle baseline
def oracle_baseline(difficulties: list[str], depths: dict[str, int], seeds: list[int]) -> dict[str, dict]:
    """The delegating and flat oracles' rule as discrete policies on val tasks ``seeds``: success and mean nodes."""
    from sb3_maskable_ppo import rollout_batch, rule_actor

    from rao_envs.views.discrete import DiscreteRaoEnv

    out: dict[str, dict] = {}
    for name, delegate in (("delegating oracle", True), ("flat oracle", False)):
        for d in difficulties:
            envs = [DiscreteRaoEnv("TextCraft-v0", difficulty=d, split="val", max_depth=depths[d], delegate=delegate) for _ in seeds]
            ends = rollout_batch(envs, rule_actor(envs[0]), seeds)
            out.setdefault(name, {})[d] = {"success": float(np.mean([e["success"] for e in ends])),
                                          "nodes": float(np.mean([e["nodes"] for e in ends]))}
    return out


# ------------------------------------------------------------------------------ rows
def run_ppo(args: Args, console: Console) -> dict:
    """The CleanRL PPO row: delegate and flat, each seed; its table and curves."""
    ppo = dict(total_timesteps=args.total_timesteps, eval_every=args.eval_every, eval_episodes=args.eval_episodes)
    if args.quick:  # an untrained policy's extreme trees take minutes
        ppo["eval_difficulties"] = ("easy", "medium", "hard")
    jobs = [Job(v, s, ppo) for v in ("delegate", "flat") for s in args.seeds]
    t0 = time.perf_counter()
    results = run_learning(jobs, args.out, args.workers, console)
    wall = time.perf_counter() - t0
    plot_learning(results, args.out / "learning.png", "PPO on TextCraft-Synth medium: delegate vs. flat")
    return {"runs": results, "wall_s": wall, "workers": args.workers, "eval_episodes": args.eval_episodes, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_avg": os.getloadavg()}


def _sb3_job(seed: int, kw: dict) -> dict:
    """Worker: one SB3 MaskablePPO run (``examples/sb3_maskable_ppo.py``)."""
    import sb3_maskable_ppo

    return sb3_maskable_ppo.main(sb3_maskable_ppo.Args(seed=seed, **kw))


def run_sb3(args: Args, console: Console) -> dict:
    """The SB3 row: one MaskablePPO run per seed, ``--workers`` at a time."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    kw = dict(total_timesteps=args.sb3_timesteps, eval_tasks=args.sb3_eval_tasks, extreme_tasks=args.sb3_extreme_tasks, log_dir=str(args.out / "tb"), oracle=False)
    if args.quick:
        kw.update(eval_difficulties=("hard",), num_envs=2, n_steps=256, batch_size=256)
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.workers == 1:  # one at a time: no worker processes to start
        with console.status("SB3 MaskablePPO runs"):
            runs = [_sb3_job(seed, kw) for seed in args.seeds]
    else:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn")) as pool, console.status("SB3 MaskablePPO runs"):
            runs = list(pool.map(_sb3_job, args.seeds, [kw] * len(args.seeds)))
    return {"runs": runs, "wall_s": time.perf_counter() - t0, "workers": args.workers,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": os.getloadavg()}


def sb3_table(row: dict, oracle: dict, console: Console) -> str:
    """The SB3 row beside the oracle (same val tasks): success and mean tree size per seed; returns markdown."""
    runs = row["runs"]
    diffs = list(runs[0]["eval"])
    n = ", ".join(f"{d} {runs[0]['eval'][d]['tasks']}" for d in diffs)
    table = Table(title=f"SB3 MaskablePPO trained on medium ({runs[0]['train_steps']:,} env steps), first val tasks: {n}")
    for col in ["policy", *[f"{d} success" for d in diffs], *[f"{d} nodes (x oracle)" for d in diffs], "train / wall s per run"]:
        table.add_column(col, justify="right" if col != "policy" else "left")
    md = ["| policy | " + " | ".join(f"{d} success" for d in diffs) + " | " + " | ".join(f"{d} mean nodes (× oracle)" for d in diffs)
          + " | train / wall (with eval) per run |", "|---" * (2 * len(diffs) + 2) + "|"]
    succ = []
    for d in diffs:
        vals = [r["eval"][d]["success"] for r in runs]
        succ.append(f"{np.mean(vals):.0%} (" + ", ".join(f"{v:.0%}" for v in vals) + ")")
    nodes = []
    for d in diffs:
        mean = np.mean([r["eval"][d]["nodes"] for r in runs])
        nodes.append(f"{mean:.1f} ({mean / oracle['delegating oracle'][d]['nodes']:.2f}×)")
    wall = (f"{min(r['train_s'] for r in runs):.0f}–{max(r['train_s'] for r in runs):.0f} s / "
            f"{min(r['wall_s'] for r in runs):.0f}–{max(r['wall_s'] for r in runs):.0f} s")
    label = f"SB3 MaskablePPO [{len(runs)} seed{'s' * (len(runs) > 1)}]"
    table.add_row(label, *succ, *nodes, wall)
    md.append(f"| {label} | " + " | ".join(succ) + " | " + " | ".join(nodes) + f" | {wall} |")
    for name in ("delegating oracle", "flat oracle"):
        o = oracle[name]
        cells = [f"{o[d]['success']:.0%}" for d in diffs] + [f"{o[d]['nodes']:.1f}" for d in diffs]
        table.add_row(f"{name} (rule, this run)", *cells, "")
        md.append(f"| {name} (rule, this run) | " + " | ".join(cells) + " | |")
    console.print(table)
    return "\n".join(md)


def main(args: Args) -> dict:
    """Run the chosen rows, read the others back; print and write every table; return the summary."""
    unknown = set(args.only) - set(ROWS)
    if unknown:
        raise SystemExit(f"--only takes {ROWS}, got {sorted(unknown)}")
    if args.quick:
        args.seeds, args.total_timesteps, args.eval_every, args.eval_episodes = (1,), 2048, 1, 2
        args.sb3_timesteps, args.sb3_eval_tasks = 2048, 2
    console = Console()
    (args.out / "rows").mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    for name in ROWS:
        path = args.out / "rows" / f"{name}.json"
        if name in args.only:
            rows[name] = (run_ppo if name == "ppo" else run_sb3)(args, console)
            path.write_text(json.dumps(rows[name], indent=2, default=str))
        elif path.exists():
            rows[name] = json.loads(path.read_text())
    summary: dict = {}
    md_parts = []
    if "ppo" in rows:
        runs = rows["ppo"]["runs"]
        depths = runs[0]["max_depth"]
        diffs = list(runs[0]["final"])
        eval_seeds = list(range(10_000, 10_000 + rows["ppo"]["eval_episodes"]))
        oracle = oracle_baseline(diffs, depths, eval_seeds)
        r = rows["ppo"]
        title = f"CleanRL PPO, trained on medium: root success on val ({len(runs) // 2} seeds, measured {r['measured']}, load {r['load_avg'][0]:.1f})"
        _, summary["ppo"] = learning_table(runs, console, title)
        md = markdown_table(summary["ppo"], runs)
        for name, o in oracle.items():
            md += f"\n| {name} (rule, this run) | " + " | ".join(f"{o[d]['success']:.0%} ({o[d]['nodes']:.1f} nodes)" for d in diffs) + " |"
        walls = [x["wall_s"] for x in runs]
        md += (f"\n\n{len(runs)} runs, {runs[0]['train_steps']:,} env steps each, {min(walls):.0f}–{max(walls):.0f} s per run, "
               f"{r['wall_s']:.0f} s wall on {r['workers']} worker(s), load average {r['load_avg'][0]:.1f}")
        summary["ppo_oracle"] = oracle
        md_parts.append(md)
    if "sb3" in rows:
        runs = rows["sb3"]["runs"]
        diffs = list(runs[0]["eval"])
        depths = {d: TextCraftSynth.max_depth_for(d) for d in diffs}  # as examples/sb3_maskable_ppo.py plays them
        oracle = {}
        for d in diffs:  # the same val tasks as the runs: task_index 0..n-1
            for name, res in oracle_baseline([d], depths, list(range(runs[0]["eval"][d]["tasks"]))).items():
                oracle.setdefault(name, {}).update(res)
        r = rows["sb3"]
        md = sb3_table(r, oracle, console)
        md += f"\n\nmeasured {r['measured']} on {r['workers']} worker(s), load average {r['load_avg'][0]:.1f}, {r['wall_s']:.0f} s wall"
        summary["sb3"] = {d: {"success": [x["eval"][d]["success"] for x in runs], "nodes": [x["eval"][d]["nodes"] for x in runs],
                              "oracle_nodes": oracle["delegating oracle"][d]["nodes"]} for d in diffs}
        summary["sb3_wall_s"] = [x["wall_s"] for x in runs]
        md_parts.append(md)
    md = "\n\n".join(md_parts)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2, default=str))
    console.print(md, markup=False)
    console.print(f"wrote {args.out}/table.md, results.json" + (", learning.png" if "ppo" in rows else ""))
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))

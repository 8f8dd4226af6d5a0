"""Train with verl: RAO trees with per-node credit in a verl 0.9.1 GRPO run (one 8-GPU node, or one GPU).

The run is verl's own ``main_ppo`` with ``examples/verl_rao.yaml``, which adds to verl's GRPO
config only: the ``rao_envs`` agent loop (``actor_rollout_ref.rollout.agent.default_agent_loop``),
the ``rao_envs`` advantage estimator, the V1 trainer mode ``rao_sync``, a Ray worker setup hook
that registers them, and the ``rao_envs`` settings block. This script prints or runs that
command, sized with ``--gpus``:

    rao-envs verl-dataset TextCraft-v0 --difficulty medium -n 1024 --out train.parquet
    rao-envs verl-dataset TextCraft-v0 --difficulty medium -n 64 --seed-start 100000 --out val.parquet
    python examples/verl_agent_loop.py --gpus 8 --model Qwen/Qwen3-4B --dry-run   # print the command
    python examples/verl_agent_loop.py --gpus 1 --model Qwen/Qwen3-0.6B           # run it

``--smoke`` needs no GPU, no Ray and no download: the agent loop runs standalone (as verl's
worker would call it) with a tiny local model behind :class:`rao_envs.adapters.verl.HFServer`,
on ``--tasks`` tasks × ``--group-size`` trees, then the estimator; it prints per-depth credit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

HERE = Path(__file__).resolve().parent

#: overrides of examples/verl_rao.yaml (sized for 8 GPUs) for one GPU
ONE_GPU = [
    "trainer.n_gpus_per_node=1", "data.train_batch_size=8", "data.max_response_length=4096",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.agent.num_workers=2",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.5", "actor_rollout_ref.model.enable_gradient_checkpointing=true",
]


@dataclass
class Args:
    """A verl GRPO run with the rao_envs agent loop (module docstring)."""

    gpus: Literal[1, 8] = 8
    """GPUs of the one node: 8 (as in the paper) or 1."""
    model: str = "Qwen/Qwen3-4B"
    """Hugging Face model id or local path (actor_rollout_ref.model.path)."""
    train: str = "train.parquet"
    """Rows from `rao-envs verl-dataset`."""
    val: str = "val.parquet"
    credit: str = "rao"
    """rao_envs credit method: rao, root, depth_grpo, sibling."""
    lam: float = 0.0
    steps: int | None = None
    """trainer.total_training_steps (default: one epoch)."""
    dry_run: bool = False
    """Print the command instead of running it."""
    smoke: bool = False
    """CPU, no download: the agent loop standalone with a tiny local model (see the module docstring)."""
    env_id: str = "Toy-v0"
    """--smoke: the task."""
    tasks: int = 2
    """--smoke: tasks (seeds)."""
    group_size: int = 2
    """--smoke: trees per task (rollout.n)."""
    out: Path = Path("runs/verl_smoke.json")
    """--smoke: where the summary goes."""


def command(args: Args) -> list[str]:
    """The ``main_ppo`` command line for ``args``."""
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={HERE}", "--config-name=verl_rao",
           f"data.train_files={args.train}", f"data.val_files={args.val}", f"actor_rollout_ref.model.path={args.model}",
           f"rao_envs.credit={args.credit}", f"rao_envs.lam={args.lam}"]
    if args.gpus == 1:
        cmd += ONE_GPU
    if args.steps is not None:
        cmd.append(f"trainer.total_training_steps={args.steps}")
    return cmd


def smoke(args: Args) -> int:
    """Run ``tasks × group_size`` trees through the agent loop on CPU, then the estimator; print and save a summary."""
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table
    from tqdm.auto import tqdm

    from rao_envs.adapters.models import tiny_model_and_tokenizer
    from rao_envs.adapters.verl import HFServer, local_agent_loop, rao_advantages
    from rao_envs.adapters.verl_dataset import verl_rows

    torch.manual_seed(0)
    env_kwargs = {"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 3}
    model, tok = tiny_model_and_tokenizer([args.env_id], env_kwargs={"difficulty": "easy"}, episodes=4)
    server = HFServer(model, tok)
    rows = verl_rows(args.env_id, range(args.tasks), env_kwargs=env_kwargs)
    settings = {"credit": args.credit, "lam": args.lam, "max_turn_tokens": 32}

    async def go():
        outs, uids, trees = [], [], []
        bar = tqdm(total=len(rows) * args.group_size, unit="tree", desc="verl agent loop (smoke)")
        for k, row in enumerate(rows):
            for g in range(args.group_size):
                loop = local_agent_loop(tok, server, prompt_length=2048, response_length=1024, rao_envs=settings)
                o = await loop.run({"temperature": 1.0, "top_p": 1.0, "logprobs": True}, **row, raw_prompt=row["prompt"],
                                   uid=f"task{k}", session_id=g)
                outs += o
                uids += [f"task{k}"] * len(o)
                trees.append(loop.last_tree)
                bar.update(1)
        bar.close()
        return outs, uids, trees

    t0 = time.perf_counter()
    outs, uids, trees = asyncio.run(go())
    wall = time.perf_counter() - t0
    width = max(len(o.response_mask) for o in outs)
    mask = torch.zeros(len(outs), width, dtype=torch.long)
    for j, o in enumerate(outs):
        mask[j, : len(o.response_mask)] = torch.tensor(o.response_mask)
    fields = {k: np.array([o.extra_fields.get(k) for o in outs], dtype=object) for k in ("rao_tree_id", "rao_node_id", "rao_tree")}
    adv, credit, _ = rao_advantages(mask, fields, method=args.credit, groups=np.array(uids, dtype=object), lam=args.lam,
                                    drop_no_signal=False)
    table = Table(title=f"verl agent loop smoke: {args.env_id}, {len(trees)} trees, credit={args.credit}")
    for col in ("depth", "outputs", "trained tokens", "weight"):
        table.add_column(col, justify="right")
    depths = sorted({o.extra_fields["rao_depth"] for o in outs})
    summary = {"trees": len(trees), "outputs": len(outs), "wall_s": round(wall, 2), "sampled_tokens": int(mask.sum()),
               "depth_weights": {str(d): w for d, w in credit.depth_weights.items()}, "dropped_groups": len(credit.dropped_groups)}
    for d in depths:
        rows_d = [j for j, o in enumerate(outs) if o.extra_fields["rao_depth"] == d]
        table.add_row(str(d), str(len(rows_d)), str(int(mask[rows_d].sum())), f"{credit.depth_weights.get(d, 0.0):.3f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"smoke ok: {len(trees)} trees, {len(outs)} outputs, {summary['sampled_tokens']} sampled tokens in {wall:.1f} s; "
          f"saved {args.out}")
    return 0


def main(args: Args) -> int:
    """Print, run, or smoke-test the verl run."""
    if args.smoke:
        return smoke(args)
    cmd = command(args)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))

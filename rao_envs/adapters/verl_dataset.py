"""Dataset rows for verl's ``RLHFDataset``: one row per task seed, run by the ``rao_envs`` agent loop.

``rao-envs verl-dataset TextCraft-v0 --difficulty medium -n 1024 --out train.parquet`` writes
them. Each row has the columns ``RLHFDataset`` reads — ``prompt`` (the root's opening chat,
shown in verl's logs and used for its prompt-length filter), ``data_source``, ``ability``,
``reward_model`` — plus ``agent_name = "rao_envs"`` (which agent loop runs the row) and
``extra_info`` with ``env_id``, ``seed``, ``env_kwargs`` (JSON: difficulty and limits) and
``index``. The agent loop (:mod:`rao_envs.adapters.verl`) rebuilds the task from
``extra_info``, so a row is a task, not text. Needs ``pyarrow`` only; verl is not imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rao_envs.errors import ConfigError
from rao_envs.registration import engine_factory, task_spec
from rao_envs.seeding import check_seed

AGENT_NAME = "rao_envs"
"""The name the agent loop is registered under (the dataset's ``agent_name`` column)."""


def verl_rows(
    env_id: str,
    seeds: Iterable[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    agent_name: str = AGENT_NAME,
) -> list[dict[str, Any]]:
    """One ``RLHFDataset`` row per seed of task ``env_id`` made with ``env_kwargs`` (module docstring)."""
    env_id = task_spec(env_id).id
    env_kwargs = dict(env_kwargs or {})
    factory = engine_factory(env_id, **env_kwargs)  # bad ids and kwargs fail here, with the fix
    kwargs_json = json.dumps(env_kwargs, sort_keys=True)
    rows = []
    for i, seed in enumerate(seeds):
        seed = check_seed(int(seed))
        engine = factory()
        engine.reset(seed)
        prompt = [{"role": m["role"], "content": m["content"]} for m in engine.commit("0")]
        rows.append({
            "data_source": f"rao_envs/{env_id}",
            "prompt": prompt,
            "ability": "agent",
            "reward_model": {"style": "rule", "ground_truth": ""},
            "agent_name": agent_name,
            "extra_info": {"env_id": env_id, "seed": seed, "env_kwargs": kwargs_json, "index": i},
        })
    return rows


def write_verl_dataset(
    env_id: str,
    out: str | Path,
    *,
    n: int = 1024,
    seed_start: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``n`` rows (seeds ``seed_start`` … ``seed_start + n - 1``) to the Parquet file ``out``; returns its path."""
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError('writing a verl dataset needs pyarrow: pip install "rao_envs[data]"') from None
    rows = verl_rows(env_id, range(seed_start, seed_start + n), env_kwargs=env_kwargs)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


__all__ = ["AGENT_NAME", "verl_rows", "write_verl_dataset"]

"""``rao-envs verl-dataset``: verl RLHFDataset rows from the core (no verl import), round-tripped through Parquet."""

from __future__ import annotations

import json

import pytest

from rao_envs.adapters.verl_dataset import AGENT_NAME, verl_rows
from rao_envs.cli import main
from rao_envs.errors import ConfigError, UnknownTaskError

pq = pytest.importorskip("pyarrow.parquet")


def test_cli_writes_rows_verl_reads(tmp_path, capsys):
    out = tmp_path / "train.parquet"
    assert main(["verl-dataset", "TextCraft-v0", "--difficulty", "medium", "-n", "5", "--seed-start", "7",
                 "--kw", "max_depth=2", "--out", str(out)]) == 0
    assert "wrote 5 rows" in capsys.readouterr().out
    rows = pq.read_table(out).to_pylist()
    assert [r["extra_info"]["seed"] for r in rows] == [7, 8, 9, 10, 11]
    assert {r["agent_name"] for r in rows} == {AGENT_NAME}
    assert json.loads(rows[0]["extra_info"]["env_kwargs"]) == {"difficulty": "medium", "max_depth": 2}
    assert rows[0]["prompt"][0]["role"] == "system" and rows[0]["prompt"][-1]["role"] == "user"
    assert rows == verl_rows("TextCraft-v0", range(7, 12), env_kwargs={"difficulty": "medium", "max_depth": 2})


def test_bad_task_and_kwargs_are_config_errors(tmp_path):
    with pytest.raises(UnknownTaskError):
        verl_rows("NoSuchTask-v0", [0])
    with pytest.raises(ConfigError):
        verl_rows("Toy-v0", [0], env_kwargs={"max_depth": -1})
    with pytest.raises(ConfigError, match="n must be"):
        main(["verl-dataset", "Toy-v0", "-n", "0", "--out", str(tmp_path / "x.parquet")])

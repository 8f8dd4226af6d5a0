"""The `rao-envs` command line, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


from rao_envs.types import EpisodeTree

RAO = [sys.executable, "-m", "rao_envs.cli"]


def run(*args: str, input: str | None = None, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RAO, *args], input=input, capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_list_shows_builtin_tasks():
    out = run("list")
    assert out.returncode == 0, out.stderr
    assert "TextCraft-v0" in out.stdout and "Toy-v0" in out.stdout and "rao_envs/Toy-v0" in out.stdout


def test_solve_saves_and_render_shows_tree(tmp_path):
    path = tmp_path / "tree.json"
    out = run("solve", "Toy-v0", "--seed", "4", "--kw", "difficulty=hard", "--out", str(path))
    assert out.returncode == 0, out.stderr
    tree = EpisodeTree.from_json(path.read_text())
    assert tree.root.score == 1.0 and len(tree.nodes) > 1
    jsonl = tmp_path / "trees.jsonl"
    jsonl.write_text(path.read_text() + "\n" + path.read_text() + "\n")
    shown = run("render", str(jsonl), "--index", "1")
    assert shown.returncode == 0 and "0.0 finished" in shown.stdout and "score 1.00" in shown.stdout
    bad = run("render", str(jsonl), "--index", "5")
    assert bad.returncode != 0 and "holds 2 trees" in bad.stderr


def test_check_runs_conformance_suite():
    out = run("check", "Toy-v0", "--quick")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS gymnasium check_env" in out.stdout and "all checks passed" in out.stdout


def test_play_whole_tree_switching_nodes(tmp_path):
    save = tmp_path / "played.json"
    moves = [
        'delegate {"expr": "(1 + 2)"}',  # root waits on 0.0
        ":nodes",
        ":help",
        ":switch 0",  # not runnable: an error message, stays on 0.0
        'calc {"a": 1, "op": "+", "b": 2}',
        'finish {"result": 3}',
        ":tree",
        "finish {\"result\": 0}",
    ]
    out = run("play", "Toy-v0", "--seed", "0", "--kw", "difficulty=easy", "--save", str(save), input="\n".join(moves) + "\n")
    assert out.returncode == 0, out.stderr
    assert "cannot act now" in out.stdout and "[sub-agent 0.0 finished] 3" in out.stdout
    assert "node 0 waits for its children 0.0" in out.stdout and "node 0.0 ended: finished, score 1.0 result 3" in out.stdout
    assert "open those children in parallel" in out.stdout  # :help shows parallel delegation
    tree = EpisodeTree.from_json(save.read_text())
    assert tree.nodes["0.0"].score == 1.0 and tree.root.status.value == "finished"


def test_play_stays_on_the_node_acted_for_until_it_finishes():
    from rao_envs.types import Action

    two = Action(name="delegate", args={"expr": "(1 + 2)"}).to_text() + Action(name="delegate", args={"expr": "(2 + 2)"}).to_text()
    moves = [two, 'calc {"a": 1, "op": "+", "b": 2}', 'finish {"result": 3}', 'finish {"result": 4}', 'finish {"result": 0}']
    out = run("play", "Toy-v0", "--seed", "0", "--kw", "difficulty=easy", input="\n".join(moves) + "\n")
    assert out.returncode == 0, out.stderr
    order = re.findall(r"(?:^|\s)([0-9][\d.]*)> ", out.stdout)
    assert order[:4] == ["0", "0.0", "0.0", "0.1"], order  # after the calc, 0.0 is shown again (its result), not 0.1
    assert "node 0.0 ended: finished" in out.stdout and "node 0.1 ended: finished" in out.stdout


def test_new_task_from_template_passes_conformance(tmp_path):
    out = run("new-task", "WidgetSum", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    path = tmp_path / "widget_sum.py"
    text = path.read_text()
    assert "class WidgetSumTask(Task)" in text and 'name = "WidgetSum"' in text
    again = run("new-task", "WidgetSum", "--dir", str(tmp_path))
    assert again.returncode != 0 and "exists" in again.stderr
    check = run("check", "WidgetSum-v0", "--load", str(path), "--kw", "difficulty=hard")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all checks passed" in check.stdout
    listed = run("list", "--load", str(path))
    assert "WidgetSum-v0" in listed.stdout


def test_entry_point_plugins_show_up(tmp_path):
    site = tmp_path / "site"
    (site / "fancy_tasks-1.0.dist-info").mkdir(parents=True)
    (site / "fancy_tasks-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-tasks\nVersion: 1.0\n")
    (site / "fancy_tasks-1.0.dist-info" / "entry_points.txt").write_text("[rao_envs.tasks]\nfancy = fancy_tasks:FancyTask\n")
    template = run("new-task", "Fancy", "--dir", str(tmp_path)).returncode
    assert template == 0
    src = re.sub(r"(?m)^register_task\(.*$", "", (tmp_path / "fancy.py").read_text())  # the entry point registers it
    (site / "fancy_tasks.py").write_text(src)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = run("list", env=env)
    assert out.returncode == 0, out.stderr
    assert "Fancy-v0" in out.stdout and "fancy-tasks" in out.stdout
    code = "import gymnasium as gym, rao_envs; e = gym.make('rao_envs/Fancy-v0'); print(e.reset(seed=0)[0]['node'])"
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert made.stdout.strip() == "0", made.stderr


def test_non_editable_install_layout(tmp_path):
    """`pip install .` (no editable finder) lays out rao_envs, rao_envs.envs and rao_envs.sandboxes."""
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(root)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    for part in ("__init__", "world", "task", "oracle", "discrete"):
        assert (target / "rao_envs" / "envs" / "textcraft" / f"{part}.py").exists()
    assert (target / "rao_envs" / "envs" / "_template.py").exists()
    assert (target / "rao_envs" / "sandboxes").is_dir()
    code = (
        "import rao_envs, rao_envs.envs.toy, rao_envs.sandboxes, rao_envs.testing, json;"
        "print(json.dumps([rao_envs.__file__, rao_envs.task_ids()]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path, ids = json.loads(out.stdout)
    assert path.startswith(str(target)) and "TextCraft-v0" in ids


def test_help_has_one_line_per_command_and_no_rst_markup():
    out = run("--help")
    assert out.returncode == 0
    assert "``" not in out.stdout and ":class:" not in out.stdout
    from rao_envs.cli import COMMANDS

    for cmd in COMMANDS:
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and "``" not in sub.stdout, cmd
    listing = out.stdout.split("subcommands")[1]
    assert "-n tasks" not in listing and "Type a tool call" not in listing  # no stray second paragraphs

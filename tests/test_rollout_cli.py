"""`rao-envs rollout` and `rao-envs view` (the HTML page itself is checked in Chromium in the slow lane)."""

from __future__ import annotations

import json
import re

import rao_envs
from rao_envs.cli import main
from rao_envs.rollout import run_sync
from rao_envs.types import load_trees
from rao_envs.types import EpisodeTree, Message
from rao_envs.viewer import render_html
from tests.test_rollout import scripted_server


def test_cli_rollout_against_an_endpoint_then_view(tmp_path, capsys):
    out, page = tmp_path / "trees.jsonl", tmp_path / "trees.html"
    with scripted_server("--env", "TextCraft-v0", "--kw", '{"difficulty": "easy"}') as url:
        rc = main(["rollout", "TextCraft-v0", "--base-url", url, "--model", "scripted", "-n", "3", "--group-size", "2",
                   "--concurrency", "4", "--out", str(out), "--no-progress", "--kw", "difficulty=easy"])
    assert rc == 0
    trees = load_trees(str(out))
    assert len(trees) == 6 and [t.seed for t in trees] == [0, 0, 1, 1, 2, 2]
    assert all(t.root.score == 1.0 for t in trees)
    assert "6 trees" in capsys.readouterr().out
    assert main(["view", str(out), "--out", str(page)]) == 0
    text = page.read_text()
    assert "TextCraft-v0:0#g0" in text and 'id="tree-data"' in text


def test_cli_rollout_oracle_policy_without_a_server(tmp_path):
    out = tmp_path / "t.jsonl"
    assert main(["rollout", "Toy-v0", "--policy", "oracle", "-n", "2", "--group-size", "1", "--out", str(out),
                 "--no-progress", "--kw", "difficulty=hard"]) == 0
    trees = load_trees(str(out))
    eng = rao_envs.make_engine("Toy-v0", difficulty="hard")
    ref = run_sync(eng, eng.task.oracle(), seed=1)
    assert trees[1].nodes.keys() == ref.nodes.keys()


def test_view_page_is_self_contained_and_escapes_transcripts(tmp_path):
    eng = rao_envs.make_engine("Toy-v0")
    tree = run_sync(eng, eng.task.oracle(), seed=0)
    evil: Message = {"role": "assistant", "content": "</script><script>alert(1)</script><!-- x"}
    tree.root.transcript.append(evil)
    page = render_html([tree])
    assert page.count("</script>") == 2  # the two real ones: the data block and the script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing loaded from the network
    data = re.search(r'<script id="tree-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    payload = json.loads(data)
    assert payload[0]["nodes"][0]["transcript"][-1]["content"] == evil["content"]
    # one tree's JSON file works too
    single = tmp_path / "tree.json"
    single.write_text(tree.to_json())
    assert main(["view", str(single), "--out", str(tmp_path / "one.html")]) == 0
    assert EpisodeTree.from_json(single.read_text()) == tree


def test_view_missing_file_names_the_fix(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="rao-envs rollout"):
        main(["view", str(tmp_path / "nope.jsonl")])


def test_cli_rollout_fails_loudly_when_every_request_failed(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "t.jsonl"
    rc = main(["rollout", "Toy-v0", "--base-url", f"http://127.0.0.1:{port}/v1", "-n", "2", "--group-size", "1",
               "--retries", "0", "--timeout", "5", "--out", str(out), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "every request failed" in err and "--base-url" in err
    assert len(load_trees(str(out))) == 2  # saved anyway: nothing is lost


def test_infra_verdict_threshold():
    from rao_envs.cli import _infra_verdict

    assert _infra_verdict(0, 10, 0.25, []) == 0 and _infra_verdict(2, 10, 0.25, []) == 0 and _infra_verdict(0, 0, 0.0, []) == 0
    assert _infra_verdict(3, 10, 0.25, ["t: boom"]) == 1 and _infra_verdict(10, 10, 1.0, []) == 1

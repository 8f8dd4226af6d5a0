"""The ``docker`` backend: one long-lived container per :class:`DockerSandbox`.

The container runs the same fork-server as the local backend (``python -I -S -c <worker>``),
and the host talks to it over the attached stdin/stdout stream, so each call is a pipe round
trip rather than an ``exec_run`` (~90 ms on Podman). Works against Docker and against Podman's
Docker-compatible socket (``podman system service``; set ``DOCKER_HOST``).

Container options: ``network_mode="none"``, ``read_only=True``, size-capped tmpfs ``/work``
(owned by the sandbox user) and ``/tmp``, ``shm_size``, ``mem_limit`` =
``memswap_limit``, ``pids_limit``, ``nano_cpus``, ``cap_drop=["ALL"]``, ``no-new-privileges``, a
non-root user; no ``init``: the fork-server itself is the container's PID 1 (it reaps orphans),
so no init process holds the attached stream and the kernel shields it from user code's
signals; labels
``rao_envs.sandbox=1`` and ``rao_envs.owner=<host>:<pid>``; containers of dead owners are reaped
when the first sandbox of a process starts, and ``remove(force=True)`` runs in ``stop``.

``docker`` (the SDK) is imported only inside this module's functions.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Optional

from .base import ResourceLimits, Sandbox, SandboxInfraError, SandboxUnavailable, Transport, WorkerDied, worker_source
from .image import default_image

LABEL = "rao_envs.sandbox"
OWNER_LABEL = "rao_envs.owner"
_reaped: set = set()
_reap_lock = threading.Lock()

NO_SDK = ("the 'docker' sandbox needs the Docker SDK: `pip install 'rao_envs[docker]'` (or `pip install docker`). "
          "Alternatives: make_sandbox('local') (bubblewrap) or 'process' (NOT isolated).")


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(base_url: Optional[str] = None, timeout: float = 30.0):
    """A pinged Docker SDK client, or :class:`SandboxUnavailable` with the fix (fast when no engine)."""
    try:
        import docker  # noqa: PLC0415 - optional dependency, never at module level
    except ImportError:
        raise SandboxUnavailable(NO_SDK) from None
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:  # noqa: BLE001 - DockerException, requests errors, bad URLs
        where = base_url or os.environ.get("DOCKER_HOST") or "the default socket"
        raise SandboxUnavailable(
            f"no Docker engine reachable at {where} ({type(e).__name__}: {str(e)[:200]}). Start Docker, or "
            "Podman's compatible service (`scripts/podman_lane.sh env` does it as root) and set DOCKER_HOST; "
            "or use make_sandbox('local')."
        ) from None
    return client


def reap_orphans(client, owner_prefix: Optional[str] = None) -> int:
    """Force-remove sandbox containers whose owner process on this host is gone; returns the count."""
    host = socket.gethostname()
    n = 0
    try:
        containers = client.containers.list(all=True, filters={"label": LABEL})
    except Exception:  # noqa: BLE001
        return 0
    for c in containers:
        owner = (c.labels or {}).get(OWNER_LABEL, "")
        o_host, _, o_pid = owner.rpartition(":")
        dead = False
        if o_host == host and o_pid.isdigit():
            try:
                os.kill(int(o_pid), 0)
            except ProcessLookupError:
                dead = True
            except PermissionError:
                pass
        if dead or (owner_prefix and owner.startswith(owner_prefix)):
            try:
                c.remove(force=True)
                n += 1
            except Exception:  # noqa: BLE001
                pass
    return n


class _DockerStreamTransport(Transport):
    """Channel over a container's attached socket, demultiplexing Docker's 8-byte frame headers."""

    peer = "container"
    channel = "container stream"

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()  # demultiplexed stdout bytes
        self.raw = bytearray()  # undecoded stream bytes
        self.stderr = bytearray()
        self.sock.setblocking(False)

    def _writable(self) -> socket.socket:
        """The attached socket (non-blocking)."""
        return self.sock

    def _write_some(self, view: memoryview) -> int:
        """``send`` on the attached socket (the container's stdin)."""
        return self.sock.send(view)

    def _pump(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerDied("timed out waiting for the container's reply")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            raise WorkerDied(f"container stream closed ({e})") from None
        if not chunk:
            raise WorkerDied("the container's stream closed (the worker died or the container was killed)")
        self.raw += chunk
        while len(self.raw) >= 8:
            kind, size = self.raw[0], struct.unpack(">I", self.raw[4:8])[0]
            if len(self.raw) < 8 + size:
                break
            payload = bytes(self.raw[8:8 + size])
            del self.raw[:8 + size]
            if kind == 1:
                self.buf += payload
            elif kind == 2 and len(self.stderr) < 65536:
                self.stderr += payload

    def recv_exact(self, n: int, deadline: float) -> bytes:
        """Read ``n`` demultiplexed stdout bytes before ``deadline``."""
        while len(self.buf) < n:
            self._pump(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def close(self) -> None:
        """Close the attached socket."""
        try:
            self.sock.close()
        except OSError:
            pass

    def diagnostics(self) -> str:
        """The container's stderr so far (last 2 KiB)."""
        return self.stderr[-2048:].decode("utf-8", "replace").strip()


class DockerSandbox(Sandbox):
    """One long-lived container per sandbox, running the shared fork-server worker.

    Options: ``image`` (default ``$RAO_SANDBOX_IMAGE`` or the image built by
    ``rao-envs sandbox-build-image``), ``python`` (interpreter path in the image),
    ``user`` (non-root ``uid:gid``), ``cpus`` (``nano_cpus``), ``runtime`` (e.g. ``"runsc"``),
    ``base_url`` (engine socket; default ``DOCKER_HOST``).
    """

    backend = "docker"
    pid_namespace = True
    seccomp_mode = "require"

    def _scratch(self) -> list:
        return ["/work", "/tmp", "/dev/shm"]

    def __init__(self, limits: Optional[ResourceLimits] = None, *, image: Optional[str] = None,
                 python: str = "/usr/bin/python3", user: str = "65534:65534", cpus: float = 1.0,
                 runtime: Optional[str] = None, base_url: Optional[str] = None, **kw: Any):
        super().__init__(limits, **kw)
        self.image = image or default_image()
        self.python = python
        self.user = user
        self.cpus = float(cpus)
        self.runtime = runtime
        self.base_url = base_url
        self.container = None
        self._client = None
        self._attach = None

    @staticmethod
    def check_available(base_url: Optional[str] = None) -> None:
        """Raise :class:`SandboxUnavailable` if the SDK or the engine is missing."""
        connect(base_url, timeout=10).close()

    def _launch(self, config: dict) -> Transport:
        from docker.types import Ulimit  # noqa: PLC0415

        client = self._client = connect(self.base_url)
        key = (getattr(client.api, "base_url", ""), os.getpid())
        with _reap_lock:
            if key not in _reaped:
                _reaped.add(key)
                reap_orphans(client)
        lim = self.limits
        try:
            podman = any("podman" in c.get("Name", "").lower() for c in client.version().get("Components", []))
        except Exception:  # noqa: BLE001
            podman = False
        disk = int(lim.disk_mb or 64)
        tmp_mb = max(1, min(disk, 64))
        uid = self.user.split(":")[0]
        gid = self.user.split(":")[1] if ":" in self.user else uid
        # Podman ignores tmpfs mode=; its "U" option chowns the tmpfs to the container user
        owner_opt = "U" if podman else f"uid={uid},gid={gid},mode=0700"
        box_mem = lim.box_memory_bytes()
        kwargs: dict = dict(
            command=[self.python, "-I", "-S", "-c", worker_source(), json.dumps(config)],
            stdin_open=True, tty=False, detach=True,
            network_mode="none", read_only=True,
            # (no nr_inodes=: Podman 4 refuses it; the worker caps files + directories itself)
            tmpfs={"/work": f"rw,nosuid,nodev,size={disk}m,{owner_opt}",
                   "/tmp": f"rw,nosuid,nodev,size={tmp_mb}m,mode=1777"},
            shm_size=f"{tmp_mb}m",
            mem_limit=box_mem, memswap_limit=box_mem,
            pids_limit=int((lim.processes or 64) + 16), nano_cpus=int(self.cpus * 1e9),
            cap_drop=["ALL"], security_opt=["no-new-privileges"], user=self.user,
            working_dir="/work", hostname="sandbox",
            environment={"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            labels={LABEL: "1", OWNER_LABEL: _owner_id()},
            ulimits=[Ulimit(name="nofile", soft=1024, hard=1024),
                     Ulimit(name="nproc", soft=int(lim.processes or 64) + 16, hard=int(lim.processes or 64) + 16)],
        )
        if self.runtime:
            kwargs["runtime"] = self.runtime
        try:
            self.container = client.containers.create(self.image, **kwargs)
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            if "image" in msg.lower() and ("not found" in msg.lower() or "no such" in msg.lower()):
                raise SandboxUnavailable(
                    f"sandbox image {self.image!r} is not in the engine: build it with "
                    "`rao-envs sandbox-build-image` (or `python -m rao_envs.sandboxes.image`), or pass "
                    "image='<any image with python3>'") from None
            raise SandboxInfraError(f"could not create the sandbox container: {msg[:500]}") from None
        try:
            attach = self.container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._attach = attach
            raw = getattr(attach, "_sock", attach)
            self.container.start()
        except Exception as e:  # noqa: BLE001
            self._teardown()
            raise SandboxInfraError(f"could not start the sandbox container: {str(e)[:500]}") from None
        return _DockerStreamTransport(raw)

    def _teardown(self) -> None:
        c, self.container = self.container, None
        if c is not None:
            for attempt in range(5):  # the engine may refuse while the container is stopping
                try:
                    c.remove(force=True)
                    break
                except Exception as e:  # noqa: BLE001
                    if "no such container" in str(e).lower() or "404" in str(e):
                        break
                    time.sleep(0.1 * (attempt + 1))
        if self._attach is not None:
            try:
                self._attach.close()
            except Exception:  # noqa: BLE001
                pass
            self._attach = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None

    def kill_worker(self) -> None:
        """Kill the container from the host (simulates a crashed worker)."""
        if self.container is not None:
            try:
                self.container.kill()
            except Exception:  # noqa: BLE001
                pass
